//! The closed set of reasons the proxy answers on its own: each one's status code,
//! `x-outrigger-error` value, gRPC status and metric label, so metric children can be resolved
//! once per listener and the access log can name the cause.

use http::StatusCode;

/// The causes as a closed set, so metric children can be resolved once per listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched.
    NoRoute,
    /// The cluster has no routable endpoint.
    NoHealthyEndpoint,
    /// The upstream connection was refused or failed.
    ConnectFailed,
    /// The upstream connection was not made within `connect_timeout`.
    ConnectTimeout,
    /// The upstream connection broke before a response.
    UpstreamReset,
    /// The upstream's answer was not valid HTTP.
    UpstreamProtocolError,
    /// The route timeout passed.
    Timeout,
    /// The client's request body failed.
    DownstreamBody,
    /// Ambiguous request framing (smuggling guard).
    AmbiguousFraming,
    /// The listener was removed by a reload.
    ListenerGone,
    /// A malformed request.
    BadRequest,
    /// The last per-try timeout passed.
    PerTryTimeout,
    /// The route's rate limit is spent.
    RateLimited,
    /// The cluster's circuit breaker is full.
    Overflow,
    /// The in-flight or connection limit is reached.
    Overloaded,
    /// The upstream TLS handshake failed.
    UpstreamTls,
    /// CONNECT is not allowed on the route.
    ConnectNotAllowed,
    /// The upgrade is not allowed on the route.
    UpgradeNotAllowed,
    /// The client's identity is not authorized (`authz`).
    Forbidden,
    /// A captured request's original destination is outside the `original_dst` allow-list.
    DestinationNotAllowed,
}

impl ErrorKind {
    /// Every kind, in `index` order.
    pub const ALL: [ErrorKind; 20] = [
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
        ErrorKind::Forbidden,
        ErrorKind::DestinationNotAllowed,
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
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::DestinationNotAllowed => "destination_not_allowed",
        }
    }

    /// The HTTP status a proxy-made answer of this kind has.
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
            ErrorKind::UpgradeNotAllowed
            | ErrorKind::Forbidden
            | ErrorKind::DestinationNotAllowed => StatusCode::FORBIDDEN,
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
            ErrorKind::UpgradeNotAllowed
            | ErrorKind::Forbidden
            | ErrorKind::DestinationNotAllowed => 7,
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

    /// Its position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}
