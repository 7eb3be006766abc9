//! The immutable runtime view of one config: per-listener route tables and the clusters they
//! point at. `Snapshot::build` reuses a previous snapshot's `Arc<Cluster>` when that cluster's
//! definition is unchanged, so endpoint state, balancer state and pools survive a reload.
//! Building does no I/O: `warm::warm` has resolved names and opened files beforehand.

mod warm;
pub use warm::{warm, Warmed};

use crate::access_log::AccessLog;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ListenerConfig, ListenerProtocol, LoadedConfig};
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
    #[error("cluster {0:?} was not warmed before the build")]
    NotWarmed(String),
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
    /// TCP and detect listeners only.
    pub tcp: Option<TcpRoutes>,
    /// The listener's `authz`.
    pub authz: Option<crate::authz::Authz>,
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
    /// Builds the runtime view of `loaded`, reusing from `previous` every cluster whose
    /// definition is unchanged and taking the rest's inputs, and every access log, from
    /// `warmed` (what `warm` returned for the same `loaded` and `previous`).
    pub fn build(
        loaded: LoadedConfig,
        previous: Option<&Snapshot>,
        mut warmed: Warmed,
        metrics: &Metrics,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        let cfg = &loaded.config;
        let clusters = build_clusters(&loaded, previous, &mut warmed, metrics)?;
        let by_name: HashMap<String, Arc<Cluster>> = clusters
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        let mut listeners = HashMap::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let b = ListenerBuild {
                index: i,
                l,
                by_name: &by_name,
                metrics,
            };
            let http_routes = || {
                RouteTable::build(
                    &l.name,
                    &format!("listeners[{i}]"),
                    &l.routes,
                    l.cluster.as_deref(),
                    &by_name,
                    metrics,
                )
            };
            let access_log = warmed.access_logs.remove(&l.name);
            // A detect listener has both: routes for HTTP, `cluster` for everything else.
            let (tcp, routes) = match l.protocol {
                ListenerProtocol::Tcp => (Some(b.tcp_routes()?), RouteTable::empty()),
                ListenerProtocol::Http => (None, http_routes()?),
                ListenerProtocol::Detect => (Some(b.tcp_routes()?), http_routes()?),
            };
            listeners.insert(l.name.clone(), b.state(tcp, routes, access_log));
        }
        Ok(Snapshot {
            generation,
            loaded: Arc::new(loaded),
            listeners,
            clusters,
        })
    }

    /// Generation 0: no listeners and no clusters, with `loaded`'s other settings. Start-up
    /// publishes it and then applies `loaded` over it, through the same path as a reload.
    pub fn empty(loaded: &LoadedConfig) -> Snapshot {
        let mut loaded = loaded.clone();
        loaded.config.listeners.clear();
        loaded.config.clusters.clear();
        Snapshot {
            generation: 0,
            loaded: Arc::new(loaded),
            listeners: HashMap::new(),
            clusters: Vec::new(),
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// The clusters of `loaded` in config order: unchanged ones taken from `previous` as they are,
/// changed ones built anew (seeded with what discovery last found, when it is unchanged).
fn build_clusters(
    loaded: &LoadedConfig,
    previous: Option<&Snapshot>,
    warmed: &mut Warmed,
    metrics: &Metrics,
) -> Result<Vec<Arc<Cluster>>, SnapshotError> {
    let mut clusters = Vec::with_capacity(loaded.config.clusters.len());
    for c in &loaded.config.clusters {
        let old = previous.and_then(|p| p.cluster(&c.name));
        let cluster = match reusable_cluster(previous, c) {
            Some(old) => old.clone(),
            None => {
                let inputs = warmed
                    .clusters
                    .remove(&c.name)
                    .ok_or_else(|| SnapshotError::NotWarmed(c.name.clone()))?;
                let mut new = Cluster::assemble(c, metrics, &loaded.base_dir, inputs);
                let adopted = old.is_some_and(|old| new.adopt(old));
                if let Some(old) = old.filter(|old| {
                    !adopted && c.discovery.is_some() && old.config.discovery == c.discovery
                }) {
                    new.seed_discovered(old);
                }
                Arc::new(new)
            }
        };
        clusters.push(cluster);
    }
    Ok(clusters)
}

/// What building one listener's state needs.
struct ListenerBuild<'a> {
    index: usize,
    l: &'a ListenerConfig,
    by_name: &'a HashMap<String, Arc<Cluster>>,
    metrics: &'a Metrics,
}

impl ListenerBuild<'_> {
    fn state(
        &self,
        tcp: Option<TcpRoutes>,
        routes: RouteTable,
        access_log: Option<Arc<AccessLog>>,
    ) -> ListenerState {
        let (l, metrics) = (self.l, self.metrics);
        ListenerState {
            tcp,
            authz: l
                .authz
                .as_ref()
                .map(|a| crate::authz::Authz::new(a, "listener".into())),
            access_log,
            routes,
            no_route_requests: metrics
                .downstream_requests
                .with_label_values(&[&l.name, NO_CLUSTER, "4xx"]),
            shed_requests: metrics
                .load_shed
                .with_label_values(&[&l.name, "max_in_flight_requests"]),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| {
                    metrics
                        .proxy_errors
                        .with_label_values(&[&l.name, k.as_str()])
                })
                .collect(),
            paths: path_policy(l),
            request_id: l.request_id,
            stream_idle_timeout: stream_idle(l),
            stream_idle_timeouts: metrics
                .downstream_timeouts
                .with_label_values(&[&l.name, "stream_idle"]),
        }
    }

    fn tcp_route(&self, name: &str) -> Result<TcpRoute, SnapshotError> {
        let (l, metrics) = (self.l, self.metrics);
        let cluster = self.by_name.get(name).cloned().ok_or_else(|| {
            SnapshotError::Route(RouteError::Invalid {
                path: format!("listeners[{}]", self.index),
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
    }

    fn tcp_routes(&self) -> Result<TcpRoutes, SnapshotError> {
        let mut by_sni = Vec::new();
        for r in &self.l.routes {
            if let (Some(sni), Some(c)) = (&r.matcher.sni, &r.cluster) {
                by_sni.push((sni.clone(), self.tcp_route(c)?));
            }
        }
        let default = self
            .l
            .cluster
            .as_deref()
            .map(|c| self.tcp_route(c))
            .transpose()?;
        Ok(TcpRoutes { by_sni, default })
    }
}

/// The previous snapshot's cluster of the same name and definition, which a build reuses.
fn reusable_cluster<'a>(
    previous: Option<&'a Snapshot>,
    c: &crate::config::ClusterConfig,
) -> Option<&'a Arc<Cluster>> {
    previous
        .and_then(|p| p.cluster(&c.name))
        .filter(|old| old.config == *c)
}

/// An unchanged access log keeps its open file and writer.
fn reusable_log(
    previous: Option<&Snapshot>,
    listener: &str,
    al: &crate::config::AccessLogConfig,
) -> Option<Arc<AccessLog>> {
    previous
        .and_then(|p| p.listeners.get(listener))
        .and_then(|s| s.access_log.clone())
        .filter(|old| old.config == *al)
}
