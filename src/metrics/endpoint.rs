//! The metric children one endpoint updates on the request path.

use prometheus::{Gauge, IntCounter, IntGauge};

/// Metric children of one endpoint, resolved when it is created.
pub struct EndpointMetrics {
    /// `outrigger_upstream_endpoint_healthy`.
    pub healthy: IntGauge,
    /// `outrigger_upstream_requests_total`, one child per status class.
    pub requests_by_class: [IntCounter; 5],
    /// `outrigger_upstream_endpoint_ewma_seconds`.
    pub ewma_seconds: Gauge,
    /// `outrigger_upstream_endpoint_inflight`.
    pub in_flight: IntGauge,
    /// `outrigger_upstream_endpoint_effective_weight`.
    pub effective_weight: Gauge,
}
