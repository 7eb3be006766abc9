//! Whole-file semantic checks that serde cannot express: names unique and resolvable,
//! addresses and regexes that parse, values in range, keys that only fit one protocol.
//! Every problem is collected (not just the first) with its key path.

mod cluster;
mod listener;
mod mesh;
mod route;

use super::model::*;
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

/// Every problem in `cfg`, in file order as far as the checks allow.
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
    if cfg.listeners.is_empty() && cfg.xds.is_none() {
        c.push(
            "listeners",
            "at least one listener is required (or an xds server that sends them)",
        );
    }
    if let Some(x) = &cfg.xds {
        check_xds(&mut c, cfg, x);
    } else if let Some(i) = cfg
        .clusters
        .iter()
        .position(|cl| cl.discovery.as_ref().is_some_and(|d| d.eds.is_some()))
    {
        c.push(
            format!("clusters[{i}].discovery.eds"),
            "eds needs an xds server (the top-level xds key)",
        );
    }
    check_cluster_uses(&mut c, cfg);
    mesh::check_original_dst_uses(&mut c, cfg);
    check_listeners(&mut c, cfg);
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
        cluster::check_cluster(&mut c, &p, cl);
        mesh::check_original_dst(&mut c, &p, cl);
    }
    c.problems
}

fn check_xds(c: &mut Checker, cfg: &Config, x: &XdsConfig) {
    let servers = x.server.list();
    if servers.is_empty() {
        c.push("xds.server", "name at least one host:port");
    }
    for (k, s) in servers.iter().enumerate() {
        let p = match x.server {
            OneOrMany::One(_) => "xds.server".to_string(),
            OneOrMany::Many(_) => format!("xds.server[{k}]"),
        };
        if let Err(m) = crate::config::units::split_host_port(s) {
            c.push(p, m);
        }
    }
    if x.node.id.is_empty() {
        c.push(
            "xds.node.id",
            "must not be empty (the server tells proxies apart by it)",
        );
    }
    if x.resources.is_empty() {
        c.push(
            "xds.resources",
            "name at least one of clusters, endpoints, listeners, routes",
        );
    }
    for (key, d) in [
        ("xds.initial_fetch_timeout", x.initial_fetch_timeout),
        ("xds.connect_timeout", x.connect_timeout),
        ("xds.backoff_base", x.backoff_base),
    ] {
        if d.is_zero() {
            c.push(key, "must be more than 0");
        }
    }
    if x.backoff_max.get() < x.backoff_base.get() {
        c.push("xds.backoff_max", "must be at least backoff_base");
    }
    if x.max_message_kb == 0 {
        c.push("xds.max_message_kb", "must be at least 1");
    }
    let eds = x.resources.contains(&XdsResourceType::Endpoints);
    if !eds {
        if let Some(i) = cfg
            .clusters
            .iter()
            .position(|cl| cl.discovery.as_ref().is_some_and(|d| d.eds.is_some()))
        {
            c.push(
                format!("clusters[{i}].discovery.eds"),
                "eds needs endpoints in xds.resources",
            );
        }
    }
}

/// Keys of a cluster that fit only one kind of listener using it.
fn check_cluster_uses(c: &mut Checker, cfg: &Config) {
    // PROXY headers describe one client connection; pooled HTTP connections carry many.
    let http_clusters: HashSet<&str> = cfg
        .listeners
        .iter()
        .filter(|l| l.protocol != ListenerProtocol::Tcp)
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
}

fn check_listeners(c: &mut Checker, cfg: &Config) {
    let cluster_names: HashSet<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        check_name(c, &format!("{p}.name"), &l.name);
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
        listener::check_listener(c, &p, l, &cluster_names);
        mesh::check_listener(c, &p, l);
    }
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
