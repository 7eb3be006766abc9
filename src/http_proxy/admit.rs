//! The admit stage: what the request's head asks for (an upgrade, a tunnel, gRPC), and the
//! checks made before routing (framing, one Host, a normalised path).

use super::error::ProxyError;
use crate::snapshot::ListenerState;
use http::{header, HeaderValue};

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

/// The host a request is addressed to, without the port.
pub(super) fn request_host(parts: &http::request::Parts) -> Option<&str> {
    let raw = match parts.headers.get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => parts.uri.host()?,
    };
    Some(strip_port(raw))
}

pub(super) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

static SEC_WEBSOCKET_KEY: http::HeaderName = http::HeaderName::from_static("sec-websocket-key");
pub(super) static SEC_WEBSOCKET_ACCEPT: http::HeaderName =
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

/// How the request asks to be carried, read from its head before routing.
pub(super) struct Shape {
    pub version: http::Version,
    pub grpc: bool,
    /// RFC 8441: WebSocket over HTTP/2 is an extended CONNECT; upstream it becomes the
    /// HTTP/1.1 handshake (GET + Upgrade), and its 101 becomes the client's 200.
    pub h2_websocket: bool,
    /// A CONNECT tunnel (not an extended CONNECT).
    pub is_connect: bool,
    /// The protocol an upgrade asks for.
    pub upgrade: Option<HeaderValue>,
    /// The downstream half of a tunnel (WebSocket after a 101, CONNECT after a 200).
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Shape {
    /// Reads the request's shape; an HTTP/2 WebSocket is rewritten into the HTTP/1.1 handshake
    /// it will be upstream.
    pub fn read(parts: &mut http::request::Parts) -> Shape {
        let grpc = super::grpc::is_grpc(&parts.headers);
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
        let on_upgrade = if upgrade.is_some() || is_connect {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        Shape {
            version: parts.version,
            grpc,
            h2_websocket,
            is_connect,
            upgrade,
            on_upgrade,
        }
    }
}

/// What is refused before routing: ambiguous framing on the connection, more than one Host,
/// and a path that does not normalise. A normalised path replaces the request's.
pub(super) fn check(
    parts: &mut http::request::Parts,
    listener: &ListenerState,
    framing_rejected: bool,
    is_connect: bool,
) -> Result<(), ProxyError> {
    if framing_rejected {
        return Err(ProxyError::AmbiguousFraming);
    }
    // RFC 9112 §3.2: more than one Host is a 400; proxies that disagree on which one counts
    // are a routing-confusion vector.
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if is_connect {
        return Ok(());
    }
    match listener.paths.apply(parts.uri.path()) {
        Ok(None) => Ok(()),
        Ok(Some(path)) => {
            set_path(&mut parts.uri, &path).ok_or(ProxyError::BadRequest("invalid path"))
        }
        Err(e) => Err(ProxyError::BadRequest(match e {
            crate::path::PathError::EscapedSlash => "encoded slash in the path",
            crate::path::PathError::BadEscape => "malformed percent-encoding",
        })),
    }
}

/// `authz` (the listener's or a route's) against the client certificate's identities; a
/// denial is counted by rule and logged.
pub(super) fn authorize(
    down: &super::Downstream,
    authz: Option<&crate::authz::Authz>,
) -> Result<(), ProxyError> {
    let Some(Err(denied)) = authz.map(|a| a.check(&down.identities)) else {
        return Ok(());
    };
    down.runtime
        .metrics
        .mesh
        .authz_denied
        .with_label_values(&[&*down.listener, denied.rule.as_str()])
        .inc();
    let identity = down.identities.first().cloned().unwrap_or_default();
    tracing::info!(listener = %down.listener, peer = %down.peer, identity = %identity, rule = %denied.rule, "request refused by authz");
    Err(ProxyError::Forbidden { identity })
}

/// For an original_dst cluster: the connection's original destination must be known and
/// inside the allow-list (403 otherwise, counted by reason).
pub(super) fn original_destination(
    down: &super::Downstream,
    cluster: &crate::cluster::Cluster,
) -> Result<(), ProxyError> {
    let Some(Err(reason)) = cluster
        .original_dst
        .as_ref()
        .map(|o| o.admits(down.original_dst))
    else {
        return Ok(());
    };
    down.runtime
        .metrics
        .mesh
        .original_dst_refused
        .with_label_values(&[&*down.listener, reason])
        .inc();
    let dst = down.original_dst.map_or("-".into(), |d| d.to_string());
    tracing::info!(listener = %down.listener, peer = %down.peer, original_dst = %dst, reason, "request refused: original destination");
    Err(ProxyError::DestinationNotAllowed(dst))
}
