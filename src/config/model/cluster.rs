//! Cluster keys: balancing, endpoints, discovery, TLS, health, ejection, breakers, pool.

use crate::config::units::ConfigDuration;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastLatency,
    LeastRequest,
    Random,
    RingHash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    Auto,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(default)]
    pub lb: LbPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOnConfig>,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryConfig>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTlsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartConfig>,
    #[serde(default)]
    pub pool: PoolConfig,
    /// Below this percentage of routable endpoints, balance over all of them (Envoy's panic
    /// threshold); 0 disables.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    /// Decay time of least_latency's peak EWMA.
    #[serde(default = "default_ewma_decay")]
    pub ewma_decay: ConfigDuration,
}

fn default_panic_threshold() -> u32 {
    50
}
fn default_ewma_decay() -> ConfigDuration {
    ConfigDuration::secs(10)
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::secs(1)
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashOnConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default)]
    pub source_ip: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_srv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<ConfigDuration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<String>,
    /// New endpoints of a health-checked cluster wait for a passing check before they get
    /// traffic; true sends to them at once.
    #[serde(default)]
    pub start_healthy: bool,
    /// An empty answer (no records, an empty file) is applied only after this many in a row,
    /// so one bad answer never empties the cluster.
    #[serde(default = "default_empty_confirmations")]
    pub empty_confirmations: u32,
}

fn default_empty_confirmations() -> u32 {
    2
}

impl DiscoveryConfig {
    /// How often DNS is asked again (and an endpoints file re-read, besides watching it).
    pub fn refresh_interval(&self) -> std::time::Duration {
        self.refresh
            .map(|r| r.get())
            .unwrap_or(std::time::Duration::from_secs(5))
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_hc_interval")]
    pub interval: ConfigDuration,
    #[serde(default = "default_hc_timeout")]
    pub timeout: ConfigDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<ConfigDuration>,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

fn default_hc_interval() -> ConfigDuration {
    ConfigDuration::secs(2)
}
fn default_hc_timeout() -> ConfigDuration {
    ConfigDuration::millis(500)
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_healthy_threshold() -> u32 {
    2
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheckConfig {
    pub path: String,
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn default_expected_statuses() -> Vec<u16> {
    vec![200]
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheckConfig {}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheckConfig {
    #[serde(default)]
    pub service: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionConfig {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: ConfigDuration,
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// Each ejection in a row lasts `base_ejection_time` × its count, up to this; the count
    /// falls by one for each `base_ejection_time` the endpoint then stays in rotation.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_time: ConfigDuration,
}

fn default_max_ejection() -> ConfigDuration {
    ConfigDuration::secs(300)
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_max_ejection_percent() -> u32 {
    50
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    #[serde(default = "default_cb_limit")]
    pub max_connections: u32,
    #[serde(default = "default_cb_limit")]
    pub max_pending_requests: u32,
    #[serde(default = "default_cb_limit")]
    pub max_requests: u32,
}

fn default_cb_limit() -> u32 {
    1024
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStartConfig {
    pub window: ConfigDuration,
    /// Share of its weight a ramping endpoint starts with.
    #[serde(default = "default_min_weight_percent")]
    pub min_weight_percent: u32,
}

fn default_min_weight_percent() -> u32 {
    10
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: ConfigDuration,
    /// HTTP/2 upstreams: connections opened per endpoint at most.
    pub http2_max_connections_per_endpoint: usize,
    /// HTTP/2 upstreams: streams on one connection before another is opened (up to the
    /// connection limit; past it, streams share the least busy connection, and the server's
    /// own SETTINGS_MAX_CONCURRENT_STREAMS always holds).
    pub http2_max_streams_per_connection: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_idle_per_endpoint: 64,
            idle_timeout: ConfigDuration::secs(90),
            http2_max_connections_per_endpoint: 4,
            http2_max_streams_per_connection: 100,
        }
    }
}
