//! The set of a cluster's endpoints that balancers pick from, rebuilt and republished whole
//! whenever membership, health, ejection, priority or slow-start weights change.
//!
//! Priority levels follow Envoy: a level's health is its share of routable endpoints times
//! the overprovisioning factor 1.4, capped at 100%. Level 0 takes as much of the traffic as
//! its health, the next level as much of the rest as its own health, and so on; when the
//! levels' health adds up to less than 100%, their shares are scaled up to fill it. So level
//! 0 keeps all traffic until fewer than 5 in 7 of its endpoints are routable, then spills.

use crate::balancer::{Balancer, Table};
use crate::endpoint::Endpoint;
use std::sync::Arc;
use std::time::Duration;

/// Traffic shares are in parts of this.
const SHARES: u32 = 10_000;
/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING_PERCENT: usize = 140;

/// What balancers read, published as a whole through the cluster's `ArcSwap` whenever
/// membership, health, ejection or slow-start weights change.
#[derive(Default)]
pub struct EndpointSet {
    /// Every endpoint of the cluster.
    pub all: Vec<Arc<Endpoint>>,
    /// What picks choose from: the routable endpoints of the first priority level with a
    /// share of traffic (healthy, not ejected, not held out), or all of them in panic mode.
    pub routable: Vec<Arc<Endpoint>>,
    /// Fewer than the panic threshold were routable, so `routable` is everything.
    pub panic: bool,
    /// The policy's precomputed table over `routable`.
    pub table: Table,
    /// Some endpoint is still ramping up: republish again soon.
    pub ramping: bool,
    /// The share of traffic (of `SHARES`) `routable` takes; the rest spills to `spill`.
    pub share: u32,
    /// Later priority levels that take the rest, in order. Empty in the usual case (one
    /// level, or a first level healthy enough to take everything).
    pub spill: Vec<Level>,
}

/// A later priority level taking part of the traffic.
pub struct Level {
    /// Its routable endpoints.
    pub routable: Vec<Arc<Endpoint>>,
    /// The policy's table over them.
    pub table: Table,
    /// A draw below this (of `SHARES`, cumulative with the levels before) lands here.
    pub upto: u32,
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
    /// Builds a set over `all` with its routable subsets by priority, weights and the
    /// balancer's tables.
    pub fn build(
        all: Vec<Arc<Endpoint>>,
        balancer: &dyn Balancer,
        rules: SetRules,
        now_ns: u64,
    ) -> EndpointSet {
        let routable_count = all.iter().filter(|e| is_routable(e)).count();
        let panic = rules.panic_threshold > 0
            && routable_count * 100 < rules.panic_threshold as usize * all.len();
        // Out of rotation means no weight; the routable ones get theirs below.
        for e in &all {
            e.set_effective_weight(0.0);
        }
        let mut ramping = false;
        let mut prepare = |routable: Vec<Arc<Endpoint>>| {
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
            (routable, table)
        };
        let mut levels: Vec<(Vec<Arc<Endpoint>>, u32)> = if panic {
            vec![(all.clone(), SHARES)]
        } else {
            shares(&all)
        };
        let (first, share) = if levels.is_empty() {
            (Vec::new(), SHARES)
        } else {
            levels.remove(0)
        };
        let (routable, table) = prepare(first);
        let mut upto = share;
        let spill = levels
            .into_iter()
            .map(|(level, s)| {
                let (routable, table) = prepare(level);
                upto += s;
                Level {
                    routable,
                    table,
                    upto,
                }
            })
            .collect();
        EndpointSet {
            all,
            routable,
            panic,
            table,
            ramping,
            share,
            spill,
        }
    }

    /// The endpoints (and table) a pick chooses from: the first level, or a later one for
    /// its share of draws. The draw is the request's hash when it has one, so a hashed key
    /// lands on the same level each time.
    pub fn level(&self, hash: Option<u64>) -> (&[Arc<Endpoint>], &Table) {
        if self.spill.is_empty() {
            return (&self.routable, &self.table);
        }
        let draw = match hash {
            Some(h) => (h % SHARES as u64) as u32,
            None => fastrand::u32(..SHARES),
        };
        if draw < self.share {
            return (&self.routable, &self.table);
        }
        let level = self
            .spill
            .iter()
            .find(|l| draw < l.upto)
            .or(self.spill.last())
            .expect("spill is not empty");
        (&level.routable, &level.table)
    }

    /// Whether picks may choose `e` (at any level with a share of traffic).
    pub fn is_routable(&self, e: &Arc<Endpoint>) -> bool {
        std::iter::once(&self.routable)
            .chain(self.spill.iter().map(|l| &l.routable))
            .any(|r| r.iter().any(|x| Arc::ptr_eq(x, e)))
    }
}

fn is_routable(e: &Endpoint) -> bool {
    e.is_healthy() && !e.is_held_out() && e.ejected_until().is_none()
}

/// The routable endpoints of each priority level that gets traffic, with its share.
fn shares(all: &[Arc<Endpoint>]) -> Vec<(Vec<Arc<Endpoint>>, u32)> {
    let mut by_level: std::collections::BTreeMap<u32, (usize, Vec<Arc<Endpoint>>)> =
        Default::default();
    for e in all {
        let level = by_level.entry(e.priority()).or_default();
        level.0 += 1;
        if is_routable(e) {
            level.1.push(e.clone());
        }
    }
    // A level's health, in shares: routable / size × 1.4, at most everything.
    let health: Vec<u32> = by_level
        .values()
        .map(|(size, up)| {
            (up.len() * OVERPROVISIONING_PERCENT * SHARES as usize / 100 / size) as u32
        })
        .map(|h| h.min(SHARES))
        .collect();
    let total: u32 = health.iter().sum::<u32>().min(SHARES);
    if total == 0 {
        // Nothing routable anywhere: the first level, empty (a pick finds nothing).
        return vec![(Vec::new(), SHARES)];
    }
    let mut left = SHARES;
    let mut out = Vec::new();
    for ((_, (_, up)), h) in by_level.into_iter().zip(health) {
        // Scaled up when the levels together are short of 100%.
        let share = (h as u64 * SHARES as u64 / total as u64) as u32;
        let share = share.min(left);
        left -= share;
        if share > 0 {
            out.push((up, share));
        }
        if left == 0 {
            break;
        }
    }
    // Rounding leaves a few shares over: the last level takes them.
    if let Some(last) = out.last_mut() {
        last.1 += left;
    }
    out
}
