//! A cluster: a named set of endpoints, its balancer, its connection pools and its metric
//! children. The endpoint set is published through one `ArcSwap`, which the request path reads
//! with a short guard; only the cluster's own background work writes it.

mod endpoint;
pub mod pool;

pub use endpoint::{Endpoint, EndpointSet, InFlight};

use crate::balancer::{self, Balancer, PickContext};
use crate::config::units::split_host_port;
use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter, IntGauge};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Weak};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "clusters[{index}].endpoints[{endpoint}].address: cannot resolve {address:?}: {reason}"
    )]
    Resolve {
        index: usize,
        endpoint: usize,
        address: String,
        reason: String,
    },
}

/// Metric children resolved once per cluster.
pub(crate) struct ClusterMetrics {
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub connections_active: IntGauge,
    pub connect_failures: IntCounter,
}

pub struct Cluster {
    pub name: String,
    /// The definition this cluster was built from; a reload reuses the cluster when equal.
    pub config: ClusterConfig,
    endpoints: ArcSwap<EndpointSet>,
    balancer: Box<dyn Balancer>,
    pub(crate) metrics: ClusterMetrics,
}

impl Cluster {
    /// Builds a cluster, resolving static endpoint names once.
    pub fn build(
        index: usize,
        cfg: &ClusterConfig,
        metrics: &Metrics,
    ) -> Result<Cluster, ClusterError> {
        let name = cfg.name.as_str();
        let mut all = Vec::with_capacity(cfg.endpoints.len());
        for (k, e) in cfg.endpoints.iter().enumerate() {
            let address = resolve(&e.address).map_err(|reason| ClusterError::Resolve {
                index,
                endpoint: k,
                address: e.address.clone(),
                reason,
            })?;
            let pool = pool::EndpointPool::new(
                cfg.pool.max_idle_per_endpoint,
                cfg.pool.idle_timeout.get(),
            );
            let gauge = metrics
                .upstream_endpoint_healthy
                .with_label_values(&[name, e.address.as_str()]);
            all.push(Arc::new(Endpoint::new(
                address,
                e.address.clone(),
                e.weight,
                pool,
                gauge,
            )));
        }
        Ok(Cluster {
            name: cfg.name.clone(),
            config: cfg.clone(),
            endpoints: ArcSwap::from_pointee(EndpointSet::new(all)),
            balancer: balancer::new(cfg),
            metrics: ClusterMetrics {
                request_duration: metrics.request_duration.with_label_values(&[name]),
                upstream_duration: metrics.upstream_request_duration.with_label_values(&[name]),
                connections_active: metrics
                    .upstream_connections_active
                    .with_label_values(&[name]),
                connect_failures: metrics.upstream_connect_failures.with_label_values(&[name]),
            },
        })
    }

    /// The current endpoint set (an `Arc`, safe to hold across awaits).
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    /// Picks a healthy endpoint; `None` when there is none.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        self.balancer.pick(&set.healthy, ctx).cloned()
    }

    /// Opens a new upstream connection to `endpoint`.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<pool::Sender, pool::ConnectError> {
        pool::connect(
            endpoint.address,
            self.config.connect_timeout.get(),
            &self.metrics.connections_active,
            &self.metrics.connect_failures,
        )
        .await
    }

    /// Starts the task that closes pooled connections idle past the pool's idle timeout. It
    /// ends by itself once the cluster is dropped.
    pub fn spawn_pool_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Cluster> = Arc::downgrade(self);
        let period = (self.config.pool.idle_timeout.get() / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                for ep in cluster.endpoints.load().all.iter() {
                    ep.pool.purge_expired();
                }
            }
        })
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    split_host_port(address)?;
    address
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no addresses".to_string())
}
