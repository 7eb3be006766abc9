//! Protocols beyond one HTTP/1.1 exchange: HTTP/2 upstream multiplexing within a connection
//! bound, WebSocket through the proxy (HTTP/1.1 upgrade and RFC 8441 over HTTP/2), CONNECT
//! refused or tunnelled, and HTTP/2 rapid reset closing the connection with GOAWAY.

use crate::support::{get, raw_exchange, single_route, upstream::Behavior, Proxy, Upstream};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn http2_upstream_multiplexes_200_requests_over_at_most_the_configured_connections() {
    let up = Upstream::start("a", Behavior::Delay(Duration::from_millis(200))).await;
    let proxy = Proxy::start(&single_route(
        "web",
        &[up.addr],
        "",
        "    protocol: http2\n    pool: { http2_max_connections_per_endpoint: 2, http2_max_streams_per_connection: 50 }\n",
    ))
    .await;
    let addr = proxy.addr();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..200 {
        all.spawn(async move { get(addr, "/").await });
    }
    let mut ok = 0;
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(up.requests(), 200);
    let conns = up.connections();
    assert!(
        (1..=2).contains(&conns),
        "{conns} upstream connections for 200 concurrent requests"
    );

    // What the upstream saw was HTTP/2 (an HTTP/1.1 client downstream notwithstanding).
    let named = Upstream::start("b", Behavior::Name).await;
    let proxy = Proxy::start(&single_route(
        "web",
        &[named.addr],
        "",
        "    protocol: http2\n",
    ))
    .await;
    let r = get(proxy.addr(), "/x").await;
    assert_eq!(r.header("x-echo-version"), Some("HTTP/2.0"));
    assert_eq!(r.text(), "b");
}

