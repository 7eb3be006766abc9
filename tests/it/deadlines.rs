//! A deadline on everything held: bodies that stop moving, clients that stop reading, HTTP/2
//! clients that never answer the closing PING, upstream handshakes that stall, and tunnels.
//! Each test failed before the hardening change (the request, connection or tunnel was held
//! until the route timeout or for ever).

use crate::support::{metric, raw_server, tls, upstream::Behavior, Proxy, Upstream};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(upstream: &str, limits: &str, cluster_extra: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    limits: {{ {limits} }}
    routes: [{{ match: {{ path_prefix: / }}, cluster: web, timeout: 30s }}]
clusters:
  - name: web
    endpoints: [{{address: "{upstream}"}}]
{cluster_extra}
"#
    )
}

/// Reads until EOF or error; returns the bytes and how long it took, or panics after `limit`.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, start.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_releases_both_connections() {
    // Promises 1000 bytes, sends 5, then holds the connection.
    let (addr, _) = raw_server(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello")
            .await;
        // Held until the proxy lets go: the read returns 0 (or fails) when it does.
        let _ = s.read(&mut buf).await;
    })
    .await;
    let proxy = Proxy::start(&config(&addr.to_string(), "stream_idle_timeout: 300ms", "")).await;
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let (got, took) = read_to_close(&mut c, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("hello"),
        "the client sees a cut body, not a complete one: {text}"
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
    proxy
        .await_metric(
            r#"outrigger_downstream_timeouts_total{kind="stream_idle",listener="ingress"}"#,
            1.0,
        )
        .await;
    proxy
        .await_metric(
            r#"outrigger_upstream_connections_active{cluster="web"}"#,
            0.0,
        )
        .await;
    let clusters: serde_json::Value =
        serde_json::from_slice(&crate::support::get(proxy.admin(), "/clusters").await.body)
            .unwrap();
    assert_eq!(clusters["clusters"][0]["endpoints"][0]["in_flight"], 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_is_cut_off() {
    let up = Upstream::start("web", Behavior::Bytes(32 * 1024 * 1024)).await;
    let proxy = Proxy::start(&config(
        &up.addr.to_string(),
        "stream_idle_timeout: 400ms",
        "    circuit_breaker: { max_requests: 1 }",
    ))
    .await;
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let n = c.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // ... and reads no more. The proxy must let go of the client, the upstream connection and
    // the one request slot of the breaker.
    proxy
        .await_metric(
            r#"outrigger_downstream_timeouts_total{kind="stream_idle",listener="ingress"}"#,
            1.0,
        )
        .await;
    proxy
        .await_metric(
            r#"outrigger_upstream_connections_active{cluster="web"}"#,
            0.0,
        )
        .await;
    let r = crate::support::get(proxy.addr(), "/").await;
    assert_eq!(r.status, 200, "the breaker slot was released");
    assert_eq!(r.body.len(), 32 * 1024 * 1024);
}

#[tokio::test]
async fn an_http2_client_that_never_answers_the_closing_ping_is_cut() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&config(
        &up.addr.to_string(),
        "idle_timeout: 200ms, close_timeout: 300ms",
        "",
    ))
    .await;
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    // The preface and an empty SETTINGS; after that the client reads but never writes.
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (_, took) = read_to_close(&mut c, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn connect_timeout_bounds_a_stalled_upstream_tls_handshake() {
    // Accepts and never says a word.
    let (addr, _) = raw_server(|mut s| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let ca = tls::Ca::new("ca");
    let dir = crate::support::temp_dir("stalled-tls");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    for protocol in ["http1", "http2"] {
        let proxy = Proxy::start(&config(
            &addr.to_string(),
            "",
            &format!(
                "    connect_timeout: 200ms\n    protocol: {protocol}\n    tls: {{ ca: \"{}\", sni: up }}",
                dir.join("ca.pem").display()
            ),
        ))
        .await;
        let start = Instant::now();
        // Two at once: the second must not queue behind the first's HTTP/2 opener.
        let (a, b) = tokio::join!(
            crate::support::get(proxy.addr(), "/a"),
            crate::support::get(proxy.addr(), "/b")
        );
        assert_eq!((a.status, b.status), (503, 503), "{protocol}");
        assert_eq!(
            a.header("x-outrigger-error"),
            Some("connect_timeout"),
            "{protocol}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{protocol}: {:?}",
            start.elapsed()
        );
        let m = proxy.metrics().await;
        assert!(
            metric(
                &m,
                r#"outrigger_timeouts_total{cluster="web",kind="connect"}"#
            ) >= Some(1.0),
            "{m}"
        );
    }
}
