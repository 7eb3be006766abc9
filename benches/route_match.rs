//! Route lookup cost: the first-match walk over 10 and 1000 routes, for a request that matches
//! the last route (the worst case) and one that matches the first.

#[path = "common/routes.rs"]
mod routes;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use outrigger::metrics::Metrics;
use outrigger::route::{RequestInfo, RouteTable};
use std::hint::black_box;

fn table(n: usize, metrics: &Metrics) -> RouteTable {
    let mut yaml = String::from("listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n");
    for i in 0..n - 1 {
        yaml.push_str(&format!(
            "      - {{ match: {{ host: \"svc{i}.example.com\", path_prefix: /api/v{i}/ }}, cluster: c }}\n"
        ));
    }
    yaml.push_str("      - { match: { path_prefix: / }, cluster: c }\n");
    yaml.push_str("clusters:\n  - { name: c, endpoints: [{address: \"127.0.0.1:1\"}] }\n");
    crate::routes::build(&yaml, metrics)
}

fn route_match(c: &mut Criterion) {
    let metrics = Metrics::new();
    let headers = HeaderMap::new();
    let method = Method::GET;
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1000] {
        let t = table(n, &metrics);
        let first = RequestInfo {
            method: &method,
            host: Some("svc0.example.com"),
            path: "/api/v0/users",
            headers: &headers,
        };
        let last = RequestInfo {
            method: &method,
            host: Some("www.example.com"),
            path: "/index.html",
            headers: &headers,
        };
        group.bench_with_input(BenchmarkId::new("first", n), &t, |b, t| {
            b.iter(|| black_box(t.find(&first).map(|r| r.index)))
        });
        group.bench_with_input(BenchmarkId::new("last", n), &t, |b, t| {
            b.iter(|| black_box(t.find(&last).map(|r| r.index)))
        });
    }
    group.finish();
}

criterion_group!(benches, route_match);
criterion_main!(benches);
