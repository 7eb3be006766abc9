//! `outrigger demo`: tiny HTTP upstreams on 127.0.0.1:18081-18083 that answer with their own
//! name, so the bundled `config/demo.yaml` shows balancing with nothing else installed.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The demo's config, built into the binary so `outrigger demo` works from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");

/// The commented example of every key, printed by `outrigger --print-default-config`.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/outrigger.yaml");

/// Binds one demo upstream per address and serves forever.
pub async fn spawn_upstreams(addrs: &[SocketAddr]) -> std::io::Result<()> {
    for (i, addr) in addrs.iter().enumerate() {
        let socket = tokio::net::TcpListener::bind(addr).await?;
        let name = format!("upstream-{} ({addr})", i + 1);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = format!("hello from {name}: {} {}\n", req.method(), req.uri());
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await; // a demo client hanging up mid-request is not worth reporting
                });
            }
        });
    }
    Ok(())
}
