//! The HTTP request path, in stages: admit (what the head asks for, checks before routing),
//! route (match, admission, rate limit), forward (retries, pick, exchange) and respond (errors
//! become answers through `ProxyError::into_response`, upgrades are completed, gRPC statuses
//! counted, the access log line finished). `handle` runs them top to bottom and never fails.

mod admit;
pub mod body;
pub mod error;
pub mod forward;
pub mod grpc;
mod respond;
mod tunnel;
mod upstream;

use crate::cluster::Cluster;
use crate::conn_tracker::ConnTracker;
use crate::route::{RequestInfo, Route, RouteTarget};
use crate::runtime::Runtime;
use crate::snapshot::{ListenerState, Snapshot};
use admit::Shape;
use body::{PendingLog, RequestBody, ResponseBody};
use error::ProxyError;
use http::{header, HeaderValue, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use tokio::time::Instant;
use upstream::{attempt, with_retries, Marks};

/// What the request path knows about the downstream connection a request arrived on.
pub struct Downstream {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The shared root: snapshot, metrics, shutdown.
    pub runtime: Arc<Runtime>,
    /// The client's address (from the PROXY header, when one was read).
    pub peer: SocketAddr,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    /// The connection's tracker: requests in flight, for a graceful close.
    pub conn: Arc<ConnTracker>,
    /// `x-forwarded-client-cert` for a verified client certificate (mTLS listeners).
    pub client_cert: Option<Arc<str>>,
    /// The negotiated TLS version, for the access log.
    pub tls_version: Option<&'static str>,
    /// `peer`'s address as an `x-forwarded-for` value (`forward::forwarded_for_value`).
    pub forwarded_for: Option<HeaderValue>,
    /// `peer` is in the listener's `trusted_hops`.
    pub trusted: bool,
    /// Where the client was going before iptables captured the connection (transparent
    /// listeners); `None` otherwise.
    pub original_dst: Option<SocketAddr>,
    /// The verified client certificate's names, URI SANs first (what `authz` matches).
    pub identities: Vec<String>,
}

/// A request extension carrying the connection's original destination to the pick, for
/// original_dst clusters.
#[derive(Clone, Copy, Debug)]
pub struct OriginalDst(pub SocketAddr);

/// What every stage may read: the connection, the listener and snapshot the request started
/// on, and when it started.
struct Ctx<'a> {
    down: &'a Downstream,
    listener: &'a ListenerState,
    snapshot: &'a Snapshot,
    start: Instant,
}

/// What the forward stage hands to the respond stage.
struct Answer<'a> {
    result: Result<Response<ResponseBody>, ProxyError>,
    /// The cluster the request went to, once routed.
    cluster: Option<&'a Arc<Cluster>>,
    route: Option<usize>,
    attempts: u32,
    /// The route has a retry policy: the answer says how many tries were made.
    retried: bool,
}

impl<'a> Answer<'a> {
    fn refused(e: ProxyError, route: Option<usize>) -> Answer<'a> {
        Answer {
            result: Err(e),
            cluster: None,
            route,
            attempts: 1,
            retried: false,
        }
    }
}

/// Serves one request. The snapshot loaded here is held until the response head is built; the
/// response body keeps what it needs (its cluster's pool, in-flight counts, the access log
/// line) on its own.
pub async fn handle(req: Request<Incoming>, down: &Downstream) -> Response<ResponseBody> {
    let start = Instant::now();
    let active = down.conn.request_started();
    let snapshot = down.runtime.snapshot();
    let Some(listener) = snapshot.listeners.get(&*down.listener) else {
        let resp = ProxyError::ListenerGone.into_response(req.version(), false);
        return resp.map(|b| b.with_guard(active));
    };
    let ctx = Ctx {
        down,
        listener,
        snapshot: &snapshot,
        start,
    };
    let (mut parts, body) = req.into_parts();
    let mut shape = Shape::read(&mut parts);
    if snapshot.loaded.config.server.generate_traceparent {
        // Before the log line is started, so the line carries the generated trace id too.
        forward::ensure_traceparent(&mut parts.headers);
    }
    let mut log = listener
        .access_log
        .as_ref()
        .map(|l| respond::log_entry(l, &parts, down, start));
    let answer = match admit::check(
        &mut parts,
        listener,
        active.framing_rejected(),
        shape.is_connect,
    ) {
        Err(e) => Answer::refused(e, None),
        Ok(()) => route_and_forward(&ctx, parts, body, &mut shape, &mut log).await,
    };
    respond::respond(&ctx, answer, shape, log, active)
}

