//! RDS: `RouteConfiguration` → the listener's ordered route list. Virtual hosts become
//! `match.host` (exact names and `*.suffix` wildcards; `*` matches any host); they are laid
//! out most specific first, as Envoy picks a virtual host, each with its routes in order.

use super::{duration, fields, ignored, no_leftovers, reject, Rejected};
use crate::config::{RetryConfig, RetryOn, RewriteConfig, RouteConfig, WeightedClusterConfig};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, route::Action, route_action::ClusterSpecifier,
    route_match::PathSpecifier, RetryPolicy, Route, RouteConfiguration,
};

/// The type URL of an RDS resource.
pub const TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// A translated route configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTable {
    /// Its name (what listeners' `rds.route_config_name` refers to).
    pub name: String,
    /// The flat route list.
    pub routes: Vec<RouteConfig>,
}

/// Translates one route configuration.
pub fn translate(mut rc: RouteConfiguration) -> Result<RouteTable, Rejected> {
    let name = std::mem::take(&mut rc.name);
    let what = format!("route configuration {name:?}");
    let mut hosts: Vec<(u8, usize, String, Vec<RouteConfig>)> = Vec::new();
    for (v, mut vh) in std::mem::take(&mut rc.virtual_hosts)
        .into_iter()
        .enumerate()
    {
        let vw = format!("{what}.virtual_hosts[{v}]");
        let mut routes = Vec::new();
        for (r, route) in std::mem::take(&mut vh.routes).into_iter().enumerate() {
            routes.push(translate_route(route, &format!("{vw}.routes[{r}]"))?);
        }
        for (d, domain) in std::mem::take(&mut vh.domains).into_iter().enumerate() {
            // Envoy's order: exact names, then suffix wildcards (longest first), then `*`.
            let rank = if domain == "*" {
                2
            } else if domain.starts_with('*') {
                1
            } else if domain.ends_with('*') {
                return reject(format!(
                    "{vw}.domains[{d}]: prefix wildcards ({domain:?}) are not supported"
                ));
            } else {
                0
            };
            hosts.push((rank, usize::MAX - domain.len(), domain, routes.clone()));
        }
        ignored(&vw, &[("name", !std::mem::take(&mut vh.name).is_empty())]);
        if vh.require_tls != 0 {
            return reject(format!("{vw}.require_tls is not supported"));
        }
        no_leftovers(&vw, &vh, fields::VIRTUAL_HOST)?;
    }
    // Stable: equal ranks keep the server's order.
    hosts.sort_by_key(|(rank, len, _, _)| (*rank, if *rank == 1 { *len } else { 0 }));
    let mut routes = Vec::new();
    for (rank, _, domain, rs) in hosts {
        for mut r in rs {
            if rank != 2 {
                r.matcher.host = Some(domain.clone());
            }
            routes.push(r);
        }
    }
    ignored(
        &what,
        &[("validate_clusters", rc.validate_clusters.take().is_some())],
    );
    no_leftovers(&what, &rc, fields::ROUTE_CONFIGURATION)?;
    Ok(RouteTable { name, routes })
}

