//! The HTTP request path: route → cluster → pick → forward → record, top to bottom in
//! `handle`, which never fails: every error becomes a response here (and only here).

pub mod body;
pub mod error;
pub mod forward;
pub mod grpc;
mod tunnel;

use crate::balancer::PickContext;
use crate::cluster::{Cluster, Endpoint};
use crate::conn_tracker::ConnTracker;
use crate::pool::{self, Sender};
use crate::route::retry;
use crate::route::RequestInfo;
use crate::runtime::Runtime;
use body::{Lease, RequestBody, ResponseBody};
use error::ProxyError;
use http::{header, HeaderValue, Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the request path knows about the downstream connection a request arrived on.
pub struct Downstream {
    pub listener: Arc<str>,
    pub runtime: Arc<Runtime>,
    pub peer: SocketAddr,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    pub conn: Arc<ConnTracker>,
    /// `x-forwarded-client-cert` for a verified client certificate (mTLS listeners).
    pub client_cert: Option<Arc<str>>,
    /// The negotiated TLS version, for the access log.
    pub tls_version: Option<&'static str>,
    /// `peer`'s address as an `x-forwarded-for` value (`forward::forwarded_for_value`).
    pub forwarded_for: Option<HeaderValue>,
    /// `peer` is in the listener's `trusted_hops`.
    pub trusted: bool,
}

/// Replaces a URI's path, keeping its query (and scheme and authority, if any).
fn set_path(uri: &mut http::Uri, path: &str) -> Option<()> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).ok()?);
    *uri = http::Uri::from_parts(parts).ok()?;
    Some(())
}

