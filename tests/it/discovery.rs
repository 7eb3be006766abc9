//! Endpoint discovery with a real DNS server (dnsmasq) and real endpoint files: sets follow
//! DNS and files live, removed endpoints finish what they serve, failures and empty answers
//! keep the last good set, SRV weights reach the balancer, and a set changing under load
//! loses no request.

use crate::support::dns::Dnsmasq;
use crate::support::{
    eventually, get, metric, single_route, temp_dir, upstream::Behavior, write_atomic, Proxy,
    Upstream, H1,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn discovered_config(discovery: &str, extra: &str) -> String {
    single_route(
        "web",
        &[],
        "",
        &format!("    discovery: {{ {discovery} }}\n{extra}"),
    )
}

/// Who answered `n` requests sent one after another on one connection (all must be 200).
async fn served_by(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut c = H1::connect(addr).await;
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = c.get("/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        *seen.entry(r.text()).or_insert(0) += 1;
    }
    seen
}

async fn endpoint_count(proxy: &Proxy, state: &str) -> f64 {
    metric(
        &proxy.metrics().await,
        &format!(r#"outrigger_cluster_endpoints{{cluster="web",state="{state}"}}"#),
    )
    .unwrap_or(-1.0)
}

async fn wait_endpoints(proxy: &Proxy, healthy: usize, what: &str) {
    eventually(Duration::from_secs(5), what, || async {
        (endpoint_count(proxy, "healthy").await == healthy as f64).then_some(())
    })
    .await;
}

fn updates(metrics: &str, source: &str, result: &str) -> f64 {
    metric(
        metrics,
        &format!(
            r#"outrigger_discovery_updates_total{{cluster="web",result="{result}",source="{source}"}}"#
        ),
    )
    .unwrap_or(0.0)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Upstreams on 127.0.0.2, .3, .4 sharing one port: A records carry addresses, not ports.
async fn upstreams_on_one_port(behaviors: [(&str, Behavior); 3]) -> (Vec<Upstream>, u16) {
    let [(n0, b0), (n1, b1), (n2, b2)] = behaviors;
    let first = Upstream::start_on("127.0.0.2:0".parse().unwrap(), n0, b0).await;
    let port = first.addr.port();
    let second = Upstream::start_on(SocketAddr::new([127, 0, 0, 3].into(), port), n1, b1).await;
    let third = Upstream::start_on(SocketAddr::new([127, 0, 0, 4].into(), port), n2, b2).await;
    (vec![first, second, third], port)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn dns_a_records_added_get_traffic_removed_stop_and_in_flight_requests_finish() {
    let (ups, port) = upstreams_on_one_port([
        ("a", Behavior::Name),
        ("b", Behavior::Name),
        ("c", Behavior::Delay(Duration::from_millis(1500))),
    ])
    .await;
    let Some(dns) = Dnsmasq::start(
        &[("web.test", ip("127.0.0.2")), ("web.test", ip("127.0.0.3"))],
        &[],
    ) else {
        return;
    };
    let proxy = Proxy::start(&discovered_config(
        &format!(
            "dns: \"web.test:{port}\", refresh: 200ms, resolvers: [\"{}\"]",
            dns.resolver()
        ),
        "",
    ))
    .await;
    // Start-up waited for the first answer: traffic flows at once.
    assert_eq!(
        served_by(proxy.addr(), 20).await,
        counts(&[("a", 10), ("b", 10)])
    );

    dns.set_hosts(&[
        ("web.test", ip("127.0.0.2")),
        ("web.test", ip("127.0.0.3")),
        ("web.test", ip("127.0.0.4")),
    ]);
    wait_endpoints(&proxy, 3, "the added record becomes an endpoint").await;
    let addr = proxy.addr();
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..3 {
        in_flight.spawn(async move { get(addr, "/").await });
    }
    eventually(Duration::from_secs(5), "a request reaches c", || async {
        (ups[2].requests() == 1).then_some(())
    })
    .await;

    // c leaves DNS while its request is still being answered.
    dns.set_hosts(&[("web.test", ip("127.0.0.2")), ("web.test", ip("127.0.0.3"))]);
    wait_endpoints(&proxy, 2, "the removed record leaves the set").await;
    assert_eq!(
        served_by(proxy.addr(), 20).await,
        counts(&[("a", 10), ("b", 10)])
    );
    assert_eq!(
        ups[2].requests(),
        1,
        "no new request reaches a removed endpoint"
    );
    let mut bodies = Vec::new();
    while let Some(r) = in_flight.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.text());
    }
    bodies.sort();
    assert_eq!(
        bodies,
        ["a", "b", "c"],
        "the in-flight request on c finished"
    );
    let m = proxy.metrics().await;
    assert!(updates(&m, "dns", "changed") >= 3.0, "{m}");
}

#[tokio::test]
async fn dns_outage_keeps_the_last_good_set_and_an_empty_answer_needs_confirming() {
    let (_ups, port) = upstreams_on_one_port([
        ("a", Behavior::Name),
        ("b", Behavior::Name),
        ("c", Behavior::Name),
    ])
    .await;
    let hosts = [("web.test", ip("127.0.0.2")), ("web.test", ip("127.0.0.3"))];
    let Some(mut dns) = Dnsmasq::start(&hosts, &[]) else {
        return;
    };
    let proxy = Proxy::start(&discovered_config(
        &format!(
            "dns: \"web.test:{port}\", refresh: 200ms, resolvers: [\"{}\"], empty_confirmations: 3",
            dns.resolver()
        ),
        "",
    ))
    .await;
    wait_endpoints(&proxy, 2, "first answer").await;

    dns.stop();
    let before = updates(&proxy.metrics().await, "dns", "failure");
    eventually(Duration::from_secs(10), "two failed rounds", || async {
        (updates(&proxy.metrics().await, "dns", "failure") >= before + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        served_by(proxy.addr(), 20).await,
        counts(&[("a", 10), ("b", 10)]),
        "traffic keeps flowing to the last good set"
    );
    assert_eq!(endpoint_count(&proxy, "healthy").await, 2.0);

    // Back, but answering no records: ignored twice, applied on the third in a row.
    dns.set_srv(&[]);
    dns.set_hosts(&[]);
    eventually(
        Duration::from_secs(10),
        "an ignored empty answer",
        || async { (updates(&proxy.metrics().await, "dns", "empty_ignored") >= 1.0).then_some(()) },
    )
    .await;
    wait_endpoints(&proxy, 0, "the confirmed empty answer").await;
    let m = proxy.metrics().await;
    assert_eq!(updates(&m, "dns", "empty_ignored"), 2.0, "{m}");
    assert_eq!(get(proxy.addr(), "/").await.status, 503);
    dns.set_hosts(&hosts);
    wait_endpoints(&proxy, 2, "records are back").await;
}

#[tokio::test]
async fn srv_records_give_ports_and_weights_to_weighted_round_robin() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    ];
    let records = |weights: [u32; 3]| -> Vec<String> {
        ["a", "b", "c"]
            .iter()
            .zip(&ups)
            .zip(weights)
            .map(|((n, u), w)| format!("_http._tcp.web.test,{n}.test,{},0,{w}", u.addr.port()))
            .chain(std::iter::once(format!(
                // A lower-priority (higher number) backup is not used while priority 0 has targets.
                "_http._tcp.web.test,a.test,{},1,100",
                ups[0].addr.port() + 1
            )))
            .collect()
    };
    let hosts = [
        ("a.test", ip("127.0.0.1")),
        ("b.test", ip("127.0.0.1")),
        ("c.test", ip("127.0.0.1")),
    ];
    let Some(mut dns) = Dnsmasq::start(&hosts, &records([5, 1, 1])) else {
        return;
    };
    let proxy = Proxy::start(&discovered_config(
        &format!(
            "dns_srv: _http._tcp.web.test, refresh: 200ms, resolvers: [\"{}\"]",
            dns.resolver()
        ),
        "    lb: weighted_round_robin\n",
    ))
    .await;
    assert_eq!(
        served_by(proxy.addr(), 700).await,
        counts(&[("a", 500), ("b", 100), ("c", 100)])
    );

    // New weights apply in place (same endpoints, same connections).
    dns.set_srv(&records([1, 5, 1]));
    let admin = proxy.admin();
    eventually(Duration::from_secs(5), "b's weight becomes 5", || async {
        let v: serde_json::Value =
            serde_json::from_slice(&get(admin, "/clusters").await.body).ok()?;
        let eps = v["clusters"][0]["endpoints"].as_array()?.clone();
        eps.iter()
            .any(|e| e["weight"] == 5 && e["resolved"] == ups[1].addr.to_string())
            .then_some(())
    })
    .await;
    assert_eq!(
        served_by(proxy.addr(), 700).await,
        counts(&[("a", 100), ("b", 500), ("c", 100)])
    );
    assert_eq!(ups[0].connections(), 1, "a kept its pooled connection");
}

#[tokio::test]
async fn endpoints_file_changes_apply_within_a_second_and_a_bad_file_keeps_the_set() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    ];
    let dir = temp_dir("discovery-file");
    let file = dir.join("web.json");
    std::fs::write(
        &file,
        format!(
            r#"[{{"address": "{}"}}, {{"address": "{}"}}]"#,
            ups[0].addr, ups[1].addr
        ),
    )
    .unwrap();
    let config = dir.join("outrigger.yaml");
    // The file is named relative to the config file's folder; refresh is long, so only
    // watching the file can explain a change within a second.
    std::fs::write(
        &config,
        discovered_config(
            "file: web.json, refresh: 60s",
            "    lb: weighted_round_robin\n",
        ),
    )
    .unwrap();
    let proxy = Proxy::start_file(&config).await;
    assert_eq!(
        served_by(proxy.addr(), 20).await,
        counts(&[("a", 10), ("b", 10)])
    );

    let yaml = format!(
        "- address: \"{}\"\n- address: \"{}\"\n- address: \"{}\"\n  weight: 2\n  zone: eu-west-1b\n  metadata: {{ pod: c-0 }}\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    );
    write_atomic(&file, &yaml);
    let changed = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(1),
        "the renamed-in file applies within 1 s",
        || async { (endpoint_count(&proxy, "healthy").await == 3.0).then_some(()) },
    )
    .await;
    eprintln!("file change applied after {:?}", changed.elapsed());
    let v: serde_json::Value =
        serde_json::from_slice(&get(proxy.admin(), "/clusters").await.body).unwrap();
    let c = v["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resolved"] == ups[2].addr.to_string())
        .unwrap();
    assert_eq!(c["zone"], "eu-west-1b");
    assert_eq!(c["metadata"]["pod"], "c-0");
    assert_eq!(c["source"], "discovered");

    let failures = updates(&proxy.metrics().await, "file", "failure");
    std::fs::write(&file, format!("- adress: \"{}\"\n", ups[0].addr)).unwrap();
    eventually(
        Duration::from_secs(2),
        "the bad file is rejected",
        || async { (updates(&proxy.metrics().await, "file", "failure") > failures).then_some(()) },
    )
    .await;
    assert_eq!(
        endpoint_count(&proxy, "healthy").await,
        3.0,
        "the old set stays"
    );
    assert_eq!(
        served_by(proxy.addr(), 40).await,
        counts(&[("a", 10), ("b", 10), ("c", 20)])
    );

    // Rewritten in place (not renamed) also applies.
    std::fs::write(&file, format!("[{{address: \"{}\"}}]", ups[1].addr)).unwrap();
    wait_endpoints(&proxy, 1, "the rewritten file applies").await;
    assert_eq!(served_by(proxy.addr(), 5).await, counts(&[("b", 5)]));
}

