//! Checks of one cluster: balancing, endpoints, health, and connection policies.

use super::Checker;
use crate::config::model::*;
use crate::config::units::split_host_port;
use std::collections::HashSet;

pub(super) fn check_cluster(c: &mut Checker, p: &str, cl: &ClusterConfig) {
    check_hash_on(c, p, cl);
    check_endpoints(c, p, cl);
    if cl.connect_timeout.is_zero() {
        c.push(format!("{p}.connect_timeout"), "must be greater than 0s");
    }
    if cl.panic_threshold > 100 {
        c.push(format!("{p}.panic_threshold"), "is a percentage: 0 to 100");
    }
    if cl.ewma_decay.is_zero() {
        c.push(format!("{p}.ewma_decay"), "must be greater than 0s");
    }
    if let Some(hc) = &cl.health_check {
        check_health(c, &format!("{p}.health_check"), hc);
    }
    check_ejection_and_ramp(c, p, cl);
    if let Some(d) = &cl.discovery {
        discovery(c, &format!("{p}.discovery"), d);
    }
    if cl.pool.http2_max_connections_per_endpoint == 0 {
        c.push(
            format!("{p}.pool.http2_max_connections_per_endpoint"),
            "must be at least 1",
        );
    }
    if cl.pool.http2_max_streams_per_connection == 0 {
        c.push(
            format!("{p}.pool.http2_max_streams_per_connection"),
            "must be at least 1",
        );
    }
    if let Some(t) = &cl.tls {
        if t.cert.is_some() != t.key.is_some() {
            c.push(format!("{p}.tls.cert"), "cert and key go together");
        }
    }
    if let Some(cb) = &cl.circuit_breaker {
        for (k, v) in [
            ("max_connections", cb.max_connections),
            ("max_pending_requests", cb.max_pending_requests),
            ("max_requests", cb.max_requests),
        ] {
            if v == 0 {
                c.push(format!("{p}.circuit_breaker.{k}"), "must be at least 1");
            }
        }
    }
}

fn check_hash_on(c: &mut Checker, p: &str, cl: &ClusterConfig) {
    match (&cl.hash_on, cl.lb) {
        (Some(_), lb) if lb != LbPolicy::RingHash => c.push(
            format!("{p}.hash_on"),
            "hash_on only applies to lb: ring_hash",
        ),
        (None, LbPolicy::RingHash) => c.push(
            format!("{p}.hash_on"),
            "lb: ring_hash needs hash_on (header, cookie or source_ip)",
        ),
        (Some(h), _) => {
            let kinds = h.header.is_some() as u8 + h.cookie.is_some() as u8 + h.source_ip as u8;
            if kinds != 1 {
                c.push(
                    format!("{p}.hash_on"),
                    "set exactly one of header, cookie or source_ip: true",
                );
            }
            if let Some(name) = &h.header {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    c.push(
                        format!("{p}.hash_on.header"),
                        format!("{name:?} is not a header name"),
                    );
                }
            }
        }
        (None, _) => {}
    }
}

fn check_endpoints(c: &mut Checker, p: &str, cl: &ClusterConfig) {
    if cl.endpoints.is_empty() && cl.discovery.is_none() && cl.original_dst.is_none() {
        c.push(
            format!("{p}.endpoints"),
            "a cluster needs at least one endpoint (or discovery)",
        );
    }
    let mut seen = HashSet::new();
    for (k, e) in cl.endpoints.iter().enumerate() {
        let ep = format!("{p}.endpoints[{k}]");
        if let Err(msg) = split_host_port(&e.address) {
            c.push(format!("{ep}.address"), msg);
        }
        if !seen.insert(e.address.as_str()) {
            c.push(
                format!("{ep}.address"),
                format!("duplicate endpoint {:?}", e.address),
            );
        }
        if e.weight == 0 {
            c.push(format!("{ep}.weight"), "must be greater than 0");
        } else if e.weight > 10_000 {
            c.push(format!("{ep}.weight"), "must be at most 10000");
        }
        if e.priority > crate::config::MAX_PRIORITY {
            c.push(format!("{ep}.priority"), "must be at most 127");
        }
    }
}

