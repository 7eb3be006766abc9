//! Retries, budgets, per-try timeouts, circuit breakers, rate limits and load shedding against
//! real upstreams.

use crate::support::{get, metric, request, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn yaml(ups: &[&Upstream], route_extra: &str, cluster_extra: &str) -> String {
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    crate::support::single_route("c", &addrs, route_extra, cluster_extra)
}

async fn send(c: &mut H1, addr: SocketAddr, method: &str) -> crate::support::Reply {
    c.send(
        request(method, addr, "/")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn flaky_endpoint_behind_retries_gives_zero_failures_and_post_is_not_retried() {
    let flaky = Upstream::start("flaky", Behavior::FailEvery(3, 503)).await;
    let proxy = Proxy::start(&yaml(
        &[&flaky],
        "        retries: { attempts: 2, on: [5xx] }",
        "",
    ))
    .await;
    let addr = proxy.addr();
    let mut c = H1::connect(addr).await;
    let mut retried = 0;
    for _ in 0..1000 {
        let r = send(&mut c, addr, "GET").await;
        assert_eq!(r.status, 200, "{r:?}");
        let n: u32 = r
            .header("x-outrigger-attempt-count")
            .unwrap()
            .parse()
            .unwrap();
        retried += (n > 1) as u32;
    }
    assert!(retried > 300, "about a third needed a retry: {retried}");
    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_upstream_retries_total{cluster="c"}"#),
        Some(retried as f64)
    );
    // POST may not be idempotent: the 503 goes back to the client.
    let before = flaky.requests();
    let mut failed = 0;
    for _ in 0..30 {
        let r = send(&mut c, addr, "POST").await;
        assert_eq!(r.header("x-outrigger-attempt-count"), Some("1"));
        failed += (r.status == 503) as u32;
    }
    assert_eq!(flaky.requests() - before, 30, "one try per POST");
    assert_eq!(failed, 10);
}

#[tokio::test]
async fn retry_budget_of_20_percent_caps_retries_when_everything_fails() {
    let a = Upstream::start("a", Behavior::Status(503)).await;
    let b = Upstream::start("b", Behavior::Status(503)).await;
    let route = "        retries: { attempts: 3, on: [5xx], budget_percent: 20, min_retries_per_second: 1, backoff_base: 1ms, backoff_max: 2ms }";
    let proxy = Proxy::start(&yaml(&[&a, &b], route, "")).await;
    let addr = proxy.addr();
    let mut c = H1::connect(addr).await;
    for _ in 0..1000 {
        assert_eq!(send(&mut c, addr, "GET").await.status, 503);
    }
    let retries = a.requests() + b.requests() - 1000;
    let share = retries as f64 / 1000.0;
    eprintln!(
        "budget 20%: {retries} retries for 1000 requests ({:.1}%)",
        share * 100.0
    );
    assert!(
        (0.15..=0.25).contains(&share),
        "retries were {:.1}% of requests",
        share * 100.0
    );
}

#[tokio::test]
async fn per_try_timeout_moves_a_request_off_a_hung_endpoint() {
    let hung = Upstream::start("hung", Behavior::Delay(Duration::from_secs(30))).await;
    let good = Upstream::start("good", Behavior::Name).await;
    let route = "        retries: { attempts: 2, on: [reset], per_try_timeout: 200ms }";
    let proxy = Proxy::start(&yaml(&[&hung, &good], route, "")).await;
    let addr = proxy.addr();
    let mut c = H1::connect(addr).await;
    for i in 0..6 {
        let started = Instant::now();
        let r = send(&mut c, addr, "GET").await;
        let took = started.elapsed();
        assert_eq!((r.status, r.text().as_str()), (200, "good"), "request {i}");
        // per_try_timeout + at most the first backoff (25 ms) + slack for a loaded machine.
        assert!(
            took < Duration::from_millis(200 + 25 + 400),
            "request {i} took {took:?}"
        );
    }
    // Round robin advances once per try, so each request's first try lands on the hung
    // endpoint here; health checks or outlier detection would take it out of rotation.
    let m = proxy.metrics().await;
    let timeouts = metric(
        &m,
        r#"outrigger_timeouts_total{cluster="c",kind="per_try"}"#,
    )
    .unwrap();
    assert!((3.0..=6.0).contains(&timeouts), "{timeouts}");
    assert_eq!(good.requests(), 6);
}

#[tokio::test]
async fn route_timeout_is_504_and_counted() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_secs(5))).await;
    let proxy = Proxy::start(&yaml(&[&slow], "        timeout: 300ms", "")).await;
    let r = get(proxy.addr(), "/").await;
    assert_eq!(
        (r.status, r.header("x-outrigger-error")),
        (504, Some("timeout"))
    );
    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_timeouts_total{cluster="c",kind="route"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn max_requests_10_with_50_concurrent_slow_requests_gives_40_immediate_overflows() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(1500))).await;
    let proxy = Proxy::start(&yaml(
        &[&slow],
        "",
        "    circuit_breaker: { max_requests: 10 }",
    ))
    .await;
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = get(addr, "/").await;
            (
                r.status,
                r.header("x-outrigger-overflow").map(str::to_owned),
                started.elapsed(),
            )
        }));
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let (status, header, took) = t.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(header.as_deref(), Some("1"));
                assert!(
                    took < Duration::from_millis(1000),
                    "overflow must be immediate, took {took:?}"
                );
                overflow += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, overflow), (10, 40));
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_circuit_breaker_overflow_total{cluster="c",kind="requests"}"#
        ),
        Some(40.0)
    );
    assert_eq!(
        metric(&m, r#"outrigger_circuit_breaker_open{cluster="c"}"#),
        Some(0.0)
    );
}

