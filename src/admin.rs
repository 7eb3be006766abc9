//! The admin server (default 127.0.0.1:9901): `GET /metrics /ready /healthz /config /clusters
//! /listeners /logging`, `POST /reload /shutdown /logging`. It stays up through draining so probes and scrapes
//! keep working.
//!
//! Its security model, as linkerd's: reads answer whoever reaches the bound address (so it can
//! sit on the pod IP for probes and scraping); what changes state answers only peers in
//! `admin.allow` (loopback by default), and only to a POST a web page cannot forge (a JSON body
//! or an `X-Outrigger-Admin` header, neither of which a cross-site form can send). Every request
//! must name the admin server itself in `Host`, so a DNS-rebinding page cannot read it either.

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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves admin connections until the process exits.
pub async fn run(socket: TcpListener, runtime: Arc<Runtime>, reloader: Arc<Reloader>) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (runtime, reloader) = (runtime.clone(), reloader.clone());
        let caller = Caller {
            peer,
            local: stream.local_addr().ok(),
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (runtime, reloader) = (runtime.clone(), reloader.clone());
                async move { Ok::<_, Infallible>(handle(req, caller, &runtime, &reloader).await) }
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

/// Who an admin request came from, and on which of the admin server's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The client's address.
    pub peer: SocketAddr,
    /// The admin address it connected to (`None` when unknown).
    pub local: Option<SocketAddr>,
}

/// Why an admin request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denied {
    Peer,
    Host,
    Header,
}

impl Denied {
    fn as_str(self) -> &'static str {
        match self {
            Denied::Peer => "peer",
            Denied::Host => "host",
            Denied::Header => "header",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Denied::Peer => "forbidden: this endpoint answers only peers in admin.allow (loopback by default)\n",
            Denied::Host => "forbidden: Host must name the admin server (localhost, its address, or admin.allowed_hosts)\n",
            Denied::Header => "forbidden: send a JSON body (Content-Type: application/json) or an X-Outrigger-Admin header\n",
        }
    }
}

/// The endpoints that change state.
fn mutates(path: &str) -> bool {
    matches!(path, "/reload" | "/shutdown" | "/logging")
}

/// Whether `Host` names this server: `localhost`, a loopback address, the address the
/// connection arrived on, or a configured name. A request without one (HTTP/1.0) passes: a
/// browser always sends it.
fn host_allowed(
    req: &Request<Incoming>,
    caller: Caller,
    admin: &crate::config::AdminConfig,
) -> bool {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => match h.to_str() {
            Ok(h) => h,
            Err(_) => return false,
        },
        None => match req.uri().host() {
            Some(h) => h,
            None => return true,
        },
    };
    let host = match raw.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => raw.rsplit_once(':').map_or(raw, |(h, _)| h),
    };
    if host.eq_ignore_ascii_case("localhost")
        || admin
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || caller.local.is_some_and(|l| l.ip() == ip),
        Err(_) => false,
    }
}

/// A POST a cross-site page cannot make without a CORS preflight: a JSON content type or a
/// header of our own.
fn not_simple(req: &Request<Incoming>) -> bool {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    json || req.headers().contains_key("x-outrigger-admin")
}

fn check(
    req: &Request<Incoming>,
    caller: Caller,
    admin: &crate::config::AdminConfig,
) -> Result<(), Denied> {
    if !host_allowed(req, caller, admin) {
        return Err(Denied::Host);
    }
    if mutates(req.uri().path()) && req.method() == Method::POST {
        if !crate::config::units::any_contains(&admin.allow, caller.peer.ip()) {
            return Err(Denied::Peer);
        }
        if !not_simple(req) {
            return Err(Denied::Header);
        }
    }
    Ok(())
}

