//! Whole-file semantic checks that serde cannot express: names unique and resolvable,
//! addresses and regexes that parse, values in range, keys that only fit one protocol.
//! Every problem is collected (not just the first) with its key path.

use super::model::*;
use super::units::split_host_port;
use std::collections::HashSet;
use std::net::SocketAddr;

/// One problem, located by key path; `config::load` adds file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn unsupported(&mut self, path: impl Into<String>, what: &str) {
        self.push(
            path,
            format!("{what} is not supported by this version of outrigger yet"),
        );
    }
}

pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    if cfg.admin.address.parse::<SocketAddr>().is_err() {
        c.push(
            "admin.address",
            format!(
                "{:?} is not an IP address with a port (e.g. 127.0.0.1:9901)",
                cfg.admin.address
            ),
        );
    }
    if cfg.listeners.is_empty() {
        c.push("listeners", "at least one listener is required");
    }
    let cluster_names: HashSet<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
    // PROXY headers describe one client connection; pooled HTTP connections carry many.
    let http_clusters: HashSet<&str> = cfg
        .listeners
        .iter()
        .filter(|l| l.protocol == ListenerProtocol::Http)
        .flat_map(|l| {
            l.routes
                .iter()
                .flat_map(|r| {
                    r.cluster
                        .iter()
                        .chain(r.weighted_clusters.iter().map(|w| &w.cluster))
                })
                .chain(l.cluster.iter())
        })
        .map(String::as_str)
        .collect();
    for (i, cl) in cfg.clusters.iter().enumerate() {
        if cl.tls.is_some()
            && !http_clusters.contains(cl.name.as_str())
            && cfg.listeners.iter().any(|l| {
                l.protocol == ListenerProtocol::Tcp
                    && (l.cluster.as_deref() == Some(&cl.name)
                        || l.routes
                            .iter()
                            .any(|r| r.cluster.as_deref() == Some(&cl.name)))
            })
        {
            c.unsupported(
                format!("clusters[{i}].tls"),
                "TLS origination from a tcp listener",
            );
        }
        if cl.send_proxy_protocol.is_some() && http_clusters.contains(cl.name.as_str()) {
            c.push(
                format!("clusters[{i}].send_proxy_protocol"),
                "applies to clusters of tcp listeners only (HTTP upstream connections are pooled across clients)",
            );
        }
    }
    let mut seen = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        check_name(&mut c, &format!("{p}.name"), &l.name);
        if !seen.insert(l.name.as_str()) {
            c.push(
                format!("{p}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        match l.address.parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() != 0 && !addrs.insert(a) {
                    c.push(
                        format!("{p}.address"),
                        format!("address {a} is used by another listener"),
                    );
                }
            }
            Err(_) => c.push(
                format!("{p}.address"),
                format!(
                    "{:?} is not an IP address with a port (e.g. 0.0.0.0:15001)",
                    l.address
                ),
            ),
        }
        check_listener(&mut c, &p, l, &cluster_names);
    }
    let mut seen = HashSet::new();
    for (i, cl) in cfg.clusters.iter().enumerate() {
        let p = format!("clusters[{i}]");
        check_name(&mut c, &format!("{p}.name"), &cl.name);
        if !seen.insert(cl.name.as_str()) {
            c.push(
                format!("{p}.name"),
                format!("duplicate cluster name {:?}", cl.name),
            );
        }
        check_cluster(&mut c, &p, cl);
    }
    c.problems
}

fn check_name(c: &mut Checker, path: &str, name: &str) {
    if name.is_empty() {
        c.push(path, "must not be empty");
    } else if !name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
    {
        c.push(
            path,
            format!("{name:?} may only contain letters, digits, '_', '-' and '.'"),
        );
    }
}

fn check_cluster_ref(c: &mut Checker, path: &str, name: &str, clusters: &HashSet<&str>) {
    if !clusters.contains(name) {
        c.push(path, format!("no cluster named {name:?}"));
    }
}

