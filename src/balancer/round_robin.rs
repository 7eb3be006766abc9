//! Round robin over the healthy endpoints, ignoring weights: one relaxed atomic increment per
//! pick.

use super::{Balancer, PickContext};
use crate::cluster::Endpoint;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick<'e>(
        &self,
        endpoints: &'e [Arc<Endpoint>],
        ctx: &PickContext<'_>,
    ) -> Option<&'e Arc<Endpoint>> {
        if endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ep = &endpoints[n % endpoints.len()];
        match ctx.avoid {
            Some(avoid) if endpoints.len() > 1 && std::ptr::eq(ep.as_ref(), avoid) => {
                Some(&endpoints[(n + 1) % endpoints.len()])
            }
            _ => Some(ep),
        }
    }
}
