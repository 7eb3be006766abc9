//! Smooth weighted round robin (nginx's algorithm, `ngx_http_upstream_get_peer`): each round
//! every endpoint's current weight grows by its weight, the largest is picked and lowered by
//! the total. The heaviest endpoint is spread out instead of picked in a burst. One cycle of
//! the sequence is precomputed per published set; a pick is one atomic increment.

use super::{rotate, Balancer, PickContext, Table};
use crate::endpoint::Endpoint;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// `weighted_round_robin`: a smooth weighted schedule over the routable endpoints.
#[derive(Default)]
pub struct WeightedRoundRobin {
    next: AtomicUsize,
}

/// Longest schedule kept per set; heavier weight sums are scaled down proportionally.
const MAX_SCHEDULE: u64 = 1 << 20;
/// Above this much work (cycle length × endpoints) the O(n) nginx step gives way to an
/// earliest-deadline-first schedule with the same proportions (Envoy's EDF scheduler).
const MAX_NGINX_WORK: u64 = 1 << 24;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Integer weights for a schedule: fractional weights (slow start) kept to 1%, reduced by
/// their gcd, scaled down if the cycle would exceed `MAX_SCHEDULE`.
fn integer_weights(weights: &[f64]) -> Vec<u64> {
    let mut w: Vec<u64> = weights
        .iter()
        .map(|w| ((w * 100.0).round() as u64).max(1))
        .collect();
    let g = w.iter().copied().fold(0, gcd).max(1);
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        let scale = MAX_SCHEDULE as f64 / total as f64;
        w.iter_mut()
            .for_each(|x| *x = ((*x as f64 * scale).round() as u64).max(1));
    }
    w
}

/// One cycle of the smooth weighted sequence over `weights` (indices into it).
pub fn smooth_schedule(weights: &[f64]) -> Vec<u32> {
    let w = integer_weights(weights);
    let total: u64 = w.iter().sum();
    let mut out = Vec::with_capacity(total as usize);
    if total.saturating_mul(w.len() as u64) <= MAX_NGINX_WORK {
        let mut current = vec![0i64; w.len()];
        for _ in 0..total {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i] as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            out.push(best as u32);
        }
    } else {
        // EDF: endpoint i's k-th turn is due at k / w_i; ties go to the lower index.
        let mut heap: BinaryHeap<Reverse<(u128, u32)>> = w
            .iter()
            .enumerate()
            .map(|(i, wi)| Reverse((deadline(1, *wi, total), i as u32)))
            .collect();
        let mut turns = vec![1u64; w.len()];
        while (out.len() as u64) < total {
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            out.push(i);
            let k = &mut turns[i as usize];
            *k += 1;
            heap.push(Reverse((deadline(*k, w[i as usize], total), i)));
        }
    }
    out
}

fn deadline(turn: u64, weight: u64, total: u64) -> u128 {
    turn as u128 * total as u128 * 1_000_000 / weight as u128
}

impl Balancer for WeightedRoundRobin {
    fn prepare(&self, _endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        Table::Schedule(smooth_schedule(weights))
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
