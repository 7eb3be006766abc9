//! A cluster: a named set of endpoints, its balancer, its connection pools and its metric
//! children. The endpoint set is published through one `ArcSwap`, which the request path reads
//! with a short guard. Only the cluster's task (`health::spawn`) writes it after start: health
//! transitions, outlier ejections and slow-start ramps all flow through that one writer. The
//! request path reports failures to it over a channel.

mod connect;
mod endpoint_set;
mod inputs;
pub mod original_dst;

pub use crate::endpoint::{Endpoint, InFlight, Source};
pub use connect::Upstream;
pub use endpoint_set::{EndpointSet, SetRules};
pub use inputs::ClusterInputs;

use crate::balancer::{self, Balancer, PickContext};
use crate::circuit_breaker;
use crate::config::{ClusterConfig, HashOnConfig, LbPolicy};
use crate::hash::hash_key;
use crate::metrics::Metrics;
use crate::pool;
use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter, IntGauge};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why a cluster cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Its TLS files cannot be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "clusters[{index}].endpoints[{endpoint}].address: cannot resolve {address:?}: {reason}"
    )]
    /// A static endpoint's name does not resolve.
    Resolve {
        /// The cluster's index in `clusters`.
        index: usize,
        /// The endpoint's index in `endpoints`.
        endpoint: usize,
        /// The address as configured.
        address: String,
        /// What the lookup said.
        reason: String,
    },
    /// No lookup could be run at all.
    #[error("clusters[{index}]: cannot run a name lookup: {reason}")]
    Resolver {
        /// The cluster's index in `clusters`.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// Metric children resolved once per cluster.
pub(crate) struct ClusterMetrics {
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub connections_active: IntGauge,
    pub connect_failures: IntCounter,
    pub health_success: IntCounter,
    pub health_failure: IntCounter,
    pub ejections: IntCounter,
    /// healthy (routable), unhealthy, ejected.
    pub endpoints_by_state: [IntGauge; 3],
    pub panic: IntGauge,
    pub retries: IntCounter,
    /// Indexed like `circuit_breaker::Overflow`: connections, pending, requests.
    pub overflow: [IntCounter; 3],
    pub breaker_open: IntGauge,
    /// route, per_try, connect.
    pub timeouts: [IntCounter; 3],
}

/// What the request path tells the cluster's task.
pub(crate) enum Event {
    /// This endpoint just reached `consecutive_failures`.
    Failures(Arc<Endpoint>),
    /// Discovery found this endpoint list (sorted, one entry per address).
    Discovered(Vec<crate::endpoint::Target>),
}

/// A named set of endpoints with its balancer, pools, breaker and metric children.
pub struct Cluster {
    /// `clusters[].name`.
    pub name: String,
    /// The definition this cluster was built from; a reload reuses the cluster when equal.
    pub config: ClusterConfig,
    endpoints: ArcSwap<EndpointSet>,
    balancer: Box<dyn Balancer>,
    rules: SetRules,
    /// Origin of the cluster clock that endpoint timestamps (ejections, ramps, EWMA) use.
    epoch: Instant,
    events: mpsc::Sender<Event>,
    pub(crate) events_rx: Mutex<Option<mpsc::Receiver<Event>>>,
    pub(crate) metrics: ClusterMetrics,
    /// Cancelled when a reload replaces or removes this cluster: its task stops at once, so it
    /// can no longer write the metric children the replacement shares.
    pub(crate) retired: tokio_util::sync::CancellationToken,
    /// `circuit_breaker` limits, counted across the cluster's endpoints.
    pub breaker: circuit_breaker::Breaker,
    /// TLS origination to the endpoints, when `tls` is configured.
    tls: Option<crate::tls::client::TlsClient>,
    families: crate::metrics::EndpointFamilies,
    discovery_updates: prometheus::IntCounterVec,
    grpc_responses: Arc<crate::metrics::GrpcCount>,
    /// The config file's folder: a relative `discovery.file` is found there.
    pub(crate) base_dir: std::path::PathBuf,
    /// Discovery rounds finished (applied or failed); start-up readiness waits for the first.
    pub(crate) discovery_rounds: tokio::sync::watch::Sender<u64>,
    /// `original_dst`: the endpoint is each connection's original destination.
    pub original_dst: Option<original_dst::OriginalDst>,
}

impl Cluster {
    /// Builds a cluster, resolving static endpoint names (relative TLS paths against the
    /// current folder; see `build_in`).
    pub fn build(
        index: usize,
        cfg: &ClusterConfig,
        metrics: &Metrics,
    ) -> Result<Cluster, ClusterError> {
        Self::build_in(index, cfg, metrics, std::path::Path::new("."))
    }

    /// Builds a cluster whose relative TLS file paths are relative to `base`, gathering its
    /// inputs on the spot.
    pub fn build_in(
        index: usize,
        cfg: &ClusterConfig,
        metrics: &Metrics,
        base: &std::path::Path,
    ) -> Result<Cluster, ClusterError> {
        let inputs = ClusterInputs::gather_blocking(index, cfg, base)?;
        Ok(Self::assemble(cfg, metrics, base, inputs))
    }

    /// Builds a cluster from inputs already gathered; no I/O.
    pub fn assemble(
        cfg: &ClusterConfig,
        metrics: &Metrics,
        base: &std::path::Path,
        inputs: ClusterInputs,
    ) -> Cluster {
        let ClusterInputs { tls, addresses } = inputs;
        let name = cfg.name.as_str();
        let families = metrics.endpoint_families();
        let all: Vec<Arc<Endpoint>> = cfg
            .endpoints
            .iter()
            .zip(addresses)
            .map(|(e, address)| {
                let ep = new_endpoint(cfg, &families, address, e.address.clone(), e.weight);
                ep.set_priority(e.priority);
                Arc::new(ep)
            })
            .collect();
        let balancer = balancer::new(cfg);
        let rules = SetRules {
            slow_start: cfg
                .slow_start
                .as_ref()
                .map(|s| (s.window.get(), s.min_weight_percent as f64 / 100.0)),
            panic_threshold: cfg.panic_threshold,
        };
        let set = EndpointSet::build(all, balancer.as_ref(), rules, 0);
        let (events, events_rx) = mpsc::channel(1024);
        let cluster_metrics = ClusterMetrics {
            request_duration: metrics.request_duration.with_label_values(&[name]),
            upstream_duration: metrics.upstream_request_duration.with_label_values(&[name]),
            connections_active: metrics
                .upstream_connections_active
                .with_label_values(&[name]),
            connect_failures: metrics.upstream_connect_failures.with_label_values(&[name]),
            health_success: metrics.health_checks.with_label_values(&[name, "success"]),
            health_failure: metrics.health_checks.with_label_values(&[name, "failure"]),
            ejections: metrics.outlier_ejections.with_label_values(&[name]),
            endpoints_by_state: ["healthy", "unhealthy", "ejected"]
                .map(|k| metrics.cluster_endpoints.with_label_values(&[name, k])),
            panic: metrics.cluster_panic.with_label_values(&[name]),
            retries: metrics.retries.with_label_values(&[name]),
            overflow: ["connections", "pending", "requests"]
                .map(|k| metrics.breaker_overflow.with_label_values(&[name, k])),
            breaker_open: metrics.breaker_open.with_label_values(&[name]),
            timeouts: ["route", "per_try", "connect"]
                .map(|k| metrics.timeouts.with_label_values(&[name, k])),
        };
        cluster_metrics.set_counts(&set);
        Cluster {
            name: cfg.name.clone(),
            config: cfg.clone(),
            endpoints: ArcSwap::from_pointee(set),
            balancer,
            rules,
            epoch: Instant::now(),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            metrics: cluster_metrics,
            retired: tokio_util::sync::CancellationToken::new(),
            breaker: match &cfg.circuit_breaker {
                Some(cb) => circuit_breaker::Breaker::new(
                    cb.max_connections as usize,
                    cb.max_pending_requests as usize,
                    cb.max_requests as usize,
                ),
                None => circuit_breaker::Breaker::unlimited(),
            },
            tls,
            families,
            discovery_updates: metrics.discovery_updates.clone(),
            grpc_responses: Arc::new(crate::metrics::GrpcCount::new(
                metrics.grpc_responses.clone(),
                name,
            )),
            base_dir: base.to_path_buf(),
            discovery_rounds: tokio::sync::watch::Sender::new(0),
            original_dst: cfg
                .original_dst
                .as_ref()
                .map(original_dst::OriginalDst::new),
        }
    }

    /// The current endpoint set (an `Arc`, safe to hold across awaits).
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    /// Picks a routable endpoint; `None` when there is none.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
        if self.original_dst.is_some() {
            return self.original_endpoint(ctx.original_dst?).ok();
        }
        let set = self.endpoints.load();
        let (routable, table) = set.level(ctx.hash);
        self.balancer.pick(routable, table, ctx).cloned()
    }

    /// An original_dst cluster's endpoint for `dst` (made on first use).
    pub fn original_endpoint(
        &self,
        dst: SocketAddr,
    ) -> Result<Arc<Endpoint>, original_dst::DstRefusal> {
        let od = self
            .original_dst
            .as_ref()
            .ok_or(original_dst::DstRefusal::NotAllowed)?;
        let make = || new_endpoint(&self.config, &self.families, dst, dst.to_string(), 1);
        od.endpoint(dst, make, |e| self.families.forget(&self.name, &e.label))
    }

    /// The instant of a cluster-clock timestamp.
    pub(crate) fn instant_at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Nanoseconds on this cluster's clock.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Rebuilds and publishes the set from the endpoints' current state. Called by the
    /// cluster's task only (the single writer), and once at build.
    pub(crate) fn republish(&self) -> Arc<EndpointSet> {
        let all = self.endpoints.load().all.clone();
        self.publish(all)
    }

    fn publish(&self, all: Vec<Arc<Endpoint>>) -> Arc<EndpointSet> {
        let set = Arc::new(EndpointSet::build(
            all,
            self.balancer.as_ref(),
            self.rules,
            self.now_ns(),
        ));
        self.metrics.set_counts(&set);
        self.endpoints.store(set.clone());
        set
    }

    /// Replaces the discovered part of the endpoint set with `targets` and publishes it (the
    /// cluster's task only). Endpoints that stay are the same objects, so they keep health,
    /// EWMA, in-flight counts and pooled connections; a changed weight is taken in place.
    /// Removed endpoints close their idle connections and lose their metric series; requests
    /// in flight on them finish. New ones start unhealthy when `start_unhealthy` (they wait for
    /// a passing health check). Returns the endpoints added.
    pub(crate) fn apply_discovered(
        &self,
        targets: &[crate::endpoint::Target],
        start_unhealthy: bool,
    ) -> Vec<Arc<Endpoint>> {
        let current = self.endpoints.load_full();
        let mut all: Vec<Arc<Endpoint>> = current
            .all
            .iter()
            .filter(|e| e.source == Source::Static)
            .cloned()
            .collect();
        let mut old: std::collections::HashMap<SocketAddr, &Arc<Endpoint>> = current
            .all
            .iter()
            .filter(|e| e.source == Source::Discovered)
            .map(|e| (e.address, e))
            .collect();
        let mut added = Vec::new();
        // A target that is also a static endpoint, or listed twice, is one endpoint (a set, so
        // a 10,000-endpoint answer is not compared pairwise).
        let mut taken: std::collections::HashSet<SocketAddr> =
            all.iter().map(|e| e.address).collect();
        for t in targets {
            if !taken.insert(t.address) {
                continue;
            }
            match old.remove(&t.address) {
                Some(e) => {
                    e.set_weight(t.weight);
                    e.take_placement(t);
                    all.push(e.clone());
                }
                None => {
                    let e = new_endpoint(
                        &self.config,
                        &self.families,
                        t.address,
                        t.address.to_string(),
                        t.weight,
                    )
                    .discovered(t);
                    if start_unhealthy {
                        e.set_healthy(false);
                    }
                    let e = Arc::new(e);
                    added.push(e.clone());
                    all.push(e);
                }
            }
        }
        for e in old.values() {
            e.pool.close();
            self.families.forget(&self.name, &e.label);
        }
        if !added.is_empty() || !old.is_empty() {
            tracing::info!(
                cluster = %self.name,
                added = added.len(),
                removed = old.len(),
                endpoints = all.len(),
                "discovered endpoint set changed"
            );
        }
        self.publish(all);
        added
    }

    /// Hands an event to the cluster's task; fails when the task is gone.
    pub(crate) async fn send(&self, event: Event) -> Result<(), ()> {
        self.events.send(event).await.map_err(|_| ())
    }

    /// Counts gRPC statuses of this cluster's responses.
    pub(crate) fn grpc_count(&self) -> &Arc<crate::metrics::GrpcCount> {
        &self.grpc_responses
    }

    pub(crate) fn count_discovery(&self, source: &str, result: &str) {
        self.discovery_updates
            .with_label_values(&[&self.name, source, result])
            .inc();
    }

    /// Counts a finished discovery round (start-up readiness waits for the first).
    pub(crate) fn discovery_round_done(&self) {
        self.discovery_rounds.send_modify(|n| *n += 1);
    }

    /// Waits until discovery has finished its first round (at once without discovery).
    pub async fn discovered(&self) {
        if self.config.discovery.is_none() {
            return;
        }
        let mut rounds = self.discovery_rounds.subscribe();
        // An error means the sender (this cluster) is gone: nothing left to wait for.
        let _ = rounds.wait_for(|n| *n > 0).await;
    }

    /// The discovered endpoints as targets (a rebuilt cluster starts from its predecessor's).
    pub(crate) fn discovered_targets(&self) -> Vec<(crate::endpoint::Target, bool)> {
        self.endpoints
            .load()
            .all
            .iter()
            .filter(|e| e.source == Source::Discovered)
            .map(|e| {
                (
                    crate::endpoint::Target {
                        address: e.address,
                        weight: e.weight(),
                        host: e.host.clone(),
                        zone: e.zone.clone(),
                        metadata: e.metadata.clone(),
                        priority: e.priority(),
                        held_out: e.is_held_out(),
                    },
                    e.is_healthy(),
                )
            })
            .collect()
    }

    /// Takes over the predecessor's endpoint objects where a reload (or CDS push) changed the
    /// cluster's settings but not how it connects: each endpoint still listed keeps its
    /// health, outlier state, EWMA, in-flight count and pooled connections (a changed weight is
    /// taken in place), and discovered endpoints carry over when discovery is unchanged. Only
    /// endpoints new to the cluster start fresh. Returns false, changing nothing, when the
    /// connection settings (protocol, TLS, pool, PROXY protocol) differ.
    pub(crate) fn adopt(&mut self, previous: &Cluster) -> bool {
        let (a, b) = (&self.config, &previous.config);
        if a.protocol != b.protocol
            || a.tls != b.tls
            || a.pool != b.pool
            || a.send_proxy_protocol != b.send_proxy_protocol
        {
            return false;
        }
        // Endpoint timestamps (ejections, ramps) are on the cluster clock: keep it.
        self.epoch = previous.epoch;
        let before = previous.endpoints.load_full();
        let mut all: Vec<Arc<Endpoint>> = Vec::new();
        for e in self.endpoints.load().all.iter() {
            let kept = before.all.iter().find(|o| {
                o.source == Source::Static && o.address == e.address && o.label == e.label
            });
            match kept {
                Some(o) => {
                    o.set_weight(e.weight());
                    o.set_priority(e.priority());
                    all.push(o.clone());
                }
                None => all.push(e.clone()),
            }
        }
        if a.discovery.is_some() && a.discovery == b.discovery {
            let taken: std::collections::HashSet<SocketAddr> =
                all.iter().map(|e| e.address).collect();
            all.extend(
                before
                    .all
                    .iter()
                    .filter(|o| o.source == Source::Discovered && !taken.contains(&o.address))
                    .cloned(),
            );
        }
        self.publish(all);
        true
    }

    /// Starts a rebuilt cluster from the endpoints its predecessor had discovered, with their
    /// health, so a reload that changes the cluster does not empty it until the next round.
    pub(crate) fn seed_discovered(&self, previous: &Cluster) {
        let seeded = previous.discovered_targets();
        let targets: Vec<_> = seeded.iter().map(|(t, _)| t.clone()).collect();
        for e in self.apply_discovered(&targets, false) {
            if let Some((_, healthy)) = seeded.iter().find(|(t, _)| t.address == e.address) {
                e.set_healthy(*healthy);
            }
        }
        self.republish();
    }

    /// The affinity hash of a request for ring_hash clusters; `None` for other policies or when
    /// the request has no key (it then goes to a random endpoint).
    pub fn request_hash(&self, headers: &http::HeaderMap, peer: IpAddr) -> Option<u64> {
        if self.config.lb != LbPolicy::RingHash {
            return None;
        }
        let HashOnConfig {
            header,
            cookie,
            source_ip,
        } = self.config.hash_on.as_ref()?;
        if let Some(h) = header {
            return headers.get(h.as_str()).map(|v| hash_key(v.as_bytes()));
        }
        if let Some(name) = cookie {
            return headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| hash_key(v.as_bytes()))
                });
        }
        if *source_ip {
            return Some(match peer {
                IpAddr::V4(a) => hash_key(&a.octets()),
                IpAddr::V6(a) => hash_key(&a.octets()),
            });
        }
        None
    }

    /// Records an exchange's outcome for outlier detection and least_latency. `latency` is
    /// the time to response headers, when there was a response.
    pub fn record(&self, endpoint: &Arc<Endpoint>, failed: bool, latency: Option<Duration>) {
        if let Some(l) = latency {
            endpoint
                .ewma()
                .observe(l, self.now_ns(), self.config.ewma_decay.get());
        }
        let Some(od) = &self.config.outlier_detection else {
            return;
        };
        if failed {
            if endpoint.record_failure(od.consecutive_failures) {
                // Full channel: the task is far behind; this streak is reported by the next one.
                if self
                    .events
                    .try_send(Event::Failures(endpoint.clone()))
                    .is_err()
                {
                    tracing::debug!(cluster = %self.name, "outlier event dropped");
                }
            }
        } else {
            endpoint.record_success();
        }
    }

    /// Stops the cluster's task (a reload replaced or removed the cluster).
    pub fn retire(&self) {
        self.retired.cancel();
        if let Some(od) = &self.original_dst {
            od.close();
        }
    }

    /// Copies per-endpoint atomics into their gauges (called when /metrics is scraped).
    pub fn refresh_gauges(&self) {
        self.metrics.breaker_open.set(self.breaker.is_open() as i64);
        for e in self.endpoints.load().all.iter() {
            e.refresh_gauges();
        }
    }
}

fn new_endpoint(
    cfg: &ClusterConfig,
    families: &crate::metrics::EndpointFamilies,
    address: SocketAddr,
    label: String,
    weight: u32,
) -> Endpoint {
    let pool = pool::EndpointPool::new(cfg.pool.max_idle_per_endpoint, cfg.pool.idle_timeout.get());
    let metrics = families.children(&cfg.name, &label);
    Endpoint::new(address, label, weight, pool, metrics)
}

impl ClusterMetrics {
    fn set_counts(&self, set: &EndpointSet) {
        self.panic.set(set.panic as i64);
        let ejected = set
            .all
            .iter()
            .filter(|e| e.ejected_until().is_some())
            .count();
        let unhealthy = set
            .all
            .iter()
            .filter(|e| !e.is_healthy() && e.ejected_until().is_none())
            .count();
        let healthy = set.all.len() - ejected - unhealthy;
        for (g, n) in self
            .endpoints_by_state
            .iter()
            .zip([healthy, unhealthy, ejected])
        {
            g.set(n as i64);
        }
    }
}

#[cfg(test)]
mod balancing_tests;
