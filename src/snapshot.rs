//! The immutable runtime view of one config: per-listener route tables and the clusters they
//! point at. `Snapshot::build` reuses a previous snapshot's `Arc<Cluster>` when that cluster's
//! definition is unchanged, so endpoint state, balancer state and pools survive a reload.

use crate::cluster::{Cluster, ClusterError};
use crate::config::{ListenerProtocol, LoadedConfig};
use crate::metrics::ErrorKind;
use crate::metrics::{Metrics, NO_CLUSTER};
use crate::route::{RouteError, RouteTable};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("listeners[{index}].access_log.path: cannot open {path:?}: {source}")]
    AccessLog {
        index: usize,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a TCP listener's connections go, with the metric children they update.
pub struct TcpRoute {
    pub cluster: Arc<Cluster>,
    pub connections: IntCounter,
    pub bytes_to_upstream: IntCounter,
    pub bytes_to_downstream: IntCounter,
    pub duration: prometheus::Histogram,
    pub idle_timeouts: IntCounter,
}

/// A TCP listener's routes: by SNI pattern in order, then the default.
pub struct TcpRoutes {
    pub by_sni: Vec<(String, TcpRoute)>,
    pub default: Option<TcpRoute>,
}

/// What requests on one listener need from the snapshot.
pub struct ListenerState {
    /// TCP listeners only.
    pub tcp: Option<TcpRoutes>,
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    pub routes: RouteTable,
    pub no_route_requests: IntCounter,
    /// Requests refused by `server.max_in_flight_requests`.
    pub shed_requests: IntCounter,
    errors: Vec<IntCounter>,
    /// How request paths are normalised before routing.
    pub paths: crate::path::PathPolicy,
    pub request_id: crate::config::RequestIdMode,
    /// `limits.stream_idle_timeout`; `None` when `0s`.
    pub stream_idle_timeout: Option<std::time::Duration>,
    /// Bodies ended by it.
    pub stream_idle_timeouts: IntCounter,
}

fn path_policy(l: &crate::config::ListenerConfig) -> crate::path::PathPolicy {
    crate::path::PathPolicy {
        normalize: l.normalize_path,
        merge_slashes: l.merge_slashes,
        escaped_slashes: l.escaped_slashes,
    }
}

fn stream_idle(l: &crate::config::ListenerConfig) -> Option<std::time::Duration> {
    Some(l.limits.stream_idle_timeout.get()).filter(|d| !d.is_zero())
}

impl ListenerState {
    pub fn count_error(&self, kind: ErrorKind) {
        self.errors[kind.index()].inc();
    }
}

pub struct Snapshot {
    /// 1 for the config loaded at start; +1 per applied reload.
    pub generation: u64,
    pub loaded: Arc<LoadedConfig>,
    pub listeners: HashMap<String, ListenerState>,
    /// In config order.
    pub clusters: Vec<Arc<Cluster>>,
}

impl Snapshot {
    pub fn build(
        loaded: LoadedConfig,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        let cfg = &loaded.config;
        let mut by_name: HashMap<String, Arc<Cluster>> = HashMap::new();
        let mut clusters = Vec::with_capacity(cfg.clusters.len());
        for (i, c) in cfg.clusters.iter().enumerate() {
            let reused = previous
                .and_then(|p| p.cluster(&c.name))
                .filter(|old| old.config == *c)
                .cloned();
            let cluster = match reused {
                Some(old) => old,
                None => {
                    let new = Cluster::build_in(i, c, metrics, &loaded.base_dir)?;
                    if let Some(old) = previous
                        .and_then(|p| p.cluster(&c.name))
                        .filter(|old| c.discovery.is_some() && old.config.discovery == c.discovery)
                    {
                        new.seed_discovered(old);
                    }
                    Arc::new(new)
                }
            };
            by_name.insert(c.name.clone(), cluster.clone());
            clusters.push(cluster);
        }
        let mut listeners = HashMap::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let errors = ErrorKind::ALL
                .iter()
                .map(|k| {
                    metrics
                        .proxy_errors
                        .with_label_values(&[&l.name, k.as_str()])
                })
                .collect();
            let no_route_requests = metrics
                .downstream_requests
                .with_label_values(&[&l.name, NO_CLUSTER, "4xx"]);
            let shed_requests = metrics
                .load_shed
                .with_label_values(&[&l.name, "max_in_flight_requests"]);
            if l.protocol == ListenerProtocol::Tcp {
                let route = |name: &str| -> Result<TcpRoute, SnapshotError> {
                    let cluster = by_name.get(name).cloned().ok_or_else(|| {
                        SnapshotError::Route(RouteError::Invalid {
                            path: format!("listeners[{i}]"),
                            message: format!("no cluster named {name:?}"),
                        })
                    })?;
                    Ok(TcpRoute {
                        cluster,
                        connections: metrics.tcp_connections.with_label_values(&[&l.name, name]),
                        bytes_to_upstream: metrics
                            .tcp_bytes
                            .with_label_values(&[&l.name, "to_upstream"]),
                        bytes_to_downstream: metrics
                            .tcp_bytes
                            .with_label_values(&[&l.name, "to_downstream"]),
                        duration: metrics.tcp_duration.with_label_values(&[&l.name]),
                        idle_timeouts: metrics
                            .downstream_timeouts
                            .with_label_values(&[&l.name, "idle"]),
                    })
                };
                let mut by_sni = Vec::new();
                for r in &l.routes {
                    if let (Some(sni), Some(c)) = (&r.matcher.sni, &r.cluster) {
                        by_sni.push((sni.clone(), route(c)?));
                    }
                }
                let default = l.cluster.as_deref().map(route).transpose()?;
                listeners.insert(
                    l.name.clone(),
                    ListenerState {
                        tcp: Some(TcpRoutes { by_sni, default }),
                        access_log: None,
                        routes: RouteTable::empty(),
                        no_route_requests,
                        shed_requests,
                        errors,
                        paths: path_policy(l),
                        request_id: l.request_id,
                        stream_idle_timeout: stream_idle(l),
                        stream_idle_timeouts: metrics
                            .downstream_timeouts
                            .with_label_values(&[&l.name, "stream_idle"]),
                    },
                );
                continue;
            }
            let routes = RouteTable::build(
                &l.name,
                &format!("listeners[{i}]"),
                &l.routes,
                l.cluster.as_deref(),
                &by_name,
                metrics,
            )?;
            // An unchanged log keeps its open file and writer.
            let access_log = match &l.access_log {
                None => None,
                Some(al) => match previous
                    .and_then(|p| p.listeners.get(&l.name))
                    .and_then(|s| s.access_log.clone())
                    .filter(|old| old.config == *al)
                {
                    Some(old) => Some(old),
                    None => Some(
                        crate::access_log::AccessLog::start(
                            al,
                            &loaded.base_dir,
                            metrics.access_log_dropped.with_label_values(&[&l.name]),
                        )
                        .map_err(|source| SnapshotError::AccessLog {
                            index: i,
                            path: al.path.clone(),
                            source,
                        })?,
                    ),
                },
            };
            listeners.insert(
                l.name.clone(),
                ListenerState {
                    tcp: None,
                    access_log,
                    routes,
                    no_route_requests,
                    shed_requests,
                    errors,
                    paths: path_policy(l),
                    request_id: l.request_id,
                    stream_idle_timeout: stream_idle(l),
                    stream_idle_timeouts: metrics
                        .downstream_timeouts
                        .with_label_values(&[&l.name, "stream_idle"]),
                },
            );
        }
        Ok(Snapshot {
            generation,
            loaded: Arc::new(loaded),
            listeners,
            clusters,
        })
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name == name)
    }
}
