//! Load-balancing policies. A balancer is a plain trait over the routable endpoints of a
//! cluster's published set and the table it prepared for them (Pingora/Sōzu style rather than `tower::balance`), so the HTTP and TCP paths
//! share it. Whatever a policy needs per set (a smooth-WRR schedule, an alias table for
//! weighted sampling, a hash ring) is built by `prepare` when the set is published; a pick
//! reads it with at most an atomic increment and a thread-local random draw: no lock, no
//! allocation.

mod alias;
mod least_latency;
mod least_request;
mod random;
mod ring_hash;
mod round_robin;
mod weighted_round_robin;

pub use alias::AliasTable;
pub use least_latency::LeastLatency;
pub use least_request::LeastRequest;
pub use random::Random;
pub use ring_hash::{Ring, RingHash};
pub use round_robin::RoundRobin;
pub use weighted_round_robin::{smooth_schedule, WeightedRoundRobin};

use crate::config::{ClusterConfig, LbPolicy};
use crate::endpoint::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a pick may take into account beyond the endpoints themselves.
#[derive(Default, Clone, Copy)]
pub struct PickContext<'a> {
    /// A hash of the request's affinity key (ring_hash); `None` picks at random.
    pub hash: Option<u64>,
    /// An endpoint to avoid if any other is available (a retry after it failed).
    pub avoid: Option<&'a Endpoint>,
    /// Where a captured connection was going (`original_dst` clusters pick exactly that).
    pub original_dst: Option<std::net::SocketAddr>,
}

/// Per-set state a policy precomputes when the set is published.
#[derive(Default)]
pub enum Table {
    /// No table: the policy picks from the endpoints alone.
    #[default]
    None,
    /// Indices into `routable`, one cycle of a weighted schedule.
    Schedule(Vec<u32>),
    /// Weighted sampling over `routable`.
    Alias(AliasTable),
    /// Consistent-hash ring over `routable`.
    Ring(Ring),
}

/// A load-balancing policy: precomputes a table per published endpoint set, then picks over it.
pub trait Balancer: Send + Sync + 'static {
    /// Builds the table for a new set. `weights[i]` is the effective weight of
    /// `endpoints[i]`: the configured weight scaled by slow start.
    fn prepare(&self, endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table;

    /// Picks one of `routable`; `None` only when it is empty.
    fn pick<'e>(
        &self,
        routable: &'e [Arc<Endpoint>],
        table: &Table,
        ctx: &PickContext<'_>,
    ) -> Option<&'e Arc<Endpoint>>;
}

/// The balancer for a cluster's `lb` policy.
pub fn new(cfg: &ClusterConfig) -> Box<dyn Balancer> {
    match cfg.lb {
        LbPolicy::RoundRobin => Box::new(RoundRobin::default()),
        LbPolicy::WeightedRoundRobin => Box::new(WeightedRoundRobin::default()),
        LbPolicy::Random => Box::new(Random),
        LbPolicy::LeastRequest => Box::new(LeastRequest),
        LbPolicy::LeastLatency => Box::new(LeastLatency),
        LbPolicy::RingHash => Box::new(RingHash),
    }
}

/// Default decay time of the least_latency EWMA.
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);

/// The two P2C candidates among `n ≥ 2` endpoints. With equal weights: two distinct ones,
/// uniformly (classic P2C). With unequal weights (configured, or slow start ramping): two
/// independent draws by weight. Distinct weighted pairs would put a lone light endpoint into
/// nearly every pair, and its short queue would then win it a flood of traffic; independent
/// draws give it its weight share when queues are level, and at most about twice that.
fn two_candidates(n: usize, table: &Table) -> (usize, usize) {
    match table {
        Table::Alias(a) if a.len() == n => (a.sample(), a.sample()),
        _ => {
            let first = fastrand::usize(..n);
            (first, (first + 1 + fastrand::usize(..n - 1)) % n)
        }
    }
}

/// The next position of a rotation (round robin, or a weighted schedule when the set carries
/// one). A retry (something to avoid) reads the position without moving it: otherwise every
/// failure would shift the rotation and a dead endpoint would start every request.
fn rotate<'e>(
    next: &AtomicUsize,
    routable: &'e [Arc<Endpoint>],
    table: &Table,
    ctx: &PickContext<'_>,
) -> Option<&'e Arc<Endpoint>> {
    let n = routable.len();
    if n == 0 {
        return None;
    }
    let i = if ctx.avoid.is_some() {
        next.load(Ordering::Relaxed)
    } else {
        next.fetch_add(1, Ordering::Relaxed)
    };
    let picked = match table {
        Table::Schedule(s) if !s.is_empty() => s[i % s.len()] as usize,
        _ => i % n,
    };
    avoiding(routable, picked, ctx)
}

/// Power of two choices: two candidates (see `two_candidates`), and `prefer_second(a, b)`
/// decides between them. Ties should be broken at random by the caller's rule so that
/// candidate order favours no one.
fn p2c<'e>(
    routable: &'e [Arc<Endpoint>],
    table: &Table,
    ctx: &PickContext<'_>,
    prefer_second: impl Fn(&Endpoint, &Endpoint) -> bool,
) -> Option<&'e Arc<Endpoint>> {
    let eps = routable;
    let picked = match eps.len() {
        0 => return None,
        1 => 0,
        n => {
            let (a, b) = two_candidates(n, table);
            if prefer_second(&eps[a], &eps[b]) {
                b
            } else {
                a
            }
        }
    };
    avoiding(routable, picked, ctx)
}

/// An alias table when the weights differ; equal weights need none.
fn weighted_table(weights: &[f64]) -> Table {
    match weights.first() {
        Some(w0) if weights.iter().any(|w| w != w0) => Table::Alias(AliasTable::new(weights)),
        _ => Table::None,
    }
}

/// Applies `ctx.avoid`: another endpoint when the picked one is to be avoided and there is one.
fn avoiding<'e>(
    routable: &'e [Arc<Endpoint>],
    picked: usize,
    ctx: &PickContext<'_>,
) -> Option<&'e Arc<Endpoint>> {
    let eps = routable;
    match ctx.avoid {
        Some(avoid) if eps.len() > 1 && std::ptr::eq(eps[picked].as_ref(), avoid) => {
            eps.get((picked + 1) % eps.len())
        }
        _ => eps.get(picked),
    }
}
