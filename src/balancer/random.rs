//! Weighted random: an O(1) alias-table draw per pick.

use super::{avoiding, AliasTable, Balancer, PickContext, Table};
use crate::cluster::{Endpoint, EndpointSet};
use std::sync::Arc;

pub struct Random;

impl Balancer for Random {
    fn prepare(&self, _endpoints: &[Arc<Endpoint>], weights: &[f64]) -> Table {
        if weights.is_empty() {
            Table::None
        } else {
            Table::Alias(AliasTable::new(weights))
        }
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
