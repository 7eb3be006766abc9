//! Hot reload: zero failed requests through 100 reloads, every trigger, rejected files, state
//! that survives, listeners added and removed.

use crate::support::{
    eventually, get, metric, temp_dir, upstream::Behavior, write_atomic, Proxy, Upstream, H1,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Two clusters, `/` routed to `target`; everything else identical so clusters are reused.
fn config(a: &Upstream, b: &Upstream, target: &str, watch: bool, extra_listener: &str) -> String {
    format!(
        r#"
server: {{ watch_config: {watch}, drain_timeout: 5s }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: {target} }}]
{extra_listener}
clusters:
  - {{ name: a, endpoints: [{{address: "{}"}}] }}
  - {{ name: b, endpoints: [{{address: "{}"}}] }}
"#,
        a.addr, b.addr
    )
}

async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn hundred_reloads_under_load_lose_nothing_and_switch_within_one_reload() {
    let (a, b) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    );
    let dir = temp_dir("reload");
    let path = dir.join("outrigger.yaml");
    write_atomic(&path, &config(&a, &b, "a", false, ""));
    let proxy = Proxy::start_file(&path).await;
    let addr = proxy.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    // 8 HTTP/1.1 keep-alive connections and 8 HTTP/2 connections, all busy throughout.
    for i in 0..16 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            if i < 8 {
                let mut c = H1::connect(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    let r = c.get("/").await;
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                }
            } else {
                let mut c = h2_client(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    let req = http::Request::get(format!("http://{addr}/"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    match c.send_request(req).await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.into_body().collect().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    let mut probe = H1::connect(addr).await;
    let mut h2_probe = h2_client(addr).await;
    for i in 0..100 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        write_atomic(&path, &config(&a, &b, target, false, ""));
        let (status, body) = proxy.reload().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        // The very next request on an old keep-alive connection (either protocol) sees it.
        assert_eq!(probe.get("/").await.text(), target, "h1, reload {i}");
        let req = http::Request::get(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = h2_probe
            .send_request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], target.as_bytes(), "h2, reload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("100 reloads: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 1000, "the load was real: {ok}");
    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_config_reload_total{result="success"}"#),
        Some(101.0)
    );
    assert_eq!(metric(&m, "outrigger_config_generation"), Some(101.0));
    assert!(metric(&m, "outrigger_config_last_reload_success_timestamp_seconds").unwrap() > 1.7e9);
}

#[tokio::test]
async fn broken_files_keep_the_old_routing_and_answer_400_with_the_key_path() {
    let (a, b) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    );
    let dir = temp_dir("reload-bad");
    let path = dir.join("outrigger.yaml");
    let good = config(&a, &b, "a", false, "");
    write_atomic(&path, &good);
    let proxy = Proxy::start_file(&path).await;
    let cases = [
        (
            "bad yaml",
            good.replace("routes: [{", "routes: [{{"),
            "did not find expected",
        ),
        (
            "unknown key",
            good.replace("path_prefix: /", "path_prefx: /"),
            "listeners[0].routes[0].match.path_prefx: unknown field",
        ),
        (
            "missing cluster",
            good.replace("cluster: a }]", "cluster: c }]"),
            "listeners[0].routes[0].cluster: no cluster named \"c\"",
        ),
    ];
    for (n, (name, text, want)) in cases.iter().enumerate() {
        write_atomic(&path, text);
        let (status, body) = proxy.reload().await;
        assert_eq!(status, 400, "{name}");
        assert!(body.contains(want), "{name}: {body}");
        assert!(
            body.contains(&path.display().to_string()),
            "{name}: names the file: {body}"
        );
        assert_eq!(
            get(proxy.addr(), "/").await.text(),
            "a",
            "{name}: old routing still serves"
        );
        let m = proxy.metrics().await;
        assert_eq!(
            metric(&m, r#"outrigger_config_reload_total{result="failure"}"#),
            Some((n + 1) as f64)
        );
        assert_eq!(metric(&m, "outrigger_config_generation"), Some(1.0));
    }
    let cfg = get(proxy.admin(), "/config").await.text();
    assert!(cfg.contains("# last reload: FAILED"), "{cfg}");
    write_atomic(&path, &config(&a, &b, "b", false, ""));
    assert_eq!(proxy.reload().await.0, 200);
    assert_eq!(get(proxy.addr(), "/").await.text(), "b");
    assert!(get(proxy.admin(), "/config")
        .await
        .text()
        .contains("# last reload: ok"));
}

#[tokio::test]
async fn file_rewrite_and_configmap_symlink_swap_trigger_reloads() {
    let (a, b) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    );
    // Kubernetes ConfigMap layout: outrigger.yaml -> ..data/outrigger.yaml, ..data -> ..<stamp>/
    let dir = temp_dir("reload-watch");
    let v1 = dir.join("..2026_11_22_v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("outrigger.yaml"), config(&a, &b, "a", true, "")).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/outrigger.yaml", dir.join("outrigger.yaml")).unwrap();
    let proxy = Proxy::start_file(&dir.join("outrigger.yaml")).await;
    let addr = proxy.addr();
    assert_eq!(get(addr, "/").await.text(), "a");

    // The swap kubelet does: new folder, new link beside the old, atomic rename over ..data.
    let v2 = dir.join("..2026_11_22_v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("outrigger.yaml"), config(&a, &b, "b", true, "")).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually(
        Duration::from_secs(5),
        "symlink swap reloads to b",
        || async move { (get(addr, "/").await.text() == "b").then_some(()) },
    )
    .await;

    let m = proxy.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_config_reload_total{result="failure"}"#),
        Some(0.0)
    );

    // A plain file rewritten in place, as an editor or config tool does.
    let plain = temp_dir("reload-plain").join("outrigger.yaml");
    std::fs::write(&plain, config(&a, &b, "a", true, "")).unwrap();
    let proxy = Proxy::start_file(&plain).await;
    let addr = proxy.addr();
    assert_eq!(get(addr, "/").await.text(), "a");
    std::fs::write(&plain, config(&a, &b, "b", true, "")).unwrap();
    eventually(
        Duration::from_secs(5),
        "file rewrite reloads to b",
        || async move { (get(addr, "/").await.text() == "b").then_some(()) },
    )
    .await;
    // An event that does not change the content does not reload.
    std::fs::write(&plain, config(&a, &b, "b", true, "")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = proxy.metrics().await;
    assert_eq!(metric(&m, "outrigger_config_generation"), Some(2.0));
}

