//! Least request by power of two choices (Mitzenmacher): two candidates drawn by effective
//! weight, the one with fewer requests in flight wins. Drawing by weight makes it weight-aware
//! and lets slow start work: a ramping endpoint is a candidate in proportion to its ramp, and
//! when it is one it competes on load, so it is neither starved nor flooded for having an
//! empty queue.

use super::{avoiding, two_candidates, weighted_table, Balancer, PickContext, Table};
use crate::cluster::{Endpoint, EndpointSet};
use std::sync::Arc;

pub struct LeastRequest;

impl Balancer for LeastRequest {
    fn prepare(&self, _endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        weighted_table(weights)
    }

    fn pick<'e>(&self, set: &'e EndpointSet, ctx: &PickContext<'_>) -> Option<&'e Arc<Endpoint>> {
        let eps = &set.routable;
        let picked = match eps.len() {
            0 => return None,
            1 => 0,
            n => {
                let (a, b) = two_candidates(n, &set.table);
                let (fa, fb) = (eps[a].in_flight(), eps[b].in_flight());
                // Random ties: candidate order must not favour anyone.
                if fb < fa || (fb == fa && fastrand::bool()) {
                    b
                } else {
                    a
                }
            }
        };
        avoiding(set, picked, ctx)
    }
}
