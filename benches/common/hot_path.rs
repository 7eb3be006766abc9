//! The per-request hot path in process, without sockets, shared by `benches/hot_path.rs`
//! (timing) and `tests/hot_path_alloc.rs` (allocation budget): route match, weighted target,
//! endpoint pick (with the in-flight count), the upstream header rewrite (hop-by-hop removal,
//! x-forwarded-*, x-request-id), and the status count. Its includer also includes
//! `counting_alloc.rs` as `counting` and `routes.rs` as `routes`.

use outrigger::balancer::PickContext;
use outrigger::http_proxy::forward::{forwarded_for_value, prepare_request};
use outrigger::metrics::Metrics;
use outrigger::route::{RequestInfo, RouteTable};
use std::hint::black_box;
use std::net::IpAddr;

const CONFIG: &str = "\
listeners:
  - name: l
    address: 127.0.0.1:0
    routes:
      - { match: { host: admin.example.com }, cluster: web }
      - { match: { path_prefix: /api/, method: POST }, cluster: web }
      - { match: { path_prefix: / }, cluster: web }
clusters:
  - name: web
    lb: least_request
    endpoints: [{address: \"10.0.0.1:80\"}, {address: \"10.0.0.2:80\"}, {address: \"10.0.0.3:80\"}]
";

pub fn table(metrics: &Metrics) -> RouteTable {
    crate::routes::build(CONFIG, metrics)
}

/// A typical browser-ish request head, as hyper would hand it over.
pub fn request() -> http::request::Parts {
    http::Request::get("/api/users/42?verbose=1")
        .header("host", "www.example.com")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip")
        .body(())
        .expect("request")
        .into_parts()
        .0
}

/// What the proxy does for one request before it touches a connection.
pub fn hot_path(
    table: &RouteTable,
    parts: &mut http::request::Parts,
    forwarded_for: Option<&http::HeaderValue>,
) -> usize {
    let host = parts.headers.get("host").and_then(|h| h.to_str().ok());
    let info = RequestInfo {
        method: &parts.method,
        host,
        path: parts.uri.path(),
        headers: &parts.headers,
    };
    let route = table.find(&info).expect("a route");
    let target = route.pick_target();
    let ctx = PickContext {
        hash: None,
        avoid: None,
        original_dst: None,
    };
    let endpoint = target.cluster.pick(&ctx).expect("an endpoint");
    let in_flight = endpoint.start_request();
    let trust = outrigger::http_proxy::forward::Trust {
        peer_trusted: false,
        request_id: outrigger::config::RequestIdMode::Keep,
    };
    prepare_request(parts, route, forwarded_for, "http", None, trust);
    target.count(200);
    drop(in_flight);
    route.index
}

/// Heap allocations the hot path makes per request, averaged over `rounds` (each request head
/// is built outside the counted window).
pub fn allocations_per_request(table: &RouteTable, rounds: usize) -> f64 {
    let peer: IpAddr = "192.0.2.10".parse().expect("ip");
    // Made once per connection in the proxy, so outside the counted window.
    let forwarded_for = forwarded_for_value(peer);
    let mut counted = 0;
    for _ in 0..rounds {
        let mut parts = request();
        let before = crate::counting::allocations();
        black_box(hot_path(table, &mut parts, forwarded_for.as_ref()));
        counted += crate::counting::allocations() - before;
        drop(parts);
    }
    counted as f64 / rounds as f64
}
