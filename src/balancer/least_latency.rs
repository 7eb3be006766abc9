//! Least latency by power of two choices on peak EWMA × (in-flight + 1), the cost linkerd2-proxy
//! and Finagle balance on. Candidates are drawn by effective weight (see least_request). An
//! endpoint with no latency observed yet is scored with the other candidate's EWMA, so it
//! starts level with its peers: not favoured for an empty history (a flood), not shunned.

use super::{p2c, weighted_table, Balancer, PickContext, Table};
use crate::endpoint::Endpoint;
use std::sync::Arc;

/// `least_latency`: the lower peak-EWMA latency of two endpoints drawn at random.
pub struct LeastLatency;

fn cost(ewma: f64, in_flight: usize) -> f64 {
    ewma * (in_flight as f64 + 1.0)
}

impl Balancer for LeastLatency {
    fn prepare(&self, _endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        weighted_table(weights)
    }

    fn pick<'e>(
        &self,
        routable: &'e [Arc<Endpoint>],
        table: &Table,
        ctx: &PickContext<'_>,
    ) -> Option<&'e Arc<Endpoint>> {
        p2c(routable, table, ctx, |a, b| {
            let (ea, eb) = match (a.ewma_seconds(), b.ewma_seconds()) {
                (Some(x), Some(y)) => (x, y),
                (Some(x), None) => (x, x),
                (None, Some(y)) => (y, y),
                (None, None) => (1.0, 1.0),
            };
            let (ca, cb) = (cost(ea, a.in_flight()), cost(eb, b.in_flight()));
            // Ties (a new endpoint scored with its competitor's EWMA) go either way, so
            // neither the candidate order nor a missing history decides.
            cb < ca || (cb == ca && fastrand::bool())
        })
    }
}