/// A WebSocket server that echoes every message, or on `/push` sends 1000 and closes itself.
pub(crate) async fn websocket_upstream() -> SocketAddr {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut path = String::new();
                #[allow(clippy::result_large_err)]
                let cb = |req: &Request, resp: Response| {
                    path = req.uri().path().to_string();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else {
                    return;
                };
                if path == "/push" {
                    for i in 0..1000 {
                        if ws.send(Message::text(format!("push-{i}"))).await.is_err() {
                            return;
                        }
                    }
                    let _ = ws.close(None).await;
                    // Read until the client's close reply.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_exchanges_1000_messages_each_way_and_closes_from_either_side() {
    let ws_up = websocket_upstream().await;
    let proxy = Proxy::start(&single_route("ws", &[ws_up], "", "")).await;

    // Client to server and back, then the client closes.
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/echo", proxy.addr()))
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    for i in 0..1000 {
        ws.send(Message::text(format!("m-{i}"))).await.unwrap();
        let back = ws.next().await.expect("echo").expect("frame");
        assert_eq!(back, Message::text(format!("m-{i}")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                return true;
            }
        }
        true
    })
    .await;
    assert_eq!(closed, Ok(true), "the close handshake completes");

    // Server to client, then the server closes.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/push", proxy.addr()))
        .await
        .unwrap();
    let mut got = 0;
    let mut close_seen = false;
    while let Some(m) = ws.next().await {
        match m.expect("frame") {
            Message::Text(t) => {
                assert_eq!(t.as_str(), format!("push-{got}"));
                got += 1;
            }
            Message::Close(_) => {
                close_seen = true;
                break;
            }
            _ => {}
        }
    }
    assert_eq!((got, close_seen), (1000, true));
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_reaches_an_http1_server() {
    let ws_up = websocket_upstream().await;
    let proxy = Proxy::start(&single_route("ws", &[ws_up], "", "")).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::connect(format!("http://{}/echo", proxy.addr()))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.expect("extended CONNECT answered");
    assert_eq!(resp.status(), 200);
    let mut recv = resp.into_body();
    // One unmasked-from-server / masked-from-client text frame "hi" (RFC 6455 §5.2).
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    send.send_data(frame.into(), false).unwrap();
    let data = tokio::time::timeout(Duration::from_secs(5), recv.data())
        .await
        .expect("an echo")
        .expect("data")
        .unwrap();
    assert_eq!(&data[..], &[0x81, 2, b'h', b'i']);
}

#[tokio::test]
async fn connect_is_refused_with_405_unless_the_route_allows_it() {
    let up = Upstream::start("a", Behavior::Name).await;
    let proxy = Proxy::start(&single_route("web", &[up.addr], "", "")).await;
    let (reply, _) = raw_exchange(
        proxy.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(
        reply.contains("x-outrigger-error: connect_not_allowed"),
        "{reply}"
    );
    assert_eq!(up.requests(), 0);

    let proxy = Proxy::start(&single_route(
        "web",
        &[up.addr],
        "        allow_connect: true\n",
        "",
    ))
    .await;
    // The tunnel reaches the cluster's endpoint: an HTTP request inside it gets its answer.
    let (reply, _) = raw_exchange(
        proxy.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET /inside HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let inner = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(inner.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with('a'), "{reply}");
    assert_eq!(up.requests(), 1);
}

/// This process's CPU time (user + system) and resident memory.
fn process_usage() -> (Duration, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (Duration::from_millis(ticks * 10), rss_kb * 1024)
}

/// One HTTP/2 frame: 9-byte header (length, type, flags, stream id) and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_is_cut_off_with_goaway_in_bounded_cpu_and_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("a", Behavior::Delay(Duration::from_millis(50))).await;
    let proxy = Proxy::start(&single_route("web", &[up.addr], "", "")).await;
    // Raw frames, so nothing in a client library stands between the attack and what the proxy
    // answers: 10,000 times HEADERS (GET /) then RST_STREAM(CANCEL).
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    // HPACK, static table only: :method GET, :scheme http, :path /, :authority "x".
    let block = [0x82u8, 0x86, 0x84, 0x01, 0x01, b'x'];
    let (cpu0, rss0) = process_usage();
    let writer = tokio::spawn(async move {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(0x4, 0, 0, &[]));
        let mut sent = 0u32;
        for batch in 0..100u32 {
            for k in 0..100u32 {
                let id = 2 * (batch * 100 + k) + 1;
                out.extend(h2_frame(0x1, 0x4, id, &block));
                out.extend(h2_frame(0x3, 0, id, &8u32.to_be_bytes()));
            }
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
            sent = (batch + 1) * 100;
        }
        sent
    });
    // Read everything the proxy sends until it closes; look for GOAWAY (type 7).
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let read_all = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the proxy closes the connection");
    let sent = writer.await.unwrap();
    let (cpu1, rss1) = process_usage();
    let mut goaway = None;
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 && at + 9 + 8 <= got.len() {
            let p = &got[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    eprintln!(
        "rapid reset: GOAWAY code {goaway:?} with at most {sent} streams written; CPU {:?}, RSS +{} KiB",
        cpu1.saturating_sub(cpu0),
        rss1.saturating_sub(rss0) / 1024
    );
    // 0xb: ENHANCE_YOUR_CALM.
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY(ENHANCE_YOUR_CALM) before the close"
    );
    assert!(cpu1.saturating_sub(cpu0) < Duration::from_secs(5));
    assert!(rss1.saturating_sub(rss0) < 64 << 20);
    assert!(
        up.requests() <= 1000,
        "{} requests reached the upstream",
        up.requests()
    );
    // Other clients are unaffected.
    assert_eq!(get(proxy.addr(), "/").await.status, 200);
}

#[tokio::test]
async fn requests_waiting_for_an_http2_connection_fail_together_when_it_cannot_be_opened() {
    // A listener whose backlog is full and that never accepts: connects to it hang until the
    // connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(stuck),
        )
        .await
        {
            fill.push(s);
        }
    }
    let proxy = Proxy::start(&single_route(
        "web",
        &[stuck],
        "",
        "    protocol: http2\n    connect_timeout: 500ms\n",
    ))
    .await;
    let addr = proxy.addr();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..10 {
        all.spawn(async move { get(addr, "/").await });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
    }
    // One attempt timed out; the requests queued behind it failed with it instead of each
    // waiting out a timeout of its own.
    let m = proxy.metrics().await;
    let timeouts = crate::support::metric(
        &m,
        r#"outrigger_timeouts_total{cluster="web",kind="connect"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        (1.0..=2.0).contains(&timeouts),
        "{timeouts} connect timeouts for 10 requests"
    );
}