#[tokio::test]
async fn rate_limit_100_rps_burst_100_admits_about_100_of_500_instant_requests() {
    let up = Upstream::start("up", Behavior::Name).await;
    let proxy = Proxy::start(&yaml(
        &[&up],
        "        rate_limit: { requests_per_second: 100, burst: 100 }",
        "",
    ))
    .await;
    let addr = proxy.addr();
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(H1::connect(addr).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in clients {
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..10 {
                let r = c.get("/").await;
                out.push((r.status, r.header("retry-after").map(str::to_owned)));
            }
            out
        }));
    }
    let mut admitted = 0;
    let mut limited = 0;
    for t in tasks {
        for (status, retry_after) in t.await.unwrap() {
            match status {
                200 => admitted += 1,
                429 => {
                    assert_eq!(retry_after.as_deref(), Some("1"));
                    limited += 1;
                }
                s => panic!("unexpected status {s}"),
            }
        }
    }
    let took = started.elapsed();
    eprintln!("rate limit: {admitted} admitted, {limited} limited in {took:?}");
    assert_eq!(admitted + limited, 500);
    // The burst, plus what refills at 100/s while the 500 are being sent.
    let refill = (took.as_secs_f64() * 100.0).ceil() as i64;
    assert!(
        (95..=105 + refill).contains(&admitted),
        "{admitted} admitted in {took:?}"
    );
}

#[tokio::test]
async fn process_wide_in_flight_limit_sheds_at_once() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(800))).await;
    let text =
        yaml(&[&slow], "", "").replace("admin:", "server: { max_in_flight_requests: 2 }\nadmin:");
    let proxy = Proxy::start(&text).await;
    let addr = proxy.addr();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/").await.status }))
        .collect();
    crate::support::eventually(Duration::from_secs(3), "two requests in flight", || {
        let n = slow.requests();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let r = get(addr, "/").await;
    assert_eq!(
        (r.status, r.header("x-outrigger-error")),
        (503, Some("overloaded"))
    );
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(get(addr, "/").await.status, 200);
}
