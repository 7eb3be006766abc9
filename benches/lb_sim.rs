//! LB-quality simulator: drives each real balancing policy against modelled endpoints in
//! virtual time (deterministic, seeded) and prints client-side p50/p99 latency and the share of
//! traffic per endpoint, for three scenarios:
//!
//! - `slow`: four endpoints, one of them 5× slower (50 ms vs 10 ms mean service time);
//! - `flapping`: four 10 ms endpoints, one alternating every 2 s between 10 ms and 100 ms;
//! - `scale-up`: three endpoints under heavy load, three more added at t = 10 s (with a 5 s
//!   slow start), reporting the share the new ones take in the 5 s after.
//!
//! Each endpoint serves 8 requests at a time with exponential service times; more queue at it.
//! Arrivals are Poisson at a fixed rate (open loop). Run: `cargo bench --bench lb_sim`.

use outrigger::balancer::{self, Balancer, PickContext};
use outrigger::cluster::{Endpoint, EndpointSet, InFlight, SetRules};
use outrigger::config::{ClusterConfig, LbPolicy};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const WORKERS: usize = 8;
const MS: u64 = 1_000_000;

struct Model {
    /// Mean service time (ns) as a function of virtual time.
    mean: Box<dyn Fn(u64) -> u64>,
    busy: usize,
    queue: VecDeque<(u64, InFlight)>,
}

struct Scenario {
    name: &'static str,
    rate_per_s: f64,
    duration_s: u64,
    initial: usize,
    /// (time, endpoints added then).
    added: Option<(u64, usize)>,
    mean: fn(usize, u64) -> u64,
    slow_start: Option<Duration>,
}

struct Outcome {
    latencies: Vec<u64>,
    per_endpoint: Vec<usize>,
    after_scale_up_new: usize,
    after_scale_up_total: usize,
}

