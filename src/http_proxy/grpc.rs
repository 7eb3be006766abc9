//! What the proxy knows of gRPC: recognising a gRPC request, honouring its `grpc-timeout`,
//! answering proxy-made errors the way gRPC clients read them (HTTP 200, trailers-only, with
//! `grpc-status` and `grpc-message`), and reading the status a response ends with for
//! `outrigger_grpc_responses_total`.

use http::{HeaderMap, HeaderValue};
use std::time::Duration;

/// The gRPC status in a response's headers or trailers.
pub static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
/// The gRPC status's message.
pub static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// `content-type: application/grpc` (or `application/grpc+proto` and friends).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The client's deadline: `grpc-timeout` is up to 8 digits and a unit (H M S m u n).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` of a header or trailer block, if it has one.
pub fn status(headers: &HeaderMap) -> Option<&str> {
    headers.get(&GRPC_STATUS).and_then(|v| v.to_str().ok())
}

/// Turns a proxy-made error answer into its gRPC form, in place.
pub fn error_headers(headers: &mut HeaderMap, status: u8, message: &str) {
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from(u16::from(status)));
    // grpc-message is percent-encoded UTF-8; our phrases are plain ASCII words and spaces.
    let encoded: String = message
        .trim_end()
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '%' => c.to_string(),
            _ => format!("%{:02X}", c as u32 & 0xff),
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        headers.insert(GRPC_MESSAGE.clone(), v);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
}

pub use crate::metrics::grpc::{status_index, STATUS_LABELS};

/// The label value for a status code string (bounded: 0-16, else "unknown").
pub fn status_label(s: &str) -> &'static str {
    STATUS_LABELS[status_index(s)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("5u", Duration::from_micros(5)),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "m", "10x", "123456789S", "-1S"] {
            h.insert("grpc-timeout", HeaderValue::from_static(bad));
            assert_eq!(timeout(&h), None, "{bad}");
        }
        assert_eq!(status_label("14"), "14");
        assert_eq!(status_label("99"), "unknown");
    }
}
