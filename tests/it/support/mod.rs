//! Test harness: real upstream servers, an in-process outrigger, raw and hyper clients, and
//! `eventually` for polling with a deadline instead of sleeping.

#![allow(dead_code)]

pub mod dns;
pub mod tls;
pub mod upstream;
pub mod xds;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use upstream::Upstream;

/// A running in-process proxy.
pub struct Proxy {
    pub server: outrigger::Server,
}

impl Proxy {
    /// Starts outrigger on `yaml`. Listeners and admin should use port 0.
    pub async fn start(yaml: &str) -> Proxy {
        let config = outrigger::config::parse(yaml, "test.yaml", &|_| None)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{yaml}"));
        let loaded = outrigger::config::LoadedConfig {
            config,
            source: "test.yaml".into(),
            base_dir: ".".into(),
        };
        let server = outrigger::Server::start(loaded)
            .await
            .expect("proxy starts");
        Proxy { server }
    }

    /// Starts outrigger on a config file (so it can be reloaded).
    pub async fn start_file(path: &std::path::Path) -> Proxy {
        let loaded = outrigger::config::load(path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let server = outrigger::Server::start(loaded)
            .await
            .expect("proxy starts");
        Proxy { server }
    }

    /// `POST /reload`: (status, body).
    pub async fn reload(&self) -> (u16, String) {
        let mut c = H1::connect(self.admin()).await;
        let r = c
            .send(
                request("POST", self.admin(), "/reload")
                    .header("x-outrigger-admin", "1")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        (r.status, r.text())
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener("ingress")
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.server.listener_addr(name).expect("listener exists")
    }

    pub fn admin(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    pub async fn metrics(&self) -> String {
        let r = get(self.admin(), "/metrics").await;
        assert_eq!(r.status, 200);
        r.text()
    }

    /// Polls the proxy's metrics until `series` reads `want` (see [`await_metric`]).
    pub async fn await_metric(&self, series: &str, want: f64) {
        await_metric(self.admin(), series, want).await
    }
}

/// Polls `GET /metrics` on `admin` until `series` reads `want`, or panics after 5 s.
pub async fn await_metric(admin: SocketAddr, series: &str, want: f64) {
    eventually(Duration::from_secs(5), series, || async move {
        let m = get(admin, "/metrics").await.text();
        (metric(&m, series) == Some(want)).then_some(())
    })
    .await
}

/// The common test config: admin and one listener `ingress` on ephemeral ports, every path
/// routed to cluster `cluster` over `endpoints`. `route_extra` and `cluster_extra` are YAML
/// lines added to the route (8-space indent) and the cluster (4-space indent).
pub fn single_route(
    cluster: &str,
    endpoints: &[SocketAddr],
    route_extra: &str,
    cluster_extra: &str,
) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: ingress\n    address: 127.0.0.1:0\n    routes:\n      - match: {{ path_prefix: / }}\n        cluster: {cluster}\n{route_extra}\nclusters:\n  - name: {cluster}\n    endpoints: [{}]\n{cluster_extra}\n",
        eps.join(", ")
    )
}

/// A fresh temporary folder for one test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "outrigger-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces a file atomically (write beside it, then rename), as config tooling does.
pub fn write_atomic(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A response read completely.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct H1 {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        H1::from_stream(stream).await
    }

    /// A client on a connected stream (e.g. one bound to a chosen source address).
    pub async fn from_stream(stream: TcpStream) -> H1 {
        let addr = stream.peer_addr().expect("peer address");
        stream.set_nodelay(true).ok();
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H1 { sender, addr }
    }

    /// A client over an established connection of any kind (TLS, say) to `addr`.
    pub fn from_sender(sender: http1::SendRequest<Full<Bytes>>, addr: SocketAddr) -> H1 {
        H1 { sender, addr }
    }

    pub async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = request("GET", self.addr, path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A request builder with the Host header set.
pub fn request(method: &str, addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
}

/// One GET on a fresh connection, or `None` if nothing answers (yet).
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = request("GET", addr, path)
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// One GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    H1::connect(addr).await.get(path).await
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw TCP server on an ephemeral port: `serve` runs in its own task for each accepted
/// connection. Returns the address and how many connections were accepted.
pub async fn raw_server<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted)
}

/// Sends raw bytes and reads until the peer closes or `timeout` passes. Returns what was
/// read and whether the peer closed the connection.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(timeout, s.read(&mut buf)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Finds a metric sample's value in a Prometheus text exposition; labels must match exactly
/// in the order Prometheus writes them (alphabetical).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The path of a tool, if installed; under CI=true a missing tool fails the test instead of
/// skipping it, since `.ci/run` installs every tool the tests use.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} is not installed; .ci/run should have installed it");
        }
        eprintln!("skipping: {name} is not installed (bash .ci/run installs it)");
    }
    found
}