fn simulate(sc: &Scenario, lb: LbPolicy, seed: u64) -> Outcome {
    fastrand::seed(seed);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut cfg: ClusterConfig =
        serde_yaml::from_str("name: sim\nendpoints: []\n").expect("sim config");
    cfg.lb = lb;
    let policy: Box<dyn Balancer> = balancer::new(&cfg);
    let total = sc.initial + sc.added.map_or(0, |a| a.1);
    let endpoints: Vec<Arc<Endpoint>> = (0..total)
        .map(|i| {
            Arc::new(Endpoint::standalone(
                ([10, 0, 0, i as u8 + 1], 80).into(),
                1,
            ))
        })
        .collect();
    let mut models: Vec<Model> = (0..total)
        .map(|i| {
            let f = sc.mean;
            Model {
                mean: Box::new(move |t| f(i, t)),
                busy: 0,
                queue: VecDeque::new(),
            }
        })
        .collect();
    let rules = SetRules {
        slow_start: sc.slow_start.map(|w| (w, 0.1)),
        panic_threshold: 0,
    };
    let mut active = sc.initial;
    let build = |n: usize, now: u64| {
        EndpointSet::build(endpoints[..n].to_vec(), policy.as_ref(), rules, now)
    };
    let mut set = build(active, 0);
    // Events: (time, seq, kind): kind 0 = arrival, 1 = completion at endpoint i.
    let mut events: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut completions: Vec<Option<(u64, InFlight)>> = Vec::new();
    let mut seq = 0u64;
    let end = sc.duration_s * 1000 * MS;
    let exp = |rng: &mut fastrand::Rng, mean: f64| -(1.0 - rng.f64()).ln() * mean;
    events.push(Reverse((0, 0, usize::MAX)));
    let mut out = Outcome {
        latencies: Vec::new(),
        per_endpoint: vec![0; total],
        after_scale_up_new: 0,
        after_scale_up_total: 0,
    };
    let mut next_rebuild = 100 * MS;
    let decay = Duration::from_secs(10);
    let start_service = |i: usize,
                         now: u64,
                         arrived: u64,
                         guard: InFlight,
                         models: &mut Vec<Model>,
                         rng: &mut fastrand::Rng,
                         events: &mut BinaryHeap<Reverse<(u64, u64, usize)>>,
                         completions: &mut Vec<Option<(u64, InFlight)>>,
                         seq: &mut u64| {
        models[i].busy += 1;
        let service = exp(rng, (models[i].mean)(now) as f64) as u64;
        *seq += 1;
        completions.push(Some((arrived, guard)));
        events.push(Reverse((now + service, *seq, completions.len() - 1)));
    };
    while let Some(Reverse((now, _, kind))) = events.pop() {
        if now > end {
            break;
        }
        if let Some((at, n)) = sc.added {
            if active < sc.initial + n && now >= at * 1000 * MS {
                active = sc.initial + n;
                for e in &endpoints[sc.initial..active] {
                    e.start_ramp(now);
                }
                set = build(active, now);
            }
        }
        if now >= next_rebuild {
            // Slow-start ramps are republished periodically, as the cluster task does.
            set = build(active, now);
            next_rebuild = now + 100 * MS;
        }
        if kind == usize::MAX {
            // Arrival: pick, then serve or queue at the endpoint.
            let key = rng.u64(..);
            let ctx = PickContext {
                hash: Some(key),
                avoid: None,
                original_dst: None,
            };
            let Some(ep) = policy.pick(&set.routable, &set.table, &ctx) else {
                continue;
            };
            let i = endpoints
                .iter()
                .position(|e| Arc::ptr_eq(e, ep))
                .expect("picked a known endpoint");
            out.per_endpoint[i] += 1;
            if let Some((at, _)) = sc.added {
                if now >= at * 1000 * MS && now < (at + 5) * 1000 * MS {
                    out.after_scale_up_total += 1;
                    out.after_scale_up_new += (i >= sc.initial) as usize;
                }
            }
            let guard = ep.start_request();
            if models[i].busy < WORKERS {
                start_service(
                    i,
                    now,
                    now,
                    guard,
                    &mut models,
                    &mut rng,
                    &mut events,
                    &mut completions,
                    &mut seq,
                );
            } else {
                models[i].queue.push_back((now, guard));
            }
            seq += 1;
            let gap = exp(&mut rng, 1e9 / sc.rate_per_s) as u64;
            events.push(Reverse((now + gap.max(1), seq, usize::MAX)));
        } else {
            let Some((arrived, guard)) = completions[kind].take() else {
                continue;
            };
            let i = endpoints
                .iter()
                .position(|e| Arc::ptr_eq(e, guard.endpoint()))
                .expect("known endpoint");
            let latency = now - arrived;
            guard
                .endpoint()
                .ewma()
                .observe(Duration::from_nanos(latency), now, decay);
            drop(guard);
            out.latencies.push(latency);
            models[i].busy -= 1;
            if let Some((queued_at, g)) = models[i].queue.pop_front() {
                start_service(
                    i,
                    now,
                    queued_at,
                    g,
                    &mut models,
                    &mut rng,
                    &mut events,
                    &mut completions,
                    &mut seq,
                );
            }
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / MS as f64
}

fn main() {
    let scenarios = [
        Scenario {
            name: "slow (one endpoint 5x slower)",
            rate_per_s: 1500.0,
            duration_s: 20,
            initial: 4,
            added: None,
            mean: |i, _| if i == 3 { 50 * MS } else { 10 * MS },
            slow_start: None,
        },
        Scenario {
            name: "flapping (one endpoint 10 ms <-> 100 ms every 2 s)",
            rate_per_s: 1500.0,
            duration_s: 20,
            initial: 4,
            added: None,
            mean: |i, t| {
                if i == 3 && (t / (2000 * MS)) % 2 == 1 {
                    100 * MS
                } else {
                    10 * MS
                }
            },
            slow_start: None,
        },
        Scenario {
            name: "scale-up (3 -> 6 endpoints at 10 s, 5 s slow start)",
            rate_per_s: 2200.0,
            duration_s: 20,
            initial: 3,
            added: Some((10, 3)),
            mean: |_, _| 10 * MS,
            slow_start: Some(Duration::from_secs(5)),
        },
    ];
    let policies = [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest,
        LbPolicy::LeastLatency,
        LbPolicy::RingHash,
    ];
    println!("LB-quality simulation: {WORKERS} workers per endpoint, exponential service times, Poisson arrivals, seed 42\n");
    for sc in &scenarios {
        println!(
            "## {} at {} req/s for {} s\n",
            sc.name, sc.rate_per_s, sc.duration_s
        );
        println!(
            "| policy | p50 ms | p99 ms | share per endpoint |{}",
            if sc.added.is_some() {
                " new endpoints' share, 5 s after scale-up |"
            } else {
                ""
            }
        );
        println!(
            "|---|---:|---:|---|{}",
            if sc.added.is_some() { "---:|" } else { "" }
        );
        for lb in policies {
            let mut o = simulate(sc, lb, 42);
            o.latencies.sort_unstable();
            let total: usize = o.per_endpoint.iter().sum();
            let shares: Vec<String> = o
                .per_endpoint
                .iter()
                .map(|n| format!("{:.0}%", *n as f64 * 100.0 / total.max(1) as f64))
                .collect();
            let extra = if sc.added.is_some() {
                format!(
                    " {:.0}% |",
                    o.after_scale_up_new as f64 * 100.0 / o.after_scale_up_total.max(1) as f64
                )
            } else {
                String::new()
            };
            println!(
                "| {:?} | {:.1} | {:.1} | {} |{}",
                lb,
                percentile(&o.latencies, 0.5),
                percentile(&o.latencies, 0.99),
                shares.join(" / "),
                extra
            );
        }
        println!();
    }
}
