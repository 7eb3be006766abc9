//! Mesh keys: transparent capture on listeners, protocol detection, identity-based
//! authorization, and the original-destination cluster.

use crate::config::units::{Cidr, ConfigDuration};
use serde::{Deserialize, Serialize};

/// `listeners[].mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerMode {
    /// Clients connect to the listener's address.
    #[default]
    Normal,
    /// Connections are captured by the kernel (iptables REDIRECT or TPROXY) on their way
    /// elsewhere; each carries the address its client dialled (its original destination).
    Transparent,
}

/// `listeners[].capture`: how a transparent listener's connections were captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// iptables `REDIRECT` (nat): the original destination is read with `SO_ORIGINAL_DST`.
    #[default]
    Redirect,
    /// iptables `TPROXY` (mangle): the socket is bound with `IP_TRANSPARENT` and the original
    /// destination is the connection's own local address.
    Tproxy,
}

/// `listeners[].detect`: how `protocol: detect` tells HTTP from anything else.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// How long to wait for the client's first bytes; a client still silent then (a
    /// server-speaks-first protocol) is relayed as TCP.
    #[serde(default = "default_detect_timeout")]
    pub timeout: ConfigDuration,
    /// Original-destination ports relayed as TCP at once, without waiting for a first byte:
    /// protocols where the server speaks first (SMTP, MySQL) or that are never HTTP.
    #[serde(default = "default_opaque_ports")]
    pub opaque_ports: Vec<u16>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            timeout: default_detect_timeout(),
            opaque_ports: default_opaque_ports(),
        }
    }
}

fn default_detect_timeout() -> ConfigDuration {
    ConfigDuration::secs(1)
}

/// linkerd's default opaque ports: SMTP, MySQL and its Galera port, PostgreSQL, Redis,
/// Elasticsearch transport, memcached.
fn default_opaque_ports() -> Vec<u16> {
    vec![25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
}

/// `authz` on a listener or route: who may send requests, by the identity in their client
/// certificate (URI SANs such as SPIFFE IDs, then DNS SANs).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// Identities let in; empty lets in everyone `deny` does not name. A pattern is exact, or
    /// ends in `*` to match a prefix (`spiffe://cluster.local/ns/shop/*`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Identities kept out, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `clusters[].original_dst`: forward to the address the client dialled (Envoy's ORIGINAL_DST),
/// within an allow-list, so a captured connection can never be turned into an open relay.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDstConfig {
    /// Destination networks allowed (required: at least one).
    pub allow: Vec<Cidr>,
    /// Destination ports allowed; empty allows any.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// How many destinations are kept at once (each with its pool and metric series); one
    /// past that evicts an unused one, or is refused when all are in use.
    #[serde(default = "default_max_hosts")]
    pub max_hosts: usize,
}

fn default_max_hosts() -> usize {
    1024
}
