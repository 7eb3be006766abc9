//! The admin server (default 127.0.0.1:9901): `GET /metrics /ready /healthz /config /clusters`,
//! `POST /shutdown`. It stays up through draining so probes and scrapes keep working.

use crate::runtime::Runtime;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves admin connections until the process exits.
pub async fn run(socket: TcpListener, runtime: Arc<Runtime>) {
    loop {
        let (stream, _) = match socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let runtime = runtime.clone();
                async move { Ok::<_, Infallible>(handle(req, &runtime)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_type(mut r: Response<Full<Bytes>>, ct: &'static str) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

pub fn handle(req: Request<Incoming>, runtime: &Runtime) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match path {
        "/metrics" if get => with_type(
            text(StatusCode::OK, runtime.metrics.encode()),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/ready" if get => {
            if runtime.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if runtime.shutdown.is_requested() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        "/healthz" if get => text(StatusCode::OK, "ok\n"),
        "/config" if get => {
            let snap = runtime.snapshot();
            let mut body = format!(
                "# source: {}\n# generation: {}\n",
                snap.loaded.source.display(),
                snap.generation
            );
            body.push_str(&crate::config::redacted_yaml(&snap.loaded.config));
            with_type(text(StatusCode::OK, body), "application/yaml")
        }
        "/clusters" if get => with_type(
            text(StatusCode::OK, clusters_json(runtime)),
            "application/json",
        ),
        "/shutdown" if post => {
            runtime.shutdown.request();
            text(StatusCode::OK, "shutting down\n")
        }
        "/metrics" | "/ready" | "/healthz" | "/config" | "/clusters" | "/shutdown" => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /ready /healthz /config /clusters\n",
        ),
    }
}

#[derive(Serialize)]
struct ClusterView<'a> {
    name: &'a str,
    lb: crate::config::LbPolicy,
    endpoints: Vec<EndpointView<'a>>,
}

#[derive(Serialize)]
struct EndpointView<'a> {
    address: &'a str,
    resolved: String,
    weight: u32,
    healthy: bool,
    in_flight: usize,
    idle_connections: usize,
}

fn clusters_json(runtime: &Runtime) -> String {
    let snap = runtime.snapshot();
    let sets: Vec<_> = snap.clusters.iter().map(|c| (c, c.endpoints())).collect();
    let views: Vec<ClusterView<'_>> = sets
        .iter()
        .map(|(c, set)| ClusterView {
            name: &c.name,
            lb: c.config.lb,
            endpoints: set
                .all
                .iter()
                .map(|e| EndpointView {
                    address: &e.label,
                    resolved: e.address.to_string(),
                    weight: e.weight,
                    healthy: e.is_healthy(),
                    in_flight: e.in_flight(),
                    idle_connections: e.pool.idle_len(),
                })
                .collect(),
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "clusters": views }))
        .unwrap_or_else(|_| "{}".into())
}
