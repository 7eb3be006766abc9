//! Tunnels stay under the listener's limits and the drain; a drain refuses new connections at
//! once; TCP connections drain with a cut-off; a TCP listener at its limit writes nothing.
//! Each test failed before the hardening change (tunnels were free-running tasks, the
//! listening socket stayed bound through the drain, TCP connections ignored it, and the
//! at-limit refusal wrote an HTTP 503 to any client).

use crate::support::{get, metric, upstream::Behavior, Proxy, Upstream};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Requests shutdown and runs the drain (no delay, then `timeout`) as the binary does; the
/// task's result says whether every connection finished in time.
fn drain(proxy: &Proxy, timeout: Duration) -> tokio::task::JoinHandle<bool> {
    let runtime = proxy.server.runtime().clone();
    runtime.shutdown.request();
    tokio::spawn(async move { runtime.shutdown.drain(Duration::ZERO, timeout).await })
}

fn ws_config(upstream: std::net::SocketAddr, limits: &str, route_extra: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    limits: {{ {limits} }}
    routes: [{{ match: {{ path_prefix: / }}, cluster: ws{route_extra} }}]
clusters:
  - {{ name: ws, endpoints: [{{address: "{upstream}"}}] }}
"#
    )
}

#[tokio::test]
async fn a_websocket_holds_its_connection_slot_and_idles_out() {
    let up = crate::protocols::websocket_upstream().await;
    let proxy = Proxy::start(&ws_config(
        up,
        "max_connections: 1, stream_idle_timeout: 500ms",
        "",
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo", proxy.addr()))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    // The tunnel still counts against max_connections: a second client is refused.
    let (resp, _) = crate::support::raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: t\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    // Silent for longer than the stream idle timeout: the tunnel is closed.
    let start = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(end, Ok(None | Some(Err(_)))), "{end:?}");
    assert!(start.elapsed() >= Duration::from_millis(400));
    // And its slot is free again.
    crate::support::eventually(Duration::from_secs(3), "slot freed", || async {
        let (r, _) = crate::support::raw_exchange(
            proxy.addr(),
            b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            Duration::from_secs(3),
        )
        .await;
        (!r.starts_with("HTTP/1.1 503")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn only_the_routes_upgrades_pass_and_h2c_is_dropped() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&ws_config(up.addr, "", "")).await;
    let (resp, _) = crate::support::raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: spdy/3\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("x-outrigger-error: upgrade_not_allowed"),
        "{resp}"
    );
    assert_eq!(up.requests(), 0);
    // h2c goes on as a plain request, without its Upgrade.
    let (resp, _) = crate::support::raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.last_headers().unwrap();
    assert!(seen.get("upgrade").is_none(), "{seen:?}");
    assert!(seen.get("http2-settings").is_none(), "{seen:?}");
    // An allowed list of its own replaces websocket.
    let proxy = Proxy::start(&ws_config(up.addr, "", ", upgrades: [spdy/3]")).await;
    let (resp, _) = crate::support::raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
}

#[tokio::test]
async fn a_drain_refuses_new_connections_at_once_and_finishes_in_flight_ones() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(700))).await;
    let proxy = Proxy::start(&format!(
        "server: {{ drain_timeout: 5s }}\n{}",
        crate::support::single_route("s", &[slow.addr], "", "")
    ))
    .await;
    let addr = proxy.addr();
    let long = tokio::spawn(async move { get(addr, "/").await });
    crate::support::eventually(Duration::from_secs(3), "in flight", || {
        let n = slow.requests();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let drained = drain(&proxy, Duration::from_secs(5));
    let refused =
        crate::support::eventually(Duration::from_secs(2), "connection refused", || async {
            let t = Instant::now();
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(t.elapsed()),
                _ => None,
            }
        })
        .await;
    assert!(refused < Duration::from_millis(100), "{refused:?}");
    assert_eq!(long.await.unwrap().status, 200);
    assert!(
        drained.await.unwrap(),
        "the in-flight request finished within the drain"
    );
}

fn tcp_config(echo: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
server: {{ drain_timeout: 600ms }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    protocol: tcp
    cluster: echo
{extra}
clusters:
  - {{ name: echo, endpoints: [{{address: "{echo}"}}] }}
"#
    )
}

#[tokio::test]
async fn tcp_connections_take_part_in_the_drain() {
    let (echo, _) = crate::tcp::echo().await;
    let proxy = Proxy::start(&tcp_config(echo, "")).await;
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 5];
    c.write_all(b"hello").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    let start = Instant::now();
    let drained = drain(&proxy, Duration::from_millis(600));
    // Still served during the drain ...
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(b"again").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"again");
    // ... and closed by the proxy at the drain timeout, with its bytes counted.
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed at the drain timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    let _ = drained.await.unwrap();
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_tcp_bytes_total{direction="to_upstream",listener="ingress"}"#
        ),
        Some(10.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_tcp_listener_at_its_limit_closes_without_writing_a_byte() {
    let (echo, _) = crate::tcp::echo().await;
    let proxy = Proxy::start(&tcp_config(echo, "    limits: { max_connections: 1 }")).await;
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 2];
    first.write_all(b"hi").await.unwrap();
    first.read_exact(&mut buf).await.unwrap();
    let start = Instant::now();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), second.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_websocket_is_served_through_the_drain_and_cut_at_its_timeout() {
    let up = crate::protocols::websocket_upstream().await;
    let proxy = Proxy::start(&format!(
        "server: {{ drain_timeout: 600ms }}\n{}",
        ws_config(up, "", "")
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo", proxy.addr()))
        .await
        .unwrap();
    let start = Instant::now();
    let drained = drain(&proxy, Duration::from_millis(600));
    // The drain waits for the tunnel (it is a tracked task), which still carries messages ...
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(Message::text("during the drain")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("during the drain")
    );
    assert!(!drained.is_finished());
    // ... until the drain timeout, when the proxy closes it.
    let end = tokio::time::timeout(Duration::from_secs(3), ws.next()).await;
    assert!(matches!(end, Ok(None | Some(Err(_)))), "{end:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    let _ = tokio::time::timeout(Duration::from_secs(3), drained)
        .await
        .unwrap();
}
