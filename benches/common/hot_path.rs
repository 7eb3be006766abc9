//! The per-request hot path in process, without sockets, shared by `benches/hot_path.rs`
//! (timing) and `tests/hot_path_alloc.rs` (allocation budget): route match, weighted target,
//! endpoint pick (with the in-flight count), the upstream header rewrite (hop-by-hop removal,
//! x-forwarded-*, x-request-id), and the status count. Including it installs a counting
//! global allocator in that binary.

use outrigger::balancer::PickContext;
use outrigger::cluster::Cluster;
use outrigger::http_proxy::forward::prepare_request;
use outrigger::metrics::Metrics;
use outrigger::route::{RequestInfo, RouteTable};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let cfg = outrigger::config::parse(CONFIG, "bench.yaml", &|_| None).expect("bench config");
    let clusters: HashMap<String, Arc<Cluster>> = cfg
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.name.clone(),
                Arc::new(Cluster::build(i, c, metrics).expect("cluster")),
            )
        })
        .collect();
    let l = &cfg.listeners[0];
    RouteTable::build("l", "listeners[0]", &l.routes, None, &clusters, metrics).expect("routes")
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
pub fn hot_path(table: &RouteTable, parts: &mut http::request::Parts, peer: IpAddr) -> usize {
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
    };
    let endpoint = target.cluster.pick(&ctx).expect("an endpoint");
    let in_flight = endpoint.start_request();
    prepare_request(parts, route, peer, "http", None);
    target.count(200);
    drop(in_flight);
    route.index
}

/// Heap allocations the hot path makes per request, averaged over `rounds` (each request head
/// is built outside the counted window).
pub fn allocations_per_request(table: &RouteTable, rounds: usize) -> f64 {
    let peer: IpAddr = "192.0.2.10".parse().expect("ip");
    let mut counted = 0;
    for _ in 0..rounds {
        let mut parts = request();
        let before = ALLOCS.load(Ordering::Relaxed);
        black_box(hot_path(table, &mut parts, peer));
        counted += ALLOCS.load(Ordering::Relaxed) - before;
        drop(parts);
    }
    counted as f64 / rounds as f64
}
