//! The admin server (default 127.0.0.1:9901): `GET /metrics /ready /healthz /config /clusters`,
//! `POST /shutdown`. It stays up through draining so probes and scrapes keep working.

use crate::reload::Reloader;
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
pub async fn run(socket: TcpListener, runtime: Arc<Runtime>, reloader: Arc<Reloader>) {
    loop {
        let (stream, _) = match socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (runtime, reloader) = (runtime.clone(), reloader.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (runtime, reloader) = (runtime.clone(), reloader.clone());
                async move { Ok::<_, Infallible>(handle(req, &runtime, &reloader).await) }
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

pub async fn handle(
    req: Request<Incoming>,
    runtime: &Runtime,
    reloader: &Reloader,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match path {
        "/metrics" if get => with_type(
            text(StatusCode::OK, {
                for c in &runtime.snapshot().clusters {
                    c.refresh_gauges();
                }
                runtime.metrics.encode()
            }),
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
            match runtime.last_reload_error() {
                None => body.push_str("# last reload: ok\n"),
                Some(e) => {
                    body.push_str("# last reload: FAILED, this configuration stays in force:\n");
                    for line in e.lines() {
                        body.push_str(&format!("#   {line}\n"));
                    }
                }
            }
            body.push_str(&crate::config::redacted_yaml(&snap.loaded.config));
            with_type(text(StatusCode::OK, body), "application/yaml")
        }
        "/clusters" if get => with_type(
            text(StatusCode::OK, clusters_json(runtime)),
            "application/json",
        ),
        "/listeners" if get => {
            let list: Vec<_> = reloader
                .listener_addrs()
                .into_iter()
                .map(
                    |(name, addr)| serde_json::json!({ "name": name, "address": addr.to_string() }),
                )
                .collect();
            with_type(
                text(
                    StatusCode::OK,
                    serde_json::json!({ "listeners": list }).to_string(),
                ),
                "application/json",
            )
        }
        "/reload" if post => match reloader.reload().await {
            Ok(summary) => with_type(
                text(
                    StatusCode::OK,
                    serde_json::to_string_pretty(&summary).unwrap_or_default(),
                ),
                "application/json",
            ),
            Err(e) => text(
                StatusCode::BAD_REQUEST,
                format!("reload failed; the running configuration stays:\n{e}\n"),
            ),
        },
        "/shutdown" if post => {
            runtime.shutdown.request();
            text(StatusCode::OK, "shutting down\n")
        }
        "/metrics" | "/ready" | "/healthz" | "/config" | "/clusters" | "/listeners" | "/reload"
        | "/shutdown" => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /ready /healthz /config /clusters /listeners\n",
        ),
    }
}

#[derive(Serialize)]
struct ClusterView<'a> {
    name: &'a str,
    lb: crate::config::LbPolicy,
    /// Too few endpoints are healthy: balancing over all of them.
    panic: bool,
    endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
struct EndpointView {
    address: String,
    resolved: String,
    source: crate::cluster::Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: std::collections::BTreeMap<String, String>,
    /// Passing active health checks (true without them).
    healthy: bool,
    /// Ejected by outlier detection: seconds until it returns.
    ejected_for_seconds: Option<f64>,
    ejections: u32,
    /// In the set picks choose from.
    routable: bool,
    weight: u32,
    /// Configured weight × slow-start ramp; 0 when out of rotation.
    effective_weight: f64,
    in_flight: usize,
    ewma_latency_seconds: Option<f64>,
    idle_connections: usize,
}

fn clusters_json(runtime: &Runtime) -> String {
    let snap = runtime.snapshot();
    let views: Vec<ClusterView<'_>> = snap
        .clusters
        .iter()
        .map(|c| {
            let set = c.endpoints();
            let now = c.now_ns();
            ClusterView {
                name: &c.name,
                lb: c.config.lb,
                panic: set.panic,
                endpoints: set
                    .all
                    .iter()
                    .map(|e| EndpointView {
                        address: e.label.clone(),
                        resolved: e.address.to_string(),
                        source: e.source,
                        zone: e.zone.clone(),
                        metadata: e.metadata.clone(),
                        healthy: e.is_healthy(),
                        ejected_for_seconds: e
                            .ejected_until()
                            .map(|t| t.saturating_sub(now) as f64 / 1e9),
                        ejections: e.ejections(),
                        routable: set.routable.iter().any(|r| std::sync::Arc::ptr_eq(r, e)),
                        weight: e.weight(),
                        effective_weight: e.effective_weight(),
                        in_flight: e.in_flight(),
                        ewma_latency_seconds: e.ewma_seconds(),
                        idle_connections: e.pool.idle_len(),
                    })
                    .collect(),
            }
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "clusters": views }))
        .unwrap_or_else(|_| "{}".into())
}
