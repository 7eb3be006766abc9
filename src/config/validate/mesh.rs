//! Checks of the mesh keys: transparent capture, protocol detection, authorization rules, and
//! the original-destination cluster with the listeners that may use it.

use super::Checker;
use crate::config::model::*;

/// A listener's `mode`, `capture`, `detect` and `authz`.
pub(super) fn check_listener(c: &mut Checker, p: &str, l: &ListenerConfig) {
    if l.capture == CaptureMethod::Tproxy && l.mode != ListenerMode::Transparent {
        c.push(format!("{p}.capture"), "applies to mode: transparent only");
    }
    if l.detect.is_some() && l.protocol != ListenerProtocol::Detect {
        c.push(format!("{p}.detect"), "applies to protocol: detect only");
    }
    if let Some(d) = &l.detect {
        if d.timeout.is_zero() {
            c.push(format!("{p}.detect.timeout"), "must be greater than 0s");
        }
        if d.opaque_ports.contains(&0) {
            c.push(format!("{p}.detect.opaque_ports"), "ports are 1 to 65535");
        }
    }
    if l.protocol == ListenerProtocol::Detect {
        if l.cluster.is_none() {
            c.push(
                format!("{p}.cluster"),
                "a detect listener needs a cluster for what is not HTTP",
            );
        }
        if l.tls.is_some() {
            c.push(
                format!("{p}.tls"),
                "a detect listener passes TLS through as TCP; it cannot terminate it",
            );
        }
    }
    let has_client_ca = l.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if let Some(a) = &l.authz {
        check_authz(c, &format!("{p}.authz"), a, has_client_ca);
    }
    for (j, r) in l.routes.iter().enumerate() {
        if let Some(a) = &r.authz {
            check_authz(c, &format!("{p}.routes[{j}].authz"), a, has_client_ca);
            if l.protocol == ListenerProtocol::Tcp {
                c.push(
                    format!("{p}.routes[{j}].authz"),
                    "a tcp listener authorizes connections: use the listener's authz",
                );
            }
        }
    }
}

fn check_authz(c: &mut Checker, p: &str, a: &AuthzConfig, has_client_ca: bool) {
    if !has_client_ca {
        c.push(
            p.to_string(),
            "authz matches client certificate identities: the listener needs tls.client_ca",
        );
    }
    if a.allow.is_empty() && a.deny.is_empty() {
        c.push(p.to_string(), "name identities in allow or deny");
    }
    for (key, list) in [("allow", &a.allow), ("deny", &a.deny)] {
        for (k, pattern) in list.iter().enumerate() {
            let bare = pattern.strip_suffix('*').unwrap_or(pattern);
            if pattern.is_empty() || bare.contains('*') {
                c.push(
                    format!("{p}.{key}[{k}]"),
                    format!("{pattern:?}: an identity, or a prefix ending in a single *"),
                );
            }
        }
    }
}

/// A cluster's `original_dst` block and the keys it rules out.
pub(super) fn check_original_dst(c: &mut Checker, p: &str, cl: &ClusterConfig) {
    let Some(o) = &cl.original_dst else { return };
    let q = format!("{p}.original_dst");
    if o.allow.is_empty() {
        c.push(
            format!("{q}.allow"),
            "name the destination networks allowed (an open relay is never the default)",
        );
    }
    if o.ports.contains(&0) {
        c.push(format!("{q}.ports"), "ports are 1 to 65535");
    }
    if !(1..=65_536).contains(&o.max_hosts) {
        c.push(format!("{q}.max_hosts"), "must be between 1 and 65536");
    }
    for (key, set) in [
        ("endpoints", !cl.endpoints.is_empty()),
        ("discovery", cl.discovery.is_some()),
        ("health_check", cl.health_check.is_some()),
        ("outlier_detection", cl.outlier_detection.is_some()),
        ("slow_start", cl.slow_start.is_some()),
        ("hash_on", cl.hash_on.is_some()),
    ] {
        if set {
            c.push(
                format!("{p}.{key}"),
                "an original_dst cluster's endpoint is each connection's destination",
            );
        }
    }
}

/// An original_dst cluster forwards to where a captured connection was going: a listener
/// that is not transparent has no such destination (its own address would loop).
pub(super) fn check_original_dst_uses(c: &mut Checker, cfg: &Config) {
    for (i, l) in cfg.listeners.iter().enumerate() {
        if l.mode == ListenerMode::Transparent {
            continue;
        }
        let named = l
            .routes
            .iter()
            .flat_map(|r| {
                r.cluster
                    .iter()
                    .chain(r.weighted_clusters.iter().map(|w| &w.cluster))
            })
            .chain(l.cluster.iter());
        for name in named {
            if cfg
                .clusters
                .iter()
                .any(|cl| &cl.name == name && cl.original_dst.is_some())
            {
                c.push(
                    format!("listeners[{i}]"),
                    format!("cluster {name:?} is original_dst: only a transparent listener has an original destination"),
                );
            }
        }
    }
}
