//! Listener keys: protocol, TLS, access log, limits.

use super::{loopback_blocks, EscapedSlashes, RouteConfig};
use crate::config::units::{Cidr, ConfigDuration};
use serde::{Deserialize, Serialize};

/// `listeners[].protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// `http`: HTTP/1.1 and HTTP/2 (and gRPC, WebSocket) with routes.
    #[default]
    Http,
    /// `tcp`: raw TCP relayed to a cluster (routes by SNI).
    Tcp,
    /// `detect`: each connection's first bytes decide: HTTP/1 and HTTP/2 (prior knowledge)
    /// are served with the routes; TLS and anything else are relayed to `cluster` as TCP.
    Detect,
}

/// One entry of `listeners`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique; the `listener` label in metrics.
    pub name: String,
    /// `ip:port` to bind (`[::]:port` for IPv6; port 0 picks a free port).
    pub address: String,
    /// `http`: HTTP/1.1 and HTTP/2 cleartext (prior knowledge) on the same port (told apart by
    /// peeking at the first bytes; with `tls`, by ALPN); `tcp`: raw TCP, see TCP proxy.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// `tls`: TLS termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsConfig>,
    /// `access_log`: one line per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// `limits`: the listener's bounds and deadlines.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `routes`: matched in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// TCP: where connections go. HTTP: the cluster for requests no route matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Expect a PROXY protocol v1/v2 header first (before TLS, before HTTP).
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
    /// `transparent`: connections captured by iptables, each with its original destination.
    #[serde(default, skip_serializing_if = "is_normal")]
    pub mode: super::ListenerMode,
    /// With `mode: transparent`: `redirect` (nat) or `tproxy` (mangle).
    #[serde(default, skip_serializing_if = "is_redirect")]
    pub capture: super::CaptureMethod,
    /// With `protocol: detect`: the detection timeout and opaque ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<super::DetectConfig>,
    /// Who may connect, by client certificate identity (needs `tls.client_ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<super::AuthzConfig>,
}

fn is_normal(m: &super::ListenerMode) -> bool {
    *m == super::ListenerMode::Normal
}

fn is_redirect(c: &super::CaptureMethod) -> bool {
    *c == super::CaptureMethod::Redirect
}

fn default_true() -> bool {
    true
}

/// `listeners[].request_id`: what happens to `x-request-id`.
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

/// `listeners[].tls`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain, leaf first (relative to the config file's folder).
    pub cert: String,
    /// PEM private key: PKCS#8, RSA or EC.
    pub key: String,
    /// `client_ca`: require and verify client certificates against this CA bundle (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// Protocols offered by ALPN; an http listener speaks only `h2` and `http/1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<String>>,
    /// `sni`: more certificates, chosen by the server name the client asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniCertConfig>,
    /// PEM certificate revocation lists checked against client certificates (with
    /// `client_ca`); re-read when the file changes, as the certificates are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<String>,
}

/// One entry of `tls.sni`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertConfig {
    /// Names (`api.example.com`, `*.example.com`) this pair serves.
    pub server_names: Vec<String>,
    /// As `cert` and `key`.
    pub cert: String,
    /// As `cert` and `key`.
    pub key: String,
}

/// `access_log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Space-separated fields, Envoy's default order.
    Text,
}

/// `listeners[].access_log`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `json` (one object per line) or `text` (Envoy-like fields separated by spaces).
    #[serde(default)]
    pub format: AccessLogFormat,
    /// `stdout` or a file path.
    #[serde(default = "default_stdout")]
    pub path: String,
}

fn default_stdout() -> String {
    "stdout".into()
}

/// `listeners[].limits`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open downstream connections; one more is answered at once with a bare 503 and closed
    /// (load shedding, counted in `outrigger_load_shed_total`).
    pub max_connections: usize,
    /// Request line + headers larger than this get 431 (HTTP/2: header list size).
    pub max_request_headers_kb: usize,
    /// An HTTP/1.1 request head must be complete within this from its first byte, or the
    /// connection is closed (as Envoy's `request_headers_timeout`; a keep-alive connection
    /// waiting for its next request is under `idle_timeout` instead).
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
