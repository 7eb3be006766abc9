use crate::support::{upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;

fn config(a: &Upstream, b: &Upstream, c: &Upstream) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - match: {{ host: api.example.com, path_prefix: /v1/ }}
        cluster: a
        rewrite: {{ path_prefix: /internal/v1/ }}
        request_headers_add: {{ x-env: prod }}
      - match: {{ host: "*.example.com" }}
        cluster: b
      - match: {{ headers: {{ x-canary: "1" }} }}
        cluster: c
      - match: {{ method: DELETE }}
        cluster: c
      - match: {{ path: /exact }}
        cluster: b
      - match: {{ path_regex: "^/items/[0-9]+$" }}
        cluster: c
      - match: {{ path_prefix: /split }}
        weighted_clusters: [{{cluster: a, weight: 90}}, {{cluster: b, weight: 10}}]
      - match: {{ path_prefix: /app/ }}
        cluster: a
clusters:
  - {{ name: a, endpoints: [{{address: "{}"}}] }}
  - {{ name: b, endpoints: [{{address: "{}"}}] }}
  - {{ name: c, endpoints: [{{address: "{}"}}] }}
"#,
        a.addr, b.addr, c.addr
    )
}

async fn send(
    c: &mut H1,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> crate::support::Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    c.send(req).await
}

#[tokio::test]
async fn host_path_header_and_method_routes_choose_the_right_cluster() {
    let (a, b, c) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    );
    let proxy = Proxy::start(&config(&a, &b, &c)).await;
    let mut cl = H1::connect(proxy.addr()).await;
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "api.example.com", "/v1/users", &[], "a"),
        ("GET", "api.example.com:8080", "/v1/users", &[], "a"),
        ("GET", "api.example.com", "/v2/users", &[], "b"),
        ("GET", "www.example.com", "/", &[], "b"),
        ("GET", "other.test", "/x", &[("x-canary", "1")], "c"),
        ("DELETE", "other.test", "/x", &[], "c"),
        ("GET", "other.test", "/exact", &[], "b"),
        ("GET", "other.test", "/items/42", &[], "c"),
        ("GET", "other.test", "/app/page", &[], "a"),
    ];
    for (method, host, path, headers, want) in cases {
        let r = send(&mut cl, method, host, path, headers).await;
        assert_eq!(r.status, 200, "{method} {host}{path}");
        assert_eq!(r.text(), *want, "{method} {host}{path} {headers:?}");
    }
    // No route: 404 from the proxy, named.
    let r = send(&mut cl, "GET", "other.test", "/items/4x", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-outrigger-error"), Some("no_route"));
    // Rewrite and added headers reach the upstream; proxy headers are set.
    let r = send(
        &mut cl,
        "GET",
        "api.example.com",
        "/v1/users?q=1",
        &[("x-request-id", "keep-me")],
    )
    .await;
    assert_eq!(r.header("x-echo-uri"), Some("/internal/v1/users?q=1"));
    assert_eq!(r.header("x-echo-x-env"), Some("prod"));
    assert_eq!(r.header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("x-echo-x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-echo-x-request-id"), Some("keep-me"));
    assert_eq!(r.header("x-echo-host"), Some("api.example.com"));
    // A list from a proxy in front gets the client's address appended; the same connection's
    // next request without one gets the address alone again (the value is made once per
    // connection and shared).
    let r = send(
        &mut cl,
        "GET",
        "api.example.com",
        "/v1/users",
        &[("x-forwarded-for", "203.0.113.7")],
    )
    .await;
    assert_eq!(
        r.header("x-echo-x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    let r = send(&mut cl, "GET", "api.example.com", "/v1/users", &[]).await;
    assert_eq!(r.header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    let r = send(
        &mut cl,
        "GET",
        "other.test",
        "/app/",
        &[("connection", "keep-alive, x-drop"), ("x-drop", "1")],
    )
    .await;
    assert_eq!(
        r.header("x-echo-x-request-id").map(str::len),
        Some(36),
        "a request id is generated"
    );
    assert_eq!(
        r.header("x-echo-x-drop"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(r.header("x-echo-via"), None, "no via header by default");
    let r = send(
        &mut cl,
        "GET",
        "other.test",
        "/app/",
        &[("host", "api.example.com")],
    )
    .await;
    assert_eq!(r.status, 400, "two Host headers");
    assert_eq!(r.header("x-outrigger-error"), Some("bad_request"));
}

#[tokio::test]
async fn weighted_clusters_split_90_10_within_3_percent_over_5000() {
    let (a, b, c) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    );
    let proxy = Proxy::start(&config(&a, &b, &c)).await;
    let mut cl = H1::connect(proxy.addr()).await;
    for _ in 0..5000 {
        let r = send(&mut cl, "GET", "t", "/split", &[]).await;
        assert_eq!(r.status, 200);
    }
    let share_a = a.requests() as f64 / 5000.0;
    assert_eq!(a.requests() + b.requests(), 5000);
    assert!(
        (0.87..=0.93).contains(&share_a),
        "cluster a got {:.3} of requests",
        share_a
    );
}

#[tokio::test]
async fn http2_prior_knowledge_client_is_proxied_to_http1_upstream() {
    let (a, b, c) = (
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    );
    let proxy = Proxy::start(&config(&a, &b, &c)).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let req = http::Request::builder()
            .uri(format!("http://api.example.com/v1/{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let fut = sender.send_request(req);
        tasks.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            let r = fut.await.unwrap();
            assert_eq!(r.version(), http::Version::HTTP_2);
            let status = r.status();
            let uri = r.headers().get("x-echo-uri").cloned();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, uri, body)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, uri, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"a");
        assert_eq!(uri.unwrap(), format!("/internal/v1/{i}").as_str());
    }
    // :authority became the upstream Host.
    assert_eq!(
        a.last_headers().unwrap().get("host").unwrap(),
        "api.example.com"
    );
}
