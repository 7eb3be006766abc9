//! Weighted random: an O(1) alias-table draw per pick.

use super::{avoiding, weighted_table, Balancer, PickContext, Table};
use crate::endpoint::Endpoint;
use std::sync::Arc;

/// `random`: a uniformly random routable endpoint.
pub struct Random;

impl Balancer for Random {
    fn prepare(&self, _endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        weighted_table(weights)
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
        let picked = match table {
            Table::Alias(a) if a.len() == n => a.sample(),
            _ => fastrand::usize(..n),
        };
        avoiding(routable, picked, ctx)
    }
}