#[tokio::test]
async fn twenty_endpoint_set_changes_under_load_fail_no_request() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
        Upstream::start("d", Behavior::Name).await,
    ];
    // Listed in some rounds but never listening: health checking keeps it from traffic.
    let dead = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let dir = temp_dir("discovery-churn");
    let file = dir.join("endpoints.yaml");
    let write = |round: usize| -> Vec<SocketAddr> {
        let mut set: Vec<SocketAddr> = (0..3).map(|k| ups[(round + k) % 4].addr).collect();
        if round % 2 == 1 {
            set.push(dead);
        }
        let text: String = set
            .iter()
            .map(|a| format!("- address: \"{a}\"\n"))
            .collect();
        write_atomic(&file, &text);
        set
    };
    write(0);
    let config = dir.join("outrigger.yaml");
    std::fs::write(
        &config,
        discovered_config(
            "file: endpoints.yaml, refresh: 60s",
            "    lb: least_request\n    health_check: { interval: 200ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 2, tcp: {} }\n",
        ),
    )
    .unwrap();
    let proxy = Proxy::start_file(&config).await;
    let addr = proxy.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.spawn(async move {
            let mut c = H1::connect(addr).await;
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = c.get("/").await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("failed: {} {}", r.status, r.text());
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let admin = proxy.admin();
    for round in 1..=20 {
        let mut want: Vec<String> = write(round).iter().map(|a| a.to_string()).collect();
        want.sort();
        eventually(
            Duration::from_secs(5),
            "the round's set applies",
            || async {
                let v: serde_json::Value =
                    serde_json::from_slice(&get(admin, "/clusters").await.body).ok()?;
                let mut have: Vec<String> = v["clusters"][0]["endpoints"]
                    .as_array()?
                    .iter()
                    .filter_map(|e| e["resolved"].as_str().map(String::from))
                    .collect();
                have.sort();
                (have == want).then_some(())
            },
        )
        .await;
        // Let some traffic through on this set before the next change.
        let seen = ok.load(Ordering::Relaxed);
        eventually(Duration::from_secs(5), "traffic on this set", || async {
            (ok.load(Ordering::Relaxed) >= seen + 50).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    eprintln!("{ok} requests over 20 endpoint set changes");
    assert_eq!(failed, 0, "no request fails while the set changes");
    assert!(ok >= 1000, "{ok}");
    for u in &ups {
        assert!(u.requests() > 0, "{} got traffic", u.name);
    }
    let m = proxy.metrics().await;
    assert!(updates(&m, "file", "changed") >= 21.0, "{m}");
}

#[tokio::test]
async fn a_reload_that_changes_a_discovered_cluster_keeps_its_endpoints() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    ];
    let dir = temp_dir("discovery-reload");
    std::fs::write(
        dir.join("eps.yaml"),
        format!(
            "- address: \"{}\"\n- address: \"{}\"\n",
            ups[0].addr, ups[1].addr
        ),
    )
    .unwrap();
    let config = dir.join("outrigger.yaml");
    std::fs::write(
        &config,
        discovered_config("file: eps.yaml, refresh: 60s", ""),
    )
    .unwrap();
    let proxy = Proxy::start_file(&config).await;
    assert_eq!(
        served_by(proxy.addr(), 4).await,
        counts(&[("a", 2), ("b", 2)])
    );
    // A changed cluster is rebuilt; it starts from the endpoints its predecessor found rather
    // than from nothing until its first discovery round.
    std::fs::write(
        &config,
        discovered_config("file: eps.yaml, refresh: 60s", "    connect_timeout: 2s\n"),
    )
    .unwrap();
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        served_by(proxy.addr(), 4).await,
        counts(&[("a", 2), ("b", 2)])
    );
}

#[tokio::test]
async fn a_reload_publishes_a_new_discovered_cluster_only_with_its_first_answer() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    ];
    let dir = temp_dir("discovery-warm");
    std::fs::write(
        dir.join("eps.yaml"),
        format!("- address: \"{}\"\n", ups[1].addr),
    )
    .unwrap();
    let config = dir.join("outrigger.yaml");
    std::fs::write(&config, single_route("web", &[ups[0].addr], "", "")).unwrap();
    let proxy = Proxy::start_file(&config).await;
    assert_eq!(served_by(proxy.addr(), 2).await, counts(&[("a", 2)]));
    // The cluster becomes a discovered one: new, with no endpoints of its own. Published
    // before its first round, the requests right after the reload would meet an empty set.
    for round in 0..5 {
        let discovery = format!("file: eps.yaml, refresh: {}s", 60 + round);
        std::fs::write(&config, discovered_config(&discovery, "")).unwrap();
        let (status, body) = proxy.reload().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(served_by(proxy.addr(), 2).await, counts(&[("b", 2)]));
        std::fs::write(&config, single_route("web", &[ups[0].addr], "", "")).unwrap();
        let (status, body) = proxy.reload().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(served_by(proxy.addr(), 2).await, counts(&[("a", 2)]));
    }
}
