//! A route table built from a YAML config the way a snapshot builds it, for benches.

use outrigger::cluster::Cluster;
use outrigger::metrics::Metrics;
use outrigger::route::RouteTable;
use std::collections::HashMap;
use std::sync::Arc;

/// The first listener's route table over the file's clusters.
pub fn build(yaml: &str, metrics: &Metrics) -> RouteTable {
    let cfg = outrigger::config::parse(yaml, "bench.yaml", &|_| None).expect("bench config");
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
