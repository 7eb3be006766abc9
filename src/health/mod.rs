//! The cluster task: one per cluster, the only writer of its `EndpointSet` after start. It runs
//! active health probes (interval with jitter, timeout, thresholds), applies outlier ejections
//! reported by the request path and lifts them when they expire, republishes while slow-start
//! ramps are in progress, and closes pooled connections idle past their timeout. It holds only
//! a `Weak` reference between steps, so it ends by itself once a reload drops the cluster.
//! Transitions are logged (never individual probes).

pub mod counter;
pub mod probe;

use crate::cluster::{Cluster, Endpoint, Event};
use counter::{HealthCounter, Transition};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How often a slow-start ramp is republished: 20 steps per window, at most 10 per second.
fn ramp_step(window: Duration) -> Duration {
    (window / 20).max(Duration::from_millis(100))
}

/// Starts the cluster's task.
pub fn spawn(cluster: &Arc<Cluster>) -> tokio::task::JoinHandle<()> {
    let rx = cluster
        .events_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let weak = Arc::downgrade(cluster);
    let retired = cluster.retired.clone();
    if let Some(hc) = &cluster.config.health_check {
        tracing::info!(
            cluster = %cluster.name,
            interval_ms = hc.interval.get().as_millis() as u64,
            timeout_ms = hc.timeout.get().as_millis() as u64,
            healthy_threshold = hc.healthy_threshold,
            unhealthy_threshold = hc.unhealthy_threshold,
            kind = if hc.http.is_some() { "http" } else if hc.grpc.is_some() { "grpc" } else { "tcp" },
            "health checking started"
        );
    }
    tokio::spawn(async move {
        let Some(rx) = rx else { return };
        tokio::select! {
            _ = retired.cancelled() => {}
            _ = run(weak, rx) => {}
        }
    })
}

