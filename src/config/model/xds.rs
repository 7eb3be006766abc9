//! `xds`: the control plane that sends listeners, routes, clusters and endpoints over ADS.

use crate::config::units::ConfigDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `xds`: an aggregated discovery (ADS) stream to an xDS management server such as
/// go-control-plane or istiod. What it sends is merged with the file's static resources.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdsConfig {
    /// `host:port` of the management server, or a list tried in turn on each reconnect.
    pub server: OneOrMany,
    /// How this proxy names itself to the server (Envoy's `node`).
    pub node: XdsNodeConfig,
    /// How long a resource type (and a new EDS cluster's endpoints) may take to arrive before
    /// the proxy goes on without it: `/ready` then passes, a cluster is used empty.
    #[serde(default = "default_initial_fetch_timeout")]
    pub initial_fetch_timeout: ConfigDuration,
    /// TCP + HTTP/2 connect deadline per attempt.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// First reconnect delay; doubles per failed attempt, with full jitter.
    #[serde(default = "default_backoff_base")]
    pub backoff_base: ConfigDuration,
    /// Upper bound of the reconnect delay.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: ConfigDuration,
    /// Which resource types come from the server.
    #[serde(default = "all_types")]
    pub resources: Vec<XdsResourceType>,
    /// Largest response accepted, in KiB (a bound on what one push may allocate).
    #[serde(default = "default_max_message_kb")]
    pub max_message_kb: usize,
    /// TLS to the management server (`ca`, `cert` + `key` for mutual TLS, `sni`); plaintext
    /// when absent. Without `ca`, the server is verified against the webpki roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::cluster::ClusterTlsConfig>,
}

/// One address or several.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `server: host:port`.
    One(String),
    /// `server: [host:port, ...]`.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The addresses, in order.
    pub fn list(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `xds.node`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct XdsNodeConfig {
    /// Unique per proxy (a pod name, say); `${POD_NAME}` is substituted from the environment.
    pub id: String,
    /// The service this proxy fronts (Envoy's `--service-cluster`).
    #[serde(default)]
    pub cluster: String,
    /// Sent as the node's metadata (string values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `xds.resources[]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum XdsResourceType {
    /// CDS.
    Clusters,
    /// EDS (for clusters of type EDS, dynamic or static).
    Endpoints,
    /// LDS.
    Listeners,
    /// RDS (for listeners whose HTTP connection manager names a route configuration).
    Routes,
}

fn all_types() -> Vec<XdsResourceType> {
    use XdsResourceType::*;
    vec![Clusters, Endpoints, Listeners, Routes]
}
fn default_initial_fetch_timeout() -> ConfigDuration {
    ConfigDuration::secs(15)
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}
fn default_backoff_base() -> ConfigDuration {
    ConfigDuration::millis(500)
}
fn default_backoff_max() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_max_message_kb() -> usize {
    64 * 1024
}
