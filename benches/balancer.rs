//! Balancer pick cost through `Cluster::pick` (the real hot path: ArcSwap guard + policy), by
//! endpoint count, single-threaded and with two threads contending.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use outrigger::balancer::PickContext;
use outrigger::cluster::Cluster;
use outrigger::config::{ClusterConfig, EndpointConfig, LbPolicy};
use outrigger::metrics::Metrics;
use std::hint::black_box;
use std::sync::Arc;

fn cluster(n: usize, lb: LbPolicy, metrics: &Metrics) -> Arc<Cluster> {
    let yaml = format!("name: c{n}\nendpoints: []\n");
    let mut cfg: ClusterConfig = serde_yaml::from_str(&yaml).expect("bench cluster config");
    cfg.lb = lb;
    if lb == LbPolicy::RingHash {
        cfg.hash_on = serde_yaml::from_str("header: x-user").ok();
    }
    cfg.endpoints = (0..n)
        .map(|i| EndpointConfig {
            address: format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            weight: 1 + (i % 3) as u32,
            priority: 0,
        })
        .collect();
    Arc::new(Cluster::build(0, &cfg, metrics).expect("bench cluster builds"))
}

fn picks(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("pick");
    let ctx = PickContext {
        hash: Some(0x9e37_79b9_7f4a_7c15),
        avoid: None,
        original_dst: None,
    };
    for lb in [
        LbPolicy::RoundRobin,
        LbPolicy::WeightedRoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest,
        LbPolicy::LeastLatency,
        LbPolicy::RingHash,
    ] {
        for n in [3usize, 100, 10_000] {
            let cl = cluster(n, lb, &metrics);
            group.bench_with_input(BenchmarkId::new(format!("{lb:?}"), n), &cl, |b, cl| {
                b.iter(|| black_box(cl.pick(&ctx)))
            });
            // The same pick while another thread picks from the same cluster in a loop.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let other = {
                let (cl, stop) = (cl.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        black_box(cl.pick(&ctx));
                    }
                })
            };
            group.bench_with_input(
                BenchmarkId::new(format!("{lb:?}/contended"), n),
                &cl,
                |b, cl| b.iter(|| black_box(cl.pick(&Default::default()))),
            );
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            other.join().expect("contending thread");
        }
    }
    group.finish();
}

/// Building a ring is per published set (health change, ramp step), not per pick.
fn ring_build(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("ring_build");
    group.sample_size(10);
    for n in [3usize, 100, 10_000] {
        let cl = cluster(n, LbPolicy::RingHash, &metrics);
        let set = cl.endpoints();
        group.bench_with_input(BenchmarkId::from_parameter(n), &set, |b, set| {
            b.iter(|| black_box(outrigger::balancer::Ring::new(&set.all)))
        });
    }
    group.finish();
}

criterion_group!(benches, picks, ring_build);
criterion_main!(benches);
