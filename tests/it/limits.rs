use crate::support::{get, raw_exchange, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
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
async fn keep_alive_connection_idle_longer_than_header_read_timeout_stays_open() {
    // The header timeout runs from a head's first byte, not while a connection waits for its
    // next request (hyper's own timer did; idle connections are the idle timeout's business).
    let up = Upstream::start("web", Behavior::Name).await;
    let limits = "{ header_read_timeout: 200ms, park_idle_after: 0s, idle_timeout: 60s }";
    let proxy = Proxy::start(&config(&up, limits)).await;
    let mut client = H1::connect(proxy.addr()).await;
    assert_eq!(client.get("/").await.status, 200);
    // Idle for three header timeouts: an absence of a close can only be waited for.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!client.is_closed(), "idle keep-alive connection was closed");
    assert_eq!(client.get("/").await.status, 200);
    let m = proxy.metrics().await;
    let timeouts = |kind: &str| {
        crate::support::metric(
            &m,
            &format!(r#"outrigger_downstream_timeouts_total{{kind="{kind}",listener="ingress"}}"#),
        )
    };
    assert_eq!(timeouts("header_read"), Some(0.0));
    assert_eq!(timeouts("idle"), Some(0.0));
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_downstream_connections_total{listener="ingress"}"#
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
    // The same answer as any other overload refusal (ProxyError::into_response).
    assert!(resp.contains("x-outrigger-error: overloaded\r\n"), "{resp}");
    assert!(
        resp.ends_with("content-length: 11\r\nconnection: close\r\n\r\noverloaded\n"),
        "{resp}"
    );
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

/// Reads from `s` until `done(bytes so far)` or the deadline.
async fn read_until(
    s: &mut tokio::net::TcpStream,
    done: impl Fn(&str) -> bool,
    what: &str,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done(&String::from_utf8_lossy(&out)) {
        let n = tokio::time::timeout_at(end, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out reading {what}: {:?}",
                    String::from_utf8_lossy(&out)
                )
            })
            .expect("read");
        assert!(n > 0, "closed while reading {what}");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

const PARKED: &str = r#"outrigger_downstream_connections_parked{listener="ingress"}"#;

#[tokio::test]
async fn idle_keepalive_connections_are_parked_and_served_again() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("web", Behavior::Digest).await;
    let proxy = Proxy::start(&config(&up, "{ park_idle_after: 100ms, idle_timeout: 2s }")).await;
    let parked = |n: f64| proxy.await_metric(PARKED, n);
    // A hyper client: parked between requests three times, and each time served again on the
    // same connection, a 100 KiB upload byte exact.
    let mut c = H1::connect(proxy.addr()).await;
    assert_eq!(c.get("/").await.text(), "0 0");
    let body = Bytes::from(vec![7u8; 100 * 1024]);
    for _ in 0..3 {
        parked(1.0).await;
        let req = crate::support::request("POST", proxy.addr(), "/")
            .body(http_body_util::Full::new(body.clone()))
            .unwrap();
        let r = c.send(req).await;
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("102400 "), "{}", r.text());
    }
    assert!(!c.is_closed());
    // A raw client pipelines two requests into a parked connection: both are answered, in order.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, |t| t.ends_with("\r\n\r\n0 0"), "the first answer").await;
    parked(2.0).await;
    s.write_all(b"POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let both = read_until(
        &mut s,
        |t| t.matches("HTTP/1.1 200").count() == 2 && t.ends_with("0 0"),
        "two pipelined answers",
    )
    .await;
    assert!(both.contains("\r\n\r\n3 "), "{both}");
    assert_eq!(up.requests(), 7);
    assert_eq!(
        up.connections(),
        1,
        "one pooled upstream connection throughout"
    );
    // A parked connection still idles out, and is counted as such.
    crate::support::eventually(
        Duration::from_secs(5),
        "parked connection idled out",
        || {
            let closed = c.is_closed();
            async move { closed.then_some(()) }
        },
    )
    .await;
    parked(0.0).await;
    let m = proxy.metrics().await;
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_downstream_timeouts_total{kind="idle",listener="ingress"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_downstream_connections_total{listener="ingress"}"#
        ),
        Some(2.0)
    );
}