fn check_health(c: &mut Checker, hp: &str, hc: &HealthCheckConfig) {
    let kinds = hc.http.is_some() as u8 + hc.tcp.is_some() as u8 + hc.grpc.is_some() as u8;
    if kinds != 1 {
        c.push(hp.to_string(), "set exactly one of http, tcp or grpc");
    }
    if hc.interval.is_zero() {
        c.push(format!("{hp}.interval"), "must be greater than 0s");
    }
    if hc.timeout.is_zero() {
        c.push(format!("{hp}.timeout"), "must be greater than 0s");
    }
    if hc.healthy_threshold == 0 {
        c.push(format!("{hp}.healthy_threshold"), "must be at least 1");
    }
    if hc.unhealthy_threshold == 0 {
        c.push(format!("{hp}.unhealthy_threshold"), "must be at least 1");
    }
    if let Some(h) = &hc.http {
        if !h.path.starts_with('/') {
            c.push(
                format!("{hp}.http.path"),
                format!("{:?} must start with '/'", h.path),
            );
        }
        if h.expected_statuses.is_empty() {
            c.push(
                format!("{hp}.http.expected_statuses"),
                "must list at least one status",
            );
        }
        for s in &h.expected_statuses {
            if !(100..=599).contains(s) {
                c.push(
                    format!("{hp}.http.expected_statuses"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
    }
}

fn check_ejection_and_ramp(c: &mut Checker, p: &str, cl: &ClusterConfig) {
    if let Some(od) = &cl.outlier_detection {
        let op = format!("{p}.outlier_detection");
        if od.consecutive_failures == 0 {
            c.push(format!("{op}.consecutive_failures"), "must be at least 1");
        }
        if od.base_ejection_time.is_zero() {
            c.push(
                format!("{op}.base_ejection_time"),
                "must be greater than 0s",
            );
        }
        if od.max_ejection_percent > 100 {
            c.push(
                format!("{op}.max_ejection_percent"),
                "is a percentage: 0 to 100",
            );
        }
    }
    if let Some(ss) = &cl.slow_start {
        if ss.window.is_zero() {
            c.push(format!("{p}.slow_start.window"), "must be greater than 0s");
        }
        if !(1..=100).contains(&ss.min_weight_percent) {
            c.push(
                format!("{p}.slow_start.min_weight_percent"),
                "must be between 1 and 100",
            );
        }
        if cl.lb == LbPolicy::RingHash {
            c.push(
                format!("{p}.slow_start"),
                "slow_start does not apply to lb: ring_hash (ramping would move keys between endpoints)",
            );
        }
    }
}

fn discovery(c: &mut Checker, p: &str, d: &DiscoveryConfig) {
    let sources = [
        d.dns.is_some(),
        d.dns_srv.is_some(),
        d.file.is_some(),
        d.eds.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        c.push(
            p.to_string(),
            "set exactly one of dns, dns_srv, file or eds",
        );
    }
    if d.eds.as_deref() == Some("") {
        c.push(format!("{p}.eds"), "must name an EDS service");
    }
    if let Some(dns) = &d.dns {
        match split_host_port(dns) {
            Err(msg) => c.push(format!("{p}.dns"), msg),
            Ok((host, _)) if host.parse::<std::net::IpAddr>().is_ok() => c.push(
                format!("{p}.dns"),
                format!("{dns:?} is an address, not a name to resolve; list it under endpoints"),
            ),
            Ok(_) => {}
        }
    }
    if let Some(srv) = &d.dns_srv {
        if srv.is_empty() || srv.contains(':') || srv.contains(char::is_whitespace) {
            c.push(
                format!("{p}.dns_srv"),
                format!("{srv:?} is not a DNS name (e.g. _http._tcp.web.service.consul)"),
            );
        }
    }
    if d.file.as_deref() == Some("") {
        c.push(format!("{p}.file"), "must name a file");
    }
    if let Some(r) = d.refresh {
        if r.get().is_zero() {
            c.push(format!("{p}.refresh"), "must be more than 0");
        }
    }
    if !d.resolvers.is_empty() && d.dns.is_none() && d.dns_srv.is_none() {
        c.push(
            format!("{p}.resolvers"),
            "resolvers apply to dns and dns_srv discovery only",
        );
    }
    for (k, r) in d.resolvers.iter().enumerate() {
        if crate::config::units::parse_resolver(r).is_none() {
            c.push(
                format!("{p}.resolvers[{k}]"),
                format!("{r:?} is not an IP address or IP:port"),
            );
        }
    }
    if d.empty_confirmations == 0 {
        c.push(format!("{p}.empty_confirmations"), "must be at least 1");
    }
}
