//! The metric children one endpoint updates on the request path.

use prometheus::{Gauge, IntCounter, IntGauge};

/// Metric children of one endpoint, resolved when it is created.
pub struct EndpointMetrics {
    pub healthy: IntGauge,
    pub requests_by_class: [IntCounter; 5],
    pub ewma_seconds: Gauge,
    pub in_flight: IntGauge,
    pub effective_weight: Gauge,
}
