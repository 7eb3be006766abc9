//! PROXY protocol (HAProxy's spec, v1 text and v2 binary): write a header that tells an
//! endpoint the client's address, and read one from a load balancer in front.

use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header announcing a connection from `src` to `dst`.
pub fn encode(
    version: crate::config::ProxyProtocolVersion,
    src: SocketAddr,
    dst: SocketAddr,
) -> Vec<u8> {
    use crate::config::ProxyProtocolVersion::*;
    // Mixed families cannot be expressed; map both to IPv6 then.
    let (src_ip, dst_ip) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (IpAddr::V4(a), IpAddr::V4(b)),
        (a, b) => (IpAddr::V6(to_v6(a)), IpAddr::V6(to_v6(b))),
    };
    match version {
        V1 => {
            let fam = if src_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {src_ip} {dst_ip} {} {}\r\n",
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY command
            match (src_ip, dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
            out
        }
    }
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Why a PROXY header cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed or closed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The header is malformed.
    #[error("invalid PROXY header: {0}")]
    Invalid(&'static str),
}

/// Reads a v1 or v2 header from the start of `stream`. Returns the (source, destination) it
/// announces, or `None` for v2 LOCAL / v1 UNKNOWN (health checks of the balancer in front).
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyHeaderError> {
    let mut first = [0u8; 12];
    stream.read_exact(&mut first[..5]).await?;
    if &first[..5] == b"PROXY" {
        // v1: a text line of at most 107 bytes, read byte by byte so nothing after it is taken.
        let mut line = b"PROXY".to_vec();
        loop {
            let b = stream.read_u8().await?;
            line.push(b);
            if line.ends_with(b"\r\n") {
                break;
            }
            if line.len() > 107 {
                return Err(ProxyHeaderError::Invalid("v1 line longer than 107 bytes"));
            }
        }
        let text = std::str::from_utf8(&line[..line.len() - 2])
            .map_err(|_| ProxyHeaderError::Invalid("v1 is not text"))?;
        let parts: Vec<&str> = text.split(' ').collect();
        return match parts.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Ok(None),
            ["PROXY", "TCP4" | "TCP6", src, dst, sport, dport] => {
                let ip = |s: &str| {
                    s.parse::<IpAddr>()
                        .map_err(|_| ProxyHeaderError::Invalid("v1 address"))
                };
                let port = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| ProxyHeaderError::Invalid("v1 port"))
                };
                Ok(Some((
                    SocketAddr::new(ip(src)?, port(sport)?),
                    SocketAddr::new(ip(dst)?, port(dport)?),
                )))
            }
            _ => Err(ProxyHeaderError::Invalid("v1 fields")),
        };
    }
    stream.read_exact(&mut first[5..]).await?;
    if first != V2_SIGNATURE {
        return Err(ProxyHeaderError::Invalid("neither a v1 nor a v2 signature"));
    }
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    if len > 1024 {
        return Err(ProxyHeaderError::Invalid("v2 header longer than 1 KiB"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    if head[0] >> 4 != 2 {
        return Err(ProxyHeaderError::Invalid("v2 version"));
    }
    if head[0] & 0x0f == 0 {
        return Ok(None); // LOCAL
    }
    match head[1] {
        0x11 if len >= 12 => {
            let ip = |o: usize| IpAddr::from([body[o], body[o + 1], body[o + 2], body[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Ok(Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )))
        }
        0x21 if len >= 36 => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&body[o..o + 16]);
                IpAddr::from(b)
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Ok(Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )))
        }
        _ => Ok(None), // UNSPEC or a family we do not carry: use the real peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyProtocolVersion;

    #[tokio::test]
    async fn v1_and_v2_round_trip() {
        let src: SocketAddr = "192.0.2.10:41000".parse().unwrap();
        let dst: SocketAddr = "198.51.100.7:443".parse().unwrap();
        for v in [ProxyProtocolVersion::V1, ProxyProtocolVersion::V2] {
            let mut bytes = encode(v, src, dst);
            bytes.extend_from_slice(b"payload");
            let mut r = &bytes[..];
            assert_eq!(read(&mut r).await.unwrap(), Some((src, dst)));
            assert_eq!(r, b"payload", "nothing past the header is consumed");
        }
        assert_eq!(
            encode(ProxyProtocolVersion::V1, src, dst),
            b"PROXY TCP4 192.0.2.10 198.51.100.7 41000 443\r\n"
        );
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let bytes = encode(
            ProxyProtocolVersion::V2,
            v6,
            "[2001:db8::2]:80".parse().unwrap(),
        );
        assert_eq!(bytes.len(), 16 + 36);
        assert_eq!(
            read(&mut &bytes[..]).await.unwrap(),
            Some((v6, "[2001:db8::2]:80".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        assert!(read(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).await.is_err());
        assert!(read(&mut &b"PROXY TCP4 nope\r\n"[..]).await.is_err());
    }
}
