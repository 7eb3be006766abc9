//! Protocol detection for `protocol: detect` listeners: the client's first bytes, peeked (not
//! consumed) within a deadline and at most the length of HTTP/2's preface, say whether the
//! connection is HTTP/1 (a method token and a space), HTTP/2 with prior knowledge (the
//! preface), TLS (a handshake record), or something else. A client that says nothing within
//! the timeout is taken to wait for its server (MySQL, SMTP) and relayed as TCP.

use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection turned out to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line.
    Http1,
    /// HTTP/2's connection preface.
    Http2,
    /// A TLS handshake record (a ClientHello): passed through as TCP.
    Tls,
    /// Other bytes, or an opaque port: TCP.
    Opaque,
    /// Nothing within the timeout: TCP (the server may speak first).
    Silent,
}

impl Detected {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Tls => "tls",
            Detected::Opaque => "opaque",
            Detected::Silent => "silent",
        }
    }

    /// Served as HTTP.
    pub fn is_http(self) -> bool {
        matches!(self, Detected::Http1 | Detected::Http2)
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];
/// While bytes are undecided (a preface or method still arriving), how often to look again.
const RECHECK: Duration = Duration::from_millis(2);

/// Peeks at `stream` until its first bytes decide, or `timeout` passes.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 24];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) if seen == 0 => return Detected::Silent,
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return Detected::Opaque,
            Ok(Ok(n)) => n,
        };
        if let Some(d) = classify(&buf[..n]) {
            return d;
        }
        seen = n;
        // Undecided: peek answers at once with the same bytes, so wait a moment for more.
        if Instant::now() + RECHECK >= deadline {
            return Detected::Opaque;
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// The verdict on the bytes so far; `None` while more could change it.
pub fn classify(b: &[u8]) -> Option<Detected> {
    match b {
        [] => None,
        [0x16] => None,
        [0x16, 0x03, ..] => Some(Detected::Tls),
        _ if b.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(b) => None,
        _ if b.starts_with(H2_PREFACE) => Some(Detected::Http2),
        _ => match b.iter().position(|c| *c == b' ') {
            Some(i) if METHODS.contains(&&b[..i]) => Some(Detected::Http1),
            Some(_) => Some(Detected::Opaque),
            None if METHODS.iter().any(|m| m.starts_with(b)) => None,
            None => Some(Detected::Opaque),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_decide_or_wait() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None, "a method still arriving");
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n"),
            None,
            "a preface still arriving"
        );
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02]), Some(Detected::Tls));
        assert_eq!(classify(&[0x16, 0x04]), Some(Detected::Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Detected::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Detected::Opaque));
        assert_eq!(classify(b"FOO / HTTP/1.1"), Some(Detected::Opaque));
        assert_eq!(classify(&[0, 0, 0, 1]), Some(Detected::Opaque));
    }
}
