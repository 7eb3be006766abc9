//! Round robin over the routable endpoints. Weights are ignored, except while an endpoint is
//! ramping up under slow start: then the set carries a smooth weighted schedule of the ramp
//! factors, and the same counter walks that instead.

use super::{rotate, smooth_schedule, Balancer, PickContext, Table};
use crate::endpoint::Endpoint;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// `round_robin`: each routable endpoint in turn.
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn prepare(&self, endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        // Effective weight over configured weight is the slow-start factor (1 when not ramping).
        let factors: Vec<f64> = endpoints
            .iter()
            .zip(weights)
            .map(|(e, w)| w / e.weight().max(1) as f64)
            .collect();
        if factors.iter().all(|f| *f >= 1.0) {
            Table::None
        } else {
            Table::Schedule(smooth_schedule(&factors))
        }
    }

    fn pick<'e>(
        &self,
        routable: &'e [Arc<Endpoint>],
        table: &Table,
        ctx: &PickContext<'_>,
    ) -> Option<&'e Arc<Endpoint>> {
        rotate(&self.next, routable, table, ctx)
    }
}