/// The route stage (match, upgrade policy, process admission, rate limit), then the tunnel
/// or the forward stage.
async fn route_and_forward<'a>(
    ctx: &Ctx<'a>,
    parts: http::request::Parts,
    body: Incoming,
    shape: &mut Shape,
    log: &mut Option<Box<PendingLog>>,
) -> Answer<'a> {
    let listener = ctx.listener;
    let info = RequestInfo {
        method: &parts.method,
        host: admit::request_host(&parts),
        // CONNECT names host:port, not a path; it matches as "/".
        path: if shape.is_connect {
            "/"
        } else {
            parts.uri.path()
        },
        headers: &parts.headers,
    };
    if let Err(e) = admit::authorize(ctx.down, listener.authz.as_ref()) {
        return Answer::refused(e, None);
    }
    let route = listener.routes.find(&info);
    let Some(route) = route.filter(|r| !shape.is_connect || r.allow_connect) else {
        listener.no_route_requests.inc();
        let e = if shape.is_connect {
            ProxyError::ConnectNotAllowed
        } else {
            ProxyError::NoRoute
        };
        return Answer::refused(e, None);
    };
    if shape
        .upgrade
        .as_ref()
        .is_some_and(|p| !route.allows_upgrade(p))
    {
        return Answer::refused(ProxyError::UpgradeNotAllowed, Some(route.index));
    }
    if let Err(e) = admit::authorize(ctx.down, route.authz.as_ref()) {
        return Answer::refused(e, Some(route.index));
    }
    let max_in_flight = ctx.snapshot.loaded.config.server.max_in_flight_requests;
    let Some(_admitted) = ctx.down.runtime.admit(max_in_flight) else {
        listener.shed_requests.inc();
        return Answer::refused(ProxyError::Overloaded, Some(route.index));
    };
    if let Some(limiter) = &route.rate_limit {
        if let Err(wait) = limiter.try_acquire() {
            return Answer::refused(ProxyError::RateLimited(wait), Some(route.index));
        }
    }
    let target = route.pick_target();
    if let Err(e) = admit::original_destination(ctx.down, &target.cluster) {
        return Answer::refused(e, Some(route.index));
    }
    if shape.is_connect {
        let result = tunnel::connect(
            &target.cluster,
            shape.on_upgrade.take(),
            ctx.down.peer,
            ctx.down.conn.clone(),
            ctx.down.runtime.clone(),
            respond::tunnel_bounds(listener, ctx.snapshot),
        )
        .await;
        target.count(status_of(&result));
        return Answer {
            result,
            cluster: Some(&target.cluster),
            route: Some(route.index),
            attempts: 1,
            retried: false,
        };
    }
    forward_request(ctx, route, target, parts, body, shape, log).await
}

/// The status a result will answer with, for the route's per-target counts.
fn status_of(result: &Result<Response<ResponseBody>, ProxyError>) -> u16 {
    result
        .as_ref()
        .map_or_else(|e| e.kind().status().as_u16(), |r| r.status().as_u16())
}

