//! The set of a cluster's endpoints that balancers pick from, rebuilt and republished whole
//! whenever membership, health, ejection or slow-start weights change.

use crate::balancer::{Balancer, Table};
use crate::endpoint::Endpoint;
use std::sync::Arc;
use std::time::Duration;

/// What balancers read, published as a whole through the cluster's `ArcSwap` whenever
/// membership, health, ejection or slow-start weights change.
#[derive(Default)]
pub struct EndpointSet {
    /// Every endpoint of the cluster.
    pub all: Vec<Arc<Endpoint>>,
    /// What picks choose from: healthy and not ejected, or all of them in panic mode.
    pub routable: Vec<Arc<Endpoint>>,
    /// Fewer than the panic threshold were healthy, so `routable` is everything.
    pub panic: bool,
    /// The policy's precomputed table over `routable`.
    pub table: Table,
    /// Some endpoint is still ramping up: republish again soon.
    pub ramping: bool,
}

/// How a set is derived from endpoint state.
#[derive(Clone, Copy)]
pub struct SetRules {
    /// Slow start: (window, starting share of weight).
    pub slow_start: Option<(Duration, f64)>,
    /// Percent; 0 disables panic mode.
    pub panic_threshold: u32,
}

impl EndpointSet {
    /// Builds a set over `all` with its routable subset, weights and the balancer's table.
    pub fn build(
        all: Vec<Arc<Endpoint>>,
        balancer: &dyn Balancer,
        rules: SetRules,
        now_ns: u64,
    ) -> EndpointSet {
        let routable: Vec<Arc<Endpoint>> = all
            .iter()
            .filter(|e| e.is_healthy() && e.ejected_until().is_none())
            .cloned()
            .collect();
        let panic = rules.panic_threshold > 0
            && routable.len() * 100 < rules.panic_threshold as usize * all.len();
        let routable = if panic { all.clone() } else { routable };
        // Out of rotation means no weight; the routable ones get theirs just below.
        for e in &all {
            e.set_effective_weight(0.0);
        }
        let mut ramping = false;
        let weights: Vec<f64> = routable
            .iter()
            .map(|e| {
                let factor = match rules.slow_start {
                    Some((window, min)) if !panic => e.ramp_factor(now_ns, window, min),
                    _ => 1.0,
                };
                ramping |= factor < 1.0;
                let w = e.weight() as f64 * factor;
                e.set_effective_weight(w);
                w
            })
            .collect();
        let table = if routable.is_empty() {
            Table::None
        } else {
            balancer.prepare(&routable, &weights)
        };
        EndpointSet {
            all,
            routable,
            panic,
            table,
            ramping,
        }
    }
}