async fn run(weak: Weak<Cluster>, mut events: tokio::sync::mpsc::Receiver<Event>) {
    let mut counters: HashMap<String, HealthCounter> = HashMap::new();
    let mut next_probe = Instant::now();
    let mut next_sweep = Instant::now();
    loop {
        let Some(cluster) = weak.upgrade() else {
            return;
        };
        let now = Instant::now();
        if let Some(hc) = &cluster.config.health_check {
            if now >= next_probe {
                probe_round(&cluster, &mut counters).await;
                next_probe = now + hc.interval.get();
            }
        }
        if now >= next_sweep {
            for e in cluster.endpoints().all.iter() {
                e.pool.purge_expired();
            }
            next_sweep =
                now + (cluster.config.pool.idle_timeout.get() / 2).max(Duration::from_millis(100));
        }
        let set = if lift_ejections(&cluster) || cluster.endpoints().ramping {
            cluster.republish()
        } else {
            cluster.endpoints()
        };
        let mut deadline = next_sweep;
        if cluster.config.health_check.is_some() {
            deadline = deadline.min(next_probe);
        }
        if let (true, Some(ss)) = (set.ramping, &cluster.config.slow_start) {
            deadline = deadline.min(Instant::now() + ramp_step(ss.window.get()));
        }
        if let Some(until) = set.all.iter().filter_map(|e| e.ejected_until()).min() {
            deadline = deadline.min(cluster.instant_at(until));
        }
        drop(set);
        drop(cluster);
        tokio::select! {
            ev = events.recv() => match ev {
                // Every sender lives in the cluster: it is gone.
                None => return,
                Some(Event::Failures(endpoint)) => {
                    let Some(cluster) = weak.upgrade() else { return };
                    eject(&cluster, &endpoint);
                }
                Some(Event::Discovered(targets)) => {
                    let Some(cluster) = weak.upgrade() else { return };
                    if apply_discovered(&cluster, &targets, &mut counters) {
                        // New endpoints waiting for their first check: probe now.
                        next_probe = Instant::now();
                    }
                    cluster.discovery_round_done();
                }
            },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Probes every endpoint once, concurrently, each after its own random jitter; publishes each
/// transition as soon as its probe completes it.
async fn probe_round(cluster: &Arc<Cluster>, counters: &mut HashMap<String, HealthCounter>) {
    let Some(hc) = cluster.config.health_check.clone() else {
        return;
    };
    let set = cluster.endpoints();
    let jitter = hc.jitter.map(|j| j.get()).unwrap_or_default();
    let mut probes = JoinSet::new();
    for (i, e) in set.all.iter().enumerate() {
        let tls_with = |alpn| cluster.tls_for(e, alpn).map(|(c, n)| (c.clone(), n));
        let tls = tls_with(crate::tls::client::Alpn::Http1);
        let grpc_tls = tls_with(crate::tls::client::Alpn::Http2);
        let (e, hc) = (e.clone(), hc.clone());
        let delay = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(fastrand::f64())
        };
        probes.spawn(async move {
            tokio::time::sleep(delay).await;
            let host = hc
                .http
                .as_ref()
                .and_then(|h| h.host.clone())
                .unwrap_or_else(|| e.authority());
            let kind = match (&hc.http, &hc.grpc) {
                (Some(cfg), _) => probe::Probe::Http {
                    cfg,
                    host: &host,
                    tls,
                },
                (None, Some(cfg)) => probe::Probe::Grpc {
                    cfg,
                    host: &host,
                    tls: grpc_tls,
                },
                (None, None) => probe::Probe::Tcp,
            };
            (i, probe::run(&kind, e.address, hc.timeout.get()).await)
        });
    }
    while let Some(joined) = probes.join_next().await {
        let Ok((i, result)) = joined else { continue };
        let Some(e) = set.all.get(i) else { continue };
        match &result {
            Ok(()) => cluster.metrics.health_success.inc(),
            Err(_) => cluster.metrics.health_failure.inc(),
        }
        let counter = counters.entry(e.label.clone()).or_insert_with(|| {
            HealthCounter::new(e.is_healthy(), hc.healthy_threshold, hc.unhealthy_threshold)
        });
        match counter.record(result.is_ok()) {
            Some(Transition::BecameUnhealthy) => {
                let reason = result.err().map(|r| r.to_string()).unwrap_or_default();
                tracing::warn!(cluster = %cluster.name, endpoint = %e.label, %reason, "endpoint unhealthy");
                e.set_healthy(false);
                cluster.republish();
            }
            Some(Transition::BecameHealthy) => {
                tracing::info!(cluster = %cluster.name, endpoint = %e.label, "endpoint healthy");
                e.set_healthy(true);
                e.start_ramp(cluster.now_ns());
                cluster.republish();
            }
            None => {}
        }
    }
}

/// Applies a discovered endpoint list; true when new endpoints wait for a health check.
fn apply_discovered(
    cluster: &Cluster,
    targets: &[crate::discovery::Target],
    counters: &mut HashMap<String, HealthCounter>,
) -> bool {
    let hc = cluster.config.health_check.as_ref();
    let start_healthy = cluster
        .config
        .discovery
        .as_ref()
        .is_some_and(|d| d.start_healthy);
    let wait_for_check = hc.is_some() && !start_healthy;
    let added = cluster.apply_discovered(targets, wait_for_check);
    let set = cluster.endpoints();
    let labels: std::collections::HashSet<&str> =
        set.all.iter().map(|e| e.label.as_str()).collect();
    counters.retain(|label, _| labels.contains(label.as_str()));
    if let (true, Some(hc)) = (wait_for_check, hc) {
        for e in &added {
            counters.insert(
                e.label.clone(),
                HealthCounter::awaiting_first(hc.healthy_threshold, hc.unhealthy_threshold),
            );
        }
    }
    wait_for_check && !added.is_empty()
}

/// Ejects an endpoint that reached `consecutive_failures`, unless that would take more than
/// `max_ejection_percent` of the cluster out.
fn eject(cluster: &Cluster, endpoint: &Arc<Endpoint>) {
    let Some(od) = &cluster.config.outlier_detection else {
        return;
    };
    if endpoint.ejected_until().is_some() {
        return;
    }
    let set = cluster.endpoints();
    let ejected = set
        .all
        .iter()
        .filter(|e| e.ejected_until().is_some())
        .count();
    if (ejected + 1) * 100 > od.max_ejection_percent as usize * set.all.len() {
        tracing::warn!(
            cluster = %cluster.name,
            endpoint = %endpoint.label,
            ejected,
            max_ejection_percent = od.max_ejection_percent,
            "not ejecting: max_ejection_percent reached"
        );
        endpoint.uneject();
        return;
    }
    let now = cluster.now_ns();
    let (streak, returned_at) = endpoint.streak();
    let (duration, times) = ejection_length(
        od.base_ejection_time.get(),
        od.max_ejection_time.get(),
        streak,
        Duration::from_nanos(now.saturating_sub(returned_at)),
    );
    endpoint.eject(now + duration.as_nanos() as u64, times);
    cluster.metrics.ejections.inc();
    tracing::warn!(
        cluster = %cluster.name,
        endpoint = %endpoint.label,
        ejection = times,
        duration_ms = duration.as_millis() as u64,
        "endpoint ejected by outlier detection"
    );
    cluster.republish();
}

/// How long the next ejection lasts, and its place in the streak: the streak loses one for each
/// `base` the endpoint has spent back in rotation (Envoy decrements its multiplier likewise), then
/// the ejection lasts `base` × its place, at most `max` (never less than `base`).
fn ejection_length(
    base: Duration,
    max: Duration,
    streak: u32,
    in_rotation: Duration,
) -> (Duration, u32) {
    let decayed = (in_rotation.as_nanos() / base.as_nanos().max(1)).min(u32::MAX as u128) as u32;
    let times = streak.saturating_sub(decayed).saturating_add(1);
    (base.saturating_mul(times).min(max.max(base)), times)
}

/// Returns ejected endpoints whose time is up to rotation; true if any was.
fn lift_ejections(cluster: &Cluster) -> bool {
    let now = cluster.now_ns();
    let mut any = false;
    for e in cluster.endpoints().all.iter() {
        if e.ejected_until().is_some_and(|until| until <= now) {
            e.returned(now);
            e.start_ramp(now);
            tracing::info!(cluster = %cluster.name, endpoint = %e.label, "endpoint returned from ejection");
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::ejection_length;
    use std::time::Duration;

    #[test]
    fn ejections_grow_to_the_cap_and_decay_while_in_rotation() {
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(300));
        let s = Duration::from_secs;
        // Back to back: 30, 60, ... capped at 300.
        assert_eq!(ejection_length(base, max, 0, s(0)), (s(30), 1));
        assert_eq!(ejection_length(base, max, 1, s(0)), (s(60), 2));
        assert_eq!(ejection_length(base, max, 20, s(0)), (s(300), 21));
        // Two base times healthy take two off the streak.
        assert_eq!(ejection_length(base, max, 3, s(61)), (s(60), 2));
        assert_eq!(ejection_length(base, max, 3, s(3600)), (s(30), 1));
        // A cap below the base still ejects for the base time.
        assert_eq!(ejection_length(base, s(1), 4, s(0)).0, s(30));
    }
}
