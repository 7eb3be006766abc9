//! Each balancing policy against real upstreams.

use crate::support::{request, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub fn cluster_yaml(lb: &str, ups: &[&Upstream], extra: &str) -> String {
    let eps: Vec<String> = ups
        .iter()
        .map(|u| format!("{{address: \"{}\"}}", u.addr))
        .collect();
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: c, add_upstream_header: true }}]
clusters:
  - name: c
    lb: {lb}
    endpoints: [{}]
{extra}
"#,
        eps.join(", ")
    )
}

/// `workers` concurrent keep-alive clients each sending `each` requests; returns the count of
/// responses per upstream name (all must be 200).
pub async fn load(
    addr: SocketAddr,
    workers: usize,
    each: usize,
    header: Option<(&'static str, String)>,
) -> HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = H1::connect(addr).await;
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..each {
                let mut req = request("GET", addr, "/");
                if let Some((k, v)) = &header {
                    req = req.header(*k, v.as_str());
                }
                let r = c.send(req.body(Full::new(Bytes::new())).unwrap()).await;
                assert_eq!(r.status, 200, "{r:?}");
                *seen.entry(r.text()).or_default() += 1;
            }
            seen
        }));
    }
    let mut total = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test]
async fn weighted_round_robin_5_1_1_is_nginx_smooth_sequence_over_7000() {
    let (a, b, c) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    );
    let yaml = format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: c }}]
clusters:
  - name: c
    lb: weighted_round_robin
    endpoints: [{{address: "{}", weight: 5}}, {{address: "{}", weight: 1}}, {{address: "{}", weight: 1}}]
"#,
        a.addr, b.addr, c.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let mut client = H1::connect(proxy.addr()).await;
    let mut seq = String::with_capacity(7000);
    for _ in 0..7000 {
        let r = client.get("/").await;
        assert_eq!(r.status, 200);
        seq.push_str(&r.text());
    }
    // nginx's smooth weighted round robin: a a b a c a a, every cycle, no bursts beyond it.
    assert_eq!(seq, "aabacaa".repeat(1000));
    assert_eq!(
        (a.requests(), b.requests(), c.requests()),
        (5000, 1000, 1000)
    );
}

#[tokio::test]
async fn least_latency_sends_under_15_percent_to_an_endpoint_50ms_slower() {
    let fast1 = Upstream::start("fast1", Behavior::Delay(Duration::from_millis(1))).await;
    let fast2 = Upstream::start("fast2", Behavior::Delay(Duration::from_millis(1))).await;
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(51))).await;
    let proxy = Proxy::start(&cluster_yaml("least_latency", &[&fast1, &fast2, &slow], "")).await;
    let seen = load(proxy.addr(), 8, 250, None).await;
    let slow_share = *seen.get("slow").unwrap_or(&0) as f64 / 2000.0;
    eprintln!("least_latency shares: {seen:?}");
    assert!(
        slow_share < 0.15,
        "slow endpoint got {:.1}% of 2000 requests",
        slow_share * 100.0
    );
    assert_eq!(seen.values().sum::<usize>(), 2000);
}

#[tokio::test]
async fn least_request_prefers_endpoints_with_fewer_in_flight() {
    let fast1 = Upstream::start("fast1", Behavior::Delay(Duration::from_millis(2))).await;
    let fast2 = Upstream::start("fast2", Behavior::Delay(Duration::from_millis(2))).await;
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(200))).await;
    let proxy = Proxy::start(&cluster_yaml("least_request", &[&fast1, &fast2, &slow], "")).await;
    let seen = load(proxy.addr(), 8, 60, None).await;
    eprintln!("least_request shares: {seen:?}");
    // Round robin would give the slow endpoint a third (160); it holds requests in flight
    // longest, so least_request steers around it.
    let slow_n = *seen.get("slow").unwrap_or(&0);
    assert!(slow_n < 48, "slow endpoint got {slow_n} of 480");
}

#[tokio::test]
async fn random_spreads_by_weight() {
    let (a, b) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    );
    let yaml = cluster_yaml("random", &[&a, &b], "").replace(
        &format!("{{address: \"{}\"}}", b.addr),
        &format!("{{address: \"{}\", weight: 3}}", b.addr),
    );
    let proxy = Proxy::start(&yaml).await;
    let seen = load(proxy.addr(), 2, 1000, None).await;
    let b_share = seen["b"] as f64 / 2000.0;
    assert!((0.70..=0.80).contains(&b_share), "b got {b_share}");
}

#[tokio::test]
async fn ring_hash_keeps_keys_when_one_of_10_endpoints_goes() {
    let mut ups = Vec::new();
    for i in 0..10 {
        ups.push(Upstream::start(&format!("u{i}"), Behavior::Name).await);
    }
    let refs: Vec<&Upstream> = ups.iter().collect();
    let extra = "    hash_on: { header: x-user }\n    health_check: { interval: 200ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, tcp: {} }\n";
    let proxy = Proxy::start(&cluster_yaml("ring_hash", &refs, extra)).await;
    let mut client = H1::connect(proxy.addr()).await;
    async fn owners(client: &mut H1, addr: SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        for k in 0..1000 {
            let req = request("GET", addr, "/").header("x-user", format!("user-{k}"));
            let r = client
                .send(req.body(Full::new(Bytes::new())).unwrap())
                .await;
            assert_eq!(r.status, 200);
            out.push(r.text());
        }
        out
    }
    let before = owners(&mut client, proxy.addr()).await;
    // Same key, same endpoint, every time.
    assert_eq!(owners(&mut client, proxy.addr()).await, before);
    ups[3].kill();
    let admin = proxy.admin();
    crate::support::eventually(
        Duration::from_secs(5),
        "u3 marked unhealthy",
        || async move {
            let v: serde_json::Value =
                serde_json::from_slice(&crate::support::get(admin, "/clusters").await.body).ok()?;
            (v["clusters"][0]["endpoints"][3]["healthy"] == false).then_some(())
        },
    )
    .await;
    let after = owners(&mut client, proxy.addr()).await;
    let kept_overall = before.iter().zip(&after).filter(|(b, a)| b == a).count();
    let on_others: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, _)| *b != "u3")
        .collect();
    let kept_on_others = on_others.iter().filter(|(b, a)| b == a).count();
    eprintln!("ring_hash: {kept_overall}/1000 keys kept overall; {kept_on_others}/{} of the other endpoints' keys kept", on_others.len());
    assert_eq!(
        kept_on_others,
        on_others.len(),
        "keys of the remaining endpoints must not move"
    );
    assert!(
        kept_overall >= 850,
        "only u3's share (~1/10) may move: {kept_overall} kept"
    );
    assert!(after.iter().all(|o| o != "u3"));
}
