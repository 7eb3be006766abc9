//! Active health checks, outlier ejection, slow start and panic mode with real upstreams.

use crate::policies::cluster_yaml;
use crate::support::{eventually, get, metric, upstream::Behavior, Proxy, Upstream, H1};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

async fn endpoint_state(admin: SocketAddr, i: usize) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&get(admin, "/clusters").await.body).unwrap();
    v["clusters"][0]["endpoints"][i].clone()
}

#[tokio::test]
async fn killed_endpoint_is_marked_unhealthy_in_time_gets_no_traffic_and_returns() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    ];
    let extra = "    health_check: { interval: 300ms, timeout: 200ms, jitter: 50ms, unhealthy_threshold: 2, healthy_threshold: 2, http: { path: /healthz, expected_statuses: [200] } }\n";
    let proxy = Proxy::start(&cluster_yaml(
        "round_robin",
        &[&ups[0], &ups[1], &ups[2]],
        extra,
    ))
    .await;
    let admin = proxy.admin();
    eventually(Duration::from_secs(3), "first probes pass", || async move {
        let m = crate::support::get(admin, "/metrics").await.text();
        (metric(
            &m,
            r#"outrigger_health_check_total{cluster="c",result="success"}"#,
        )? >= 3.0)
            .then_some(())
    })
    .await;
    let dead_addr = ups[2].addr;
    ups[2].kill();
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(5),
        "c marked unhealthy",
        || async move { (endpoint_state(admin, 2).await["healthy"] == false).then_some(()) },
    )
    .await;
    let took = killed_at.elapsed();
    // interval × unhealthy_threshold (+ jitter and probe timeout) + 1 s.
    assert!(
        took <= Duration::from_millis(300 * 2 + 1000),
        "took {took:?}"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!(
                r#"outrigger_upstream_endpoint_healthy{{cluster="c",endpoint="{dead_addr}"}}"#
            )
        ),
        Some(0.0)
    );
    // No request goes to it any more: every one succeeds on a and b.
    let seen = crate::policies::load(proxy.addr(), 2, 150, None).await;
    assert_eq!(seen.get("c"), None);
    assert_eq!(seen.values().sum::<usize>(), 300);
    // Bring it back on its port: healthy again after healthy_threshold passing probes.
    let back = Upstream::start_on(dead_addr, "c", Behavior::Name).await;
    let restarted = Instant::now();
    eventually(Duration::from_secs(5), "c healthy again", || async move {
        (endpoint_state(admin, 2).await["healthy"] == true).then_some(())
    })
    .await;
    assert!(
        restarted.elapsed() <= Duration::from_millis(300 * 2 + 1000),
        "took {:?}",
        restarted.elapsed()
    );
    let seen = crate::policies::load(proxy.addr(), 1, 30, None).await;
    assert_eq!(seen.get("c"), Some(&10));
    assert!(back.requests() >= 10);
}

