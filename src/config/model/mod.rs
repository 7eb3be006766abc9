//! Serde types that mirror the YAML file 1:1 (the reference is docs/configuration.md). Every struct denies
//! unknown fields so that a typo is an error, never a silently ignored key. Defaults live here;
//! cross-field rules live in `validate/`.

use super::units::{Cidr, ConfigDuration};
/// Lives with the normaliser (a leaf module), so that it imports nothing.
pub use crate::path::EscapedSlashes;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `server`: process-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// `admin`: the admin server.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `metrics`: what `/metrics` exports.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// At least one (unless `xds` sends them); below.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// The upstream clusters routes name; below.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// `xds`: a control plane that sends more listeners, routes, clusters and endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xds: Option<XdsConfig>,
}

/// What `/metrics` exports.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Series labelled by endpoint (health, responses, latency, in flight, weight). Off, a
    /// cluster's series count no longer grows with its endpoints. Read at start.
    pub per_endpoint: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { per_endpoint: true }
    }
}

/// Process-wide settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Tokio worker threads; 0 = one per available core.
    pub worker_threads: usize,
    /// After SIGTERM, keep accepting this long while /ready fails.
    pub drain_delay: ConfigDuration,
    /// Then wait at most this long for in-flight work.
    pub drain_timeout: ConfigDuration,
    /// Reload when the config file changes on disk.
    pub watch_config: bool,
    /// Requests in flight across all listeners before new ones are refused with 503; 0 = no limit.
    pub max_in_flight_requests: usize,
    /// Add a W3C `traceparent` to requests that carry no trace context (W3C or B3).
    pub generate_traceparent: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            worker_threads: 0,
            drain_delay: ConfigDuration::secs(0),
            drain_timeout: ConfigDuration::secs(15),
            watch_config: true,
            max_in_flight_requests: 10_000,
            generate_traceparent: false,
        }
    }
}

/// `admin`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin server's `ip:port` (see Admin server).
    pub address: String,
    /// Peers that may call the endpoints that change state (`POST /reload`, `/shutdown`,
    /// `/logging`); the default is loopback only. Reads (`/metrics`, probes) answer everyone
    /// who reaches `address`.
    pub allow: Vec<Cidr>,
    /// Names besides `localhost` and the admin listener's own addresses that a request's `Host`
    /// may carry (a DNS-rebinding guard), e.g. a compose service name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Header names whose configured values `/config` prints; every other `match.headers` and
    /// `request_headers_add` value reads `<redacted>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_headers: Vec<String>,
}

/// 127.0.0.0/8 and ::1.
pub fn loopback_blocks() -> Vec<Cidr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    vec![
        Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "127.0.0.1:9901".into(),
            allow: loopback_blocks(),
            allowed_hosts: Vec::new(),
            public_headers: Vec::new(),
        }
    }
}

mod cluster;
mod listener;
mod mesh;
mod route;
mod xds;

pub use cluster::*;
pub use listener::*;
pub use mesh::*;
pub use route::*;
pub use xds::*;
