//! Weighted random: an O(1) alias-table draw per pick.

use super::{avoiding, weighted_table, Balancer, PickContext, Table};
use crate::cluster::{Endpoint, EndpointSet};
use std::sync::Arc;

pub struct Random;

impl Balancer for Random {
    fn prepare(&self, _endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        weighted_table(weights)
    }

    fn pick<'e>(&self, set: &'e EndpointSet, ctx: &PickContext<'_>) -> Option<&'e Arc<Endpoint>> {
        let n = set.routable.len();
        if n == 0 {
            return None;
        }
        let picked = match &set.table {
            Table::Alias(a) if a.len() == n => a.sample(),
            _ => fastrand::usize(..n),
        };
        avoiding(set, picked, ctx)
    }
}
