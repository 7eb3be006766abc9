//! The admin server's security model: state-changing endpoints answer only `admin.allow` peers
//! (loopback by default) and only to a POST a web page cannot forge; every request must name
//! the admin server in `Host`; `/config` prints no header value it was not told is public.
//! Each test failed before the hardening change (every peer, Host and POST was served, and
//! only credential-looking header names were redacted).

use crate::support::{get, metric, request, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use tokio::net::TcpSocket;

fn config(up: &Upstream, admin_extra: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0"{admin_extra} }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - match: {{ path_prefix: /, headers: {{ x-api-key: "sekret-match" }} }}
        cluster: web
        request_headers_add: {{ x-tenant: "sekret-add", x-shown: "visible-value" }}
clusters:
  - name: web
    endpoints: [{{address: "{}"}}]
"#,
        up.addr
    )
}

/// POST `path` from a socket bound to `source`, with `headers`; returns the status.
async fn post_from(source: &str, admin: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(admin).await.unwrap();
    let mut c = H1::from_stream(stream).await;
    let mut req = request("POST", admin, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    c.send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .status
}

#[tokio::test]
async fn reload_and_shutdown_answer_only_peers_in_admin_allow() {
    let up = Upstream::start("web", Behavior::Name).await;
    let p = Proxy::start(&config(&up, r#", allow: ["127.0.0.2/32"]"#)).await;
    let admin = p.admin();
    let hdr = [("x-outrigger-admin", "1")];
    assert_eq!(post_from("127.0.0.1", admin, "/reload", &hdr).await, 403);
    assert_eq!(post_from("127.0.0.1", admin, "/shutdown", &hdr).await, 403);
    assert!(!p.server.runtime().shutdown.is_requested());
    // Reads stay open to whoever reaches the address.
    assert_eq!(get(admin, "/ready").await.status, 200);
    assert_eq!(get(admin, "/metrics").await.status, 200);
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_admin_denied_total{reason="peer"}"#),
        Some(2.0)
    );
    // The configured peer may; test.yaml cannot be re-read, so /reload answers 400, not 403.
    assert_eq!(post_from("127.0.0.2", admin, "/reload", &hdr).await, 400);
    assert_eq!(post_from("127.0.0.2", admin, "/shutdown", &hdr).await, 200);
    assert!(p.server.runtime().shutdown.is_requested());
}

#[tokio::test]
async fn loopback_is_the_default_and_a_simple_post_is_refused() {
    let up = Upstream::start("web", Behavior::Name).await;
    let p = Proxy::start(&config(&up, "")).await;
    let admin = p.admin();
    // What a cross-site form can send: no JSON, no header of ours.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(post_from("127.0.0.1", admin, "/shutdown", &form).await, 403);
    assert!(!p.server.runtime().shutdown.is_requested());
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_admin_denied_total{reason="header"}"#),
        Some(1.0)
    );
    let json = [("content-type", "application/json")];
    assert_eq!(post_from("127.0.0.1", admin, "/shutdown", &json).await, 200);
    assert!(p.server.runtime().shutdown.is_requested());
}

#[tokio::test]
async fn a_host_that_is_not_the_admin_server_is_refused() {
    let up = Upstream::start("web", Behavior::Name).await;
    let p = Proxy::start(&config(&up, r#", allowed_hosts: [outrigger]"#)).await;
    let admin = p.admin();
    let with_host = |host: &'static str| async move {
        let mut c = H1::connect(admin).await;
        let req = http::Request::get("/config")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        c.send(req).await.status
    };
    // A DNS-rebinding page reaches 127.0.0.1 under its own name.
    assert_eq!(with_host("evil.example:9901").await, 403);
    assert_eq!(with_host("localhost:9901").await, 200);
    assert_eq!(with_host("127.0.0.1").await, 200);
    assert_eq!(with_host("outrigger:9901").await, 200);
    let own = format!("{admin}");
    let mut c = H1::connect(admin).await;
    let req = http::Request::get("/metrics")
        .header("host", own)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(c.send(req).await.status, 200);
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, r#"outrigger_admin_denied_total{reason="host"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn config_prints_header_values_only_when_marked_public() {
    let up = Upstream::start("web", Behavior::Name).await;
    let p = Proxy::start(&config(&up, r#", public_headers: [X-Shown]"#)).await;
    let text = get(p.admin(), "/config").await.text();
    assert!(!text.contains("sekret-match"), "{text}");
    assert!(!text.contains("sekret-add"), "{text}");
    assert!(text.contains("visible-value"), "{text}");
    assert!(text.contains("x-api-key: <redacted>"), "{text}");
}
