//! TLS termination (ALPN, SNI, mTLS, rotation, protocol versions) and origination.

use crate::support::tls::{self, client_config, Ca};
use crate::support::{temp_dir, tool, upstream::Behavior, Proxy, Upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpStream;

pub(crate) fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Writes `cert` as server.pem and server.key into `dir`.
pub(crate) fn write_server_cert(dir: &Path, cert: &tls::Cert) {
    write(dir, "server.pem", &cert.pem);
    write(dir, "server.key", &cert.key_pem);
}

/// Starts a proxy from `config(up, tls_block, "")` written into `dir`.
pub(crate) async fn start_in(dir: &Path, up: &Upstream, tls_block: &str) -> Proxy {
    write(dir, "outrigger.yaml", &config(up, tls_block, ""));
    Proxy::start_file(&dir.join("outrigger.yaml")).await
}

/// A listener config with `tls_block` (paths relative to the config's folder) in front of `up`.
fn config(up: &Upstream, tls_block: &str, cluster_extra: &str) -> String {
    format!(
        r#"
server: {{ watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
{tls_block}
    routes: [{{ match: {{ path_prefix: / }}, cluster: c }}]
clusters:
  - name: c
    endpoints: [{{address: "{}"}}]
{cluster_extra}
"#,
        up.addr
    )
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    version: http::Version,
    headers: http::HeaderMap,
    body: String,
}

/// One GET over TLS: (the server certificate presented, the reply).
pub(crate) async fn get_tls(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    name: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(Vec<u8>, Reply)> {
    let tcp = TcpStream::connect(addr).await?;
    let stream = connector.connect(tls::name(name), tcp).await?;
    let (_, conn) = stream.get_ref();
    let server_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let h2 = conn.alpn_protocol() == Some(b"h2");
    let mut req = http::Request::get(format!("https://{name}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !h2 {
        req = req.header("host", name);
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let err = |e: hyper::Error| std::io::Error::other(e.to_string());
    let resp = if h2 {
        let (mut s, c) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(err)?;
        tokio::spawn(c);
        s.send_request(req).await.map_err(err)?
    } else {
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(err)?;
        tokio::spawn(c);
        s.send_request(req).await.map_err(err)?
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(err)?.to_bytes();
    Ok((
        server_cert,
        Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into(),
        },
    ))
}

#[tokio::test]
async fn http1_and_http2_over_tls_on_one_port_by_alpn_and_sni_picks_certificates() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("tls-sni");
    let default = ca.issue(&["default.test"], None);
    let a = ca.issue(&["a.test"], None);
    let wild = ca.issue(&["*.wild.test"], None);
    for (n, c) in [("default", &default), ("a", &a), ("wild", &wild)] {
        write(&dir, &format!("{n}.pem"), &c.pem);
        write(&dir, &format!("{n}.key"), &c.key_pem);
    }
    let up = Upstream::start("up", Behavior::Name).await;
    let block = "    tls:\n      cert: default.pem\n      key: default.key\n      sni:\n        - { server_names: [a.test], cert: a.pem, key: a.key }\n        - { server_names: [\"*.wild.test\"], cert: wild.pem, key: wild.key }";
    let proxy = start_in(&dir, &up, block).await;
    let addr = proxy.addr();
    for alpn in [["h2"], ["http/1.1"]] {
        let c = client_config(&[&ca.der], &alpn, None);
        let (_, r) = get_tls(addr, &c, "a.test", &[]).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "up"));
        let want = if alpn[0] == "h2" {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(r.version, want, "ALPN {alpn:?}");
        assert_eq!(r.headers.get("x-echo-x-forwarded-proto").unwrap(), "https");
    }
    // Each name gets its certificate: the client verifies it against that name.
    let c = client_config(&[&ca.der], &["http/1.1"], None);
    for (name, cert) in [
        ("a.test", &a),
        ("x.wild.test", &wild),
        ("default.test", &default),
    ] {
        let (presented, r) = get_tls(addr, &c, name, &[]).await.unwrap();
        assert_eq!(presented, cert.der.to_vec(), "{name}");
        assert_eq!(r.status, 200);
    }
    // An unknown name gets the default certificate, which does not match it.
    assert!(get_tls(addr, &c, "other.test", &[]).await.is_err());
    let m = proxy.metrics().await;
    assert!(
        crate::support::metric(
            &m,
            r#"outrigger_tls_handshakes_total{listener="ingress",result="success"}"#
        )
        .unwrap()
            >= 5.0
    );
    assert!(m.contains(r#"outrigger_tls_certificate_expiry_timestamp_seconds{listener="ingress",server_name="a.test"}"#), "{m}");
}

#[tokio::test]
async fn mtls_verifies_clients_and_passes_their_identity_upstream() {
    let ca = Ca::new("mesh CA");
    let other_ca = Ca::new("rogue CA");
    let dir = temp_dir("tls-mtls");
    let server = ca.issue(&["web.test"], None);
    write_server_cert(&dir, &server);
    write(&dir, "ca.pem", &ca.pem);
    let up = Upstream::start("up", Behavior::Name).await;
    let proxy = start_in(
        &dir,
        &up,
        "    tls: { cert: server.pem, key: server.key, client_ca: ca.pem }",
    )
    .await;
    let addr = proxy.addr();
    let spiffe = "spiffe://cluster.local/ns/default/sa/frontend";
    let good = ca.issue(&["frontend.test"], Some(spiffe));
    let c = client_config(&[&ca.der], &["http/1.1"], Some(&good));
    let forged = [(
        "x-forwarded-client-cert",
        "URI=spiffe://cluster.local/ns/default/sa/admin",
    )];
    let (_, r) = get_tls(addr, &c, "web.test", &forged).await.unwrap();
    assert_eq!(r.status, 200);
    let xfcc = r
        .headers
        .get("x-echo-x-forwarded-client-cert")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(xfcc.contains(&format!("URI={spiffe}")), "{xfcc}");
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(
        !xfcc.contains("sa/admin"),
        "the forged header is replaced: {xfcc}"
    );
    assert_eq!(
        r.headers
            .get_all("x-echo-x-forwarded-client-cert")
            .iter()
            .count(),
        1
    );
    // No client certificate, or one from another CA: refused.
    let none = client_config(&[&ca.der], &["http/1.1"], None);
    assert!(get_tls(addr, &none, "web.test", &[]).await.is_err());
    let rogue = other_ca.issue(&["frontend.test"], Some(spiffe));
    let bad = client_config(&[&ca.der], &["http/1.1"], Some(&rogue));
    assert!(get_tls(addr, &bad, "web.test", &[]).await.is_err());
    assert_eq!(up.requests(), 1);
    // Without TLS on a listener, an incoming x-forwarded-client-cert is dropped too.
    let plain = Proxy::start(&config(&up, "", "")).await;
    let mut h = crate::support::H1::connect(plain.addr()).await;
    let req = crate::support::request("GET", plain.addr(), "/")
        .header(forged[0].0, forged[0].1)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.header("x-echo-x-forwarded-client-cert"), None);
}

/// A TLS upstream offering `alpn`, speaking HTTP/1.1 or HTTP/2 as negotiated, answering every
/// request with `reply(version)`.
pub(crate) async fn tls_upstream(
    cert: &tls::Cert,
    alpn: &[&str],
    reply: fn(http::Version) -> String,
) -> SocketAddr {
    let acceptor = tls::acceptor_with_alpn(cert, alpn);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(t) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(reply(req.version()))),
                        ))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(t), svc)
                .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_origination_verifies_the_upstream_and_fails_502_on_a_name_mismatch() {
    let ca = Ca::new("upstream CA");
    let dir = temp_dir("tls-origin");
    write(&dir, "ca.pem", &ca.pem);
    let up_addr = tls_upstream(&ca.issue(&["api.internal"], None), &[], |_| "tls-up".into()).await;
    let text = |sni: &str| {
        format!(
            r#"
server: {{ watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: api }}]
clusters:
  - name: api
    endpoints: [{{address: "{up_addr}"}}]
    tls: {{ sni: {sni}, ca: ca.pem }}
"#
        )
    };
    write(&dir, "good.yaml", &text("api.internal"));
    let proxy = Proxy::start_file(&dir.join("good.yaml")).await;
    let r = crate::support::get(proxy.addr(), "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls-up"));
    write(&dir, "bad.yaml", &text("wrong.internal"));
    let proxy = Proxy::start_file(&dir.join("bad.yaml")).await;
    let r = crate::support::get(proxy.addr(), "/").await;
    assert_eq!(
        (r.status, r.header("x-outrigger-error")),
        (502, Some("upstream_tls_error"))
    );
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_while_old_ones_keep_working() {
    let ca = Ca::new("rotating CA");
    let dir = temp_dir("tls-rotate");
    let first = ca.issue(&["web.test"], None);
    write_server_cert(&dir, &first);
    let up = Upstream::start("up", Behavior::Name).await;
    let proxy = start_in(&dir, &up, "    tls: { cert: server.pem, key: server.key }").await;
    let addr = proxy.addr();
    // An established connection, kept open across the rotation.
    let c = client_config(&[&ca.der], &["http/1.1"], None);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let old = c.connect(tls::name("web.test"), tcp).await.unwrap();
    assert_eq!(old.get_ref().1.peer_certificates().unwrap()[0], first.der);
    let (mut old_sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(old))
            .await
            .unwrap();
    tokio::spawn(conn);
    // cert-manager writes the new pair; a broken write first must be ignored.
    let second = ca.issue(&["web.test"], None);
    write(
        &dir,
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let admin = proxy.admin();
    crate::support::eventually(
        Duration::from_secs(5),
        "broken file counted",
        || async move {
            let m = crate::support::get(admin, "/metrics").await.text();
            (crate::support::metric(
                &m,
                r#"outrigger_tls_certificate_reload_total{listener="ingress",result="failure"}"#,
            )? >= 1.0)
                .then_some(())
        },
    )
    .await;
    let (presented, _) = get_tls(addr, &c, "web.test", &[]).await.unwrap();
    assert_eq!(
        presented,
        first.der.to_vec(),
        "old certificate still served"
    );
    write(&dir, "server.key", &second.key_pem);
    write(&dir, "server.pem", &second.pem);
    let c2 = c.clone();
    crate::support::eventually(Duration::from_secs(5), "new certificate served", || {
        let c = c2.clone();
        let want = second.der.to_vec();
        async move { (get_tls(addr, &c, "web.test", &[]).await.ok()?.0 == want).then_some(()) }
    })
    .await;
    let req = http::Request::get("/")
        .header("host", "web.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = old_sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "the old connection keeps working");
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let Some(openssl) = tool("openssl") else {
        return;
    };
    let ca = Ca::new("versions CA");
    let dir = temp_dir("tls-versions");
    let server = ca.issue(&["web.test"], None);
    write_server_cert(&dir, &server);
    let up = Upstream::start("up", Behavior::Name).await;
    let proxy = start_in(&dir, &up, "    tls: { cert: server.pem, key: server.key }").await;
    let addr = proxy.addr().to_string();
    for (flag, ok) in [
        ("-tls1", false),
        ("-tls1_1", false),
        ("-tls1_2", true),
        ("-tls1_3", true),
    ] {
        let out = tokio::process::Command::new(&openssl)
            .args([
                "s_client",
                "-connect",
                &addr,
                "-servername",
                "web.test",
                flag,
            ])
            .stdin(std::process::Stdio::null())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), out)
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let handshook = text.contains("BEGIN CERTIFICATE")
            || text.contains("Protocol  :")
            || text.contains("New, TLSv1");
        assert_eq!(
            handshook && out.status.success(),
            ok,
            "openssl s_client {flag}:\n{text}"
        );
    }
}

#[tokio::test]
async fn tcp_listener_terminates_tls_and_forwards_plain_bytes() {
    let ca = Ca::new("l4 CA");
    let dir = temp_dir("tls-tcp");
    let server = ca.issue(&["db.test"], None);
    write_server_cert(&dir, &server);
    // A plain upstream that reads one line and answers it in upper case.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 5];
            if s.read_exact(&mut b).await.is_ok() {
                let _ = s.write_all(&b.to_ascii_uppercase()).await;
            }
        }
    });
    let yaml = format!(
        "server: {{ watch_config: false }}\nadmin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: ingress, address: \"127.0.0.1:0\", protocol: tcp, cluster: db, tls: {{ cert: server.pem, key: server.key }} }}\nclusters:\n  - {{ name: db, endpoints: [{{address: \"{up}\"}}] }}\n"
    );
    write(&dir, "outrigger.yaml", &yaml);
    let proxy = Proxy::start_file(&dir.join("outrigger.yaml")).await;
    let c = client_config(&[&ca.der], &[], None);
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut t = c.connect(tls::name("db.test"), tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    t.write_all(b"hello").await.unwrap();
    let mut b = [0u8; 5];
    t.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"HELLO");
}

