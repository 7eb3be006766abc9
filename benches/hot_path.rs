//! Timing of the per-request hot path (route + pick + header rewrite), after printing its heap
//! allocations per request. The path itself lives in `common/hot_path.rs`.

#[path = "common/counting_alloc.rs"]
mod counting;
#[path = "common/hot_path.rs"]
mod hot;
#[path = "common/routes.rs"]
mod routes;

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let metrics = outrigger::metrics::Metrics::new();
    let t = hot::table(&metrics);
    eprintln!(
        "hot_path: {:.2} heap allocations per request (route + pick + header rewrite)",
        hot::allocations_per_request(&t, 10_000)
    );
    let peer: std::net::IpAddr = "192.0.2.10".parse().expect("ip");
    let forwarded_for = outrigger::http_proxy::forward::forwarded_for_value(peer);
    c.bench_function("hot_path/route+pick+rewrite", |b| {
        b.iter_batched_ref(
            hot::request,
            |parts| black_box(hot::hot_path(&t, parts, forwarded_for.as_ref())),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
