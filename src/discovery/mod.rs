//! Endpoint discovery: one task per cluster with `discovery`, which asks its source (DNS A/AAAA,
//! DNS SRV, or an endpoints file) every `refresh` (a file also when it changes) and hands each
//! new answer to the cluster's task, the single writer of the endpoint set
//! (`Cluster::apply_discovered`). A failed round keeps the last good set; an empty answer is
//! applied only after `empty_confirmations` in a row.

pub mod dns;
pub mod eds;
pub mod file;

use crate::cluster::{Cluster, Event};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

pub use crate::endpoint::Target;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("resolving {name:?}: {message}")]
    Dns { name: String, message: String },
    #[error("endpoints file {path:?}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{message}")]
    Config { message: String },
}

enum Source {
    // Boxed: the resolver is large, and there is one per discovered cluster.
    Dns(Box<dns::DnsSource>),
    File(file::FileSource),
    Eds(eds::EdsSource),
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Source::Dns(d) => d.kind(),
            Source::File(_) => "file",
            Source::Eds(_) => "eds",
        }
    }

    async fn fetch(&mut self) -> Result<Vec<Target>, DiscoveryError> {
        match self {
            Source::Dns(d) => d.fetch().await,
            Source::File(f) => f.fetch().await,
            Source::Eds(e) => e.fetch().await,
        }
    }

    async fn wait(&mut self, refresh: std::time::Duration) {
        match self {
            Source::Dns(_) => tokio::time::sleep(refresh).await,
            Source::File(f) => f.wait(refresh).await,
            Source::Eds(e) => e.wait().await,
        }
    }
}

/// Starts the cluster's discovery task, if it has `discovery` (relative endpoints files are
/// found in the cluster's base folder; EDS names are watched in `eds`).
pub fn spawn(cluster: &Arc<Cluster>, eds: &eds::Registry) {
    let Some(cfg) = cluster.config.discovery.clone() else {
        return;
    };
    let source = match (&cfg.file, &cfg.eds) {
        (Some(f), _) => Source::File(file::FileSource::new(file::resolve_path(
            &cluster.base_dir,
            f,
        ))),
        (None, Some(service)) => Source::Eds(eds.watch(service)),
        (None, None) => match dns::DnsSource::new(&cfg) {
            Ok(d) => Source::Dns(Box::new(d)),
            Err(e) => {
                // Validation rules this out; should it happen, the cluster keeps its static
                // endpoints and start-up does not wait for it.
                tracing::error!(cluster = %cluster.name, error = %e, "discovery not started");
                cluster.discovery_round_done();
                return;
            }
        },
    };
    tracing::info!(
        cluster = %cluster.name,
        source = source.kind(),
        refresh_ms = cfg.refresh_interval().as_millis() as u64,
        "discovery started"
    );
    let weak = Arc::downgrade(cluster);
    let retired = cluster.retired.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = retired.cancelled() => {}
            _ = run(weak, source, cfg) => {}
        }
    });
}

async fn run(weak: Weak<Cluster>, mut source: Source, cfg: crate::config::DiscoveryConfig) {
    let kind = source.kind();
    // A cluster rebuilt by a reload starts with its predecessor's endpoints: that is the set
    // an answer is compared with (so an empty one still needs confirming).
    let mut last: Option<Vec<Target>> = weak.upgrade().and_then(|c| {
        let mut seeded: Vec<Target> = c.discovered_targets().into_iter().map(|(t, _)| t).collect();
        seeded.sort();
        (!seeded.is_empty()).then_some(seeded)
    });
    let mut empties = 0u32;
    loop {
        let answer = source.fetch().await;
        let Some(cluster) = weak.upgrade() else {
            return;
        };
        let count = |result: &str| cluster.count_discovery(kind, result);
        match answer {
            Err(e) => {
                tracing::warn!(cluster = %cluster.name, source = kind, error = %e, "discovery failed; keeping the last good endpoint set");
                count("failure");
                cluster.discovery_round_done();
            }
            Ok(mut targets) => {
                targets.sort();
                targets.dedup_by_key(|t| t.address);
                let was_empty = last.as_ref().is_none_or(|l| l.is_empty());
                if targets.is_empty() && !was_empty {
                    empties += 1;
                    // The xDS server is authoritative: its empty assignment is meant.
                    let needed = if kind == "eds" {
                        1
                    } else {
                        cfg.empty_confirmations
                    };
                    if empties < needed {
                        tracing::warn!(cluster = %cluster.name, source = kind, seen = empties, needed, "discovery answered no endpoints; keeping the last set until this repeats");
                        count("empty_ignored");
                        cluster.discovery_round_done();
                        drop(cluster);
                        source.wait(cfg.refresh_interval()).await;
                        continue;
                    }
                } else {
                    empties = 0;
                }
                if last.as_ref() == Some(&targets) {
                    count("unchanged");
                    cluster.discovery_round_done();
                } else {
                    count("changed");
                    last = Some(targets.clone());
                    // The cluster's task applies it and marks the round done.
                    if cluster.send(Event::Discovered(targets)).await.is_err() {
                        return;
                    }
                }
            }
        }
        drop(cluster);
        source.wait(cfg.refresh_interval()).await;
    }
}
