//! The forward stage's upstream half: retries, one attempt (breaker slot, pick, exchange,
//! outcome recorded for the balancer and outlier detection), and the exchange on a pooled,
//! shared (HTTP/2) or new connection.

use super::body::{Lease, RequestBody, ResponseBody};
use super::error::ProxyError;
use super::forward;
use crate::balancer::PickContext;
use crate::cluster::{Cluster, Endpoint, Upstream};
use crate::pool::{self, Sender};
use crate::route::retry;
use http::{header, HeaderValue, Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What an upstream response carries besides itself.
#[derive(Clone, Copy)]
pub(super) struct Marks {
    /// `x-outrigger-upstream` names the endpoint.
    pub name_upstream: bool,
    /// `UpstreamInfo` in the response extensions.
    pub info: bool,
}

/// What the access log learns from the upstream exchange, carried in response extensions.
#[derive(Clone)]
pub(super) struct UpstreamInfo {
    pub endpoint: String,
    pub duration: Duration,
}

/// One try's result and the endpoint it went to (a retry avoids it).
pub(super) struct Attempt {
    pub result: Result<Response<ResponseBody>, ProxyError>,
    endpoint: Option<Arc<Endpoint>>,
}

/// Sends the request with the route's retry policy. Only a body that is empty or of known
/// length within `max_body` is buffered and so can be sent again; any other body goes out
/// once, streamed, as without a policy.
pub(super) async fn with_retries(
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
        if let Some(d) = parts.extensions.get::<super::OriginalDst>() {
            req.extensions_mut().insert(*d);
        }
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
pub(super) async fn attempt(
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
    let ctx = PickContext {
        hash,
        avoid,
        original_dst: req.extensions().get::<super::OriginalDst>().map(|o| o.0),
    };
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

/// Sends `req` on the connection the cluster chooses (`Cluster::upstream`). A pooled HTTP/1.1
/// connection that turns out closed before the request was written hands the request back,
/// and it goes out on the next one instead.
async fn exchange(
    cluster: &Cluster,
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
    upgrade: bool,
) -> Result<(Response<Incoming>, Sender), ProxyError> {
    loop {
        match cluster.upstream(endpoint, upgrade).await? {
            Upstream::H2(stream) => return send_h2(cluster, endpoint, stream, req).await,
            Upstream::New(connected) => {
                return send_connected(cluster, endpoint, connected, req).await
            }
            Upstream::Pooled(mut conn) => match conn.send(req).await {
                Ok(resp) => return Ok((resp, Sender::H1(conn))),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(ProxyError::from_upstream(e.into_error())),
                },
            },
        }
    }
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
