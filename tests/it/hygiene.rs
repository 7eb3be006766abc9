//! Request hygiene and bounded defaults: forwarding headers believed only from trusted hops,
//! paths normalised before routing, access-log fields escaped, ejections capped, health
//! answers bounded, revoked client certificates refused, HTTP/2 windows and the in-flight cap
//! on by default. Each test failed before the hardening change.

use crate::support::{get, request, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;

fn one_route(up: &Upstream, listener_extra: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
{listener_extra}
    routes: [{{ match: {{ path_prefix: / }}, cluster: web }}]
clusters:
  - {{ name: web, endpoints: [{{address: "{}"}}] }}
"#,
        up.addr
    )
}

async fn get_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> crate::support::Reply {
    let mut c = H1::connect(addr).await;
    let mut req = request("GET", addr, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    c.send(req.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_hops() {
    let up = Upstream::start("web", Behavior::Name).await;
    let sent = [
        ("x-forwarded-proto", "https"),
        ("x-request-id", "client-id"),
    ];
    // Nobody trusted: the real scheme, and (request_id: trusted) a fresh id.
    let p = Proxy::start(&one_route(
        &up,
        "    trusted_hops: []\n    request_id: trusted",
    ))
    .await;
    let r = get_with(p.addr(), "/", &sent).await;
    assert_eq!(r.header("x-echo-x-forwarded-proto"), Some("http"));
    let id = r.header("x-echo-x-request-id").unwrap();
    assert_ne!(id, "client-id");
    assert_eq!(id.len(), 36, "{id}");
    // The default trusts loopback (the app beside its sidecar) and keeps request ids.
    let p = Proxy::start(&one_route(&up, "")).await;
    let r = get_with(p.addr(), "/", &sent).await;
    assert_eq!(r.header("x-echo-x-forwarded-proto"), Some("https"));
    assert_eq!(r.header("x-echo-x-request-id"), Some("client-id"));
    // replace: always a new id, even from a trusted hop.
    let p = Proxy::start(&one_route(&up, "    request_id: replace")).await;
    let r = get_with(p.addr(), "/", &sent).await;
    assert_ne!(r.header("x-echo-x-request-id"), Some("client-id"));
}

#[tokio::test]
async fn paths_are_normalised_before_routing() {
    let public = Upstream::start("public", Behavior::Name).await;
    let other = Upstream::start("other", Behavior::Name).await;
    let yaml = |extra: &str| {
        format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
{extra}
    routes:
      - {{ match: {{ path_prefix: /public/ }}, cluster: public }}
      - {{ match: {{ path_prefix: / }}, cluster: other }}
clusters:
  - {{ name: public, endpoints: [{{address: "{}"}}] }}
  - {{ name: other, endpoints: [{{address: "{}"}}] }}
"#,
            public.addr, other.addr
        )
    };
    let p = Proxy::start(&yaml("")).await;
    for (path, cluster, seen) in [
        ("/public/a", "public", "/public/a"),
        ("/public/../admin", "other", "/admin"),
        ("/public/%2e%2E/admin?x=1", "other", "/admin?x=1"),
        ("/public/./b/../c", "public", "/public/c"),
        ("//public/x", "other", "//public/x"),
    ] {
        let r = get(p.addr(), path).await;
        assert_eq!((r.status, r.text().as_str()), (200, cluster), "{path}");
        assert_eq!(r.header("x-echo-uri"), Some(seen), "{path}");
    }
    let r = get(p.addr(), "/public%2F..%2Fadmin").await;
    assert_eq!(r.status, 400);
    // merge_slashes and unescaping, when asked for.
    let p = Proxy::start(&yaml(
        "    merge_slashes: true\n    escaped_slashes: unescape",
    ))
    .await;
    let r = get(p.addr(), "//public///x").await;
    assert_eq!(
        (r.text().as_str(), r.header("x-echo-uri")),
        ("public", Some("/public/x"))
    );
    let r = get(p.addr(), "/public%2F..%2Fadmin").await;
    assert_eq!(
        (r.text().as_str(), r.header("x-echo-uri")),
        ("other", Some("/admin"))
    );
}

#[tokio::test]
async fn the_text_access_log_escapes_quotes_and_backslashes() {
    let up = Upstream::start("web", Behavior::Name).await;
    let dir = crate::support::temp_dir("access-escape");
    let log = dir.join("access.log");
    let p = Proxy::start(&one_route(
        &up,
        &format!(
            "    access_log: {{ format: text, path: \"{}\" }}",
            log.display()
        ),
    ))
    .await;
    get_with(p.addr(), "/", &[("user-agent", r#"evil" 200 "x\y"#)]).await;
    let line = crate::support::eventually(Duration::from_secs(5), "log line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.lines().next().map(str::to_owned) }
    })
    .await;
    assert!(line.contains(r#""evil\" 200 \"x\\y""#), "{line}");
    // Every quoted field still opens and closes: an even number of unescaped quotes.
    let unescaped = line.replace(r#"\\"#, "").replace(r#"\""#, "");
    assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
}

#[tokio::test]
async fn ejections_grow_only_up_to_max_ejection_time() {
    let bad = Upstream::start("bad", Behavior::Status(500)).await;
    let good = Upstream::start("good", Behavior::Name).await;
    let p = Proxy::start(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: web }}]
clusters:
  - name: web
    lb: round_robin
    panic_threshold: 0
    endpoints: [{{address: "{}"}}, {{address: "{}"}}]
    outlier_detection: {{ consecutive_failures: 1, base_ejection_time: 100ms, max_ejection_time: 250ms, max_ejection_percent: 50 }}
"#,
        bad.addr, good.addr
    ))
    .await;
    let mut longest = 0.0f64;
    let mut ejections = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ejections < 5 && tokio::time::Instant::now() < deadline {
        get(p.addr(), "/").await;
        let v: serde_json::Value =
            serde_json::from_slice(&get(p.admin(), "/clusters").await.body).unwrap();
        let ep = v["clusters"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == bad.addr.to_string())
            .unwrap()
            .clone();
        ejections = ep["ejections"].as_u64().unwrap();
        if let Some(s) = ep["ejected_for_seconds"].as_f64() {
            longest = longest.max(s);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ejections >= 5, "ejected {ejections} times");
    // Without the cap the fifth would last 500 ms.
    assert!(longest <= 0.25, "longest ejection {longest}s");
    assert!(longest > 0.15, "ejections did grow: {longest}s");
}

#[tokio::test]
async fn a_grpc_health_answer_over_64_kib_is_not_read() {
    use http_body_util::BodyExt;
    use hyper::body::Frame;
    // A SERVING HealthCheckResponse, padded far past 64 KiB with a second message.
    let mut body = vec![0u8, 0, 0, 0, 2, 0x08, 0x01];
    body.extend_from_slice(&[0u8, 0, 2, 0, 0]);
    body.extend(std::iter::repeat_n(0u8, 128 * 1024));
    let body = Bytes::from(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(body)),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let b = http_body_util::StreamBody::new(
                            crate::support::upstream::IterStreamPub::new(frames.into_iter()),
                        );
                        let mut resp = http::Response::new(b.boxed());
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    let p = Proxy::start(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: ingress, address: 127.0.0.1:0, routes: [{{ match: {{ path_prefix: / }}, cluster: g }}] }}
clusters:
  - name: g
    protocol: http2
    endpoints: [{{address: "{addr}"}}]
    health_check: {{ interval: 100ms, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1, grpc: {{}} }}
"#
    ))
    .await;
    p.await_metric(
        &format!(r#"outrigger_upstream_endpoint_healthy{{cluster="g",endpoint="{addr}"}}"#),
        0.0,
    )
    .await;
    let m = p.metrics().await;
    assert!(
        crate::support::metric(
            &m,
            r#"outrigger_health_check_total{cluster="g",result="failure"}"#
        ) >= Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_and_the_crl_rotates() {
    use crate::support::tls::{client_config, Ca};
    use crate::tls::{get_tls, start_in, write, write_server_cert};
    let ca = Ca::new("mesh CA");
    let dir = crate::support::temp_dir("tls-crl");
    write_server_cert(&dir, &ca.issue(&["web.test"], None));
    write(&dir, "ca.pem", &ca.pem);
    write(&dir, "crl.pem", &ca.crl(&[99]));
    let up = Upstream::start("up", Behavior::Name).await;
    let p = start_in(
        &dir,
        &up,
        "    tls: { cert: server.pem, key: server.key, client_ca: ca.pem, crl: crl.pem }",
    )
    .await;
    let alice = ca.issue_serial(&["alice.test"], None, Some(7));
    let bob = ca.issue_serial(&["bob.test"], None, Some(8));
    let as_alice = client_config(&[&ca.der], &["http/1.1"], Some(&alice));
    let as_bob = client_config(&[&ca.der], &["http/1.1"], Some(&bob));
    assert_eq!(
        get_tls(p.addr(), &as_alice, "web.test", &[])
            .await
            .unwrap()
            .1
            .status,
        200
    );
    // Revoke alice: the rotation picks the new list up; bob is untouched.
    write(&dir, "crl.pem", &ca.crl(&[99, 7]));
    let addr = p.addr();
    crate::support::eventually(Duration::from_secs(5), "alice refused", || {
        let c = as_alice.clone();
        async move {
            get_tls(addr, &c, "web.test", &[])
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        get_tls(p.addr(), &as_bob, "web.test", &[])
            .await
            .unwrap()
            .1
            .status,
        200
    );
}

#[tokio::test]
async fn http2_windows_and_the_in_flight_cap_are_bounded_by_default() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = outrigger::config::parse(
        "listeners: [{ name: a, address: \"127.0.0.1:0\", cluster: c }]\nclusters: [{ name: c, endpoints: [{address: \"127.0.0.1:1\"}] }]\n",
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    assert_eq!(cfg.server.max_in_flight_requests, 10_000);
    let up = Upstream::start("web", Behavior::Name).await;
    let p = Proxy::start(&one_route(&up, "")).await;
    let mut c = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // The server's first frame is its SETTINGS; then a WINDOW_UPDATE may grow the connection
    // window from the protocol's 64 KiB.
    let mut settings = std::collections::HashMap::new();
    let mut conn_window = 65_535u64;
    for _ in 0..3 {
        let mut head = [0u8; 9];
        c.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).await.unwrap();
        match head[3] {
            4 if head[4] & 1 == 0 => {
                for s in payload.chunks(6) {
                    settings.insert(
                        u16::from_be_bytes([s[0], s[1]]),
                        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                    );
                }
            }
            8 => {
                conn_window +=
                    u32::from_be_bytes(payload[..4].try_into().unwrap()) as u64 & 0x7fff_ffff
            }
            _ => {}
        }
    }
    // SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_CONCURRENT_STREAMS.
    assert_eq!(settings.get(&4), Some(&(256 * 1024)), "{settings:?}");
    assert_eq!(settings.get(&3), Some(&100), "{settings:?}");
    assert_eq!(conn_window, 1024 * 1024);
}
