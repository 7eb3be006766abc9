//! Everything that makes the proxy answer on its own, and the one mapping of each cause to a
//! status code, an `x-outrigger-error` value and a metric label.

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("cluster {cluster:?} has no healthy endpoint")]
    NoHealthyEndpoint { cluster: String },
    #[error(transparent)]
    Connect(#[from] crate::cluster::pool::ConnectError),
    #[error("upstream closed or reset the connection: {0}")]
    UpstreamReset(#[source] hyper::Error),
    #[error("upstream sent an invalid response: {0}")]
    UpstreamProtocol(#[source] hyper::Error),
    #[error("no response within the route timeout")]
    Timeout,
    #[error("the request body could not be read from the client: {0}")]
    DownstreamBody(#[source] super::body::BoxError),
    #[error("ambiguous request framing (Content-Length with Transfer-Encoding)")]
    AmbiguousFraming,
    #[error("the listener was removed")]
    ListenerGone,
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    #[error("no response within the per-try timeout")]
    PerTryTimeout,
    #[error("route rate limit exceeded")]
    RateLimited(std::time::Duration),
    #[error("circuit breaker: too many {}", .0.as_str())]
    Overflow(crate::cluster::circuit_breaker::Overflow),
    #[error("too many requests in flight in this process")]
    Overloaded,
    #[error("CONNECT is not allowed on this route")]
    ConnectNotAllowed,
    #[error("the route does not allow this Upgrade protocol")]
    UpgradeNotAllowed,
}

/// The causes as a closed set, so metric children can be resolved once per listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NoRoute,
    NoHealthyEndpoint,
    ConnectFailed,
    ConnectTimeout,
    UpstreamReset,
    UpstreamProtocolError,
    Timeout,
    DownstreamBody,
    AmbiguousFraming,
    ListenerGone,
    BadRequest,
    PerTryTimeout,
    RateLimited,
    Overflow,
    Overloaded,
    UpstreamTls,
    ConnectNotAllowed,
    UpgradeNotAllowed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::NoRoute,
        ErrorKind::NoHealthyEndpoint,
        ErrorKind::ConnectFailed,
        ErrorKind::ConnectTimeout,
        ErrorKind::UpstreamReset,
        ErrorKind::UpstreamProtocolError,
        ErrorKind::Timeout,
        ErrorKind::DownstreamBody,
        ErrorKind::AmbiguousFraming,
        ErrorKind::ListenerGone,
        ErrorKind::BadRequest,
        ErrorKind::PerTryTimeout,
        ErrorKind::RateLimited,
        ErrorKind::Overflow,
        ErrorKind::Overloaded,
        ErrorKind::UpstreamTls,
        ErrorKind::ConnectNotAllowed,
        ErrorKind::UpgradeNotAllowed,
    ];

    /// The `x-outrigger-error` value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoHealthyEndpoint => "no_healthy_endpoint",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::UpstreamProtocolError => "upstream_protocol_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DownstreamBody => "downstream_body",
            ErrorKind::AmbiguousFraming => "ambiguous_framing",
            ErrorKind::ListenerGone => "listener_gone",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::PerTryTimeout => "per_try_timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::UpstreamTls => "upstream_tls_error",
            ErrorKind::ConnectNotAllowed => "connect_not_allowed",
            ErrorKind::UpgradeNotAllowed => "upgrade_not_allowed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::DownstreamBody | ErrorKind::AmbiguousFraming | ErrorKind::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::NoHealthyEndpoint
            | ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::ListenerGone => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamReset
            | ErrorKind::UpstreamProtocolError
            | ErrorKind::UpstreamTls => StatusCode::BAD_GATEWAY,
            ErrorKind::Timeout | ErrorKind::PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overflow | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::UpgradeNotAllowed => StatusCode::FORBIDDEN,
        }
    }

    /// The gRPC status a gRPC client gets instead of the HTTP status (gRPC clients read
    /// `grpc-status`, not the HTTP one): timeouts are DEADLINE_EXCEEDED (4), an unknown
    /// method UNIMPLEMENTED (12), a malformed request INTERNAL (13), a rate limit
    /// RESOURCE_EXHAUSTED (8), everything upstream-side UNAVAILABLE (14), which clients retry.
    pub fn grpc_status(self) -> u8 {
        match self {
            ErrorKind::Timeout | ErrorKind::PerTryTimeout => 4,
            ErrorKind::NoRoute | ErrorKind::ConnectNotAllowed => 12,
            ErrorKind::DownstreamBody | ErrorKind::AmbiguousFraming | ErrorKind::BadRequest => 13,
            ErrorKind::RateLimited => 8,
            ErrorKind::UpgradeNotAllowed => 7,
            ErrorKind::NoHealthyEndpoint
            | ErrorKind::ConnectFailed
            | ErrorKind::ConnectTimeout
            | ErrorKind::ListenerGone
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamProtocolError
            | ErrorKind::UpstreamTls
            | ErrorKind::Overflow
            | ErrorKind::Overloaded => 14,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl ProxyError {
    pub fn kind(&self) -> ErrorKind {
        use crate::cluster::pool::ConnectError;
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

    /// Whether the client's connection must be closed after this answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::AmbiguousFraming | ProxyError::DownstreamBody(_)
        )
    }
}