#[tokio::test]
async fn outlier_detection_ejects_a_500_endpoint_and_brings_it_back() {
    let good = Upstream::start("good", Behavior::Name).await;
    let bad = Upstream::start("bad", Behavior::Status(500)).await;
    let extra = "    outlier_detection: { consecutive_failures: 3, base_ejection_time: 1s, max_ejection_percent: 50 }\n";
    let proxy = Proxy::start(&cluster_yaml("round_robin", &[&good, &bad], extra)).await;
    let mut c = H1::connect(proxy.addr()).await;
    let mut fails = 0;
    for _ in 0..6 {
        if c.get("/").await.status == 500 {
            fails += 1;
        }
    }
    assert_eq!(fails, 3);
    let admin = proxy.admin();
    eventually(Duration::from_secs(2), "bad ejected", || async move {
        let s = endpoint_state(admin, 1).await;
        (s["ejected_for_seconds"].as_f64()? > 0.0 && s["routable"] == false).then_some(())
    })
    .await;
    let before = bad.requests();
    for _ in 0..100 {
        let r = c.get("/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "good");
    }
    assert_eq!(
        bad.requests(),
        before,
        "an ejected endpoint gets no requests"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_outlier_ejections_total{cluster="c"}"#),
        Some(1.0)
    );
    eventually(
        Duration::from_secs(3),
        "bad returns after base_ejection_time",
        || async move { (endpoint_state(admin, 1).await["routable"] == true).then_some(()) },
    )
    .await;
    let mut saw_bad = false;
    for _ in 0..4 {
        saw_bad |= c.get("/").await.status == 500;
    }
    assert!(saw_bad, "the returned endpoint receives traffic again");
}

#[tokio::test]
async fn slow_start_ramps_a_returning_endpoints_share_under_least_request() {
    let a = Upstream::start("a", Behavior::Delay(Duration::from_millis(2))).await;
    let b = Upstream::start("b", Behavior::Delay(Duration::from_millis(2))).await;
    let b_addr = b.addr;
    b.kill();
    let extra = "    slow_start: { window: 4s, min_weight_percent: 10 }\n    health_check: { interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, tcp: {} }\n";
    let proxy = Proxy::start(&cluster_yaml("least_request", &[&a, &b], extra)).await;
    let admin = proxy.admin();
    eventually(Duration::from_secs(3), "b unhealthy", || async move {
        (endpoint_state(admin, 1).await["healthy"] == false).then_some(())
    })
    .await;
    let _b = Upstream::start_on(b_addr, "b", Behavior::Delay(Duration::from_millis(2))).await;
    eventually(
        Duration::from_secs(3),
        "b healthy and ramping",
        || async move {
            let s = endpoint_state(admin, 1).await;
            (s["healthy"] == true && s["effective_weight"].as_f64()? < 1.0).then_some(())
        },
    )
    .await;
    // 4 concurrent clients for 5 s; share of b per second.
    let start = Instant::now();
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut c = H1::connect(addr).await;
            let mut out = Vec::new();
            while start.elapsed() < Duration::from_secs(5) {
                let r = c.get("/").await;
                assert_eq!(r.status, 200);
                out.push((start.elapsed().as_secs() as usize, r.text() == "b"));
            }
            out
        }));
    }
    let mut per_sec = [(0usize, 0usize); 5];
    for t in tasks {
        for (sec, is_b) in t.await.unwrap() {
            if sec < 5 {
                per_sec[sec].0 += 1;
                per_sec[sec].1 += is_b as usize;
            }
        }
    }
    let shares: Vec<f64> = per_sec
        .iter()
        .map(|(n, b)| *b as f64 / (*n).max(1) as f64)
        .collect();
    eprintln!(
        "slow start, share of b per second: {:?}",
        shares
            .iter()
            .map(|s| format!("{:.1}%", s * 100.0))
            .collect::<Vec<_>>()
    );
    assert!(shares[0] > 0.0, "never starved: {shares:?}");
    assert!(shares[0] < 0.35, "no flood in the first second: {shares:?}");
    assert!(shares[4] > shares[0] + 0.1, "share ramps up: {shares:?}");
    assert!(shares.iter().all(|s| *s < 0.65), "{shares:?}");
}

#[tokio::test]
async fn panic_mode_balances_over_all_endpoints_when_too_few_are_healthy() {
    let a = Upstream::start("a", Behavior::Name).await;
    let b = Upstream::start("b", Behavior::Name).await;
    let c = Upstream::start("c", Behavior::Name).await;
    let extra = "    panic_threshold: 50\n    health_check: { interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, http: { path: /missing, expected_statuses: [404] } }\n";
    let proxy = Proxy::start(&cluster_yaml("round_robin", &[&a, &b, &c], extra)).await;
    // Every probe fails (the upstreams answer 200, the check wants 404): all unhealthy.
    let admin = proxy.admin();
    eventually(Duration::from_secs(3), "panic mode", || async move {
        let m = get(admin, "/metrics").await.text();
        (metric(&m, r#"outrigger_upstream_cluster_panic{cluster="c"}"#)? == 1.0).then_some(())
    })
    .await;
    let seen = crate::policies::load(proxy.addr(), 1, 30, None).await;
    assert_eq!((seen["a"], seen["b"], seen["c"]), (10, 10, 10));
}

#[tokio::test]
async fn a_backup_priority_takes_over_when_the_first_level_fails_its_checks() {
    let a = Upstream::start("a", Behavior::Name).await;
    let b = Upstream::start("b", Behavior::Name).await;
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: ingress\n    address: 127.0.0.1:0\n    routes: [{{ match: {{ path_prefix: / }}, cluster: c }}]\nclusters:\n  - name: c\n    endpoints: [{{ address: \"{}\" }}, {{ address: \"{}\", priority: 1 }}]\n    health_check: {{ interval: 100ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, tcp: {{}} }}\n",
        a.addr, b.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let mut c = H1::connect(proxy.addr()).await;
    for _ in 0..20 {
        assert_eq!(c.get("/").await.text(), "a", "priority 1 waits");
    }
    assert_eq!(endpoint_state(proxy.admin(), 1).await["priority"], 1);
    a.kill();
    eventually(Duration::from_secs(5), "a marked unhealthy", || async {
        (endpoint_state(proxy.admin(), 0).await["healthy"] == false).then_some(())
    })
    .await;
    for _ in 0..20 {
        let r = get(proxy.addr(), "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "b"));
    }
    assert_eq!(b.requests(), 20);
}
