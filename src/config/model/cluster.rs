//! Cluster keys: balancing, endpoints, discovery, TLS, health, ejection, breakers, pool.

use crate::config::units::ConfigDuration;
use serde::{Deserialize, Serialize};

/// `clusters[].lb`: how a request's endpoint is picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// `round_robin`.
    #[default]
    RoundRobin,
    /// `weighted_round_robin`.
    WeightedRoundRobin,
    /// `least_latency` (peak EWMA, power of two choices).
    LeastLatency,
    /// `least_request` (in-flight count, power of two choices).
    LeastRequest,
    /// `random`.
    Random,
    /// `ring_hash` (consistent hashing on `hash_on`).
    RingHash,
}

/// `clusters[].send_proxy_protocol`: the PROXY protocol version sent upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocolVersion {
    /// Version 1 (text).
    V1,
    /// Version 2 (binary).
    V2,
}

/// `clusters[].protocol`: what HTTP version new upstream connections speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// `http1`.
    #[default]
    Http1,
    /// `http2` (prior knowledge, or ALPN h2 over TLS).
    Http2,
    /// `auto`: ALPN decides over TLS; HTTP/1.1 without TLS.
    Auto,
}

/// One entry of `clusters`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique; the `cluster` label in metrics.
    pub name: String,
    /// `round_robin`, `weighted_round_robin`, `random`, `least_request`, `least_latency`,
    /// `ring_hash`: see Load balancing.
    #[serde(default)]
    pub lb: LbPolicy,
    /// `hash_on`: the affinity key of `ring_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOnConfig>,
    /// `endpoints`: the static endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// `discovery`: where more endpoints are found (DNS or a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryConfig>,
    /// Upstream protocol: `http1`; `http2` (prior knowledge in cleartext, ALPN `h2` with
    /// `tls`); `auto` (ALPN `h2`/`http/1.1` with `tls`, HTTP/1.1 in cleartext). See Protocols.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TCP connect deadline; expiry is a 503 `connect_timeout`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// `send_proxy_protocol`: a PROXY header on each new upstream connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    /// `original_dst`: forward each connection or request to the address its client dialled
    /// (transparent listeners), within an allow-list; the cluster then has no endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<super::OriginalDstConfig>,
    /// `tls`: TLS origination to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTlsConfig>,
    /// `health_check`: active probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// `outlier_detection`: passive ejection on consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionConfig>,
    /// `circuit_breaker`: connection, pending and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// `slow_start`: the weight ramp of a new or recovered endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStartConfig>,
    /// `pool`: upstream connection reuse.
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

/// `clusters[].hash_on`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashOnConfig {
    /// `header`: hash this request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `cookie`: hash this cookie's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Hash the client's address.
    #[serde(default)]
    pub source_ip: bool,
}

/// One entry of `clusters[].endpoints`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `host:port`; DNS names are resolved once at start (use `discovery.dns` to follow a
    /// name).
    pub address: String,
    /// 1 to 10000; used by every policy but `round_robin`.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Priority level, 0 to 127: level 0 takes the traffic; a higher level takes a share only
    /// as the levels before it lose healthy endpoints (Envoy's priorities; HAProxy's backup).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
}

/// The highest `priority` an endpoint may have.
pub const MAX_PRIORITY: u32 = 127;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_weight() -> u32 {
    1
}

/// `clusters[].discovery`: exactly one of `dns`, `dns_srv` and `file`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `dns`: `host:port`, every A/AAAA record an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// `dns_srv`: an SRV name whose records give ports and weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_srv: Option<String>,
    /// `file`: a JSON or YAML endpoints file, watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `eds`: the service name whose endpoints (ClusterLoadAssignment) the `xds` server sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eds: Option<String>,
    /// How often DNS is asked (record TTLs do not stretch it) and the file re-read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<ConfigDuration>,
    /// DNS servers (`IP` or `IP:port`), for `dns` and `dns_srv`.
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

/// `clusters[].tls`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// Name sent in the ClientHello and verified in the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// PEM CA bundle the endpoint's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// `cert`: a client certificate chain (PEM) for mTLS upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// `key`: the client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `clusters[].health_check`: one of `http`, `grpc` or `tcp`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Between probe rounds.
    #[serde(default = "default_hc_interval")]
    pub interval: ConfigDuration,
    /// Per probe.
    #[serde(default = "default_hc_timeout")]
    pub timeout: ConfigDuration,
    /// Each probe starts up to this much later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<ConfigDuration>,
    /// Failing probes in a row that mark an endpoint unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passing probes in a row that mark it healthy again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// `GET` this path on a fresh connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheckConfig>,
    /// `tcp`: a probe is a completed TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheckConfig>,
    /// `grpc.health.v1.Health/Check` for this service (`""`: the server as a whole); passes
    /// only on `SERVING`.
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

/// `health_check.http`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheckConfig {
    /// `GET` this path on a fresh connection.
    pub path: String,
    /// Statuses that pass.
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<u16>,
    /// The probe's `Host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn default_expected_statuses() -> Vec<u16> {
    vec![200]
}

/// `health_check.tcp` (no settings).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheckConfig {}

/// `health_check.grpc`: the gRPC health checking protocol.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheckConfig {
    /// `grpc.health.v1.Health/Check` for this service (`""`: the server as a whole); passes
    /// only on `SERVING`.
    #[serde(default)]
    pub service: String,
}

/// `clusters[].outlier_detection`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionConfig {
    /// 5xx responses or connection failures in a row that eject an endpoint.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Ejected for this × its place in a streak of ejections.
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: ConfigDuration,
    /// Never eject more than this share of the cluster.
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

/// `clusters[].circuit_breaker`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Open upstream connections.
    #[serde(default = "default_cb_limit")]
    pub max_connections: u32,
    /// Requests waiting for a new connection.
    #[serde(default = "default_cb_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight, retries included.
    #[serde(default = "default_cb_limit")]
    pub max_requests: u32,
}

fn default_cb_limit() -> u32 {
    1024
}

/// `clusters[].slow_start`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStartConfig {
    /// Ramp an endpoint that becomes routable up to its full weight over this long.
    pub window: ConfigDuration,
    /// Share of its weight a ramping endpoint starts with.
    #[serde(default = "default_min_weight_percent")]
    pub min_weight_percent: u32,
}

fn default_min_weight_percent() -> u32 {
    10
}

/// `clusters[].pool`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Idle keep-alive connections kept per endpoint (most recently used is reused first).
    pub max_idle_per_endpoint: usize,
    /// Pooled connections unused this long are closed.
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
