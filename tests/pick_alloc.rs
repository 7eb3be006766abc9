//! Picks allocate nothing: a counting global allocator around 10,000 picks per policy. This is
//! its own test binary because a global allocator applies to the whole binary.

use outrigger::balancer::PickContext;
use outrigger::cluster::Cluster;
use outrigger::config::ClusterConfig;
use outrigger::metrics::Metrics;
#[path = "../benches/common/counting_alloc.rs"]
mod counting;

#[test]
fn picks_do_not_allocate() {
    let metrics = Metrics::new();
    for (lb, extra) in [
        ("round_robin", ""),
        ("weighted_round_robin", ""),
        ("random", ""),
        ("least_request", ""),
        ("least_latency", ""),
        ("ring_hash", "hash_on: { header: x-user }\n"),
    ] {
        let eps: Vec<String> = (0..100)
            .map(|i| format!("{{address: \"10.0.0.{}:80\", weight: {}}}", i, 1 + i % 3))
            .collect();
        let yaml = format!(
            "name: c\nlb: {lb}\nendpoints: [{}]\n{extra}",
            eps.join(", ")
        );
        let cfg: ClusterConfig = serde_yaml::from_str(&yaml).unwrap();
        let cluster = Cluster::build(0, &cfg, &metrics).unwrap();
        let ctx = PickContext {
            hash: Some(0x1234_5678_9abc_def0),
            avoid: None,
            original_dst: None,
        };
        // Warm up thread-locals (the RNG) outside the measurement.
        for _ in 0..10 {
            std::hint::black_box(cluster.pick(&ctx));
        }
        let before = counting::allocations();
        for _ in 0..10_000 {
            std::hint::black_box(cluster.pick(&ctx));
        }
        let allocs = counting::allocations() - before;
        assert_eq!(allocs, 0, "{lb}: {allocs} allocations in 10,000 picks");
    }
}
