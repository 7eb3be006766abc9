//! Serde types that mirror the YAML file 1:1 (`shared/spec/config.md`). Every struct denies
//! unknown fields so that a typo is an error, never a silently ignored key. Defaults live here;
//! cross-field rules live in `validate.rs`.

use super::units::{Cidr, ConfigDuration};
/// Lives with the normaliser (a leaf module), so that it imports nothing.
pub use crate::path::EscapedSlashes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
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

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    #[default]
    Http,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// TCP: where connections go. HTTP: the cluster for requests no route matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// TCP only: expect a PROXY protocol v1/v2 header first.
    #[serde(default)]
    pub accept_proxy_protocol: bool,
    /// TCP only: endpoints tried per connection before giving up (a failed connect moves on to
    /// another endpoint).
    #[serde(default = "default_connect_attempts")]
    pub connect_attempts: u32,
    /// Peers whose `x-forwarded-proto` (and, with `request_id: trusted`, `x-request-id`) is
    /// believed; from anyone else it is replaced. Default: loopback (the app beside a sidecar).
    #[serde(default = "loopback_blocks")]
    pub trusted_hops: Vec<Cidr>,
    /// What happens to a client's `x-request-id`.
    #[serde(default)]
    pub request_id: RequestIdMode,
    /// RFC 3986 dot-segment removal before routing (`/a/../b` is `/b`), so that a path cannot
    /// step out of the prefix a route matched; the upstream receives the normalised path.
    #[serde(default = "default_true")]
    pub normalize_path: bool,
    /// Also merge repeated slashes (`//a///b` is `/a/b`).
    #[serde(default)]
    pub merge_slashes: bool,
    /// What to do with `%2F` / `%5C` in a path.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RequestIdMode {
    /// Keep a client's value; make one when there is none.
    #[default]
    Keep,
    /// Keep it from `trusted_hops`, replace it from anyone else.
    Trusted,
    /// Always make a new one.
    Replace,
}

fn default_connect_attempts() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    pub cert: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniCertConfig>,
    /// PEM certificate revocation lists checked against client certificates (with
    /// `client_ca`); re-read when the file changes, as the certificates are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertConfig {
    pub server_names: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub format: AccessLogFormat,
    /// `stdout` or a file path.
    #[serde(default = "default_stdout")]
    pub path: String,
}

fn default_stdout() -> String {
    "stdout".into()
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_request_headers_kb: usize,
    pub header_read_timeout: ConfigDuration,
    /// A connection with no request in flight (HTTP) or no bytes moving (TCP) for this long is
    /// closed.
    pub idle_timeout: ConfigDuration,
    /// TCP: copy buffer per direction per connection.
    pub buffer_kb: usize,
    /// HTTP/2: streams a client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 rapid reset (CVE-2023-44487): streams a client may open and reset before the
    /// proxy has even accepted them; past it the connection gets GOAWAY (ENHANCE_YOUR_CALM).
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams the proxy may reset for protocol errors before it closes the connection
    /// (the other half of rapid-reset and CONTINUATION-flood protection).
    pub http2_max_local_error_reset_streams: usize,
    /// HTTP/1.1: a keep-alive connection idle this long gives hyper's buffers back (~16 KiB) and
    /// waits on the socket alone until the client speaks again; `0s` keeps them.
    pub park_idle_after: ConfigDuration,
    /// A request whose bodies move no byte in either direction for this long is ended (Envoy's
    /// `stream_idle_timeout`): an upstream stalling mid-body, a client that stops reading or
    /// stops sending. It also bounds a tunnel (WebSocket, CONNECT) with no traffic.
    pub stream_idle_timeout: ConfigDuration,
    /// After the proxy starts closing a connection (HTTP/2 GOAWAY, drain), it is cut if it is
    /// still open this long after: a client that never answers cannot keep it.
    pub close_timeout: ConfigDuration,
    /// HTTP/2: what a client may send on one stream before the proxy reads it.
    pub http2_stream_window_kb: u32,
    /// HTTP/2: the same, for all streams of a connection together.
    pub http2_connection_window_kb: u32,
    /// HTTP/2: response bytes buffered per stream for a slow client.
    pub http2_max_send_buffer_kb: usize,
    /// HTTP/2: PING a client every this long and close the connection if no answer comes
    /// within `close_timeout`; `0s` sends none.
    pub http2_keepalive_interval: ConfigDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_request_headers_kb: 60,
            header_read_timeout: ConfigDuration::secs(10),
            idle_timeout: ConfigDuration::secs(60),
            buffer_kb: 16,
            http2_max_concurrent_streams: 100,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
            park_idle_after: ConfigDuration::secs(1),
            stream_idle_timeout: ConfigDuration::secs(300),
            close_timeout: ConfigDuration::secs(5),
            http2_stream_window_kb: 256,
            http2_connection_window_kb: 1024,
            http2_max_send_buffer_kb: 32,
            http2_keepalive_interval: ConfigDuration::secs(0),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_clusters: Vec<WeightedClusterConfig>,
    /// Whole request, all tries; `0s` disables.
    #[serde(default = "default_route_timeout")]
    pub timeout: ConfigDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteConfig>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_headers_add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Debugging aid: name the chosen endpoint in an `x-outrigger-upstream` response header.
    #[serde(default)]
    pub add_upstream_header: bool,
    /// Accept plain `CONNECT` on this route: answer 200 and tunnel the bytes to an endpoint of
    /// its cluster. Without it, CONNECT gets 405.
    #[serde(default)]
    pub allow_connect: bool,
    /// `Upgrade` protocols passed to the upstream (compared without case); a request asking for
    /// another gets 403. `h2c` is never passed on: its `Upgrade` is dropped and the request
    /// forwarded as plain HTTP/1.1.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}

fn default_route_timeout() -> ConfigDuration {
    ConfigDuration::secs(15)
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// TCP listeners only: the TLS ClientHello's server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusterConfig {
    pub cluster: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first try.
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<ConfigDuration>,
    /// Retries may add at most this share of requests (per route, over 10 s); absent = no
    /// budget, only `attempts` bounds retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
    /// Retries always allowed per second on top of the budget, for low-traffic routes.
    #[serde(default = "default_min_retries_per_second")]
    pub min_retries_per_second: u32,
    /// Exponential backoff with full jitter: the first retry waits up to this.
    #[serde(default = "default_backoff_base")]
    pub backoff_base: ConfigDuration,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: ConfigDuration,
    /// Retry POST and PATCH too (they may not be idempotent); connect failures are always
    /// retried, as nothing was sent.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Request bodies up to this size (with a known length) are buffered so they can be sent
    /// again; larger or streamed bodies are not retried.
    #[serde(default = "default_retry_buffer_kb")]
    pub max_body_kb: usize,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::ConnectFailure,
        RetryOn::RefusedStream,
        RetryOn::Reset,
    ]
}
fn default_min_retries_per_second() -> u32 {
    3
}
fn default_backoff_base() -> ConfigDuration {
    ConfigDuration::millis(25)
}
fn default_backoff_max() -> ConfigDuration {
    ConfigDuration::millis(250)
}
fn default_retry_buffer_kb() -> usize {
    64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    #[serde(rename = "5xx")]
    Status5xx,
    GatewayError,
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub path_prefix: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_second: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

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
