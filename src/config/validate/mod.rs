//! Whole-file semantic checks that serde cannot express: names unique and resolvable,
//! addresses and regexes that parse, values in range, keys that only fit one protocol.
//! Every problem is collected (not just the first) with its key path.

mod cluster;
mod listener;
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
    if cfg.listeners.is_empty() {
        c.push("listeners", "at least one listener is required");
    }
    check_cluster_uses(&mut c, cfg);
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
    }
    c.problems
}

/// Keys of a cluster that fit only one kind of listener using it.
fn check_cluster_uses(c: &mut Checker, cfg: &Config) {
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
