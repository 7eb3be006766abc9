//! Checks of one listener: its TLS, limits, and the routes its protocol allows.

use super::{check_cluster_ref, route::check_route, Checker};
use crate::config::model::*;
use std::collections::HashSet;

pub(super) fn check_listener(
    c: &mut Checker,
    p: &str,
    l: &ListenerConfig,
    clusters: &HashSet<&str>,
) {
    if let Some(name) = &l.cluster {
        check_cluster_ref(c, &format!("{p}.cluster"), name, clusters);
    }
    if let Some(tls) = &l.tls {
        check_tls(c, p, l, tls);
    }
    if let Some(al) = &l.access_log {
        if al.path.is_empty() {
            c.push(format!("{p}.access_log.path"), "use stdout or a file path");
        }
    }
    let lim = &l.limits;
    if lim.max_connections == 0 {
        c.push(format!("{p}.limits.max_connections"), "must be at least 1");
    }
    if !(1..=1024).contains(&lim.max_request_headers_kb) {
        c.push(
            format!("{p}.limits.max_request_headers_kb"),
            "must be between 1 and 1024",
        );
    }
    match l.protocol {
        ListenerProtocol::Tcp => check_tcp(c, p, l, clusters),
        ListenerProtocol::Detect => {
            check_relay(c, p, l);
            // Routes with `match.sni` take TLS connections (passed through); the others HTTP.
            for (j, r) in l.routes.iter().enumerate() {
                let rp = format!("{p}.routes[{j}]");
                if r.matcher.sni.is_some() {
                    check_tcp_route(c, &rp, r, clusters);
                } else {
                    check_route(c, &rp, r, clusters);
                }
            }
        }
        ListenerProtocol::Http => {
            if l.routes.is_empty() && l.cluster.is_none() {
                c.push(
                    format!("{p}.routes"),
                    "an http listener needs at least one route (or a default cluster)",
                );
            }
            for (j, r) in l.routes.iter().enumerate() {
                check_route(c, &format!("{p}.routes[{j}]"), r, clusters);
            }
        }
    }
}

fn check_tls(c: &mut Checker, p: &str, l: &ListenerConfig, tls: &ListenerTlsConfig) {
    if tls.crl.is_some() && tls.client_ca.is_none() {
        c.push(
            format!("{p}.tls.crl"),
            "a CRL checks client certificates: it needs client_ca",
        );
    }
    if l.protocol == ListenerProtocol::Tcp && l.routes.iter().any(|r| r.matcher.sni.is_some()) {
        c.push(format!("{p}.tls"), "sni routes pass TLS through; they cannot be combined with tls termination on the same listener");
    }
    for (k, s) in tls.sni.iter().enumerate() {
        if s.server_names.is_empty() {
            c.push(
                format!("{p}.tls.sni[{k}].server_names"),
                "list at least one name",
            );
        }
    }
    if let Some(alpn) = &tls.alpn {
        for proto in alpn {
            if !matches!(proto.as_str(), "h2" | "http/1.1") && l.protocol == ListenerProtocol::Http
            {
                c.push(
                    format!("{p}.tls.alpn"),
                    format!("{proto:?}: an http listener speaks h2 and http/1.1"),
                );
            }
        }
    }
}

fn check_tcp(c: &mut Checker, p: &str, l: &ListenerConfig, clusters: &HashSet<&str>) {
    let lim = &l.limits;
    if l.cluster.is_none() && l.routes.is_empty() {
        c.push(
            format!("{p}.cluster"),
            "a tcp listener needs a cluster (or routes by sni)",
        );
    }
    check_relay(c, p, l);
    if lim.http2_max_concurrent_streams == 0 {
        c.push(
            format!("{p}.limits.http2_max_concurrent_streams"),
            "must be at least 1",
        );
    }
    for (j, r) in l.routes.iter().enumerate() {
        check_tcp_route(c, &format!("{p}.routes[{j}]"), r, clusters);
    }
}

/// What relaying TCP needs (tcp and detect listeners).
fn check_relay(c: &mut Checker, p: &str, l: &ListenerConfig) {
    if !(1..=10).contains(&l.connect_attempts) {
        c.push(format!("{p}.connect_attempts"), "must be between 1 and 10");
    }
    if !(1..=1024).contains(&l.limits.buffer_kb) {
        c.push(
            format!("{p}.limits.buffer_kb"),
            "must be between 1 and 1024",
        );
    }
}

/// A tcp listener routes by SNI only.
fn check_tcp_route(c: &mut Checker, rp: &str, r: &RouteConfig, clusters: &HashSet<&str>) {
    let m = &r.matcher;
    let http_only = m.host.is_some()
        || m.path.is_some()
        || m.path_prefix.is_some()
        || m.path_regex.is_some()
        || m.method.is_some()
        || !m.headers.is_empty()
        || r.rewrite.is_some()
        || r.retries.is_some()
        || r.rate_limit.is_some()
        || !r.request_headers_add.is_empty()
        || !r.weighted_clusters.is_empty();
    if http_only {
        c.push(
            rp.to_string(),
            "a tcp listener's routes match only on sni and name a cluster",
        );
    }
    match &m.sni {
        None => c.push(format!("{rp}.match.sni"), "a tcp route needs match.sni"),
        Some(sni) => {
            let bare = sni.strip_prefix("*.").unwrap_or(sni);
            if bare.is_empty() || bare.contains('*') {
                c.push(
                    format!("{rp}.match.sni"),
                    format!("{sni:?} must be a server name or \"*.suffix\""),
                );
            }
        }
    }
    match &r.cluster {
        Some(name) => check_cluster_ref(c, &format!("{rp}.cluster"), name, clusters),
        None => c.push(format!("{rp}.cluster"), "a tcp route needs a cluster"),
    }
}
