//! One active health probe: a TCP connect, an HTTP/1.1 GET, or a gRPC
//! `grpc.health.v1.Health/Check` over HTTP/2, each on a fresh connection (never a pooled one,
//! so a probe tests what a new request would meet). Bounded by the check timeout.

use crate::config::{GrpcHealthCheckConfig, HttpHealthCheckConfig};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(hyper::Error),
    #[error("unexpected status {0}")]
    Status(u16),
    #[error("invalid probe request: {0}")]
    Request(http::Error),
    #[error("gRPC health: {0}")]
    Grpc(String),
}

/// The most of a gRPC health answer's body that is read.
pub const MAX_GRPC_BODY: usize = 64 * 1024;

type TlsTo = (
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
);

pub enum Probe<'a> {
    Tcp,
    Grpc {
        cfg: &'a GrpcHealthCheckConfig,
        host: &'a str,
        /// Offers `h2` by ALPN.
        tls: Option<TlsTo>,
    },
    Http {
        cfg: &'a HttpHealthCheckConfig,
        host: &'a str,
        /// For clusters that originate TLS: probe over TLS as requests do.
        tls: Option<TlsTo>,
    },
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The probe's connection, over TLS when the cluster originates it (boxed: probes are rare,
/// and one handshake path serves both).
async fn secure(stream: TcpStream, tls: Option<&TlsTo>) -> Result<Box<dyn Io>, ProbeError> {
    match tls {
        None => Ok(Box::new(stream)),
        Some((connector, name)) => Ok(Box::new(
            connector
                .connect(name.clone(), stream)
                .await
                .map_err(ProbeError::Connect)?,
        )),
    }
}

pub async fn run(probe: &Probe<'_>, addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, attempt(probe, addr))
        .await
        .unwrap_or(Err(ProbeError::Timeout(timeout)))
}

async fn attempt(probe: &Probe<'_>, addr: SocketAddr) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let (cfg, host, tls) = match probe {
        Probe::Tcp => return Ok(()),
        Probe::Grpc { cfg, host, tls } => return grpc(cfg, host, tls.as_ref(), stream).await,
        Probe::Http { cfg, host, tls } => (cfg, host, tls),
    };
    let io = secure(stream, tls.as_ref()).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(ProbeError::Http)?;
    let conn = tokio::spawn(async move { conn.await.map(|_| ()) });
    let req = http::Request::get(cfg.path.as_str())
        .header(http::header::HOST, *host)
        .header(http::header::USER_AGENT, "outrigger-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(ProbeError::Request)?;
    let resp = sender.send_request(req).await.map_err(ProbeError::Http);
    conn.abort();
    let status = resp?.status().as_u16();
    if cfg.expected_statuses.contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// grpc.health.v1.Health/Check: the request is `HealthCheckRequest { string service = 1 }`,
/// the answer `HealthCheckResponse { ServingStatus status = 1 }` with SERVING = 1. The two
/// messages are small enough to encode by hand rather than pull in protobuf code generation.
async fn grpc(
    cfg: &GrpcHealthCheckConfig,
    host: &str,
    tls: Option<&TlsTo>,
    stream: TcpStream,
) -> Result<(), ProbeError> {
    use http_body_util::{BodyExt, Full};
    let io = secure(stream, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(io),
    )
    .await
    .map_err(ProbeError::Http)?;
    let conn = tokio::spawn(async move { conn.await.map(|_| ()) });
    let service = cfg.service.as_bytes();
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service);
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let req = http::Request::post(format!("{scheme}://{host}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "outrigger-health-check")
        .body(Full::new(Bytes::from(framed)))
        .map_err(ProbeError::Request)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(ProbeError::Http)?;
        if resp.status() != http::StatusCode::OK {
            return Err(ProbeError::Status(resp.status().as_u16()));
        }
        let head_status = resp
            .headers()
            .get("grpc-status")
            .map(|v| v.as_bytes().to_vec());
        // A HealthCheckResponse is a few bytes: a larger answer is not one, and is not read.
        let collected = http_body_util::Limited::new(resp.into_body(), MAX_GRPC_BODY)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => ProbeError::Http(*e),
                Err(_) => ProbeError::Grpc(format!("response body over {MAX_GRPC_BODY} bytes")),
            })?;
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        let status = trailer_status.or(head_status);
        if status.as_deref() != Some(b"0") {
            let s = status.map(|s| String::from_utf8_lossy(&s).into_owned());
            return Err(ProbeError::Grpc(format!(
                "grpc-status {}",
                s.as_deref().unwrap_or("missing")
            )));
        }
        match serving_status(&collected.to_bytes()) {
            Some(1) => Ok(()),
            Some(other) => Err(ProbeError::Grpc(format!(
                "status {} ({other})",
                match other {
                    0 => "UNKNOWN",
                    2 => "NOT_SERVING",
                    3 => "SERVICE_UNKNOWN",
                    _ => "unrecognised",
                }
            ))),
            None => Err(ProbeError::Grpc("malformed HealthCheckResponse".into())),
        }
    }
    .await;
    conn.abort();
    result
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` field of a gRPC-framed HealthCheckResponse; absent means 0 (UNKNOWN), as
/// proto3 omits default values.
fn serving_status(body: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    let msg = body.get(5..5 + len)?;
    let mut at = 0;
    let mut status = 0;
    while at < msg.len() {
        let key = get_varint(msg, &mut at)?;
        match key & 7 {
            0 => {
                let v = get_varint(msg, &mut at)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = get_varint(msg, &mut at)? as usize;
                at = at.checked_add(n)?;
            }
            5 => at += 4,
            1 => at += 8,
            _ => return None,
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::serving_status;

    #[test]
    fn reads_serving_status() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None);
    }
}