/// Serves one request. The snapshot loaded here is held until the response head is built; the
/// response body keeps what it needs (its cluster's pool, in-flight counts, the access log
/// line) on its own.
pub async fn handle(req: Request<Incoming>, down: &Downstream) -> Response<ResponseBody> {
    let start = Instant::now();
    let active = down.conn.request_started();
    let snapshot = down.runtime.snapshot();
    let Some(listener) = snapshot.listeners.get(&*down.listener) else {
        return local_error(&ProxyError::ListenerGone, req.version()).map(|b| b.with_guard(active));
    };
    let version = req.version();
    let (mut parts, body) = req.into_parts();
    let grpc = grpc::is_grpc(&parts.headers);
    let mut grpc_count: Option<Arc<crate::metrics::GrpcCount>> = None;
    // RFC 8441: WebSocket over HTTP/2 is an extended CONNECT; upstream it becomes the
    // HTTP/1.1 handshake (GET + Upgrade), and its 101 becomes the client's 200.
    let h2_websocket = parts.method == http::Method::CONNECT
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    let is_connect = parts.method == http::Method::CONNECT && !h2_websocket;
    let upgrade = if h2_websocket {
        parts.method = http::Method::GET;
        parts
            .headers
            .insert(SEC_WEBSOCKET_KEY.clone(), websocket_key());
        Some(HeaderValue::from_static("websocket"))
    } else {
        // h2c is a hop's own business (RFC 9113 drops it): the request goes on as plain
        // HTTP/1.1, its Upgrade removed with the other hop-by-hop headers.
        upgrade_protocol(&parts.headers).filter(|p| !p.as_bytes().eq_ignore_ascii_case(b"h2c"))
    };
    // The downstream half of a tunnel (WebSocket after a 101, CONNECT after a 200).
    let mut on_upgrade = if upgrade.is_some() || is_connect {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    if snapshot.loaded.config.server.generate_traceparent {
        // Before the log line is started, so the line carries the generated trace id too.
        forward::ensure_traceparent(&mut parts.headers);
    }
    let mut log = listener
        .access_log
        .as_ref()
        .map(|l| log_entry(l, &parts, down, start));
    let received = log
        .as_ref()
        .map(|_| Arc::new(std::sync::atomic::AtomicU64::new(0)));
    // The cluster an upgrade goes to, for the tunnel's circuit-breaker slot.
    let mut tunnel_cluster: Option<Arc<Cluster>> = None;
    let (resp, cluster_name, route_index, attempts, retried) = 'answer: {
        if active.framing_rejected() {
            break 'answer (Err(ProxyError::AmbiguousFraming), None, None, 1, false);
        }
        // RFC 9112 §3.2: more than one Host is a 400; proxies that disagree on which one counts
        // are a routing-confusion vector.
        if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
            break 'answer (
                Err(ProxyError::BadRequest("more than one Host header")),
                None,
                None,
                1,
                false,
            );
        }
        if !is_connect {
            match listener.paths.apply(parts.uri.path()) {
                Ok(None) => {}
                Ok(Some(path)) => {
                    if set_path(&mut parts.uri, &path).is_none() {
                        break 'answer (
                            Err(ProxyError::BadRequest("invalid path")),
                            None,
                            None,
                            1,
                            false,
                        );
                    }
                }
                Err(e) => {
                    break 'answer (
                        Err(ProxyError::BadRequest(match e {
                            crate::path::PathError::EscapedSlash => "encoded slash in the path",
                            crate::path::PathError::BadEscape => "malformed percent-encoding",
                        })),
                        None,
                        None,
                        1,
                        false,
                    )
                }
            }
        }
        let route = {
            let host = request_host(&parts);
            let info = RequestInfo {
                method: &parts.method,
                host,
                // CONNECT names host:port, not a path; it matches as "/".
                path: if is_connect { "/" } else { parts.uri.path() },
                headers: &parts.headers,
            };
            listener.routes.find(&info)
        };
        let Some(route) = route.filter(|r| !is_connect || r.allow_connect) else {
            listener.no_route_requests.inc();
            let e = if is_connect {
                ProxyError::ConnectNotAllowed
            } else {
                ProxyError::NoRoute
            };
            break 'answer (Err(e), None, None, 1, false);
        };
        if upgrade.as_ref().is_some_and(|p| !route.allows_upgrade(p)) {
            break 'answer (
                Err(ProxyError::UpgradeNotAllowed),
                None,
                Some(route.index),
                1,
                false,
            );
        }
        let Some(_admitted) = down
            .runtime
            .admit(snapshot.loaded.config.server.max_in_flight_requests)
        else {
            listener.shed_requests.inc();
            break 'answer (
                Err(ProxyError::Overloaded),
                None,
                Some(route.index),
                1,
                false,
            );
        };
        if let Some(limiter) = &route.rate_limit {
            if let Err(wait) = limiter.try_acquire() {
                break 'answer (
                    Err(ProxyError::RateLimited(wait)),
                    None,
                    Some(route.index),
                    1,
                    false,
                );
            }
        }
        let target = route.pick_target();
        let cluster = &target.cluster;
        if upgrade.is_some() {
            tunnel_cluster = Some(cluster.clone());
        }
        if grpc {
            grpc_count = Some(cluster.grpc_count().clone());
        }
        if is_connect {
            let result = tunnel::connect(
                cluster,
                on_upgrade.take(),
                down.peer,
                down.conn.clone(),
                down.runtime.clone(),
                tunnel_bounds(listener, &snapshot),
            )
            .await;
            let status = result
                .as_ref()
                .map_or_else(|e| e.kind().status().as_u16(), |r| r.status().as_u16());
            target.count(status);
            break 'answer (
                result,
                log.is_some().then(|| cluster.name.clone()),
                Some(route.index),
                1,
                false,
            );
        }
        // The client's gRPC deadline, when it is shorter than the route's.
        let timeout = match (route.timeout, grpc.then(|| grpc::timeout(&parts.headers))) {
            (Some(r), Some(Some(g))) => Some(r.min(g)),
            (None, Some(Some(g))) => Some(g),
            (r, _) => r,
        };
        let hash = cluster.request_hash(&parts.headers, down.peer.ip());
        forward::prepare_request(
            &mut parts,
            route,
            down.forwarded_for.as_ref(),
            down.scheme,
            down.client_cert.as_deref(),
            forward::Trust {
                peer_trusted: down.trusted,
                request_id: listener.request_id,
            },
        );
        if let Some(entry) = &mut log {
            entry.entry.request_id = header_str(&parts.headers, &forward::X_REQUEST_ID);
        }
        if let Some(proto) = &upgrade {
            // Hop-by-hop, so removed above; an upgrade passes them on by design.
            parts.headers.insert(header::UPGRADE, proto.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let attempts = AtomicU32::new(1);
        let marks = Marks {
            name_upstream: route.add_upstream_header,
            // Only the access log and gRPC status counting read it; the extension costs four
            // allocations per request (label, map, table, boxed value).
            info: log.is_some() || grpc,
        };
        // An empty body (most GETs) has nothing to wait for.
        let idle = if body.is_end_stream() {
            None
        } else {
            idle_timer(listener)
        };
        let upstream_body = match &received {
            Some(n) => RequestBody::Counted(body, n.clone(), idle),
            None => RequestBody::Incoming(body, idle),
        };
        // Boxed once: the upstream work is a multi-KB future, and moving it by value into
        // `timeout` and through this function's state cost ~10% of instructions (callgrind).
        let work = Box::pin(async {
            match &route.retry {
                // An upgrade is not replayed: the tunnel that follows is not a request.
                // Boxed for the same reason as connecting: only routes with retries pay for
                // the retry loop's size.
                Some(policy) if upgrade.is_none() => {
                    Box::pin(with_retries(
                        cluster,
                        policy,
                        parts,
                        upstream_body,
                        hash,
                        marks,
                        &attempts,
                    ))
                    .await
                }
                _ => {
                    let req = Request::from_parts(parts, upstream_body);
                    attempt(cluster, req, hash, None, marks, None, upgrade.is_some())
                        .await
                        .result
                }
            }
        });
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, work).await {
                Ok(r) => r,
                Err(_) => {
                    cluster.metrics.timeouts[0].inc();
                    Err(ProxyError::Timeout)
                }
            },
            None => work.await,
        };
        let attempts = attempts.load(Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::debug!(listener = %down.listener, cluster = %cluster.name, error = %e, "request failed");
        }
        let status = result
            .as_ref()
            .map_or_else(|e| e.kind().status().as_u16(), |r| r.status().as_u16());
        target.count(status);
        cluster
            .metrics
            .request_duration
            .observe(start.elapsed().as_secs_f64());
        break 'answer (
            result,
            log.is_some().then(|| cluster.name.clone()),
            Some(route.index),
            attempts,
            route.retry.is_some(),
        );
    };
    // The one place a failure becomes a response, counted and flagged.
    let mut resp = match resp {
        Ok(r) => r,
        Err(e) => {
            listener.count_error(e.kind());
            if let Some(entry) = &mut log {
                entry.entry.flags = if attempts > 1 {
                    "URX"
                } else {
                    crate::access_log::flag(e.kind())
                };
            }
            let mut resp = local_error(&e, version);
            if grpc {
                let kind = e.kind();
                *resp.status_mut() = http::StatusCode::OK;
                grpc::error_headers(resp.headers_mut(), kind.grpc_status(), error_text(kind));
                *resp.body_mut() = ResponseBody::empty();
                if let Some(c) = &grpc_count {
                    c.count_code(kind.grpc_status());
                }
            }
            resp
        }
    };
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // The tunnel is an upstream connection for the circuit breaker as long as it lives.
        let slot = match tunnel_cluster.as_ref().map(|c| (c, c.breaker.connection())) {
            Some((_, Ok(slot))) => Some(slot),
            Some((c, Err(o))) => {
                c.metrics.overflow[o as usize].inc();
                listener.count_error(error::ErrorKind::Overflow);
                resp = local_error(&ProxyError::Overflow(o), version);
                None
            }
            None => None,
        };
        if let (Some(down_side), Some(up_side), Some(proto), Some(slot)) = (
            on_upgrade,
            resp.extensions_mut().remove::<hyper::upgrade::OnUpgrade>(),
            upgrade,
            slot,
        ) {
            if h2_websocket {
                *resp.status_mut() = http::StatusCode::OK;
                resp.headers_mut().remove(SEC_WEBSOCKET_ACCEPT.clone());
            } else {
                resp.headers_mut().insert(header::UPGRADE, proto);
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            let hold = tunnel::Hold {
                conn: down.conn.clone(),
                slot,
                in_flight: None,
                runtime: down.runtime.clone(),
                bounds: tunnel_bounds(listener, &snapshot),
            };
            tunnel::spawn_upgraded(down_side, up_side, hold);
        }
    }
    let mut resp = match grpc_count {
        Some(c)
            if resp.status() == http::StatusCode::OK
                && resp.extensions().get::<UpstreamInfo>().is_some() =>
        {
            // Trailers-only responses carry the status in the headers.
            match grpc::status(resp.headers()) {
                Some(st) => {
                    c.count(st);
                    resp
                }
                None => resp.map(|b| b.with_grpc_trailers(c)),
            }
        }
        _ => resp,
    };
    if retried {
        // Upstream and proxy-made answers alike say how many tries were made.
        resp.headers_mut()
            .insert(forward::X_OUTRIGGER_ATTEMPT_COUNT.clone(), attempts.into());
    }
    let resp = resp.map(|b| {
        b.with_guard(active)
            .with_idle_timeout(|| idle_timer(listener))
    });
    match log {
        None => resp,
        Some(mut pending) => {
            let e = &mut pending.entry;
            e.status = resp.status().as_u16();
            e.cluster = cluster_name;
            e.route = route_index;
            e.attempts = attempts;
            if let Some(info) = resp.extensions().get::<UpstreamInfo>() {
                e.endpoint = Some(info.endpoint.clone());
                e.upstream_duration = Some(info.duration);
            }
            pending.received = received;
            resp.map(|b| b.with_log(pending))
        }
    }
}

