//! Real upstream HTTP servers for tests, bound on 127.0.0.1:0. Each counts the requests and
//! connections it saw and answers according to its `Behavior`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream does with each request.
#[derive(Clone)]
pub enum Behavior {
    /// 200 with its name as the body, and the request's headers echoed as `x-echo-<name>`.
    Name,
    /// Answers with a body of `n` bytes of a fixed pattern.
    Bytes(usize),
    /// Reads the whole request body and answers with its length and a checksum.
    Digest,
    /// Waits this long before answering with its name.
    Delay(Duration),
    /// Answers with this status.
    Status(u16),
    /// Every `n`-th request (counting from the first) gets this status, the rest its name.
    FailEvery(usize, u16),
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    last_headers: Arc<Mutex<Option<http::HeaderMap>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The fixed pattern byte at offset `i` of a generated body.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

pub fn checksum(data: &[u8], offset: usize, acc: u64) -> u64 {
    data.iter().enumerate().fold(acc, |a, (i, b)| {
        a.wrapping_mul(31)
            .wrapping_add((*b as u64) ^ ((offset + i) as u64 & 0xff))
    })
}

impl Upstream {
    pub async fn start(name: &str, behavior: Behavior) -> Upstream {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, behavior).await
    }

    /// Starts on a given address (to bring a killed upstream back on its port).
    pub async fn start_on(addr: SocketAddr, name: &str, behavior: Behavior) -> Upstream {
        let socket = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let last_headers = Arc::new(Mutex::new(None));
        let (r, c, h, n) = (
            requests.clone(),
            connections.clone(),
            last_headers.clone(),
            name.to_string(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let stop_accept = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop_accept.cancelled() => return,
                    a = socket.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, h, n, behavior, stop_conn) = (
                    r.clone(),
                    h.clone(),
                    n.clone(),
                    behavior.clone(),
                    stop_accept.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let (r, h, n, behavior) =
                            (r.clone(), h.clone(), n.clone(), behavior.clone());
                        async move {
                            let seen = r.fetch_add(1, Ordering::SeqCst) + 1;
                            if let Behavior::FailEvery(every, code) = behavior {
                                if seen % every == 1 || every == 1 {
                                    return Ok::<_, Infallible>(status(code));
                                }
                                return Ok(http::Response::new(full(n.clone())));
                            }
                            *h.lock().unwrap() = Some(req.headers().clone());
                            Ok::<_, Infallible>(respond(&n, behavior, req).await)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    // Killing the upstream drops its open connections too, like a dead process.
                    tokio::select! {
                        _ = conn => {}
                        _ = stop_conn.cancelled() => {}
                    }
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            requests,
            connections,
            last_headers,
            stop,
        }
    }

    /// Stops listening and drops every open connection, like a crashed process.
    pub fn kill(&self) {
        self.stop.cancel();
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn last_headers(&self) -> Option<http::HeaderMap> {
        self.last_headers.lock().unwrap().clone()
    }
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

async fn respond(
    name: &str,
    behavior: Behavior,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    match behavior {
        Behavior::Name => {
            let mut resp = http::Response::new(full(name.to_string()));
            for (k, v) in req.headers() {
                if let Ok(n) = http::HeaderName::from_bytes(format!("x-echo-{k}").as_bytes()) {
                    resp.headers_mut().append(n, v.clone());
                }
            }
            if let Ok(v) = http::HeaderValue::from_str(&req.uri().to_string()) {
                resp.headers_mut().insert("x-echo-uri", v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&format!("{:?}", req.version())) {
                resp.headers_mut().insert("x-echo-version", v);
            }
            resp
        }
        Behavior::Bytes(n) => {
            // Streamed in 64 KiB frames so nothing needs the whole body in memory.
            let chunks = (0..n).step_by(65536).map(move |start| {
                let end = (start + 65536).min(n);
                let data: Vec<u8> = (start..end).map(pattern).collect();
                Ok::<_, Infallible>(Frame::data(Bytes::from(data)))
            });
            let body = StreamBody::new(futures_lite_iter(chunks));
            let mut resp = http::Response::new(BodyExt::boxed(body));
            resp.headers_mut().insert("content-length", n.into());
            resp
        }
        Behavior::Digest => {
            let mut body = req.into_body();
            let mut len = 0usize;
            let mut sum = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return status(400);
                };
                if let Ok(d) = frame.into_data() {
                    sum = checksum(&d, len, sum);
                    len += d.len();
                }
            }
            http::Response::new(full(format!("{len} {sum}")))
        }
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            http::Response::new(full(name.to_string()))
        }
        Behavior::Status(code) => status(code),
        Behavior::FailEvery(..) => unreachable!("answered before the body is read"),
    }
}

fn status(code: u16) -> http::Response<Body> {
    let mut r = http::Response::new(full("status"));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
    r
}

/// An iterator as a `Stream` (avoids a futures dependency for one adapter).
fn futures_lite_iter<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

pub struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// `IterStream` for tests that build streaming request bodies.
pub struct IterStreamPub<I>(IterStream<I>);

impl<I: Iterator + Unpin> IterStreamPub<I> {
    pub fn new(iter: I) -> Self {
        IterStreamPub(IterStream(iter))
    }
}

impl<I: Iterator + Unpin> futures_core::Stream for IterStreamPub<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::pin::Pin::new(&mut self.0).poll_next(cx)
    }
}
