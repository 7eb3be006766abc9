//! Checks of one HTTP route: its match, its target clusters, and its policies.

use super::{check_cluster_ref, Checker};
use crate::config::model::*;
use std::collections::HashSet;

pub(super) fn check_route(c: &mut Checker, p: &str, r: &RouteConfig, clusters: &HashSet<&str>) {
    check_match(c, p, &r.matcher);
    check_targets(c, p, r, clusters);
    check_rewrite_and_headers(c, p, r);
    check_policies(c, p, r);
}

fn check_match(c: &mut Checker, p: &str, m: &MatchConfig) {
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
}

fn check_targets(c: &mut Checker, p: &str, r: &RouteConfig, clusters: &HashSet<&str>) {
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
}

fn check_rewrite_and_headers(c: &mut Checker, p: &str, r: &RouteConfig) {
    let m = &r.matcher;
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
}

fn check_policies(c: &mut Checker, p: &str, r: &RouteConfig) {
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
