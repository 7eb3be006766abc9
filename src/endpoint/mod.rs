//! One upstream address and what is known about it. `Endpoint`s are shared (`Arc`) between the
//! published `EndpointSet` and in-flight requests. Request-path numbers (in-flight count,
//! latency EWMA, consecutive failures) are atomics updated in place and never republished;
//! health, ejection and slow-start state are written only by the cluster's task, which then
//! republishes the set.

pub mod ewma;
mod target;

pub use ewma::PeakEwma;
pub use target::Target;

use crate::metrics::EndpointMetrics;
use crate::pool::EndpointPool;
use prometheus::{IntCounter, IntGauge};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One upstream endpoint: its address and every piece of state balancers, health and pools keep on it.
pub struct Endpoint {
    /// The resolved address connections go to.
    pub address: SocketAddr,
    /// The address as configured (`web-0.svc:8080`) or discovered (`10.0.0.7:8080`), used in
    /// metrics, logs and /clusters.
    pub label: String,
    /// The host name TLS (SNI, certificate check) and HTTP health checks use: the configured
    /// host, or the DNS name the endpoint was discovered under.
    pub host: String,
    /// Where the endpoint came from; discovery replaces only what it added.
    pub source: Source,
    /// Zone and free-form metadata from an endpoints file (shown in /clusters).
    pub zone: Option<String>,
    /// Free-form metadata from an endpoints file.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Configured or discovered weight (default 1); discovery may change it in place (an SRV
    /// record's new weight) without losing the endpoint's state.
    weight: AtomicU32,
    /// Result of active health checking (always true without it).
    healthy: AtomicBool,
    /// Priority level (0 first); discovery may change it in place.
    priority: AtomicU32,
    /// Out of rotation by the control plane's word (EDS health status), apart from active
    /// health checking, which cannot bring it back.
    held_out: AtomicBool,
    /// Cluster-clock ns until which outlier detection keeps it out; 0 when not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    /// Ejections in the current streak (what the next one's length multiplies by, before decay).
    streak: AtomicU32,
    /// Cluster-clock ns at which the endpoint last returned from an ejection.
    returned_at: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Cluster-clock ns + 1 at which it last became routable (slow start); 0 = not ramping.
    ready_since: AtomicU64,
    /// Weight as last published (configured × slow-start factor), f64 bits.
    effective_weight: AtomicU64,
    /// What P2C picks read, in one cache line: at 10,000 endpoints a candidate costs one miss.
    hot: Hot,
    pub(crate) metrics: EndpointMetrics,
    pub(crate) pool: EndpointPool,
}

