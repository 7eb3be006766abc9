//! Route keys: match, targets, retries, rewrite, rate limit.

use crate::config::units::ConfigDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Exact host (`api.example.com`, case-insensitive, port ignored) or `*.example.com` (any
    /// subdomain, not the apex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// `GET`, `POST`, ...
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
    /// The cluster this share of requests goes to.
    pub cluster: String,
    /// Its share, relative to the other entries (greater than 0).
    pub weight: u32,
}

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
    /// Token refill rate of the route's local bucket (per outrigger, not global).
    pub requests_per_second: u32,
    /// Bucket size; excess requests get 429 with `retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}
