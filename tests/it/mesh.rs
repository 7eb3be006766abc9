//! Mesh mode on 127.0.0.1: authorization by SPIFFE identity (HTTP and TCP), protocol detection
//! (HTTP, other bytes, a silent client), the PROXY protocol on an HTTP listener and TCP
//! connections in the access log. Capture itself (iptables, original destinations) needs
//! network namespaces: `mesh_netns.rs`.

use crate::support::tls::{client_config, name, Ca, Cert};
use crate::support::{
    eventually, get, metric, raw_exchange, raw_server, temp_dir, upstream::Behavior, Proxy,
    Upstream, H1,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WEB: &str = "spiffe://test.local/ns/shop/sa/web";
const INTRUDER: &str = "spiffe://test.local/ns/shop/sa/intruder";

struct Pki {
    ca: Ca,
    dir: std::path::PathBuf,
}

fn pki() -> Pki {
    let ca = Ca::new("mesh CA");
    let dir = temp_dir("mesh-pki");
    let server = ca.issue(&["app.test"], None);
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("server.pem"), &server.pem).unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    Pki { ca, dir }
}

fn tls_block(p: &Pki) -> String {
    let d = p.dir.display();
    format!("    tls: {{ cert: \"{d}/server.pem\", key: \"{d}/server.key\", client_ca: \"{d}/ca.pem\" }}\n")
}

/// An HTTP/1.1 client over mutual TLS presenting `client`.
async fn mtls_h1(addr: SocketAddr, p: &Pki, client: &Cert) -> H1 {
    tls_h1(addr, &p.ca, "app.test", Some(client)).await
}

/// An HTTP/1.1 client over TLS to `server` (trusting `ca`), presenting `client` if given.
async fn tls_h1(addr: SocketAddr, ca: &Ca, server: &str, client: Option<&Cert>) -> H1 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = client_config(&[&ca.der], &["http/1.1"], client)
        .connect(name(server), tcp)
        .await
        .unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    H1::from_sender(tx, addr)
}

