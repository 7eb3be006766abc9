//! Route keys: match, targets, retries, rewrite, rate limit.

use crate::config::units::ConfigDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entry of `listeners[].routes`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `match`: what requests this route takes.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// `cluster`: where they go (or `weighted_clusters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `weighted_clusters`: a split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_clusters: Vec<WeightedClusterConfig>,
    /// Whole request, all tries; `0s` disables.
    #[serde(default = "default_route_timeout")]
    pub timeout: ConfigDuration,
    /// `retries`: the retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryConfig>,
    /// `rewrite`: what the path becomes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteConfig>,
    /// `request_headers_add`: headers set on the way upstream.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_headers_add: BTreeMap<String, String>,
    /// `authz`: who may use this route, by client certificate identity (after the
    /// listener's own `authz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<super::AuthzConfig>,
    /// `rate_limit`: a token bucket for the route.
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

/// `routes[].match`: every condition given must hold.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host (`api.example.com`, case-insensitive, port ignored) or `*.example.com` (any
    /// subdomain, not the apex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `path`: the exact path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `path_prefix`: a path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// `path_regex`: a regular expression the whole path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// `GET`, `POST`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `headers`: each header must be present with this exact value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// TCP listeners only: the TLS ClientHello's server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

/// One entry of `weighted_clusters`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusterConfig {
    /// The cluster this share of requests goes to.
    pub cluster: String,
    /// Its share, relative to the other entries (greater than 0).
    pub weight: u32,
}

/// `routes[].retries`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first try.
    pub attempts: u32,
    /// Conditions: `connect-failure`, `refused-stream`, `reset`, `5xx`, `gateway-error` (502,
    /// 503, 504 and connection failures), `retriable-4xx` (409).
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Deadline of one try (504 `per_try_timeout` when the last one passes it).
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
    /// The cap of that backoff.
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

/// One entry of `retries.retry_on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// `connect-failure`: nothing reached the endpoint.
    ConnectFailure,
    /// `refused-stream`: the upstream refused an HTTP/2 stream.
    RefusedStream,
    /// `reset`: the connection broke before a response.
    Reset,
    /// `5xx`: any 5xx answer.
    #[serde(rename = "5xx")]
    Status5xx,
    /// `gateway-error`: 502, 503 or 504.
    GatewayError,
    /// `retriable-4xx`: 409.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
}

/// `routes[].rewrite`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// `path_prefix`: replaces the matched `path_prefix`.
    pub path_prefix: String,
}

/// `routes[].rate_limit`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Token refill rate of the route's local bucket (per outrigger, not global).
    pub requests_per_second: u32,
    /// Bucket size; excess requests get 429 with `retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}
