//! Upstream HTTP/1.1 connections: connect with a timeout, and a per-endpoint LIFO stack of
//! idle connections. No key hashing or extra task hop per request: the endpoint already
//! identifies the pool, and the most recently used connection is the warmest.

use crate::http_proxy::body::RequestBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub type Sender = http1::SendRequest<RequestBody>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {endpoint} timed out after {timeout:?}")]
    Timeout {
        endpoint: SocketAddr,
        timeout: Duration,
    },
    #[error("connect to {endpoint} failed: {source}")]
    Io {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {endpoint} failed: {source}")]
    Tls {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("circuit breaker: too many {}", .0.as_str())]
    Overflow(super::circuit_breaker::Overflow),
    #[error("HTTP/1.1 handshake with {endpoint} failed: {source}")]
    Handshake {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct EndpointPool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The endpoint left its cluster: connections coming back from in-flight requests close.
    closed: std::sync::atomic::AtomicBool,
}

impl EndpointPool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> EndpointPool {
        EndpointPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Closes every idle connection and refuses returned ones from now on (the endpoint was
    /// removed; requests still in flight on it finish first).
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The most recently returned live connection, if any. Connections idle past the timeout
    /// are dropped (which closes them); since the stack is LIFO, everything below an expired
    /// entry is older still.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() >= self.idle_timeout {
                idle.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub fn put(&self, sender: Sender) {
        if sender.is_closed()
            || self.max_idle == 0
            || self.closed.load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= self.max_idle {
            // Keep the warm end of the stack; the oldest connection goes.
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes connections idle for longer than the timeout (called periodically so an unused
    /// pool does not hold sockets forever).
    pub fn purge_expired(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.idle_timeout;
        idle.retain(|e| e.since.elapsed() < timeout && !e.sender.is_closed());
    }

    pub fn idle_len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Runs a connection's driver task, keeping `active` and the breaker slot counted while it lives.
fn spawn_driver<T>(
    conn: http1::Connection<T, RequestBody>,
    endpoint: SocketAddr,
    active: IntGauge,
    slot: super::circuit_breaker::Slot,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    active.inc();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %endpoint, error = %e, "upstream connection ended with an error");
        }
        active.dec();
        drop(slot);
    });
}

/// Opens a new HTTP/1.1 connection (over TLS when the cluster originates it); its driver task keeps `active` counted while it lives.
pub async fn connect(
    endpoint: SocketAddr,
    timeout: Duration,
    active: &IntGauge,
    failures: &IntCounter,
    slot: super::circuit_breaker::Slot,
    tls: Option<(
        &tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            failures.inc();
            return Err(ConnectError::Io { endpoint, source });
        }
        Err(_) => {
            failures.inc();
            return Err(ConnectError::Timeout { endpoint, timeout });
        }
    };
    // Small requests and responses must not wait for Nagle's algorithm.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(endpoint = %endpoint, error = %e, "cannot set TCP_NODELAY");
    }
    let active = active.clone();
    let handshake_failed = |source| {
        failures.inc();
        ConnectError::Handshake { endpoint, source }
    };
    let sender = match tls {
        None => {
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(handshake_failed)?;
            spawn_driver(conn, endpoint, active, slot);
            sender
        }
        Some((connector, name)) => {
            let stream = connector.connect(name, stream).await.map_err(|source| {
                failures.inc();
                ConnectError::Tls { endpoint, source }
            })?;
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(handshake_failed)?;
            spawn_driver(conn, endpoint, active, slot);
            sender
        }
    };
    Ok(sender)
}