/// A body's stream idle timer, when the listener has a stream idle timeout.
fn idle_timer(listener: &crate::snapshot::ListenerState) -> Option<body::IdleTimer> {
    listener
        .stream_idle_timeout
        .map(|t| body::IdleTimer::new(t, listener.stream_idle_timeouts.clone()))
}

/// A tunnel's bounds: the listener's stream idle timeout, and the process drain timeout.
fn tunnel_bounds(
    listener: &crate::snapshot::ListenerState,
    snapshot: &crate::snapshot::Snapshot,
) -> crate::relay::Bounds {
    crate::relay::Bounds {
        buffer: 16 * 1024,
        idle_timeout: listener.stream_idle_timeout.unwrap_or_default(),
        drain_timeout: snapshot.loaded.config.server.drain_timeout.get(),
    }
}

/// What an upstream response carries besides itself.
#[derive(Clone, Copy)]
struct Marks {
    /// `x-outrigger-upstream` names the endpoint.
    name_upstream: bool,
    /// `UpstreamInfo` in the response extensions.
    info: bool,
}

/// What the access log learns from the upstream exchange, carried in response extensions.
#[derive(Clone)]
struct UpstreamInfo {
    endpoint: String,
    duration: Duration,
}

fn header_str(headers: &http::HeaderMap, name: &http::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The request half of an access log line.
fn log_entry(
    log: &Arc<crate::access_log::AccessLog>,
    parts: &http::request::Parts,
    down: &Downstream,
    start: Instant,
) -> Box<body::PendingLog> {
    let h = &parts.headers;
    let trace_id = h
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .map(str::to_owned)
        .or_else(|| {
            h.get("x-b3-traceid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let entry = crate::access_log::Entry {
        start: Some(std::time::SystemTime::now()),
        method: parts.method.to_string(),
        authority: request_host(parts).unwrap_or("").to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        protocol: match parts.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        flags: "-",
        request_id: header_str(h, &forward::X_REQUEST_ID),
        user_agent: header_str(h, &header::USER_AGENT),
        downstream: Some(down.peer),
        tls_version: down.tls_version,
        trace_id,
        ..Default::default()
    };
    Box::new(body::PendingLog {
        log: log.clone(),
        entry,
        started: start,
        received: None,
    })
}

/// One try's result and the endpoint it went to (a retry avoids it).
struct Attempt {
    result: Result<Response<ResponseBody>, ProxyError>,
    endpoint: Option<Arc<Endpoint>>,
}

/// Sends the request with the route's retry policy. Only a body that is empty or of known
/// length within `max_body` is buffered and so can be sent again; any other body goes out
/// once, streamed, as without a policy.
async fn with_retries(
    cluster: &Cluster,
    policy: &retry::RetryPolicy,
    parts: http::request::Parts,
    body: RequestBody,
    hash: Option<u64>,
    marks: Marks,
    attempts: &AtomicU32,
) -> Result<Response<ResponseBody>, ProxyError> {
    let replayable = body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= policy.max_body as u64);
    if !replayable {
        attempts.store(1, Ordering::Relaxed);
        let req = Request::from_parts(parts, body);
        return attempt(
            cluster,
            req,
            hash,
            None,
            marks,
            policy.per_try_timeout,
            false,
        )
        .await
        .result;
    }
    let data = body
        .collect()
        .await
        .map_err(ProxyError::DownstreamBody)?
        .to_bytes();
    policy.deposit();
    let mut avoid: Option<Arc<Endpoint>> = None;
    let mut n = 0;
    loop {
        n += 1;
        attempts.store(n, Ordering::Relaxed);
        let mut req = Request::new(RequestBody::Full((!data.is_empty()).then(|| data.clone())));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        let att = attempt(
            cluster,
            req,
            hash,
            avoid.as_deref(),
            marks,
            policy.per_try_timeout,
            false,
        )
        .await;
        let outcome = match &att.result {
            Ok(resp) => retry::Outcome::Status(resp.status()),
            Err(ProxyError::Connect(
                pool::ConnectError::Io { .. } | pool::ConnectError::Timeout { .. },
            )) => retry::Outcome::ConnectFailure,
            Err(ProxyError::UpstreamReset(_) | ProxyError::UpstreamProtocol(_)) => {
                retry::Outcome::Reset
            }
            Err(ProxyError::PerTryTimeout) => retry::Outcome::Timeout,
            // Overflow, no endpoint, a broken client body: another try would not help.
            Err(_) => return att.result,
        };
        if n > policy.attempts || !policy.retriable(&parts.method, outcome) || !policy.withdraw() {
            return att.result;
        }
        cluster.metrics.retries.inc();
        avoid = att.endpoint;
        // Dropping a failed response closes its upstream connection rather than draining it.
        drop(att.result);
        tokio::time::sleep(policy.backoff(n)).await;
    }
}

/// One try: take a circuit-breaker slot, pick an endpoint, exchange, record the outcome for the
/// balancer and outlier detection.
async fn attempt(
    cluster: &Cluster,
    req: Request<RequestBody>,
    hash: Option<u64>,
    avoid: Option<&Endpoint>,
    marks: Marks,
    per_try_timeout: Option<Duration>,
    upgrade: bool,
) -> Attempt {
    let slot = match cluster.breaker.request() {
        Ok(s) => s,
        Err(o) => {
            cluster.metrics.overflow[o as usize].inc();
            return Attempt {
                result: Err(ProxyError::Overflow(o)),
                endpoint: None,
            };
        }
    };
    let ctx = PickContext { hash, avoid };
    let Some(endpoint) = cluster.pick(&ctx) else {
        let e = ProxyError::NoHealthyEndpoint {
            cluster: cluster.name.clone(),
        };
        return Attempt {
            result: Err(e),
            endpoint: None,
        };
    };
    let in_flight = endpoint.start_request();
    let sent = Instant::now();
    let result = match per_try_timeout {
        Some(t) => {
            match tokio::time::timeout(t, exchange(cluster, &endpoint, req, upgrade)).await {
                Ok(r) => r,
                Err(_) => {
                    cluster.metrics.timeouts[1].inc();
                    Err(ProxyError::PerTryTimeout)
                }
            }
        }
        None => exchange(cluster, &endpoint, req, upgrade).await,
    };
    let latency = sent.elapsed();
    let result = match result {
        Ok((resp, sender)) => {
            let status = resp.status().as_u16();
            cluster
                .metrics
                .upstream_duration
                .observe(latency.as_secs_f64());
            endpoint.metrics.requests_by_class[crate::metrics::code_class_index(status)].inc();
            cluster.record(&endpoint, status >= 500, Some(latency));
            let (mut parts, body) = resp.into_parts();
            forward::prepare_response(&mut parts);
            if marks.info {
                parts.extensions.insert(UpstreamInfo {
                    endpoint: endpoint.label.clone(),
                    duration: latency,
                });
            }
            if marks.name_upstream {
                if let Ok(v) = HeaderValue::from_str(&endpoint.label) {
                    parts
                        .headers
                        .insert(forward::X_OUTRIGGER_UPSTREAM.clone(), v);
                }
            }
            let lease = Lease {
                // A connection that switched protocols belongs to the tunnel now.
                sender: (status != 101).then_some(sender),
                in_flight,
                _slot: slot,
            };
            Ok(Response::from_parts(
                parts,
                ResponseBody::upstream(body, lease),
            ))
        }
        Err(e) => {
            // The client's own broken body and our own limits say nothing about the endpoint.
            if !matches!(
                e,
                ProxyError::DownstreamBody(_)
                    | ProxyError::Connect(pool::ConnectError::Overflow(_))
            ) {
                cluster.record(&endpoint, true, None);
            }
            Err(e)
        }
    };
    Attempt {
        result,
        endpoint: Some(endpoint),
    }
}

/// One request/response exchange with `endpoint`. HTTP/2 clusters send it as a stream on the
/// least busy shared connection (opening one when needed, one opener at a time). HTTP/1.1 uses
/// a pooled connection if one is live, else a new one; a pooled connection that turns out
/// closed before the request was written hands the request back, and it goes out on the next
/// connection instead. Upgrades (WebSocket) always speak HTTP/1.1, on a connection of their
/// own that the tunnel takes over.
async fn exchange(
    cluster: &Cluster,
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
    upgrade: bool,
) -> Result<(Response<Incoming>, Sender), ProxyError> {
    if upgrade {
        let connected = Box::pin(cluster.connect(endpoint, pool::Protocol::Upgrade)).await?;
        return send_connected(cluster, endpoint, connected, req).await;
    }
    let protocol = cluster.protocol();
    if protocol != pool::Protocol::Http1 {
        let (streams, conns) = (
            cluster.config.pool.http2_max_streams_per_connection,
            cluster.config.pool.http2_max_connections_per_endpoint,
        );
        if let pool::H2Pick::Stream(s) = endpoint.pool.h2_pick(streams, conns) {
            return send_h2(cluster, endpoint, s, req).await;
        }
        if protocol == pool::Protocol::Http2 {
            let waiting_since = std::time::Instant::now();
            let opening = endpoint.pool.h2_connecting.lock().await;
            // Whoever held the lock before may have opened the connection this one needs.
            if let pool::H2Pick::Stream(s) = endpoint.pool.h2_pick(streams, conns) {
                drop(opening);
                return send_h2(cluster, endpoint, s, req).await;
            }
            // ... or failed to, while this one waited: fail the same way at once rather than
            // queueing one connect timeout after another behind a dead endpoint.
            if endpoint.pool.h2_failed_since(waiting_since) {
                return Err(ProxyError::Connect(pool::ConnectError::Io {
                    endpoint: endpoint.address,
                    source: std::io::Error::other("a concurrent connection attempt just failed"),
                }));
            }
            let connected = Box::pin(cluster.connect(endpoint, protocol)).await;
            if connected.is_err() {
                endpoint.pool.h2_connect_failed();
            }
            drop(opening);
            return send_connected(cluster, endpoint, connected?, req).await;
        }
    }
    while let Some(mut conn) = endpoint.pool.take() {
        match conn.send(req).await {
            Ok(resp) => return Ok((resp, Sender::H1(conn))),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(ProxyError::from_upstream(e.into_error())),
            },
        }
    }
    // Boxed: connecting (TCP, TLS, handshake) is a large future that only a new connection
    // needs; inline, every request's future would carry (and copy) its size.
    let connected = Box::pin(cluster.connect(endpoint, protocol)).await?;
    send_connected(cluster, endpoint, connected, req).await
}

async fn send_connected(
    cluster: &Cluster,
    endpoint: &Endpoint,
    connected: pool::Connected,
    req: Request<RequestBody>,
) -> Result<(Response<Incoming>, Sender), ProxyError> {
    match connected {
        pool::Connected::H1(mut conn) => {
            let resp = conn
                .send(req)
                .await
                .map_err(|e| ProxyError::from_upstream(e.into_error()))?;
            Ok((resp, Sender::H1(conn)))
        }
        pool::Connected::Upgradable(mut sender) => {
            let resp = sender
                .send_request(req)
                .await
                .map_err(ProxyError::from_upstream)?;
            Ok((resp, Sender::Upgradable(sender)))
        }
        pool::Connected::H2(sender) => {
            let stream = endpoint.pool.h2_add(sender);
            send_h2(cluster, endpoint, stream, req).await
        }
    }
}

/// Sends a request as an HTTP/2 stream: the host moves from `Host` into `:authority`.
async fn send_h2(
    cluster: &Cluster,
    endpoint: &Endpoint,
    stream: pool::H2Stream,
    mut req: Request<RequestBody>,
) -> Result<(Response<Incoming>, Sender), ProxyError> {
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| http::uri::Authority::try_from(endpoint.authority()).ok());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if cluster.originates_tls() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = authority;
    uri.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(u) = http::Uri::from_parts(uri) {
        *req.uri_mut() = u;
    }
    *req.version_mut() = Version::HTTP_2;
    let mut sender = stream.sender();
    // Waits while the connection is at the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    sender.ready().await.map_err(ProxyError::from_upstream)?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(ProxyError::from_upstream)?;
    Ok((resp, Sender::H2(stream)))
}

