//! Balancing as a cluster does it: policies over a published set, slow start, panic mode.

use super::{Cluster, EndpointSet, SetRules};
use crate::balancer::*;
use crate::config::ClusterConfig;
use crate::hash::hash_key;
use crate::metrics::Metrics;
use std::collections::HashMap;

fn cluster(lb: &str, weights: &[u32], extra: &str) -> Cluster {
    let eps: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{address: \"127.0.0.{}:80\", weight: {w}}}", i + 1))
        .collect();
    let yaml = format!(
        "name: c\nlb: {lb}\nendpoints: [{}]\n{extra}",
        eps.join(", ")
    );
    let cfg: ClusterConfig = serde_yaml::from_str(&yaml).unwrap();
    Cluster::build(0, &cfg, &Metrics::new()).unwrap()
}

fn picks(c: &Cluster, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let e = c.pick(&PickContext::default()).unwrap();
            e.address
                .ip()
                .to_string()
                .rsplit('.')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
                - 1
        })
        .collect()
}

#[test]
fn smooth_wrr_matches_nginx_sequence_for_5_1_1() {
    // nginx's documented sequence for weights a=5, b=1, c=1: a a b a c a a.
    assert_eq!(smooth_schedule(&[5.0, 1.0, 1.0]), vec![0, 0, 1, 0, 2, 0, 0]);
    let c = cluster("weighted_round_robin", &[5, 1, 1], "");
    let seq = picks(&c, 7000);
    assert_eq!(&seq[..7], &[0, 0, 1, 0, 2, 0, 0]);
    let count = |i| seq.iter().filter(|x| **x == i).count();
    assert_eq!((count(0), count(1), count(2)), (5000, 1000, 1000));
    // Exactly nginx's cycle, over and over.
    assert!(seq.chunks(7).all(|c| c == [0, 0, 1, 0, 2, 0, 0]));
}

#[test]
fn large_schedules_keep_proportions() {
    let weights: Vec<f64> = (0..5000).map(|i| (1 + i % 3) as f64).collect();
    let s = smooth_schedule(&weights);
    assert_eq!(s.len(), 5000 / 3 * 6 + 3);
    let mut counts = vec![0usize; weights.len()];
    for i in &s {
        counts[*i as usize] += 1;
    }
    assert!(counts.iter().zip(&weights).all(|(c, w)| *c == *w as usize));
}

#[test]
fn alias_table_and_random_follow_weights() {
    fastrand::seed(7);
    let c = cluster("random", &[1, 2, 7], "");
    let seq = picks(&c, 100_000);
    let share = |i| seq.iter().filter(|x| **x == i).count() as f64 / 1e5;
    assert!((share(0) - 0.1).abs() < 0.01, "{}", share(0));
    assert!((share(1) - 0.2).abs() < 0.01, "{}", share(1));
    assert!((share(2) - 0.7).abs() < 0.01, "{}", share(2));
}

#[test]
fn least_request_prefers_fewer_in_flight() {
    fastrand::seed(11);
    let c = cluster("least_request", &[1, 1, 1], "");
    let set = c.endpoints();
    // Endpoint 0 is busy with 5 requests; endpoint 1 with 1; endpoint 2 idle.
    let _busy: Vec<_> = (0..5).map(|_| set.all[0].start_request()).collect();
    let _one = set.all[1].start_request();
    let seq = picks(&c, 3000);
    let count = |i| seq.iter().filter(|x| **x == i).count();
    // P2C: the busiest endpoint can only win against itself, which distinct candidates rule out.
    assert_eq!(count(0), 0);
    assert!(count(2) > count(1), "{} vs {}", count(2), count(1));
    // The idle endpoint wins whenever it is a candidate: 2 of the 3 possible pairs.
    assert!((1900..=2100).contains(&count(2)), "{}", count(2));
}

#[test]
fn least_latency_avoids_the_slow_endpoint_and_starts_new_ones_level() {
    fastrand::seed(3);
    let c = cluster("least_latency", &[1, 1, 1], "");
    let set = c.endpoints();
    let decay = std::time::Duration::from_secs(10);
    set.all[0]
        .ewma()
        .observe(std::time::Duration::from_millis(60), 1, decay);
    set.all[1]
        .ewma()
        .observe(std::time::Duration::from_millis(10), 1, decay);
    // Endpoint 2 has no history yet: scored like its competitor, so neither flooded nor shunned.
    let seq = picks(&c, 3000);
    let count = |i| seq.iter().filter(|x| **x == i).count();
    assert!(
        count(0) < 600,
        "slow endpoint only wins coin flips against the new one: {}",
        count(0)
    );
    assert!(
        (700..=1800).contains(&count(2)),
        "new endpoint share {}",
        count(2)
    );
    // Once the new endpoint has answered fast, the slow one loses every comparison.
    set.all[2]
        .ewma()
        .observe(std::time::Duration::from_millis(10), 1, decay);
    let seq = picks(&c, 3000);
    assert_eq!(seq.iter().filter(|x| **x == 0).count(), 0);
}

