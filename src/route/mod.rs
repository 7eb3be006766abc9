//! Route tables: the first route whose match holds decides the cluster (or the weighted split
//! among clusters), the rewrite and the headers to add. Pure data and matching, no I/O; built
//! once per snapshot per listener.

pub mod rate_limit;
pub mod retry;

use crate::cluster::Cluster;
use crate::config::{ConfigDuration, RouteConfig};
use crate::metrics::{Metrics, CODE_CLASSES};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use prometheus::IntCounter;
use rand::Rng;
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a route table cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A route refers to something that does not exist or cannot be used.
    #[error("{path}: {message}")]
    Invalid {
        /// The route's key path, `listeners[0].routes[1]`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

enum HostMatch {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Suffix(String),
}

enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

struct Matcher {
    host: Option<HostMatch>,
    path: PathMatch,
    method: Option<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// One cluster a route sends to, with the request counters for that (listener, cluster) pair.
pub struct RouteTarget {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    weight: u32,
    requests_by_class: [IntCounter; 5],
}

impl RouteTarget {
    /// Counts one answered request by status.
    pub fn count(&self, status: u16) {
        self.requests_by_class[crate::metrics::code_class_index(status)].inc();
    }
}

/// One route: its match, its targets and what it does to a request.
pub struct Route {
    /// Position in the listener's `routes` (the implicit default route comes last).
    pub index: usize,
    matcher: Matcher,
    targets: Vec<RouteTarget>,
    total_weight: u32,
    /// Deadline for the response headers; `None` when configured as `0s`.
    pub timeout: Option<Duration>,
    rewrite: Option<Rewrite>,
    /// `request_headers_add`, parsed.
    pub headers_add: Vec<(HeaderName, HeaderValue)>,
    /// Name the chosen endpoint in an `x-outrigger-upstream` response header.
    pub add_upstream_header: bool,
    /// Plain CONNECT is tunnelled to the cluster (otherwise 405).
    pub allow_connect: bool,
    /// `Upgrade` protocols passed on (lowercase).
    upgrades: Box<[String]>,
    /// `retries`, when set.
    pub retry: Option<retry::RetryPolicy>,
    /// `rate_limit`, when set.
    pub rate_limit: Option<rate_limit::RateLimiter>,
    /// `authz`, when set.
    pub authz: Option<crate::authz::Authz>,
}

struct Rewrite {
    /// The matched part of the path to replace (a prefix, or the whole exact path).
    from: String,
    to: String,
}

/// What a request is matched on, borrowed from its head.
pub struct RequestInfo<'a> {
    /// The request method.
    pub method: &'a Method,
    /// Host without port, as sent (Host header or :authority).
    pub host: Option<&'a str>,
    /// The path, normalised per the listener's policy.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

impl Route {
    /// Whether this route passes on an `Upgrade` to `protocol`.
    pub fn allows_upgrade(&self, protocol: &HeaderValue) -> bool {
        let p = protocol.as_bytes();
        self.upgrades
            .iter()
            .any(|u| u.as_bytes().eq_ignore_ascii_case(p))
    }

    fn matches(&self, req: &RequestInfo<'_>) -> bool {
        let m = &self.matcher;
        if let Some(method) = &m.method {
            if method != req.method {
                return false;
            }
        }
        match &m.path {
            PathMatch::Any => {}
            PathMatch::Exact(p) => {
                if req.path != p {
                    return false;
                }
            }
            PathMatch::Prefix(p) => {
                if !req.path.starts_with(p.as_str()) {
                    return false;
                }
            }
            PathMatch::Regex(r) => {
                if !r.is_match(req.path) {
                    return false;
                }
            }
        }
        if let Some(host_match) = &m.host {
            let Some(host) = req.host else { return false };
            let ok = match host_match {
                HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
                HostMatch::Suffix(s) => {
                    host.len() > s.len()
                        && host.is_char_boundary(host.len() - s.len())
                        && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                }
            };
            if !ok {
                return false;
            }
        }
        m.headers
            .iter()
            .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }

    /// The target for this request: the only one, or a weighted random choice.
    pub fn pick_target(&self) -> &RouteTarget {
        if self.targets.len() == 1 {
            return &self.targets[0];
        }
        let mut n = rand::rng().random_range(0..self.total_weight);
        for t in &self.targets {
            if n < t.weight {
                return t;
            }
            n -= t.weight;
        }
        &self.targets[self.targets.len() - 1]
    }

    /// The upstream path (and query) after the route's rewrite, or `None` if unchanged.
    pub fn rewrite_path(&self, path: &str, query: Option<&str>) -> Option<String> {
        let rw = self.rewrite.as_ref()?;
        let rest = path.strip_prefix(rw.from.as_str())?;
        let mut out =
            String::with_capacity(rw.to.len() + rest.len() + 1 + query.map_or(0, str::len));
        out.push_str(&rw.to);
        out.push_str(rest);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

/// A listener's routes, in order, with the fallback cluster.
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table for one listener. `default_cluster` adds a final catch-all route.
    pub fn build(
        listener: &str,
        listener_path: &str,
        routes: &[RouteConfig],
        default_cluster: Option<&str>,
        clusters: &HashMap<String, Arc<Cluster>>,
        metrics: &Metrics,
    ) -> Result<RouteTable, RouteError> {
        let mut out = Vec::with_capacity(routes.len() + 1);
        // A detect listener's `sni` routes are for its TLS connections (the TCP path).
        for (i, r) in routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matcher.sni.is_none())
        {
            out.push(build_route(
                listener,
                &format!("{listener_path}.routes[{i}]"),
                i,
                r,
                clusters,
                metrics,
            )?);
        }
        if let Some(name) = default_cluster {
            let r = RouteConfig {
                matcher: Default::default(),
                cluster: Some(name.to_owned()),
                weighted_clusters: vec![],
                timeout: ConfigDuration::secs(15),
                retries: None,
                rewrite: None,
                request_headers_add: Default::default(),
                rate_limit: None,
                authz: None,
                add_upstream_header: false,
                allow_connect: false,
                upgrades: vec!["websocket".into()],
            };
            out.push(build_route(
                listener,
                &format!("{listener_path}.cluster"),
                routes.len(),
                &r,
                clusters,
                metrics,
            )?);
        }
        Ok(RouteTable { routes: out })
    }

    /// A table with no routes (TCP listeners).
    pub fn empty() -> RouteTable {
        RouteTable { routes: Vec::new() }
    }

    /// The first route that matches.
    pub fn find(&self, req: &RequestInfo<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(req))
    }

    /// Routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn invalid(path: &str, message: impl Into<String>) -> RouteError {
    RouteError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn build_route(
    listener: &str,
    path: &str,
    index: usize,
    r: &RouteConfig,
    clusters: &HashMap<String, Arc<Cluster>>,
    metrics: &Metrics,
) -> Result<Route, RouteError> {
    let m = &r.matcher;
    let host = m.host.as_ref().map(|h| match h.strip_prefix('*') {
        Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
        None => HostMatch::Exact(h.clone()),
    });
    let path_match = if let Some(p) = &m.path {
        PathMatch::Exact(p.clone())
    } else if let Some(p) = &m.path_prefix {
        PathMatch::Prefix(p.clone())
    } else if let Some(re) = &m.path_regex {
        PathMatch::Regex(
            Regex::new(re)
                .map_err(|e| invalid(&format!("{path}.match.path_regex"), e.to_string()))?,
        )
    } else {
        PathMatch::Any
    };
    let method = m
        .method
        .as_ref()
        .map(|s| {
            Method::from_bytes(s.as_bytes())
                .map_err(|_| invalid(&format!("{path}.match.method"), "not a method"))
        })
        .transpose()?;
    let headers = header_pairs(&m.headers, &format!("{path}.match.headers"))?;
    let mut wanted: Vec<(&str, u32)> = r
        .weighted_clusters
        .iter()
        .map(|w| (w.cluster.as_str(), w.weight))
        .collect();
    if let Some(c) = &r.cluster {
        wanted = vec![(c.as_str(), 1)];
    }
    let mut targets = Vec::with_capacity(wanted.len());
    for (name, weight) in wanted {
        let cluster = clusters
            .get(name)
            .ok_or_else(|| invalid(path, format!("no cluster named {name:?}")))?
            .clone();
        let requests_by_class = CODE_CLASSES.map(|class| {
            metrics
                .downstream_requests
                .with_label_values(&[listener, name, class])
        });
        targets.push(RouteTarget {
            cluster,
            weight,
            requests_by_class,
        });
    }
    if targets.is_empty() {
        return Err(invalid(path, "a route needs cluster or weighted_clusters"));
    }
    let total_weight = targets.iter().map(|t| t.weight).sum::<u32>().max(1);
    let rewrite = r.rewrite.as_ref().and_then(|rw| {
        let from = m.path_prefix.clone().or_else(|| m.path.clone())?;
        Some(Rewrite {
            from,
            to: rw.path_prefix.clone(),
        })
    });
    Ok(Route {
        index,
        matcher: Matcher {
            host,
            path: path_match,
            method,
            headers,
        },
        targets,
        total_weight,
        timeout: (!r.timeout.is_zero()).then(|| r.timeout.get()),
        rewrite,
        add_upstream_header: r.add_upstream_header,
        allow_connect: r.allow_connect,
        upgrades: r.upgrades.iter().map(|u| u.to_ascii_lowercase()).collect(),
        headers_add: header_pairs(
            &r.request_headers_add,
            &format!("{path}.request_headers_add"),
        )?,
        retry: r.retries.as_ref().map(retry::RetryPolicy::new),
        authz: route_authz(r, index),
        rate_limit: r.rate_limit.as_ref().map(|rl| {
            rate_limit::RateLimiter::new(
                rl.requests_per_second,
                rl.burst.unwrap_or(rl.requests_per_second),
            )
        }),
    })
}

fn route_authz(r: &RouteConfig, index: usize) -> Option<crate::authz::Authz> {
    let scope = format!("routes[{index}]");
    r.authz.as_ref().map(|a| crate::authz::Authz::new(a, scope))
}

fn header_pairs(
    map: &std::collections::BTreeMap<String, String>,
    path: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, RouteError> {
    map.iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid(path, format!("{k:?} is not a header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| invalid(path, format!("{k}: not a valid header value")))?;
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn table(yaml_routes: &str) -> (RouteTable, Metrics) {
        let text = format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n{yaml_routes}\nclusters:\n  - {{name: a, endpoints: [{{address: 127.0.0.1:1}}]}}\n  - {{name: b, endpoints: [{{address: 127.0.0.1:2}}]}}\n  - {{name: c, endpoints: [{{address: 127.0.0.1:3}}]}}\n"
        );
        let cfg = config::parse(&text, "t.yaml", &|_| None).unwrap();
        let metrics = Metrics::new();
        let clusters: HashMap<String, Arc<Cluster>> = cfg
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.name.clone(),
                    Arc::new(Cluster::build(i, c, &metrics).unwrap()),
                )
            })
            .collect();
        let l = &cfg.listeners[0];
        (
            RouteTable::build(
                "l",
                "listeners[0]",
                &l.routes,
                l.cluster.as_deref(),
                &clusters,
                &metrics,
            )
            .unwrap(),
            metrics,
        )
    }

    fn route_for(
        t: &RouteTable,
        method: &str,
        host: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let info = RequestInfo {
            method: &method,
            host,
            path,
            headers: &h,
        };
        t.find(&info).map(|r| r.pick_target().cluster.name.clone())
    }

    #[test]
    fn first_match_wins_on_every_matcher() {
        let (t, _m) = table(
            "      - { match: { host: api.example.com, path_prefix: /v1/ }, cluster: a }\n\
             \x20     - { match: { host: \"*.example.com\" }, cluster: b }\n\
             \x20     - { match: { method: POST, path: /submit }, cluster: c }\n\
             \x20     - { match: { headers: { x-canary: \"1\" } }, cluster: b }\n\
             \x20     - { match: { path_regex: \"^/items/[0-9]+$\" }, cluster: c }\n\
             \x20     - { match: { path_prefix: /static/ }, cluster: a }\n",
        );
        let r = |m, h, p, hd: &[(&str, &str)]| route_for(&t, m, h, p, hd);
        assert_eq!(
            r("GET", Some("api.example.com"), "/v1/x", &[]).as_deref(),
            Some("a")
        );
        assert_eq!(
            r("GET", Some("API.Example.com"), "/v1/x", &[]).as_deref(),
            Some("a")
        );
        assert_eq!(
            r("GET", Some("api.example.com"), "/v2/x", &[]).as_deref(),
            Some("b")
        );
        assert_eq!(
            r("GET", Some("www.example.com"), "/", &[]).as_deref(),
            Some("b")
        );
        assert_eq!(r("GET", Some("example.com"), "/", &[]), None);
        assert_eq!(r("POST", None, "/submit", &[]).as_deref(), Some("c"));
        assert_eq!(r("GET", None, "/submit", &[]), None);
        assert_eq!(
            r("GET", None, "/x", &[("x-canary", "1")]).as_deref(),
            Some("b")
        );
        assert_eq!(r("GET", None, "/x", &[("x-canary", "2")]), None);
        assert_eq!(r("GET", None, "/items/42", &[]).as_deref(), Some("c"));
        assert_eq!(r("GET", None, "/items/4x", &[]), None);
        assert_eq!(r("GET", None, "/static/a.css", &[]).as_deref(), Some("a"));
    }

    #[test]
    fn rewrite_keeps_rest_and_query() {
        let (t, _m) = table("      - { match: { path_prefix: /v1/ }, cluster: a, rewrite: { path_prefix: /v2/ } }\n");
        let m = Method::GET;
        let h = HeaderMap::new();
        let r = t
            .find(&RequestInfo {
                method: &m,
                host: None,
                path: "/v1/users",
                headers: &h,
            })
            .unwrap();
        assert_eq!(
            r.rewrite_path("/v1/users", Some("a=1")).as_deref(),
            Some("/v2/users?a=1")
        );
    }

    #[test]
    fn weighted_split_follows_weights() {
        let (t, _m) = table("      - { match: { path_prefix: / }, weighted_clusters: [{cluster: a, weight: 3}, {cluster: b, weight: 1}] }\n");
        let m = Method::GET;
        let h = HeaderMap::new();
        let r = t
            .find(&RequestInfo {
                method: &m,
                host: None,
                path: "/",
                headers: &h,
            })
            .unwrap();
        let a = (0..40_000)
            .filter(|_| r.pick_target().cluster.name == "a")
            .count();
        assert!((29_000..31_000).contains(&a), "{a}");
    }
}
