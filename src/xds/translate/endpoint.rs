//! EDS: `ClusterLoadAssignment` → discovery targets.

use super::{fields, ignored, no_leftovers, reject, socket_address, Rejected};
use crate::endpoint::Target;
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment,
};

/// The type URL of an EDS resource.
pub const TYPE_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Envoy's `HealthStatus` values that take an endpoint out of rotation: UNHEALTHY, DRAINING,
/// TIMEOUT.
const OUT_OF_ROTATION: [i32; 3] = [2, 3, 4];

/// The endpoints of an assignment, sorted, one per address, each with its priority level.
/// Endpoints the server marks UNHEALTHY, DRAINING or TIMEOUT are held out of rotation (new
/// requests avoid them; requests in flight on them finish) but count in their level's size,
/// as in Envoy, so a level with many of them spills traffic to the next.
pub fn targets(mut la: ClusterLoadAssignment, what: &str) -> Result<Vec<Target>, Rejected> {
    let mut out = Vec::new();
    for (i, mut group) in std::mem::take(&mut la.endpoints).into_iter().enumerate() {
        let gw = format!("{what}.endpoints[{i}]");
        let priority = std::mem::take(&mut group.priority);
        if priority > crate::config::MAX_PRIORITY {
            return reject(format!(
                "{gw}.priority: {priority} is above {}",
                crate::config::MAX_PRIORITY
            ));
        }
        let zone = group
            .locality
            .take()
            .map(|l| l.zone)
            .filter(|z| !z.is_empty());
        ignored(
            &gw,
            &[
                (
                    "load_balancing_weight",
                    group.load_balancing_weight.take().is_some(),
                ),
                ("metadata", group.metadata.take().is_some()),
            ],
        );
        for (k, mut lb) in std::mem::take(&mut group.lb_endpoints)
            .into_iter()
            .enumerate()
        {
            let ew = format!("{gw}.lb_endpoints[{k}]");
            let Some(HostIdentifier::Endpoint(mut ep)) = lb.host_identifier.take() else {
                return reject(format!(
                    "{ew}: endpoint is required (named endpoints are not supported)"
                ));
            };
            let address = socket_address(&ep.address.take(), &format!("{ew}.endpoint.address"))?;
            let weight = lb.load_balancing_weight.take().map_or(1, |w| w.value);
            if !(1..=10_000).contains(&weight) {
                return reject(format!(
                    "{ew}.load_balancing_weight: {weight} is outside 1..=10000"
                ));
            }
            let health = std::mem::take(&mut lb.health_status);
            let hostname = std::mem::take(&mut ep.hostname);
            ignored(&ew, &[("metadata", lb.metadata.take().is_some())]);
            no_leftovers(&ew, &lb, fields::LB_ENDPOINT)?;
            no_leftovers(&format!("{ew}.endpoint"), &ep, fields::ENDPOINT)?;
            let host = if hostname.is_empty() {
                address.ip().to_string()
            } else {
                hostname
            };
            let mut t = Target::new(address, weight, host);
            t.zone = zone.clone();
            t.priority = priority;
            t.held_out = OUT_OF_ROTATION.contains(&health);
            out.push(t);
        }
        no_leftovers(&gw, &group, fields::LOCALITY_ENDPOINTS)?;
    }
    if let Some(policy) = la.policy.take() {
        if !policy.drop_overloads.is_empty() {
            return reject(format!("{what}.policy.drop_overloads is not supported"));
        }
        ignored(what, &[("policy", true)]);
    }
    la.cluster_name.clear();
    no_leftovers(what, &la, fields::LOAD_ASSIGNMENT)?;
    out.sort();
    out.dedup_by_key(|t| t.address);
    Ok(out)
}
