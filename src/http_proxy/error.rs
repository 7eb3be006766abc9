//! Everything that makes the proxy answer on its own, and the one mapping of each cause to a
//! status code, an `x-outrigger-error` value and a metric label.

pub use crate::metrics::ErrorKind;

use super::body::ResponseBody;
use super::forward;
use http::{header, HeaderValue, Response, Version};

/// Why the proxy answers a request itself; `into_response` turns each into its answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched (404).
    #[error("no route matches the request")]
    NoRoute,
    /// The cluster has no routable endpoint (503).
    #[error("cluster {cluster:?} has no healthy endpoint")]
    NoHealthyEndpoint {
        /// The cluster's name.
        cluster: String,
    },
    /// No connection to the endpoint (503, or 504 on a timeout).
    #[error(transparent)]
    Connect(#[from] crate::pool::ConnectError),
    /// The upstream connection broke before a response (502).
    #[error("upstream closed or reset the connection: {0}")]
    UpstreamReset(#[source] hyper::Error),
    /// The upstream's answer was not valid HTTP (502).
    #[error("upstream sent an invalid response: {0}")]
    UpstreamProtocol(#[source] hyper::Error),
    /// The route timeout passed (504).
    #[error("no response within the route timeout")]
    Timeout,
    /// The client's request body failed (400).
    #[error("the request body could not be read from the client: {0}")]
    DownstreamBody(#[source] super::body::BoxError),
    /// The request's framing is ambiguous (400, connection closed).
    #[error("ambiguous request framing (Content-Length with Transfer-Encoding)")]
    AmbiguousFraming,
    /// The request's listener was removed by a reload (503).
    #[error("the listener was removed")]
    ListenerGone,
    /// A malformed request (400), with the reason.
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    /// The last attempt's per-try timeout passed (504).
    #[error("no response within the per-try timeout")]
    PerTryTimeout,
    /// The route's rate limit is spent (429); a token comes after this wait.
    #[error("route rate limit exceeded")]
    RateLimited(std::time::Duration),
    /// The cluster's circuit breaker is full (503).
    #[error("circuit breaker: too many {}", .0.as_str())]
    Overflow(crate::circuit_breaker::Overflow),
    /// The process-wide in-flight limit, or the listener's connection limit, is reached (503).
    #[error("too many requests in flight in this process")]
    Overloaded,
    /// A CONNECT request on a route that does not allow it (405).
    #[error("CONNECT is not allowed on this route")]
    ConnectNotAllowed,
    /// An upgrade on a route that does not allow it (403).
    #[error("the route does not allow this Upgrade protocol")]
    UpgradeNotAllowed,
    /// The client certificate's identity is denied, or not allowed, by `authz` (403).
    #[error("identity {identity:?} is not authorized")]
    Forbidden {
        /// The identity checked (the certificate's first URI or DNS name; empty without one).
        identity: String,
    },
    /// The original destination is outside the original_dst cluster's allow-list (403).
    #[error("original destination {0} is not allowed")]
    DestinationNotAllowed(String),
}

impl ProxyError {
    /// Its kind: the metric label, the status and the `x-outrigger-error` value.
    pub fn kind(&self) -> ErrorKind {
        use crate::pool::ConnectError;
        match self {
            ProxyError::NoRoute => ErrorKind::NoRoute,
            ProxyError::NoHealthyEndpoint { .. } => ErrorKind::NoHealthyEndpoint,
            ProxyError::Connect(ConnectError::Timeout { .. }) => ErrorKind::ConnectTimeout,
            ProxyError::Connect(ConnectError::Overflow(_)) => ErrorKind::Overflow,
            ProxyError::Connect(ConnectError::Tls { .. }) => ErrorKind::UpstreamTls,
            ProxyError::Connect(_) => ErrorKind::ConnectFailed,
            ProxyError::UpstreamReset(_) => ErrorKind::UpstreamReset,
            ProxyError::UpstreamProtocol(_) => ErrorKind::UpstreamProtocolError,
            ProxyError::Timeout => ErrorKind::Timeout,
            ProxyError::DownstreamBody(_) => ErrorKind::DownstreamBody,
            ProxyError::AmbiguousFraming => ErrorKind::AmbiguousFraming,
            ProxyError::ListenerGone => ErrorKind::ListenerGone,
            ProxyError::BadRequest(_) => ErrorKind::BadRequest,
            ProxyError::PerTryTimeout => ErrorKind::PerTryTimeout,
            ProxyError::RateLimited(_) => ErrorKind::RateLimited,
            ProxyError::Overflow(_) => ErrorKind::Overflow,
            ProxyError::Overloaded => ErrorKind::Overloaded,
            ProxyError::ConnectNotAllowed => ErrorKind::ConnectNotAllowed,
            ProxyError::UpgradeNotAllowed => ErrorKind::UpgradeNotAllowed,
            ProxyError::Forbidden { .. } => ErrorKind::Forbidden,
            ProxyError::DestinationNotAllowed(_) => ErrorKind::DestinationNotAllowed,
        }
    }

    /// Sorts a failed upstream exchange by whose fault it was.
    pub fn from_upstream(e: hyper::Error) -> ProxyError {
        if e.is_user() {
            // hyper reports a failing request body as a user error: the downstream's body.
            ProxyError::DownstreamBody(Box::new(e))
        } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            ProxyError::UpstreamProtocol(e)
        } else {
            ProxyError::UpstreamReset(e)
        }
    }

    /// The one place an error becomes the client's answer. The body is a fixed phrase:
    /// details (addresses, OS errors) go to logs and metrics, not to clients. A gRPC client
    /// gets 200 with `grpc-status` and `grpc-message` instead (gRPC clients read those, not
    /// the HTTP status).
    pub fn into_response(self, version: Version, grpc: bool) -> Response<ResponseBody> {
        let e = &self;
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
            | ProxyError::Connect(crate::pool::ConnectError::Overflow(_)) => {
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
        if grpc {
            *resp.status_mut() = http::StatusCode::OK;
            super::grpc::error_headers(resp.headers_mut(), kind.grpc_status(), text);
            *resp.body_mut() = ResponseBody::empty();
        }
        resp
    }

    /// `into_response`'s answer as HTTP/1.1 bytes that close the connection, for a refusal
    /// made before any HTTP connection exists (the listener's `max_connections`).
    pub fn into_closing_bytes(self) -> Vec<u8> {
        let text = error_text(self.kind());
        let resp = self.into_response(Version::HTTP_11, false);
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            resp.status().as_str(),
            resp.status().canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in resp.headers() {
            if name != header::CONNECTION {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(
            format!(
                "content-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            )
            .as_bytes(),
        );
        out
    }

    /// Whether the client's connection must be closed after this answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::AmbiguousFraming | ProxyError::DownstreamBody(_)
        )
    }
}

/// The fixed phrase of a proxy-made answer.
pub fn error_text(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NoRoute => "no route matched the request\n",
        ErrorKind::NoHealthyEndpoint => "no healthy upstream\n",
        ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout => "upstream connect error\n",
        ErrorKind::UpstreamReset => "upstream reset before response\n",
        ErrorKind::UpstreamProtocolError => "invalid response from upstream\n",
        ErrorKind::Timeout => "upstream request timeout\n",
        ErrorKind::DownstreamBody => "bad request body\n",
        ErrorKind::AmbiguousFraming => "ambiguous request framing\n",
        ErrorKind::ListenerGone => "listener removed\n",
        ErrorKind::BadRequest => "bad request\n",
        ErrorKind::PerTryTimeout => "upstream per-try timeout\n",
        ErrorKind::RateLimited => "rate limited\n",
        ErrorKind::Overflow => "upstream overflow (circuit breaker)\n",
        ErrorKind::Overloaded => "overloaded\n",
        ErrorKind::UpstreamTls => "upstream TLS handshake failed\n",
        ErrorKind::ConnectNotAllowed => "CONNECT is not allowed here\n",
        ErrorKind::UpgradeNotAllowed => "upgrade not allowed\n",
        ErrorKind::Forbidden => "forbidden\n",
        ErrorKind::DestinationNotAllowed => "destination not allowed\n",
    }
}