#[tokio::test]
async fn protocol_auto_speaks_http2_to_a_tls_upstream_that_offers_it_by_alpn() {
    let ca = Ca::new("alpn CA");
    let dir = temp_dir("tls-alpn");
    write(&dir, "ca.pem", &ca.pem);
    // An upstream offering h2 and http/1.1, answering with the version it was spoken to in.
    let up_addr = tls_upstream(
        &ca.issue(&["api.internal"], None),
        &["h2", "http/1.1"],
        |v| format!("{v:?}"),
    )
    .await;
    for (protocol, want) in [
        ("auto", "HTTP/2.0"),
        ("http2", "HTTP/2.0"),
        ("http1", "HTTP/1.1"),
    ] {
        let text = format!(
            r#"
server: {{ watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: api }}]
clusters:
  - name: api
    protocol: {protocol}
    endpoints: [{{address: "{up_addr}"}}]
    tls: {{ sni: api.internal, ca: ca.pem }}
"#
        );
        write(&dir, &format!("{protocol}.yaml"), &text);
        let proxy = Proxy::start_file(&dir.join(format!("{protocol}.yaml"))).await;
        let r = crate::support::get(proxy.addr(), "/").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, want),
            "protocol {protocol}"
        );
    }
}

#[tokio::test]
async fn an_idle_tls_keepalive_connection_is_parked_and_served_again() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("tls-park");
    let cert = ca.issue(&["a.test"], None);
    write(&dir, "server.pem", &cert.pem);
    write(&dir, "server.key", &cert.key_pem);
    let up = Upstream::start("up", Behavior::Name).await;
    let block =
        "    tls: { cert: server.pem, key: server.key }\n    limits: { park_idle_after: 100ms }";
    let proxy = start_in(&dir, &up, block).await;
    let c = client_config(&[&ca.der], &["http/1.1"], None);
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let stream = c.connect(tls::name("a.test"), tcp).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for round in 0..3 {
        let req = http::Request::get("/")
            .header("host", "a.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"up");
        proxy
            .await_metric(
                r#"outrigger_downstream_connections_parked{listener="ingress"}"#,
                1.0,
            )
            .await;
    }
    let m = proxy.metrics().await;
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_tls_handshakes_total{listener="ingress",result="success"}"#
        ),
        Some(1.0),
        "one TLS session throughout"
    );
}
