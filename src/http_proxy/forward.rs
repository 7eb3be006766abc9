//! Header work on the way through: hop-by-hop removal, `x-forwarded-*`, `x-request-id`, the
//! route's rewrite and added headers. One pass over the header map each way; nothing is rebuilt.

use crate::config::RequestIdMode;
use crate::route::Route;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use std::net::IpAddr;

/// The client chain, which the proxy appends to.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `http` or `https`, as the client reached the proxy.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The verified client certificate of an mTLS listener, Envoy's format.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// The request's id (kept, generated or replaced per `request_id`).
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Set on answers the proxy made itself: the cause.
pub static X_OUTRIGGER_ERROR: HeaderName = HeaderName::from_static("x-outrigger-error");
/// The endpoint that answered, when `debug_headers` is on.
pub static X_OUTRIGGER_UPSTREAM: HeaderName = HeaderName::from_static("x-outrigger-upstream");
/// How many attempts a request took, when `debug_headers` is on.
pub static X_OUTRIGGER_ATTEMPT_COUNT: HeaderName =
    HeaderName::from_static("x-outrigger-attempt-count");
/// Set on answers refused by a limit (circuit breaker, in-flight or connection limit).
pub static X_OUTRIGGER_OVERFLOW: HeaderName = HeaderName::from_static("x-outrigger-overflow");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (plain comparisons, no hashing) finds which are present; most
    // requests carry none, and most responses only `Connection: keep-alive`. Each present
    // one then costs one hashed removal, the absent ones nothing.
    let mut present = 0u8;
    for name in headers.keys() {
        // The names' lengths rule out most headers before any comparison.
        if HOP_BY_HOP_LENGTHS & (1 << name.as_str().len().min(31)) == 0 {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Tokens that are themselves hop-by-hop names or connection options (`close`,
        // `keep-alive`, `upgrade`) are handled without a lookup; any other names a header to
        // drop (no allocation unless there is one).
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let tokens = value.to_str().ok().into_iter().flat_map(|l| l.split(','));
            for token in tokens.map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("close")
                    || HOP_BY_HOP
                        .iter()
                        .any(|h| token.eq_ignore_ascii_case(h.as_str()))
                {
                    continue;
                }
                named.extend(HeaderName::from_bytes(token.as_bytes()).ok());
            }
        }
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) == 0 {
            continue;
        }
        // `TE: trailers` is the one TE value that passes: gRPC uses it to say the client
        // understands trailers (what Envoy does too).
        if *h == header::TE && headers.get(*h).is_some_and(|v| v == "trailers") {
            continue;
        }
        headers.remove(*h);
    }
}

/// The hop-by-hop headers (RFC 9110 §7.6.1); `Connection` first, as it is handled first.
const HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// The lengths of the `HOP_BY_HOP` names as a bit set (2, 7, 10, 16, 17; a test checks it).
const HOP_BY_HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17;

/// Rewrites a downstream request head into the upstream one, in place.
/// What the request path believes of the client's own forwarding headers.
#[derive(Clone, Copy, Debug)]
pub struct Trust {
    /// The peer is in the listener's `trusted_hops`: its `x-forwarded-proto` stands.
    pub peer_trusted: bool,
    /// What happens to the client's `x-request-id`.
    pub request_id: RequestIdMode,
}

