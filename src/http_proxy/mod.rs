//! The HTTP request path: route → cluster → pick → forward → record, top to bottom in
//! `handle`, which never fails: every error becomes a response here (and only here).

pub mod body;
pub mod error;
pub mod forward;

use crate::balancer::PickContext;
use crate::cluster::pool::Sender;
use crate::cluster::{Cluster, Endpoint};
use crate::listener::ConnTracker;
use crate::route::RequestInfo;
use crate::runtime::Runtime;
use body::{Lease, RequestBody, ResponseBody};
use error::ProxyError;
use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// What the request path knows about the downstream connection a request arrived on.
pub struct Downstream {
    pub listener: Arc<str>,
    pub runtime: Arc<Runtime>,
    pub peer: SocketAddr,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    pub conn: Arc<ConnTracker>,
}

/// Serves one request. The snapshot loaded here is held until the response head is built; the
/// response body keeps what it needs (its cluster's pool, in-flight counts) on its own.
pub async fn handle(req: Request<Incoming>, down: &Downstream) -> Response<ResponseBody> {
    let start = Instant::now();
    let active = down.conn.request_started();
    let snapshot = down.runtime.snapshot();
    let Some(listener) = snapshot.listeners.get(&*down.listener) else {
        return local_error(&ProxyError::ListenerGone, req.version()).map(|b| b.with_guard(active));
    };
    let version = req.version();
    if active.framing_rejected() {
        let e = ProxyError::AmbiguousFraming;
        listener.count_error(e.kind());
        return local_error(&e, version).map(|b| b.with_guard(active));
    }
    let (mut parts, body) = req.into_parts();
    // RFC 9112 §3.2: more than one Host is a 400; proxies that disagree on which one counts
    // are a routing-confusion vector.
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        let e = ProxyError::BadRequest("more than one Host header");
        listener.count_error(e.kind());
        return local_error(&e, version).map(|b| b.with_guard(active));
    }
    let route = {
        let host = request_host(&parts);
        let info = RequestInfo {
            method: &parts.method,
            host,
            path: parts.uri.path(),
            headers: &parts.headers,
        };
        listener.routes.find(&info)
    };
    let Some(route) = route else {
        let e = ProxyError::NoRoute;
        listener.count_error(e.kind());
        listener.no_route_requests.inc();
        return local_error(&e, version).map(|b| b.with_guard(active));
    };
    let target = route.pick_target();
    let cluster = &target.cluster;
    let hash = cluster.request_hash(&parts.headers, down.peer.ip());
    forward::prepare_request(&mut parts, route, down.peer.ip(), down.scheme);
    let upstream_req = Request::from_parts(parts, RequestBody::Incoming(body));
    let exchange = forward(cluster, upstream_req, hash, route.add_upstream_header);
    let result = match route.timeout {
        Some(t) => match tokio::time::timeout(t, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ProxyError::Timeout),
        },
        None => exchange.await,
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(listener = %down.listener, cluster = %cluster.name, error = %e, "request failed");
            listener.count_error(e.kind());
            local_error(&e, version)
        }
    };
    target.count(resp.status().as_u16());
    cluster
        .metrics
        .request_duration
        .observe(start.elapsed().as_secs_f64());
    resp.map(|b| b.with_guard(active))
}

/// Sends the request to an endpoint of `cluster` and records the outcome for the balancer and
/// outlier detection.
async fn forward(
    cluster: &Cluster,
    req: Request<RequestBody>,
    hash: Option<u64>,
    name_upstream: bool,
) -> Result<Response<ResponseBody>, ProxyError> {
    let ctx = PickContext { hash, avoid: None };
    let endpoint = cluster
        .pick(&ctx)
        .ok_or_else(|| ProxyError::NoHealthyEndpoint {
            cluster: cluster.name.clone(),
        })?;
    let in_flight = endpoint.start_request();
    let sent = Instant::now();
    let result = exchange(cluster, &endpoint, req).await;
    let latency = sent.elapsed();
    match result {
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
            if name_upstream {
                if let Ok(v) = HeaderValue::from_str(&endpoint.label) {
                    parts
                        .headers
                        .insert(forward::X_OUTRIGGER_UPSTREAM.clone(), v);
                }
            }
            let lease = Lease {
                sender: Some(sender),
                in_flight,
            };
            Ok(Response::from_parts(
                parts,
                ResponseBody::upstream(body, lease),
            ))
        }
        Err(e) => {
            // The client's own broken body says nothing about the endpoint.
            if !matches!(e, ProxyError::DownstreamBody(_)) {
                cluster.record(&endpoint, true, None);
            }
            Err(e)
        }
    }
}

/// One request/response exchange with `endpoint`: a pooled connection if one is live, else a
/// new one. A pooled connection that turns out closed before the request was written hands
/// the request back, and it goes out on the next connection instead.
async fn exchange(
    cluster: &Cluster,
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
) -> Result<(Response<Incoming>, Sender), ProxyError> {
    while let Some(mut sender) = endpoint.pool.take() {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(ProxyError::from_upstream(e.into_error())),
            },
        }
    }
    let mut sender = cluster.connect(endpoint).await?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(ProxyError::from_upstream)?;
    Ok((resp, sender))
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
    let text: &'static str = match kind {
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
    };
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
    if e.closes_connection() && version < Version::HTTP_2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
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
