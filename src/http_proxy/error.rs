//! Everything that makes the proxy answer on its own, and the one mapping of each cause to a
//! status code, an `x-outrigger-error` value and a metric label.

pub use crate::metrics::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("cluster {cluster:?} has no healthy endpoint")]
    NoHealthyEndpoint { cluster: String },
    #[error(transparent)]
    Connect(#[from] crate::pool::ConnectError),
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
    Overflow(crate::circuit_breaker::Overflow),
    #[error("too many requests in flight in this process")]
    Overloaded,
    #[error("CONNECT is not allowed on this route")]
    ConnectNotAllowed,
    #[error("the route does not allow this Upgrade protocol")]
    UpgradeNotAllowed,
}

impl ProxyError {
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