#[tokio::test]
async fn spiffe_identities_are_allowed_or_denied_per_listener_and_route() {
    let up = Upstream::start("app", Behavior::Name).await;
    let p = pki();
    let log = p.dir.join("access.log");
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: inbound\n    address: 127.0.0.1:0\n{}    authz: {{ allow: [\"spiffe://test.local/ns/shop/*\"], deny: [\"{INTRUDER}\"] }}\n    access_log: {{ format: json, path: \"{}\" }}\n    routes:\n      - match: {{ path_prefix: /admin }}\n        cluster: app\n        authz: {{ allow: [\"spiffe://test.local/ns/ops/*\"] }}\n      - match: {{ path_prefix: / }}\n        cluster: app\nclusters:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n",
        tls_block(&p),
        log.display(),
        up.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.listener("inbound");
    let web = p.ca.issue(&["web.shop"], Some(WEB));
    let intruder = p.ca.issue(&["intruder.shop"], Some(INTRUDER));

    let mut allowed = mtls_h1(addr, &p, &web).await;
    let r = allowed.get("/orders").await;
    assert_eq!((r.status, r.text().as_str()), (200, "app"));
    // The route's own rule: shop identities may not reach /admin.
    let r = allowed.get("/admin/users").await;
    assert_eq!(
        (r.status, r.header("x-outrigger-error")),
        (403, Some("forbidden"))
    );

    let mut denied = mtls_h1(addr, &p, &intruder).await;
    let r = denied.get("/orders").await;
    assert_eq!(
        (r.status, r.header("x-outrigger-error")),
        (403, Some("forbidden"))
    );
    assert_eq!(up.requests(), 1, "only the allowed request reached the app");

    let m = proxy.metrics().await;
    let denied_by = |rule: &str| {
        metric(
            &m,
            &format!("outrigger_authz_denied_total{{listener=\"inbound\",rule=\"{rule}\"}}"),
        )
    };
    assert_eq!(denied_by("listener.deny[0]"), Some(1.0));
    assert_eq!(denied_by("routes[0].allow"), Some(1.0));
    // The identity is in the access log (not in metric labels: its cardinality is unbounded).
    let lines = eventually(Duration::from_secs(5), "three access log lines", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.lines().count() == 3).then_some(text)
    })
    .await;
    let ids: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            format!(
                "{} {}",
                v["status"],
                v["client_identity"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            format!("200 {WEB}"),
            format!("403 {WEB}"),
            format!("403 {INTRUDER}")
        ]
    );
}

#[tokio::test]
async fn a_tcp_listener_closes_a_denied_identity_and_relays_an_allowed_one() {
    let (echo, accepted) = crate::tcp::echo().await;
    let p = pki();
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: db\n    address: 127.0.0.1:0\n    protocol: tcp\n    cluster: db\n{}    authz: {{ allow: [\"{WEB}\"] }}\nclusters:\n  - name: db\n    endpoints: [{{ address: \"{echo}\" }}]\n",
        tls_block(&p)
    );
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.listener("db");
    let talk = |client: Cert| {
        let p = &p;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = client_config(&[&p.ca.der], &[], Some(&client))
                .connect(name("app.test"), tcp)
                .await
                .unwrap();
            let _ = tls.write_all(b"ping").await;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 64];
                while let Ok(n) = tls.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() >= 4 {
                        break;
                    }
                }
            })
            .await;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    assert_eq!(talk(p.ca.issue(&["web"], Some(WEB))).await, "ping");
    assert_eq!(
        talk(p.ca.issue(&["x"], Some(INTRUDER))).await,
        "",
        "closed unanswered"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_authz_denied_total{listener="db",rule="listener.allow"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_detect_listener_serves_http_and_relays_other_bytes_and_silent_clients() {
    let up = Upstream::start("http-up", Behavior::Name).await;
    let (echo, echoed) = crate::tcp::echo().await;
    // A server that speaks first, as MySQL and SMTP do.
    let (greeter, _) = raw_server(|mut s| async move {
        let _ = s.write_all(b"220 ready\r\n").await;
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf).await;
    })
    .await;
    // TLS passed through by SNI to an upstream that terminates it.
    let ca = Ca::new("passthrough CA");
    let tls_up =
        crate::tls::tls_upstream(&ca.issue(&["api.test"], None), &[], |_| "tls-up".into()).await;
    let yaml = |tcp: SocketAddr| {
        format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: any\n    address: 127.0.0.1:0\n    protocol: detect\n    detect: {{ timeout: 300ms }}\n    cluster: tcp\n    routes: [{{ match: {{ path_prefix: /web }}, cluster: web }}, {{ match: {{ sni: api.test }}, cluster: tls }}]\nclusters:\n  - name: web\n    endpoints: [{{ address: \"{}\" }}]\n  - name: tls\n    endpoints: [{{ address: \"{tls_up}\" }}]\n  - name: tcp\n    endpoints: [{{ address: \"{tcp}\" }}]\n",
            up.addr
        )
    };
    let proxy = Proxy::start(&yaml(echo)).await;
    let addr = proxy.listener("any");
    let r = get(addr, "/web/a").await;
    assert_eq!((r.status, r.text().as_str()), (200, "http-up"));
    // HTTP/2 with prior knowledge.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://app/web/b").body(()).unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(up.requests(), 2);
    // Not HTTP: relayed to the tcp cluster byte for byte.
    let (got, _) = raw_exchange(addr, b"\x00\x01binary\x7f", Duration::from_millis(500)).await;
    assert_eq!(got.as_bytes(), b"\x00\x01binary\x7f");
    assert_eq!(echoed.load(std::sync::atomic::Ordering::SeqCst), 1);
    // TLS: recognised by its ClientHello and routed by its server name, untouched.
    let r = tls_h1(addr, &ca, "api.test", None).await.get("/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls-up"));

    // A client that waits for its server: after the detect timeout it is relayed as TCP.
    let proxy = Proxy::start(&yaml(greeter)).await;
    let mut s = TcpStream::connect(proxy.listener("any")).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server's greeting within the detect timeout and a bit")
        .unwrap();
    assert_eq!(&buf[..n], b"220 ready\r\n");
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_protocol_detected_total{listener="any",protocol="silent"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_http_listener_takes_the_client_address_from_a_proxy_header() {
    let up = Upstream::start("app", Behavior::Name).await;
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: ingress\n    address: 127.0.0.1:0\n    accept_proxy_protocol: true\n    routes: [{{ match: {{ path_prefix: / }}, cluster: app }}]\nclusters:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n",
        up.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n")
        .await
        .unwrap();
    let mut h1 = H1::from_stream(s).await;
    let r = h1.get("/").await;
    assert_eq!(r.status, 200);
    let seen = up.last_headers().unwrap();
    assert_eq!(seen.get("x-forwarded-for").unwrap(), "203.0.113.7");
    // Without the header: the connection is closed, nothing reaches the app.
    let (got, closed) = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed && got.is_empty(), "{got:?}");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn tcp_connections_are_written_to_the_access_log() {
    let (echo, _) = crate::tcp::echo().await;
    let dir = temp_dir("tcp-log");
    let log = dir.join("tcp.log");
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: db\n    address: 127.0.0.1:0\n    protocol: tcp\n    cluster: db\n    access_log: {{ format: json, path: \"{}\" }}\nclusters:\n  - name: db\n    endpoints: [{{ address: \"{echo}\" }}]\n",
        log.display()
    );
    let proxy = Proxy::start(&yaml).await;
    let (got, _) = raw_exchange(
        proxy.listener("db"),
        b"0123456789",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(got, "0123456789");
    let line = eventually(
        Duration::from_secs(5),
        "a line for the connection",
        || async { std::fs::read_to_string(&log).ok().filter(|t| !t.is_empty()) },
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["cluster"], "db");
    assert_eq!(v["bytes_received"], 10);
    assert_eq!(v["bytes_sent"], 10);
    assert_eq!(v["upstream_endpoint"], echo.to_string());
    assert_eq!(v["response_flags"], "-");
}