/// The host a request is addressed to, without the port.
fn request_host(parts: &http::request::Parts) -> Option<&str> {
    let raw = match parts.headers.get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => parts.uri.host()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A response the proxy makes itself. The body is a fixed phrase: details (addresses, OS
/// errors) go to logs and metrics, not to clients.
pub fn local_error(e: &ProxyError, version: Version) -> Response<ResponseBody> {
    let kind = e.kind();
    let text = error_text(kind);
    let mut resp = Response::new(ResponseBody::full(text));
    *resp.status_mut() = kind.status();
    let h = resp.headers_mut();
    h.insert(
        forward::X_OUTRIGGER_ERROR.clone(),
        HeaderValue::from_static(kind.as_str()),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match e {
        ProxyError::RateLimited(wait) => {
            h.insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        }
        ProxyError::Overflow(_)
        | ProxyError::Overloaded
        | ProxyError::Connect(pool::ConnectError::Overflow(_)) => {
            h.insert(
                forward::X_OUTRIGGER_OVERFLOW.clone(),
                HeaderValue::from_static("1"),
            );
        }
        ProxyError::ConnectNotAllowed => {
            h.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
            );
        }
        _ => {}
    }
    if e.closes_connection() && version < Version::HTTP_2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The fixed phrase of a proxy-made answer.
fn error_text(kind: error::ErrorKind) -> &'static str {
    match kind {
        error::ErrorKind::NoRoute => "no route matched the request\n",
        error::ErrorKind::NoHealthyEndpoint => "no healthy upstream\n",
        error::ErrorKind::ConnectFailed | error::ErrorKind::ConnectTimeout => {
            "upstream connect error\n"
        }
        error::ErrorKind::UpstreamReset => "upstream reset before response\n",
        error::ErrorKind::UpstreamProtocolError => "invalid response from upstream\n",
        error::ErrorKind::Timeout => "upstream request timeout\n",
        error::ErrorKind::DownstreamBody => "bad request body\n",
        error::ErrorKind::AmbiguousFraming => "ambiguous request framing\n",
        error::ErrorKind::ListenerGone => "listener removed\n",
        error::ErrorKind::BadRequest => "bad request\n",
        error::ErrorKind::PerTryTimeout => "upstream per-try timeout\n",
        error::ErrorKind::RateLimited => "rate limited\n",
        error::ErrorKind::Overflow => "upstream overflow (circuit breaker)\n",
        error::ErrorKind::Overloaded => "overloaded\n",
        error::ErrorKind::UpstreamTls => "upstream TLS handshake failed\n",
        error::ErrorKind::ConnectNotAllowed => "CONNECT is not allowed here\n",
        error::ErrorKind::UpgradeNotAllowed => "upgrade not allowed\n",
    }
}

static SEC_WEBSOCKET_KEY: http::HeaderName = http::HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: http::HeaderName =
    http::HeaderName::from_static("sec-websocket-accept");

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn websocket_key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let mut out = Vec::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    HeaderValue::from_bytes(&out)
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let proto = headers.get(header::UPGRADE)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| proto.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_port_handles_v4_v6_and_names() {
        use super::strip_port;
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }
}