/// Answers one admin request: the loopback and Host checks first, then the endpoint.
pub async fn handle(
    req: Request<Incoming>,
    caller: Caller,
    runtime: &Runtime,
    reloader: &Reloader,
) -> Response<Full<Bytes>> {
    if let Err(d) = check(&req, caller, &runtime.snapshot().loaded.config.admin) {
        runtime
            .metrics
            .admin_denied
            .with_label_values(&[d.as_str()])
            .inc();
        tracing::warn!(peer = %caller.peer, method = %req.method(), path = req.uri().path(), reason = d.as_str(), "admin request refused");
        return text(StatusCode::FORBIDDEN, d.message());
    }
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match path {
        "/metrics" if get => metrics(runtime),
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
        "/config" if get => config(runtime, reloader),
        "/clusters" if get => with_type(
            text(StatusCode::OK, clusters_json(runtime)),
            "application/json",
        ),
        "/listeners" if get => listeners(reloader),
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
        "/logging" if get => match crate::logging::filter() {
            Ok(f) => text(StatusCode::OK, format!("{f}\n")),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        },
        "/logging" if post => set_logging(req.uri().query().unwrap_or("")),
        "/metrics" | "/ready" | "/healthz" | "/config" | "/clusters" | "/listeners" | "/reload"
        | "/shutdown" | "/logging" => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /ready /healthz /config /clusters /listeners /logging\n",
        ),
    }
}

fn metrics(runtime: &Runtime) -> Response<Full<Bytes>> {
    for c in &runtime.snapshot().clusters {
        c.refresh_gauges();
    }
    with_type(
        text(StatusCode::OK, runtime.metrics.encode()),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// The running configuration (secrets redacted), with its source, generation and whether the
/// last reload failed.
fn config(runtime: &Runtime, reloader: &Reloader) -> Response<Full<Bytes>> {
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
    let versions = runtime.xds_versions();
    if !versions.is_empty() {
        let held: Vec<String> = versions.iter().map(|(k, v)| format!("{k} {v:?}")).collect();
        body.push_str(&format!("# xds versions: {}\n", held.join(", ")));
        let dynamic = reloader.dynamic();
        body.push_str("# from xds (the rest is from the file):\n");
        for l in &dynamic.listeners {
            body.push_str(&format!("#   listener {:?}\n", l.name));
        }
        for c in &dynamic.clusters {
            body.push_str(&format!("#   cluster {:?}\n", c.name));
        }
    }
    body.push_str(&crate::config::redacted_yaml(&snap.loaded.config));
    with_type(text(StatusCode::OK, body), "application/yaml")
}

fn listeners(reloader: &Reloader) -> Response<Full<Bytes>> {
    let list: Vec<_> = reloader
        .listener_addrs()
        .into_iter()
        .map(|(name, addr)| serde_json::json!({ "name": name, "address": addr.to_string() }))
        .collect();
    with_type(
        text(
            StatusCode::OK,
            serde_json::json!({ "listeners": list }).to_string(),
        ),
        "application/json",
    )
}

/// `POST /logging?level=debug` sets every target to one level; `?filter=info,outrigger::health=debug`
/// sets `RUST_LOG`-style directives.
fn set_logging(query: &str) -> Response<Full<Bytes>> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let mut wanted = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "level" if LEVELS.contains(&v.to_ascii_lowercase().as_str()) => {
                wanted = Some(v.to_ascii_lowercase())
            }
            "level" => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("level {v:?} is not one of {}\n", LEVELS.join(", ")),
                )
            }
            "filter" => wanted = Some(v),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {k:?}; use level=LEVEL or filter=DIRECTIVES\n"),
                )
            }
        }
    }
    let Some(wanted) = wanted else {
        return text(
            StatusCode::BAD_REQUEST,
            "give level=LEVEL or filter=DIRECTIVES\n",
        );
    };
    match crate::logging::set_filter(&wanted) {
        Ok(()) => text(StatusCode::OK, format!("{wanted}\n")),
        Err(e @ crate::logging::LoggingError::NotInstalled) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
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
    /// In the set picks choose from (at any priority level with a share of traffic).
    routable: bool,
    /// Priority level (0 first).
    priority: u32,
    /// Held out of rotation by the control plane (EDS health status).
    held_out: bool,
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
                        routable: set.is_routable(e),
                        priority: e.priority(),
                        held_out: e.is_held_out(),
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
