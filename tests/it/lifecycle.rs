//! Sidecar lifecycle: drain under load with drain_delay, POST /shutdown, `outrigger await`, and
//! trace context generation.

use crate::shutdown::{signal, start_binary};
use crate::support::{eventually, get, request, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_under_load_fails_ready_at_once_keeps_serving_through_drain_delay_and_exits_0() {
    let fast = Upstream::start("fast", Behavior::Name).await;
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(2500))).await;
    let mut bin = start_binary(&format!(
        r#"
server: {{ drain_delay: 1500ms, drain_timeout: 10s, watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /slow }}, cluster: slow }}
      - {{ match: {{ path_prefix: / }}, cluster: fast }}
clusters:
  - {{ name: fast, endpoints: [{{address: "{}"}}] }}
  - {{ name: slow, endpoints: [{{address: "{}"}}] }}
"#,
        fast.addr, slow.addr
    ));
    let (addr, admin) = (bin.listener, bin.admin);
    eventually(Duration::from_secs(5), "ready", || async move {
        (get(admin, "/ready").await.status == 200).then_some(())
    })
    .await;
    let long = tokio::spawn(async move { get(addr, "/slow").await });
    eventually(Duration::from_secs(3), "long request in flight", || {
        let n = slow.requests();
        async move { (n == 1).then_some(()) }
    })
    .await;
    // Load on new connections (what a load balancer that has not yet seen /ready fail sends).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let loader = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => {}
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                let r = get(addr, "/").await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    signal(&bin.child, "-TERM");
    // "At once": as soon as the signal is handled, well within 250 ms.
    eventually(
        Duration::from_millis(250),
        "ready fails at once",
        || async move { (get(admin, "/ready").await.status == 503).then_some(()) },
    )
    .await;
    // Keep loading through most of the drain delay: nothing may fail.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "load ran during the delay: {}",
        ok.load(Ordering::Relaxed)
    );
    let reply = long.await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "slow"));
    let status = eventually(Duration::from_secs(8), "exit", || {
        let s = bin.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(0));
    // drain_delay (1.5 s) + the rest of the 2.5 s request, well inside drain_timeout.
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn post_shutdown_drains_like_sigterm() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(800))).await;
    let mut bin = start_binary(&format!(
        "server: {{ drain_timeout: 10s, watch_config: false }}\nadmin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: ingress, address: \"127.0.0.1:0\", routes: [{{ match: {{ path_prefix: / }}, cluster: s }}] }}\nclusters:\n  - {{ name: s, endpoints: [{{address: \"{}\"}}] }}\n",
        slow.addr
    ));
    let (addr, admin) = (bin.listener, bin.admin);
    eventually(Duration::from_secs(5), "ready", || async move {
        (get(admin, "/ready").await.status == 200).then_some(())
    })
    .await;
    let long = tokio::spawn(async move { get(addr, "/").await });
    eventually(Duration::from_secs(3), "in flight", || {
        let n = slow.requests();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let mut c = H1::connect(admin).await;
    let r = c
        .send(
            request("POST", admin, "/shutdown")
                .header("x-outrigger-admin", "1")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(get(admin, "/ready").await.status, 503);
    assert_eq!(long.await.unwrap().status, 200);
    let status = eventually(Duration::from_secs(8), "exit", || {
        let s = bin.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn await_runs_the_command_once_the_sidecar_is_ready() {
    let up = Upstream::start("up", Behavior::Name).await;
    let proxy = Proxy::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: ingress, address: \"127.0.0.1:0\", routes: [{{ match: {{ path_prefix: / }}, cluster: c }}] }}\nclusters:\n  - {{ name: c, endpoints: [{{address: \"{}\"}}] }}\n",
        up.addr
    ))
    .await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args([
            "await",
            "--admin",
            &proxy.admin().to_string(),
            "--timeout-secs",
            "10",
            "--",
            "echo",
            "app started",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app started\n");
}

#[tokio::test]
async fn trace_context_passes_unchanged_and_is_generated_only_when_asked() {
    let up = Upstream::start("up", Behavior::Name).await;
    let yaml = |generate: bool| {
        format!(
            "server: {{ generate_traceparent: {generate} }}\nadmin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: ingress, address: \"127.0.0.1:0\", routes: [{{ match: {{ path_prefix: / }}, cluster: c }}] }}\nclusters:\n  - {{ name: c, endpoints: [{{address: \"{}\"}}] }}\n",
            up.addr
        )
    };
    let plain = Proxy::start(&yaml(false)).await;
    let gen = Proxy::start(&yaml(true)).await;
    let given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for p in [&plain, &gen] {
        let mut c = H1::connect(p.addr()).await;
        let req = request("GET", p.addr(), "/")
            .header("traceparent", given)
            .header("tracestate", "vendor=x")
            .header("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = c.send(req).await;
        assert_eq!(r.header("x-echo-traceparent"), Some(given));
        assert_eq!(r.header("x-echo-tracestate"), Some("vendor=x"));
        assert_eq!(
            r.header("x-echo-x-b3-traceid"),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }
    assert_eq!(
        get(plain.addr(), "/").await.header("x-echo-traceparent"),
        None
    );
    let generated = get(gen.addr(), "/")
        .await
        .header("x-echo-traceparent")
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = generated.split('-').collect();
    assert_eq!(
        (
            parts.len(),
            parts[0],
            parts[1].len(),
            parts[2].len(),
            parts[3]
        ),
        (4, "00", 32, 16, "01"),
        "{generated}"
    );
}
