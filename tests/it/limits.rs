use crate::support::{get, raw_exchange, upstream::Behavior, Proxy, Upstream, H1};
use std::time::Duration;

fn config(up: &Upstream, limits: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    limits: {limits}
    routes: [{{ match: {{ path_prefix: / }}, cluster: web }}]
clusters:
  - {{ name: web, endpoints: [{{address: "{}"}}] }}
"#,
        up.addr
    )
}

#[tokio::test]
async fn header_block_over_the_limit_gets_431() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&config(&up, "{ max_request_headers_kb: 16 }")).await;
    let big = "x".repeat(20 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let (resp, closed) = raw_exchange(proxy.addr(), req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(closed);
    assert_eq!(up.requests(), 0);
    // Under the limit still works.
    let small = "x".repeat(8 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {small}\r\nConnection: close\r\n\r\n");
    let (resp, _) = raw_exchange(proxy.addr(), req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&config(&up, "{ idle_timeout: 300ms }")).await;
    let mut c = H1::connect(proxy.addr()).await;
    assert_eq!(c.get("/").await.status, 200);
    crate::support::eventually(Duration::from_secs(3), "idle connection closed", || {
        let closed = c.is_closed();
        async move { closed.then_some(()) }
    })
    .await;
    let m = proxy.metrics().await;
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_downstream_timeouts_total{kind="idle",listener="ingress"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn slow_header_sender_is_cut_off_by_header_read_timeout() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&config(&up, "{ header_read_timeout: 300ms }")).await;
    let started = std::time::Instant::now();
    let (resp, closed) = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: t\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "connection should be closed, got {resp:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(up.requests(), 0);
    let m = proxy.metrics().await;
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_downstream_timeouts_total{kind="header_read",listener="ingress"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn connections_over_max_connections_are_refused_at_once_with_503() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&config(&up, "{ max_connections: 1 }")).await;
    let mut first = H1::connect(proxy.addr()).await;
    assert_eq!(first.get("/").await.status, 200);
    let started = std::time::Instant::now();
    let (resp, closed) = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("x-outrigger-overflow: 1"), "{resp}");
    assert!(closed && started.elapsed() < Duration::from_secs(2));
    let m = proxy.metrics().await;
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_load_shed_total{listener="ingress",reason="max_connections"}"#
        ),
        Some(1.0)
    );
    // Once the first connection closes, its slot is free again.
    drop(first);
    crate::support::eventually(Duration::from_secs(3), "slot freed", || async {
        (get(proxy.addr(), "/").await.status == 200).then_some(())
    })
    .await;
}