/// Rewrites a request's head for the upstream: hop-by-hop headers out, forwarding headers in.
pub fn prepare_request(
    parts: &mut http::request::Parts,
    route: &Route,
    forwarded_for: Option<&HeaderValue>,
    scheme: &'static str,
    client_cert: Option<&str>,
    trust: Trust,
) -> Option<()> {
    strip_hop_by_hop(&mut parts.headers);
    // Room for what is added below, in one step rather than growing the map twice.
    parts.headers.reserve(4 + route.headers_add.len());
    // Only a certificate this proxy verified may speak for the client: an incoming value is
    // dropped so that it cannot be forged (Envoy's "sanitize").
    parts.headers.remove(&X_FORWARDED_CLIENT_CERT);
    if let Some(v) = client_cert.and_then(|c| HeaderValue::from_str(c).ok()) {
        parts.headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v);
    }
    // HTTP/2 carries the host in :authority; an HTTP/1.1 upstream needs a Host header.
    // (`entry` looks each name up once where contains_key-then-insert hashed it twice.)
    if let Entry::Vacant(host) = parts.headers.entry(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            host.insert(v);
        }
    }
    match route.rewrite_path(parts.uri.path(), parts.uri.query()) {
        Some(p) => parts.uri = Uri::from(PathAndQuery::try_from(p).ok()?),
        // Already origin-form (what HTTP/1.1 clients send): nothing to rebuild.
        None if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => {}
        None => {
            let path_and_query = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path_and_query);
        }
    }
    parts.version = http::Version::HTTP_11;

    if let Some(ours) = forwarded_for {
        append_forwarded_for(&mut parts.headers, ours);
    }
    // Only a trusted hop may say what the scheme was before it; from anyone else the value
    // would let a plain-HTTP client pass for HTTPS upstream.
    match parts.headers.entry(&X_FORWARDED_PROTO) {
        Entry::Vacant(proto) => {
            proto.insert(HeaderValue::from_static(scheme));
        }
        Entry::Occupied(mut proto) if !trust.peer_trusted => {
            proto.insert(HeaderValue::from_static(scheme));
        }
        Entry::Occupied(_) => {}
    }
    let keep_id = match trust.request_id {
        RequestIdMode::Keep => true,
        RequestIdMode::Trusted => trust.peer_trusted,
        RequestIdMode::Replace => false,
    };
    match parts.headers.entry(&X_REQUEST_ID) {
        Entry::Vacant(id) => {
            id.insert(new_request_id());
        }
        Entry::Occupied(mut id) if !keep_id => {
            id.insert(new_request_id());
        }
        Entry::Occupied(_) => {}
    }
    for (name, value) in &route.headers_add {
        parts.headers.insert(name.clone(), value.clone());
    }
    Some(())
}

/// The client address as an `x-forwarded-for` value: made once per connection, since
/// formatting an address per request costs measurably, and an allocation; each request then
/// takes a reference-counted clone.
pub fn forwarded_for_value(peer: IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    let mut ip = [0u8; 45];
    let mut cursor = std::io::Cursor::new(&mut ip[..]);
    let written = match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => write!(cursor, "{v4}"),
            None => write!(cursor, "{v6}"),
        },
        IpAddr::V4(v4) => write!(cursor, "{v4}"),
    };
    written.ok()?;
    let n = cursor.position() as usize;
    let value = HeaderValue::from_bytes(&ip[..n]).ok()?;
    // Promote the value to its shared form now, so per-request clones never allocate.
    let _ = value.clone();
    Some(value)
}

fn append_forwarded_for(headers: &mut HeaderMap, ours: &HeaderValue) {
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(v) => {
            v.insert(ours.clone());
        }
        // A proxy in front already listed addresses: append ours (rare enough to allocate).
        Entry::Occupied(mut prev) => {
            let joined = [prev.get().as_bytes(), b", ", ours.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                prev.insert(v);
            }
        }
    }
}

/// A random UUID v4, formatted without allocation beyond the header value itself.
pub fn new_request_id() -> HeaderValue {
    // Where each byte's two hex digits go in the 8-4-4-4-12 layout (a table rather than a
    // branch per byte for the dashes).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    for (byte, at) in b.iter().zip(AT) {
        out[at] = HEX[(byte >> 4) as usize];
        out[at + 1] = HEX[(byte & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are valid header bytes")
}

/// Adds a W3C `traceparent` (random trace and span ids, sampled) when the request carries no
/// trace context; existing W3C or B3 headers always pass through unchanged.
pub fn ensure_traceparent(headers: &mut HeaderMap) {
    if headers.contains_key("traceparent")
        || headers.contains_key("x-b3-traceid")
        || headers.contains_key("b3")
    {
        return;
    }
    let (trace, span): (u128, u64) = (rand::random(), rand::random());
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace:032x}-{span:016x}-01")) {
        headers.insert(HeaderName::from_static("traceparent"), v);
    }
}

/// Prepares an upstream response head for the downstream connection.
pub fn prepare_response(parts: &mut http::response::Parts) {
    strip_hop_by_hop(&mut parts.headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_goes_end_to_end_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-app", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-app"));
        // `TE: trailers` is the exception gRPC relies on.
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        // Every Connection line counts, in any case; options name nothing to drop.
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, close"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("X-One ,x-two"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert("x-three", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-three"]);
    }

    #[test]
    fn length_filter_matches_the_hop_by_hop_names() {
        let lengths = HOP_BY_HOP
            .iter()
            .fold(0u32, |m, h| m | 1 << h.as_str().len());
        assert_eq!(HOP_BY_HOP_LENGTHS, lengths);
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        for (i, c) in s.char_indices() {
            match i {
                8 | 13 | 18 | 23 => assert_eq!(c, '-', "{s}"),
                _ => assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{s}"),
            }
        }
        assert_ne!(new_request_id(), id);
    }
}