fn check_listener(c: &mut Checker, p: &str, l: &ListenerConfig, clusters: &HashSet<&str>) {
    if let Some(name) = &l.cluster {
        check_cluster_ref(c, &format!("{p}.cluster"), name, clusters);
    }
    if let Some(tls) = &l.tls {
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
                if !matches!(proto.as_str(), "h2" | "http/1.1")
                    && l.protocol == ListenerProtocol::Http
                {
                    c.push(
                        format!("{p}.tls.alpn"),
                        format!("{proto:?}: an http listener speaks h2 and http/1.1"),
                    );
                }
            }
        }
    }
    if let Some(al) = &l.access_log {
        if l.protocol == ListenerProtocol::Tcp {
            c.unsupported(format!("{p}.access_log"), "access logging on tcp listeners");
        }
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
        ListenerProtocol::Tcp => {
            if l.cluster.is_none() && l.routes.is_empty() {
                c.push(
                    format!("{p}.cluster"),
                    "a tcp listener needs a cluster (or routes by sni)",
                );
            }
            if !(1..=10).contains(&l.connect_attempts) {
                c.push(format!("{p}.connect_attempts"), "must be between 1 and 10");
            }
            if lim.http2_max_concurrent_streams == 0 {
                c.push(
                    format!("{p}.limits.http2_max_concurrent_streams"),
                    "must be at least 1",
                );
            }
            if !(1..=1024).contains(&lim.buffer_kb) {
                c.push(
                    format!("{p}.limits.buffer_kb"),
                    "must be between 1 and 1024",
                );
            }
            for (j, r) in l.routes.iter().enumerate() {
                let rp = format!("{p}.routes[{j}]");
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
                        rp.clone(),
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
        }
        ListenerProtocol::Http => {
            if l.accept_proxy_protocol {
                c.push(
                    format!("{p}.accept_proxy_protocol"),
                    "only tcp listeners accept the PROXY protocol",
                );
            }
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

fn check_route(c: &mut Checker, p: &str, r: &RouteConfig, clusters: &HashSet<&str>) {
    let m = &r.matcher;
    let path_kinds = [
        m.path.is_some(),
        m.path_prefix.is_some(),
        m.path_regex.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if path_kinds > 1 {
        c.push(
            format!("{p}.match"),
            "use only one of path, path_prefix and path_regex",
        );
    }
    for (key, v) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if let Some(v) = v {
            if !v.starts_with('/') {
                c.push(
                    format!("{p}.match.{key}"),
                    format!("{v:?} must start with '/'"),
                );
            }
        }
    }
    if let Some(re) = &m.path_regex {
        if let Err(e) = regex::Regex::new(re) {
            c.push(
                format!("{p}.match.path_regex"),
                format!("invalid regex: {}", e.to_string().replace('\n', " ")),
            );
        }
    }
    if let Some(method) = &m.method {
        if http::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
            c.push(
                format!("{p}.match.method"),
                format!("{method:?} is not an HTTP method"),
            );
        }
    }
    if let Some(host) = &m.host {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty() || bare.contains('*') || bare.contains('/') {
            c.push(
                format!("{p}.match.host"),
                format!("{host:?} must be a host name or \"*.suffix\""),
            );
        }
    }
    for name in m.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.push(
                format!("{p}.match.headers"),
                format!("{name:?} is not a header name"),
            );
        }
    }
    if m.sni.is_some() {
        c.push(
            format!("{p}.match.sni"),
            "sni matches only on tcp listeners",
        );
    }
    match (&r.cluster, r.weighted_clusters.is_empty()) {
        (Some(_), false) => c.push(
            p.to_string(),
            "use either cluster or weighted_clusters, not both",
        ),
        (None, true) => c.push(p.to_string(), "a route needs cluster or weighted_clusters"),
        (Some(name), true) => check_cluster_ref(c, &format!("{p}.cluster"), name, clusters),
        (None, false) => {
            for (k, w) in r.weighted_clusters.iter().enumerate() {
                let wp = format!("{p}.weighted_clusters[{k}]");
                check_cluster_ref(c, &format!("{wp}.cluster"), &w.cluster, clusters);
                if w.weight == 0 {
                    c.push(format!("{wp}.weight"), "must be greater than 0");
                }
            }
        }
    }
    if let Some(rw) = &r.rewrite {
        if !rw.path_prefix.starts_with('/') {
            c.push(
                format!("{p}.rewrite.path_prefix"),
                format!("{:?} must start with '/'", rw.path_prefix),
            );
        }
        if m.path_prefix.is_none() && m.path.is_none() {
            c.push(
                format!("{p}.rewrite.path_prefix"),
                "rewrite.path_prefix needs match.path_prefix or match.path to replace",
            );
        }
    }
    for (name, value) in &r.request_headers_add {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.push(
                format!("{p}.request_headers_add"),
                format!("{name:?} is not a header name"),
            );
        }
        if http::HeaderValue::from_str(value).is_err() {
            c.push(
                format!("{p}.request_headers_add.{name}"),
                "is not a valid header value",
            );
        }
    }
    if let Some(rt) = &r.retries {
        let rp = format!("{p}.retries");
        if rt.attempts > 10 {
            c.push(format!("{rp}.attempts"), "must be at most 10");
        }
        if rt.on.is_empty() {
            c.push(format!("{rp}.on"), "list at least one condition");
        }
        if rt.budget_percent.is_some_and(|b| b > 1000) {
            c.push(format!("{rp}.budget_percent"), "must be between 0 and 1000");
        }
        if rt.per_try_timeout.is_some_and(|t| t.is_zero()) {
            c.push(format!("{rp}.per_try_timeout"), "must be greater than 0s");
        }
        if rt.backoff_base.is_zero() || rt.backoff_max.get() < rt.backoff_base.get() {
            c.push(
                format!("{rp}.backoff_max"),
                "backoff_base must be > 0s and backoff_max at least backoff_base",
            );
        }
        if rt.max_body_kb > 16 * 1024 {
            c.push(format!("{rp}.max_body_kb"), "must be at most 16384");
        }
    }
    if let Some(rl) = &r.rate_limit {
        if rl.requests_per_second == 0 {
            c.push(
                format!("{p}.rate_limit.requests_per_second"),
                "must be at least 1",
            );
        }
        if rl.burst == Some(0) {
            c.push(format!("{p}.rate_limit.burst"), "must be at least 1");
        }
    }
}

fn check_cluster(c: &mut Checker, p: &str, cl: &ClusterConfig) {
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
    if cl.endpoints.is_empty() && cl.discovery.is_none() {
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
    }
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
        let hp = format!("{p}.health_check");
        let kinds = hc.http.is_some() as u8 + hc.tcp.is_some() as u8 + hc.grpc.is_some() as u8;
        if kinds != 1 {
            c.push(hp.clone(), "set exactly one of http, tcp or grpc");
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

fn discovery(c: &mut Checker, p: &str, d: &super::DiscoveryConfig) {
    let sources = [d.dns.is_some(), d.dns_srv.is_some(), d.file.is_some()]
        .iter()
        .filter(|s| **s)
        .count();
    if sources != 1 {
        c.push(p.to_string(), "set exactly one of dns, dns_srv or file");
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
        if super::units::parse_resolver(r).is_none() {
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