/// The forward stage: the request made ready for its upstream (forwarding headers, upgrade
/// headers, its body under the stream idle timeout), then sent under the route's timeout
/// (or the client's shorter gRPC deadline), with its retry policy.
async fn forward_request<'a>(
    ctx: &Ctx<'a>,
    route: &'a Route,
    target: &'a RouteTarget,
    mut parts: http::request::Parts,
    body: Incoming,
    shape: &Shape,
    log: &mut Option<Box<PendingLog>>,
) -> Answer<'a> {
    let (down, listener) = (ctx.down, ctx.listener);
    let cluster = &target.cluster;
    let timeout = deadline(route, shape, &parts.headers);
    let hash = cluster.request_hash(&parts.headers, down.peer.ip());
    ready_for_upstream(ctx, route, &mut parts, shape, log);
    if let (Some(_), Some(d)) = (&cluster.original_dst, down.original_dst) {
        parts.extensions.insert(OriginalDst(d));
    }
    let attempts = AtomicU32::new(1);
    let marks = Marks {
        name_upstream: route.add_upstream_header,
        // Only the access log and gRPC status counting read it; the extension costs four
        // allocations per request (label, map, table, boxed value).
        info: log.is_some() || shape.grpc,
    };
    let upstream_body = upstream_body(body, listener, log);
    let upgrade = shape.upgrade.is_some();
    // Boxed once: the upstream work is a large future, and moving it by value into `timeout`
    // and through this function's state costs more than the allocation.
    let work = Box::pin(async {
        match &route.retry {
            // An upgrade is not replayed: the tunnel that follows is not a request. Boxed for
            // the same reason as connecting: only routes with retries pay for the retry
            // loop's size.
            Some(policy) if !upgrade => {
                let retrying = with_retries(
                    cluster,
                    policy,
                    parts,
                    upstream_body,
                    hash,
                    marks,
                    &attempts,
                );
                Box::pin(retrying).await
            }
            _ => {
                let req = Request::from_parts(parts, upstream_body);
                attempt(cluster, req, hash, None, marks, None, upgrade)
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
    if let Err(e) = &result {
        tracing::debug!(listener = %down.listener, cluster = %cluster.name, error = %e, "request failed");
    }
    target.count(status_of(&result));
    cluster
        .metrics
        .request_duration
        .observe(ctx.start.elapsed().as_secs_f64());
    Answer {
        result,
        cluster: Some(cluster),
        route: Some(route.index),
        attempts: attempts.into_inner(),
        retried: route.retry.is_some(),
    }
}

/// The route's timeout, or the client's gRPC deadline when that is shorter.
#[inline]
fn deadline(
    route: &Route,
    shape: &Shape,
    headers: &http::HeaderMap,
) -> Option<std::time::Duration> {
    match (route.timeout, shape.grpc.then(|| grpc::timeout(headers))) {
        (Some(r), Some(Some(g))) => Some(r.min(g)),
        (None, Some(Some(g))) => Some(g),
        (r, _) => r,
    }
}

/// Forwarding headers, the request id (noted for the access log), and an upgrade's own headers.
#[inline]
fn ready_for_upstream(
    ctx: &Ctx<'_>,
    route: &Route,
    parts: &mut http::request::Parts,
    shape: &Shape,
    log: &mut Option<Box<PendingLog>>,
) {
    let down = ctx.down;
    forward::prepare_request(
        parts,
        route,
        down.forwarded_for.as_ref(),
        down.scheme,
        down.client_cert.as_deref(),
        forward::Trust {
            peer_trusted: down.trusted,
            request_id: ctx.listener.request_id,
        },
    );
    if let Some(entry) = log {
        entry.entry.request_id = respond::header_str(&parts.headers, &forward::X_REQUEST_ID);
    }
    if let Some(proto) = &shape.upgrade {
        // Hop-by-hop, so removed above; an upgrade passes them on by design.
        parts.headers.insert(header::UPGRADE, proto.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The client's body as the upstream reads it: counted when logged, under the stream idle
/// timeout unless it is empty (most GETs have nothing to wait for).
#[inline]
fn upstream_body(
    body: Incoming,
    listener: &ListenerState,
    log: &Option<Box<PendingLog>>,
) -> RequestBody {
    let idle = if body.is_end_stream() {
        None
    } else {
        respond::idle_timer(listener)
    };
    match log.as_ref().and_then(|l| l.received.clone()) {
        Some(n) => RequestBody::Counted(body, n, idle),
        None => RequestBody::Incoming(body, idle),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_port_handles_v4_v6_and_names() {
        use super::admit::strip_port;
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }
}
