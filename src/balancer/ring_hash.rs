//! Consistent hashing on a ketama-style ring: each endpoint owns points on a 64-bit ring in
//! proportion to its weight, named after its address, and a request goes to the first point at
//! or after its key's hash. Removing one of N endpoints moves only the keys it owned (about
//! 1/N); keys of the others stay where they were. Slow start does not apply (it would move keys).

use super::{avoiding, Balancer, PickContext, Table};
use crate::endpoint::Endpoint;
use crate::hash::hash_key;
use std::sync::Arc;

/// `ring_hash`: consistent hashing on the request's `hash_on` key (random without one).
pub struct RingHash;

/// Ring points per unit of weight, and the cap on the whole ring (16 bytes a point).
const POINTS_PER_WEIGHT: u64 = 160;
const MAX_POINTS: u64 = 1 << 18;

/// A consistent-hash ring: virtual nodes per endpoint, sorted by hash.
pub struct Ring {
    /// (point, index into `routable`), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring over `endpoints`, with virtual nodes in proportion to their weights.
    pub fn new(endpoints: &[Arc<Endpoint>]) -> Ring {
        let total: u64 = endpoints.iter().map(|e| e.weight().max(1) as u64).sum();
        let per_weight = (MAX_POINTS / total.max(1)).clamp(1, POINTS_PER_WEIGHT);
        let mut points = Vec::with_capacity((total * per_weight) as usize);
        let mut name = String::new();
        for (i, e) in endpoints.iter().enumerate() {
            for k in 0..e.weight().max(1) as u64 * per_weight {
                name.clear();
                use std::fmt::Write;
                let _ = write!(name, "{}-{k}", e.label); // writing to a String cannot fail
                points.push((hash_key(name.as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The index of the endpoint owning `hash` (the first node at or after it), `None` when empty.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|(p, _)| *p < hash);
        Some(self.points[i % self.points.len()].1 as usize)
    }
}

impl Balancer for RingHash {
    fn prepare(&self, endpoints: &[Arc<Endpoint>], _weights: &[f64]) -> Table {
        Table::Ring(Ring::new(endpoints))
    }

    fn pick<'e>(
        &self,
        routable: &'e [Arc<Endpoint>],
        table: &Table,
        ctx: &PickContext<'_>,
    ) -> Option<&'e Arc<Endpoint>> {
        let n = routable.len();
        if n == 0 {
            return None;
        }
        let picked = match (table, ctx.hash) {
            (Table::Ring(r), Some(h)) => r.lookup(h).unwrap_or(0),
            // No key on this request: any endpoint will do.
            _ => fastrand::usize(..n),
        };
        avoiding(routable, picked, ctx)
    }
}
