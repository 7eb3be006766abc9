//! Least request by power of two choices (Mitzenmacher): two candidates drawn by effective
//! weight, the one with fewer requests in flight wins. Drawing by weight makes it weight-aware
//! and lets slow start work: a ramping endpoint is a candidate in proportion to its ramp, and
//! when it is one it competes on load, so it is neither starved nor flooded for having an
//! empty queue.

use super::{p2c, weighted_table, Balancer, PickContext, Table};
use crate::endpoint::Endpoint;
use std::sync::Arc;

/// `least_request`: the fewer in-flight requests of two endpoints drawn at random.
pub struct LeastRequest;

impl Balancer for LeastRequest {
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
            let (fa, fb) = (a.in_flight(), b.in_flight());
            fb < fa || (fb == fa && fastrand::bool())
        })
    }
}