fn translate_route(mut route: Route, what: &str) -> Result<RouteConfig, Rejected> {
    let mut out: RouteConfig =
        serde_yaml::from_str("{cluster: x}").map_err(|e| Rejected(e.to_string()))?;
    out.cluster = None;
    let mut m = route.r#match.take().unwrap_or_default();
    match m.path_specifier.take() {
        Some(PathSpecifier::Prefix(p)) => {
            out.matcher.path_prefix = Some(if p.is_empty() { "/".into() } else { p })
        }
        Some(PathSpecifier::Path(p)) => out.matcher.path = Some(p),
        // RE2 matches the whole path.
        Some(PathSpecifier::SafeRegex(r)) => {
            out.matcher.path_regex = Some(format!("^(?:{})$", r.regex))
        }
        _ => {
            return reject(format!(
                "{what}.match: prefix, path or safe_regex is required"
            ))
        }
    }
    if m.case_sensitive.take().is_some_and(|c| !c.value) {
        return reject(format!(
            "{what}.match.case_sensitive false is not supported"
        ));
    }
    for (h, mut hm) in std::mem::take(&mut m.headers).into_iter().enumerate() {
        let hw = format!("{what}.match.headers[{h}]");
        #[allow(deprecated)]
        let value = match hm.header_match_specifier.take() {
            Some(HeaderMatchSpecifier::ExactMatch(v)) => v,
            _ => return reject(format!("{hw}: only exact_match is supported")),
        };
        if hm.invert_match {
            return reject(format!("{hw}.invert_match is not supported"));
        }
        let name = std::mem::take(&mut hm.name);
        no_leftovers(&hw, &hm, fields::HEADER_MATCHER)?;
        if name == ":method" {
            out.matcher.method = Some(value);
        } else {
            out.matcher.headers.insert(name, value);
        }
    }
    no_leftovers(&format!("{what}.match"), &m, fields::ROUTE_MATCH)?;
    let Some(Action::Route(mut a)) = route.action.take() else {
        return reject(format!(
            "{what}: only route actions are supported (redirect and direct_response are not)"
        ));
    };
    let aw = format!("{what}.route");
    match a.cluster_specifier.take() {
        Some(ClusterSpecifier::Cluster(c)) => out.cluster = Some(c),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            for (k, cw) in w.clusters.into_iter().enumerate() {
                if !cw.cluster_header.is_empty() {
                    return reject(format!(
                        "{aw}.weighted_clusters.clusters[{k}].cluster_header is not supported"
                    ));
                }
                out.weighted_clusters.push(WeightedClusterConfig {
                    cluster: cw.name,
                    weight: cw.weight.map_or(1, |w| w.value),
                });
            }
        }
        _ => return reject(format!("{aw}: cluster or weighted_clusters is required")),
    }
    if let Some(t) = duration(&a.timeout.take()) {
        if t.is_zero() {
            return reject(format!(
                "{aw}.timeout: 0 (no deadline) is not supported: every request has one"
            ));
        }
        out.timeout = t;
    }
    let prefix = std::mem::take(&mut a.prefix_rewrite);
    if !prefix.is_empty() {
        out.rewrite = Some(RewriteConfig {
            path_prefix: prefix,
        });
    }
    if let Some(p) = a.retry_policy.take() {
        out.retries = Some(retry(p, &format!("{aw}.retry_policy"))?);
    }
    no_leftovers(&aw, &a, fields::ROUTE_ACTION)?;
    ignored(
        what,
        &[
            ("name", !std::mem::take(&mut route.name).is_empty()),
            ("metadata", route.metadata.take().is_some()),
        ],
    );
    no_leftovers(what, &route, fields::ROUTE)?;
    Ok(out)
}

fn retry(mut p: RetryPolicy, what: &str) -> Result<RetryConfig, Rejected> {
    let mut out: RetryConfig =
        serde_yaml::from_str("{attempts: 1}").map_err(|e| Rejected(e.to_string()))?;
    out.attempts = p.num_retries.take().map_or(1, |n| n.value);
    let mut on = Vec::new();
    for cond in std::mem::take(&mut p.retry_on)
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        on.push(match cond {
            "5xx" => RetryOn::Status5xx,
            "gateway-error" => RetryOn::GatewayError,
            "connect-failure" => RetryOn::ConnectFailure,
            "refused-stream" => RetryOn::RefusedStream,
            "reset" => RetryOn::Reset,
            "retriable-4xx" => RetryOn::Retriable4xx,
            other => return reject(format!("{what}.retry_on: {other:?} is not supported")),
        });
    }
    if !on.is_empty() {
        out.on = on;
    }
    out.per_try_timeout = duration(&p.per_try_timeout.take());
    if let Some(b) = p.retry_back_off.take() {
        if let Some(d) = duration(&b.base_interval) {
            out.backoff_base = d;
        }
        if let Some(d) = duration(&b.max_interval) {
            out.backoff_max = d;
        }
    }
    no_leftovers(what, &p, fields::RETRY_POLICY)?;
    Ok(out)
}