#[tokio::test]
async fn health_state_of_an_unchanged_cluster_survives_a_reload() {
    let (x, y) = (
        Upstream::start("x", Behavior::Name).await,
        Upstream::start("y", Behavior::Name).await,
    );
    let dir = temp_dir("reload-health");
    let path = dir.join("outrigger.yaml");
    let text = |extra_route: &str| {
        format!(
            r#"
server: {{ watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
{extra_route}      - {{ match: {{ path_prefix: / }}, cluster: c }}
clusters:
  - name: c
    endpoints: [{{address: "{}"}}, {{address: "{}"}}]
    health_check: {{ interval: 200ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, tcp: {{}} }}
"#,
            x.addr, y.addr
        )
    };
    write_atomic(&path, &text(""));
    let proxy = Proxy::start_file(&path).await;
    let admin = proxy.admin();
    y.kill();
    eventually(Duration::from_secs(3), "y unhealthy", || async move {
        let v: serde_json::Value =
            serde_json::from_slice(&get(admin, "/clusters").await.body).ok()?;
        (v["clusters"][0]["endpoints"][1]["healthy"] == false).then_some(())
    })
    .await;
    write_atomic(
        &path,
        &text("      - { match: { path: /other }, cluster: c }\n"),
    );
    let (status, summary) = proxy.reload().await;
    assert_eq!(status, 200, "{summary}");
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["routes_changed"], serde_json::json!(["ingress"]));
    assert_eq!(summary["clusters"]["changed"], serde_json::json!([]));
    // Straight after the reload, without waiting for a new probe: still unhealthy, no traffic.
    let v: serde_json::Value = serde_json::from_slice(&get(admin, "/clusters").await.body).unwrap();
    assert_eq!(v["clusters"][0]["endpoints"][1]["healthy"], false);
    let mut c = H1::connect(proxy.addr()).await;
    for _ in 0..50 {
        let r = c.get("/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "x"));
    }
}

#[tokio::test]
async fn listeners_are_added_and_removed_by_reload() {
    let (a, b) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    );
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(1500))).await;
    let dir = temp_dir("reload-listeners");
    let path = dir.join("outrigger.yaml");
    write_atomic(&path, &config(&a, &b, "a", false, ""));
    let proxy = Proxy::start_file(&path).await;
    let extra = "  - { name: extra, address: \"127.0.0.1:0\", routes: [{ match: { path_prefix: / }, cluster: slow }] }\n";
    let with_slow = |t: String| {
        t.replace(
            "clusters:\n",
            &format!(
                "clusters:\n  - {{ name: slow, endpoints: [{{address: \"{}\"}}] }}\n",
                slow.addr
            ),
        )
    };
    write_atomic(&path, &with_slow(config(&a, &b, "a", false, extra)));
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"extra\""), "{body}");
    let listeners: serde_json::Value =
        serde_json::from_slice(&get(proxy.admin(), "/listeners").await.body).unwrap();
    let extra_addr: SocketAddr = listeners["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "extra")
        .and_then(|l| l["address"].as_str()?.parse().ok())
        .expect("extra listener is listed");
    assert_eq!(proxy.server.listener_addr("extra"), Some(extra_addr));
    // The original listener kept its socket.
    assert_eq!(get(proxy.addr(), "/").await.text(), "a");
    // A slow request in flight on the new listener, then a reload that removes it.
    let in_flight = tokio::spawn(async move { get(extra_addr, "/").await });
    eventually(
        Duration::from_secs(3),
        "slow request reached upstream",
        || {
            let n = slow.requests();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    write_atomic(&path, &with_slow(config(&a, &b, "a", false, "")));
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"removed\": [\n      \"extra\""), "{body}");
    eventually(
        Duration::from_secs(3),
        "new connections to the removed listener are refused",
        || async move {
            tokio::net::TcpStream::connect(extra_addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "slow"));
    assert_eq!(get(proxy.addr(), "/").await.text(), "a");
}

#[tokio::test]
async fn a_removed_endpoint_leaves_no_stale_series() {
    let (a, b) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
    );
    let dir = temp_dir("reload-series");
    let path = dir.join("outrigger.yaml");
    write_atomic(&path, &config(&a, &b, "a", false, ""));
    let proxy = Proxy::start_file(&path).await;
    let series = format!(
        r#"outrigger_upstream_endpoint_healthy{{cluster="b",endpoint="{}"}}"#,
        b.addr
    );
    assert_eq!(metric(&proxy.metrics().await, &series), Some(1.0));
    // Cluster b now lists a's address only: b's old endpoint is gone.
    let text = config(&a, &b, "a", false, "").replace(
        &format!("name: b, endpoints: [{{address: \"{}\"}}]", b.addr),
        &format!("name: b, endpoints: [{{address: \"{}\"}}]", a.addr),
    );
    write_atomic(&path, &text);
    assert_eq!(proxy.reload().await.0, 200);
    let m = proxy.metrics().await;
    assert_eq!(metric(&m, &series), None, "stale series removed");
    assert_eq!(
        metric(
            &m,
            &format!(
                r#"outrigger_upstream_endpoint_healthy{{cluster="b",endpoint="{}"}}"#,
                a.addr
            )
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_changed_cluster_keeps_its_endpoints_and_their_health() {
    let (x, y) = (
        Upstream::start("x", Behavior::Name).await,
        Upstream::start("y", Behavior::Name).await,
    );
    let dir = temp_dir("reload-adopt");
    let path = dir.join("outrigger.yaml");
    let text = |lb: &str| {
        format!(
            r#"
server: {{ watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: c }}]
clusters:
  - name: c
    lb: {lb}
    endpoints: [{{address: "{}"}}, {{address: "{}"}}]
    health_check: {{ interval: 200ms, timeout: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, tcp: {{}} }}
"#,
            x.addr, y.addr
        )
    };
    write_atomic(&path, &text("round_robin"));
    let proxy = Proxy::start_file(&path).await;
    let admin = proxy.admin();
    y.kill();
    eventually(Duration::from_secs(3), "y unhealthy", || async move {
        let v: serde_json::Value =
            serde_json::from_slice(&get(admin, "/clusters").await.body).ok()?;
        (v["clusters"][0]["endpoints"][1]["healthy"] == false).then_some(())
    })
    .await;
    let mut c = H1::connect(proxy.addr()).await;
    assert_eq!(c.get("/").await.text(), "x");
    // The cluster's own settings change: before, every endpoint started over (healthy, no
    // pooled connection); now the endpoints carry over.
    write_atomic(&path, &text("least_request"));
    let (status, summary) = proxy.reload().await;
    assert_eq!(status, 200, "{summary}");
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["clusters"]["changed"], serde_json::json!(["c"]));
    let v: serde_json::Value = serde_json::from_slice(&get(admin, "/clusters").await.body).unwrap();
    assert_eq!(
        v["clusters"][0]["endpoints"][1]["healthy"], false,
        "health kept"
    );
    for _ in 0..20 {
        let r = c.get("/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "x"));
    }
}
