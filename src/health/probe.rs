//! One active health probe: a TCP connect, or an HTTP/1.1 GET on a fresh connection (never a
//! pooled one, so a probe tests what a new request would meet). Bounded by the check timeout.

use crate::config::HttpHealthCheckConfig;
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
}

pub enum Probe<'a> {
    Tcp,
    Http {
        cfg: &'a HttpHealthCheckConfig,
        host: &'a str,
        /// For clusters that originate TLS: probe over TLS as requests do.
        tls: Option<(
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        )>,
    },
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
    let Probe::Http { cfg, host, tls } = probe else {
        return Ok(());
    };
    let (mut sender, conn) = match tls {
        None => {
            let (s, c) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(ProbeError::Http)?;
            (s, tokio::spawn(async move { c.await.map(|_| ()) }))
        }
        Some((connector, name)) => {
            let stream = connector
                .connect(name.clone(), stream)
                .await
                .map_err(ProbeError::Connect)?;
            let (s, c) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(ProbeError::Http)?;
            (s, tokio::spawn(async move { c.await.map(|_| ()) }))
        }
    };
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
