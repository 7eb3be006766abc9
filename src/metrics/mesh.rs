//! The mesh's counters: authorization denials, original destinations refused, and what
//! protocol detection found. Every label value comes from the config or a closed set.

use prometheus::{IntCounterVec, Opts, Registry};

/// `outrigger_authz_denied_total`: requests (HTTP) and connections (TCP) refused by `authz`.
pub const AUTHZ_DENIED_TOTAL: &str = "outrigger_authz_denied_total";
/// `outrigger_original_dst_refused_total`: captured traffic not forwarded to its original destination.
pub const ORIGINAL_DST_REFUSED_TOTAL: &str = "outrigger_original_dst_refused_total";
/// `outrigger_protocol_detected_total`: connections of detect listeners by what they turned out to speak.
pub const PROTOCOL_DETECTED_TOTAL: &str = "outrigger_protocol_detected_total";

/// The mesh's collectors.
#[derive(Clone)]
pub struct MeshMetrics {
    /// `outrigger_authz_denied_total{listener, rule}`: `rule` is `listener.deny[N]`,
    /// `routes[N].allow` and the like.
    pub authz_denied: IntCounterVec,
    /// `outrigger_original_dst_refused_total{listener, reason}`: `not_allowed` (outside the
    /// cluster's allow-list), `unknown` (not captured), `loop` (the proxy's own listener).
    pub original_dst_refused: IntCounterVec,
    /// `outrigger_protocol_detected_total{listener, protocol}`: `http1`, `http2`, `tls`,
    /// `opaque` (other bytes, or an opaque port), `silent` (nothing within the timeout).
    pub protocol_detected: IntCounterVec,
}

impl MeshMetrics {
    /// Creates the collectors and registers them.
    pub fn register(registry: &Registry) -> MeshMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c =
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique constants");
            c
        };
        MeshMetrics {
            authz_denied: counter(
                AUTHZ_DENIED_TOTAL,
                "Requests (HTTP) and connections (TCP) refused by authz, by the rule that refused them.",
                &["listener", "rule"],
            ),
            original_dst_refused: counter(
                ORIGINAL_DST_REFUSED_TOTAL,
                "Captured traffic not forwarded to its original destination: not_allowed, unknown, loop.",
                &["listener", "reason"],
            ),
            protocol_detected: counter(
                PROTOCOL_DETECTED_TOTAL,
                "Connections of detect listeners by what they spoke: http1, http2, tls, opaque, silent.",
                &["listener", "protocol"],
            ),
        }
    }
}
