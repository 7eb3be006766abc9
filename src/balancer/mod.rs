//! Load-balancing policies. A balancer is a plain trait over the cluster's current healthy
//! endpoints (Pingora/Sōzu style rather than `tower::balance`), so the HTTP and TCP paths share
//! it. A pick takes no lock and allocates nothing; per-set tables are built when the set is
//! published, never per request.

mod round_robin;

pub use round_robin::RoundRobin;

use crate::cluster::Endpoint;
use crate::config::{ClusterConfig, LbPolicy};
use std::sync::Arc;

/// What a pick may take into account beyond the endpoints themselves.
#[derive(Default, Clone, Copy)]
pub struct PickContext<'a> {
    /// A hash of the request's affinity key (ring_hash).
    pub hash: Option<u64>,
    /// An endpoint to avoid if any other is available (a retry after it failed).
    pub avoid: Option<&'a Endpoint>,
}

pub trait Balancer: Send + Sync + 'static {
    /// Picks one of `endpoints` (never empty when called).
    fn pick<'e>(
        &self,
        endpoints: &'e [Arc<Endpoint>],
        ctx: &PickContext<'_>,
    ) -> Option<&'e Arc<Endpoint>>;
}

/// The balancer for a cluster's `lb` policy.
pub fn new(cfg: &ClusterConfig) -> Box<dyn Balancer> {
    match cfg.lb {
        // Validation refuses the other policies until they exist.
        LbPolicy::RoundRobin
        | LbPolicy::WeightedRoundRobin
        | LbPolicy::LeastLatency
        | LbPolicy::LeastRequest
        | LbPolicy::Random
        | LbPolicy::RingHash => Box::new(RoundRobin::default()),
    }
}
