//! One upstream address and the per-request numbers kept about it. `Endpoint`s are shared
//! (`Arc`) between the published `EndpointSet` and in-flight requests; their counters are
//! atomics that are updated in place and never republished.

use super::pool::EndpointPool;
use prometheus::IntGauge;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Endpoint {
    /// The resolved address connections go to.
    pub address: SocketAddr,
    /// The address as configured (`web-0.svc:8080`), used in metrics, logs and /clusters.
    pub label: String,
    /// Configured weight (default 1).
    pub weight: u32,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    healthy_gauge: IntGauge,
    pub(crate) pool: EndpointPool,
}

impl Endpoint {
    pub(crate) fn new(
        address: SocketAddr,
        label: String,
        weight: u32,
        pool: EndpointPool,
        healthy_gauge: IntGauge,
    ) -> Endpoint {
        healthy_gauge.set(1);
        Endpoint {
            address,
            label,
            weight,
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            healthy_gauge,
            pool,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.healthy_gauge.set(healthy as i64);
    }

    /// Requests sent to this endpoint whose response has not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("label", &self.label)
            .field("weight", &self.weight)
            .finish()
    }
}

/// Holds one in-flight count on an endpoint.
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What balancers read: every endpoint, and the ones that may receive traffic. Published as a
/// whole through the cluster's `ArcSwap` whenever membership or health changes.
#[derive(Default)]
pub struct EndpointSet {
    pub all: Vec<Arc<Endpoint>>,
    pub healthy: Vec<Arc<Endpoint>>,
}

impl EndpointSet {
    pub fn new(all: Vec<Arc<Endpoint>>) -> EndpointSet {
        let healthy = all.iter().filter(|e| e.is_healthy()).cloned().collect();
        EndpointSet { all, healthy }
    }
}
