//! Header work on the way through: hop-by-hop removal, `x-forwarded-*`, `x-request-id`, the
//! route's rewrite and added headers. One pass over the header map each way; nothing is rebuilt.

use crate::route::Route;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use std::net::IpAddr;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_OUTRIGGER_ERROR: HeaderName = HeaderName::from_static("x-outrigger-error");
pub static X_OUTRIGGER_UPSTREAM: HeaderName = HeaderName::from_static("x-outrigger-upstream");
pub static X_OUTRIGGER_ATTEMPT_COUNT: HeaderName =
    HeaderName::from_static("x-outrigger-attempt-count");
pub static X_OUTRIGGER_OVERFLOW: HeaderName = HeaderName::from_static("x-outrigger-overflow");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (plain comparisons, no hashing) says whether there is anything
    // to remove; most requests carry no hop-by-hop header, and then that is all the work.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(conn) = headers.get(header::CONNECTION) {
        if let Ok(list) = conn.to_str() {
            // Rare enough (clients seldom name extra headers) that the allocation is fine.
            let named: Vec<HeaderName> = list
                .split(',')
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .collect();
            for n in named {
                headers.remove(n);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for h in HOP_BY_HOP {
        if headers.contains_key(h) {
            // `TE: trailers` is the one TE value that passes: gRPC uses it to say the client
            // understands trailers (what Envoy does too).
            if *h == header::TE && headers.get(h).is_some_and(|v| v == "trailers") {
                continue;
            }
            headers.remove(h);
        }
    }
}

/// The fixed hop-by-hop headers besides `Connection` (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&HeaderName; 6] = [
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || HOP_BY_HOP.contains(&name)
}

/// Rewrites a downstream request head into the upstream one, in place.
pub fn prepare_request(
    parts: &mut http::request::Parts,
    route: &Route,
    forwarded_for: Option<&HeaderValue>,
    scheme: &'static str,
    client_cert: Option<&str>,
) -> Option<()> {
    strip_hop_by_hop(&mut parts.headers);
    // Room for what is added below, in one step rather than growing the map twice.
    parts.headers.reserve(4 + route.headers_add.len());
    // Only a certificate this proxy verified may speak for the client: an incoming value is
    // dropped so that it cannot be forged (Envoy's "sanitize").
    if parts.headers.contains_key(&X_FORWARDED_CLIENT_CERT) {
        parts.headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
    if let Some(v) = client_cert.and_then(|c| HeaderValue::from_str(c).ok()) {
        parts.headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v);
    }
    // HTTP/2 carries the host in :authority; an HTTP/1.1 upstream needs a Host header.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(auth) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
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
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    }
    if !parts.headers.contains_key(&X_REQUEST_ID) {
        parts.headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
    for (name, value) in &route.headers_add {
        parts.headers.insert(name.clone(), value.clone());
    }
    Some(())
}

/// The client address as an `x-forwarded-for` value: made once per connection, since
/// formatting an address per request cost ~1,800 instructions and an allocation (callgrind);
/// each request then takes a reference-counted clone.
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
    let value = match headers.get(&X_FORWARDED_FOR) {
        // A proxy in front already listed addresses: append ours (rare enough to allocate).
        Some(prev) => {
            match HeaderValue::from_bytes(&[prev.as_bytes(), b", ", ours.as_bytes()].concat()) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => ours.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

/// A random UUID v4, formatted without allocation beyond the header value itself.
pub fn new_request_id() -> HeaderValue {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0xf) as usize];
        o += 2;
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
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_ne!(new_request_id(), id);
    }
}