impl Endpoint {
    pub(crate) fn new(
        address: SocketAddr,
        label: String,
        weight: u32,
        pool: EndpointPool,
        metrics: EndpointMetrics,
    ) -> Endpoint {
        metrics.healthy.set(1);
        let host = crate::config::units::split_host_port(&label)
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|_| address.ip().to_string());
        Endpoint {
            address,
            label,
            host,
            source: Source::Static,
            zone: None,
            metadata: Default::default(),
            weight: AtomicU32::new(weight),
            healthy: AtomicBool::new(true),
            priority: AtomicU32::new(0),
            held_out: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ready_since: AtomicU64::new(0),
            effective_weight: AtomicU64::new((weight as f64).to_bits()),
            hot: Hot {
                in_flight: AtomicUsize::new(0),
                ewma: PeakEwma::default(),
            },
            metrics,
            pool,
        }
    }

    /// An endpoint outside any cluster, with unregistered metrics: for simulations and
    /// benchmarks that drive balancers directly.
    pub fn standalone(address: SocketAddr, weight: u32) -> Endpoint {
        let gauge = || IntGauge::new("standalone", "unregistered").expect("valid metric");
        let fgauge = || prometheus::Gauge::new("standalone", "unregistered").expect("valid metric");
        let counter = || IntCounter::new("standalone", "unregistered").expect("valid metric");
        let metrics = EndpointMetrics {
            healthy: gauge(),
            requests_by_class: [counter(), counter(), counter(), counter(), counter()],
            ewma_seconds: fgauge(),
            in_flight: gauge(),
            effective_weight: fgauge(),
        };
        Endpoint::new(
            address,
            address.to_string(),
            weight,
            EndpointPool::new(0, Duration::ZERO),
            metrics,
        )
    }

    /// Marks the endpoint as found by discovery.
    pub(crate) fn discovered(mut self, target: &Target) -> Endpoint {
        self.source = Source::Discovered;
        self.host = target.host.clone();
        self.zone = target.zone.clone();
        self.metadata = target.metadata.clone();
        self.take_placement(target);
        self
    }

    /// Takes a rediscovered priority and health status; the caller republishes.
    pub(crate) fn take_placement(&self, target: &Target) {
        self.set_priority(target.priority);
        self.held_out.store(target.held_out, Ordering::Relaxed);
    }

    /// The priority level (0 takes traffic first).
    pub fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }

    /// Sets the priority level; the caller republishes.
    pub(crate) fn set_priority(&self, priority: u32) {
        self.priority.store(priority, Ordering::Relaxed);
    }

    /// Held out of rotation by the control plane.
    pub fn is_held_out(&self) -> bool {
        self.held_out.load(Ordering::Relaxed)
    }

    /// `host:port`, what an HTTP health check sends as Host.
    pub fn authority(&self) -> String {
        match self.source {
            Source::Static => self.label.clone(),
            Source::Discovered => match self.address {
                SocketAddr::V6(_) if self.host.parse::<std::net::Ipv6Addr>().is_ok() => {
                    format!("[{}]:{}", self.host, self.address.port())
                }
                _ => format!("{}:{}", self.host, self.address.port()),
            },
        }
    }

    /// The configured or discovered weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Takes a rediscovered weight; the caller republishes.
    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Passing active health checks (or not checked).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.metrics.healthy.set(healthy as i64);
    }

    /// Cluster-clock ns until which the endpoint is ejected, if it is.
    pub fn ejected_until(&self) -> Option<u64> {
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Ejects until `until_ns`, as ejection `streak` of a streak.
    pub(crate) fn eject(&self, until_ns: u64, streak: u32) -> u32 {
        self.ejected_until.store(until_ns.max(1), Ordering::Relaxed);
        self.streak.store(streak, Ordering::Relaxed);
        self.metrics.healthy.set(0);
        self.ejections.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Back in rotation from an ejection at `now_ns`: the streak starts decaying from here.
    pub(crate) fn returned(&self, now_ns: u64) {
        self.uneject();
        self.returned_at.store(now_ns, Ordering::Relaxed);
    }

    /// (ejections in the current streak, cluster-clock ns of the last return).
    pub(crate) fn streak(&self) -> (u32, u64) {
        (
            self.streak.load(Ordering::Relaxed),
            self.returned_at.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn uneject(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.metrics.healthy.set(self.is_healthy() as i64);
    }

    /// How many times outlier detection has ejected it.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Marks the start of a slow-start ramp at `now_ns` (cluster clock).
    pub fn start_ramp(&self, now_ns: u64) {
        self.ready_since.store(now_ns + 1, Ordering::Relaxed);
    }

    /// Slow-start factor in [min, 1] at `now_ns`; 1 when not ramping.
    pub(crate) fn ramp_factor(&self, now_ns: u64, window: Duration, min: f64) -> f64 {
        match self.ready_since.load(Ordering::Relaxed) {
            0 => 1.0,
            since => {
                let elapsed = now_ns.saturating_sub(since - 1) as f64;
                let f = elapsed / window.as_nanos().max(1) as f64;
                if f >= 1.0 {
                    self.ready_since.store(0, Ordering::Relaxed);
                    1.0
                } else {
                    f.max(min)
                }
            }
        }
    }

    pub(crate) fn set_effective_weight(&self, w: f64) {
        self.effective_weight.store(w.to_bits(), Ordering::Relaxed);
    }

    /// The weight balancers use now: configured weight times the slow-start ramp, 0 out of rotation.
    pub fn effective_weight(&self) -> f64 {
        f64::from_bits(self.effective_weight.load(Ordering::Relaxed))
    }

    /// Requests sent to this endpoint whose response has not finished.
    pub fn in_flight(&self) -> usize {
        self.hot.in_flight.load(Ordering::Relaxed)
    }

    /// Peak-EWMA latency in seconds, once a response has been seen.
    pub fn ewma_seconds(&self) -> Option<f64> {
        self.hot.ewma.get()
    }

    /// The latency EWMA least_latency reads; the request path feeds it.
    pub fn ewma(&self) -> &PeakEwma {
        &self.hot.ewma
    }

    /// Counts a request as in flight until the returned guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.hot.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Counts a failure (5xx or connection failure) in a row; true when this one reaches
    /// `threshold` (exactly once per streak, so one event is sent).
    pub(crate) fn record_failure(&self, threshold: u32) -> bool {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1 == threshold
    }

    pub(crate) fn record_success(&self) {
        // Skip the store in the common case so the cache line stays shared between cores.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Copies the atomics into the Prometheus gauges (at scrape time, not per request).
    pub(crate) fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.in_flight.set(self.in_flight() as i64);
        m.ewma_seconds.set(self.ewma_seconds().unwrap_or(0.0));
        m.effective_weight.set(self.effective_weight());
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("label", &self.label)
            .field("weight", &self.weight())
            .finish()
    }
}

/// Where an endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Listed under the cluster's `endpoints`.
    Static,
    /// Found by the cluster's `discovery`.
    Discovered,
}

#[repr(align(64))]
struct Hot {
    in_flight: AtomicUsize,
    ewma: PeakEwma,
}

/// Holds one in-flight count on an endpoint.
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// The endpoint this count is held on.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.hot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
