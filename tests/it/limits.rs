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
}

#[tokio::test]
async fn max_connections_holds_extra_connections_until_a_slot_frees() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&config(&up, "{ max_connections: 1 }")).await;
    let mut first = H1::connect(proxy.addr()).await;
    assert_eq!(first.get("/").await.status, 200);
    // The second connection is not served while the first is open.
    let second = tokio::spawn({
        let addr = proxy.addr();
        async move { get(addr, "/").await.status }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "second connection served beyond max_connections"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}
