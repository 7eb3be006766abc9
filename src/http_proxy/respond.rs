//! The respond stage: an error becomes its answer (counted, flagged for the access log), an
//! upgrade is completed into a tunnel, gRPC statuses are counted, and the response body is
//! given what it must keep to the end (the connection's request guard, the idle timer, the
//! access log line).

use super::admit::{Shape, SEC_WEBSOCKET_ACCEPT};
use super::body::{IdleTimer, PendingLog, ResponseBody};
use super::error::{ErrorKind, ProxyError};
use super::upstream::UpstreamInfo;
use super::{forward, tunnel, Answer, Ctx, Downstream};
use crate::cluster::Cluster;
use crate::conn_tracker::RequestGuard;
use crate::snapshot::{ListenerState, Snapshot};
use http::{header, HeaderValue, Response, Version};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::time::Instant;

/// Turns the forward stage's answer into the response the client gets.
pub(super) fn respond(
    ctx: &Ctx<'_>,
    answer: Answer<'_>,
    shape: Shape,
    mut log: Option<Box<PendingLog>>,
    active: RequestGuard,
) -> Response<ResponseBody> {
    let listener = ctx.listener;
    let grpc_count = answer
        .cluster
        .filter(|_| shape.grpc)
        .map(|c| c.grpc_count().clone());
    let mut resp = match answer.result {
        Ok(r) => r,
        Err(e) => {
            let kind = e.kind();
            listener.count_error(kind);
            if let Some(entry) = &mut log {
                entry.entry.flags = if answer.attempts > 1 {
                    "URX"
                } else {
                    crate::access_log::flag(kind)
                };
            }
            if let (true, Some(c)) = (shape.grpc, &grpc_count) {
                c.count_code(kind.grpc_status());
            }
            e.into_response(shape.version, shape.grpc)
        }
    };
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        resp = complete_upgrade(ctx, resp, answer.cluster, shape);
    }
    let mut resp = match grpc_count {
        Some(c)
            if resp.status() == http::StatusCode::OK
                && resp.extensions().get::<UpstreamInfo>().is_some() =>
        {
            // Trailers-only responses carry the status in the headers.
            match super::grpc::status(resp.headers()) {
                Some(st) => {
                    c.count(st);
                    resp
                }
                None => resp.map(|b| b.with_grpc_trailers(c)),
            }
        }
        _ => resp,
    };
    if answer.retried {
        // Upstream and proxy-made answers alike say how many tries were made.
        resp.headers_mut().insert(
            forward::X_OUTRIGGER_ATTEMPT_COUNT.clone(),
            answer.attempts.into(),
        );
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
            e.cluster = answer.cluster.map(|c| c.name.clone());
            e.route = answer.route;
            e.attempts = answer.attempts;
            if let Some(info) = resp.extensions().get::<UpstreamInfo>() {
                e.endpoint = Some(info.endpoint.clone());
                e.upstream_duration = Some(info.duration);
            }
            resp.map(|b| b.with_log(pending))
        }
    }
}

/// A 101 from upstream: the tunnel takes both connections, holding a circuit-breaker
/// connection slot for as long as it lives (refused with 503 when none is free). An HTTP/2
/// WebSocket client gets 200 instead (RFC 8441).
fn complete_upgrade(
    ctx: &Ctx<'_>,
    mut resp: Response<ResponseBody>,
    cluster: Option<&Arc<Cluster>>,
    shape: Shape,
) -> Response<ResponseBody> {
    let tunnel_cluster = cluster.filter(|_| shape.upgrade.is_some());
    let slot = match tunnel_cluster.map(|c| (c, c.breaker.connection())) {
        Some((_, Ok(slot))) => slot,
        Some((c, Err(o))) => {
            c.metrics.overflow[o as usize].inc();
            ctx.listener.count_error(ErrorKind::Overflow);
            return ProxyError::Overflow(o).into_response(shape.version, false);
        }
        None => return resp,
    };
    if let (Some(down_side), Some(up_side), Some(proto)) = (
        shape.on_upgrade,
        resp.extensions_mut().remove::<hyper::upgrade::OnUpgrade>(),
        shape.upgrade,
    ) {
        if shape.h2_websocket {
            *resp.status_mut() = http::StatusCode::OK;
            resp.headers_mut().remove(SEC_WEBSOCKET_ACCEPT.clone());
        } else {
            resp.headers_mut().insert(header::UPGRADE, proto);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let hold = tunnel::Hold {
            conn: ctx.down.conn.clone(),
            slot,
            in_flight: None,
            runtime: ctx.down.runtime.clone(),
            bounds: tunnel_bounds(ctx.listener, ctx.snapshot),
        };
        tunnel::spawn_upgraded(down_side, up_side, hold);
    }
    resp
}

/// A body's stream idle timer, when the listener has a stream idle timeout.
pub(super) fn idle_timer(listener: &ListenerState) -> Option<IdleTimer> {
    listener
        .stream_idle_timeout
        .map(|t| IdleTimer::new(t, listener.stream_idle_timeouts.clone()))
}

/// A tunnel's bounds: the listener's stream idle timeout, and the process drain timeout.
pub(super) fn tunnel_bounds(listener: &ListenerState, snapshot: &Snapshot) -> crate::relay::Bounds {
    crate::relay::Bounds {
        buffer: 16 * 1024,
        idle_timeout: listener.stream_idle_timeout.unwrap_or_default(),
        drain_timeout: snapshot.loaded.config.server.drain_timeout.get(),
    }
}

pub(super) fn header_str(headers: &http::HeaderMap, name: &http::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The request half of an access log line.
pub(super) fn log_entry(
    log: &Arc<crate::access_log::AccessLog>,
    parts: &http::request::Parts,
    down: &Downstream,
    start: Instant,
) -> Box<PendingLog> {
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
        authority: super::admit::request_host(parts).unwrap_or("").to_owned(),
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
        identity: down.identities.first().cloned(),
        original_dst: down.original_dst,
        ..Default::default()
    };
    Box::new(PendingLog {
        log: log.clone(),
        entry,
        started: start,
        received: Some(Arc::new(AtomicU64::new(0))),
    })
}