#[test]
fn ring_hash_moves_only_the_removed_endpoints_keys() {
    let c = cluster("ring_hash", &[1; 10], "hash_on: { header: x-user }\n");
    let set = c.endpoints();
    let ring = Ring::new(&set.all);
    let before: Vec<usize> = (0..1000)
        .map(|k| {
            ring.lookup(hash_key(format!("user-{k}").as_bytes()))
                .unwrap()
        })
        .collect();
    let survivors: Vec<_> = set
        .all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, e)| e.clone())
        .collect();
    let ring2 = Ring::new(&survivors);
    let mut stayed = 0;
    let mut moved_from_others = 0;
    for (k, owner) in before.iter().enumerate() {
        let now = ring2
            .lookup(hash_key(format!("user-{k}").as_bytes()))
            .unwrap();
        let now_label = &survivors[now].label;
        if now_label == &set.all[*owner].label {
            stayed += 1;
        } else if *owner != 3 {
            moved_from_others += 1;
        }
    }
    assert_eq!(
        moved_from_others, 0,
        "keys of remaining endpoints never move"
    );
    assert!(
        stayed >= 850,
        "only the removed endpoint's ~1/10 of keys move: {stayed} stayed"
    );
    let mut per: HashMap<usize, usize> = HashMap::new();
    for o in &before {
        *per.entry(*o).or_default() += 1;
    }
    assert!(
        per.values().all(|n| (50..=160).contains(n)),
        "spread over 10 endpoints: {per:?}"
    );
}

#[test]
fn slow_start_ramps_effective_weight() {
    let c = cluster(
        "round_robin",
        &[1, 1],
        "slow_start: { window: 10s, min_weight_percent: 10 }\n",
    );
    let set = c.endpoints();
    set.all[1].start_ramp(0);
    let rules = SetRules {
        slow_start: Some((std::time::Duration::from_secs(10), 0.1)),
        panic_threshold: 50,
    };
    let rr = RoundRobin::default();
    let at = |secs: u64| EndpointSet::build(set.all.clone(), &rr, rules, secs * 1_000_000_000);
    let s = at(0);
    assert!(s.ramping);
    assert_eq!(set.all[1].effective_weight(), 0.1);
    let Table::Schedule(sched) = &s.table else {
        panic!("ramping round robin uses a schedule")
    };
    assert_eq!(
        sched.iter().filter(|i| **i == 1).count() * 10,
        sched.len() * 10 / 11
    );
    at(5);
    assert!((set.all[1].effective_weight() - 0.5).abs() < 1e-9);
    let s = at(10);
    assert!(!s.ramping);
    assert_eq!(set.all[1].effective_weight(), 1.0);
    assert!(matches!(s.table, Table::None));
}

#[test]
fn panic_mode_balances_over_all_when_too_few_are_healthy() {
    let c = cluster("round_robin", &[1, 1, 1, 1], "");
    let set = c.endpoints();
    set.all[0].set_healthy(false);
    let s = c.republish();
    assert!(!s.panic);
    assert_eq!(s.routable.len(), 3);
    set.all[1].set_healthy(false);
    set.all[2].set_healthy(false);
    let s = c.republish();
    assert!(s.panic, "1 of 4 healthy is under 50%");
    assert_eq!(s.routable.len(), 4);
}

/// 10 endpoints at priority 0 (127.0.0.1-10) and 2 at priority 1 (127.0.0.11-12).
fn two_levels(extra: &str) -> Cluster {
    let c = cluster("round_robin", &[1; 12], extra);
    for e in &c.endpoints().all[10..] {
        e.set_priority(1);
    }
    c.republish();
    c
}

#[test]
fn a_healthy_first_priority_level_takes_all_traffic() {
    let c = two_levels("");
    let s = c.endpoints();
    assert_eq!((s.routable.len(), s.share, s.spill.len()), (10, 10_000, 0));
    assert!(picks(&c, 1000).iter().all(|i| *i < 10));
    // 8 of 10 healthy is still 112% with the overprovisioning factor: no spill.
    for e in &s.all[..2] {
        e.set_healthy(false);
    }
    let s = c.republish();
    assert_eq!((s.routable.len(), s.share, s.spill.len()), (8, 10_000, 0));
}

#[test]
fn a_degraded_priority_level_spills_its_missing_share_to_the_next() {
    let c = two_levels("");
    let all = c.endpoints().all.clone();
    for e in &all[..4] {
        e.set_healthy(false);
    }
    // 6 of 10: 60% × 1.4 = 84% stays, 16% goes to priority 1.
    let s = c.republish();
    assert_eq!((s.routable.len(), s.share), (6, 8_400));
    assert_eq!(
        (s.spill.len(), s.spill[0].routable.len(), s.spill[0].upto),
        (1, 2, 10_000)
    );
    let got = picks(&c, 20_000);
    let second = got.iter().filter(|i| **i >= 10).count();
    assert!(
        (2_800..=3_600).contains(&second),
        "{second} of 20000 to priority 1"
    );
    assert!(
        got.iter().all(|i| *i >= 4),
        "unhealthy endpoints get nothing"
    );
    // A request with an affinity hash stays on one level.
    let ctx = PickContext {
        hash: Some(9_000),
        avoid: None,
        original_dst: None,
    };
    for _ in 0..10 {
        let ip = c.pick(&ctx).unwrap().address.ip().to_string();
        assert!(ip.ends_with(".11") || ip.ends_with(".12"), "{ip}");
    }
}

#[test]
fn a_level_with_nothing_routable_passes_everything_on() {
    let c = two_levels("panic_threshold: 0\n");
    let all = c.endpoints().all.clone();
    for e in &all[..10] {
        e.set_healthy(false);
    }
    let s = c.republish();
    assert_eq!((s.routable.len(), s.share, s.spill.len()), (2, 10_000, 0));
    assert!(picks(&c, 100).iter().all(|i| *i >= 10));
    // Both levels degraded (1 of 10, 1 of 2): shares are scaled up to fill 100%:
    // 14% and 70% of 84% are 1666 and 8333 of 10000.
    all[0].set_healthy(true);
    all[11].set_healthy(false);
    let s = c.republish();
    assert_eq!((s.routable.len(), s.share), (1, 1_666));
    assert_eq!(s.spill[0].upto, 10_000);
}
