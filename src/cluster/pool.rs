//! Upstream connections: connect with a timeout; per endpoint, a LIFO stack of idle HTTP/1.1
//! connections and a short list of shared HTTP/2 connections. No key hashing or extra task hop
//! per request: the endpoint already identifies the pool, and the most recently used HTTP/1.1
//! connection is the warmest. HTTP/2 requests go to the least busy connection; a new one is
//! opened only when every open one carries `http2_max_streams_per_connection` streams and
//! fewer than `http2_max_connections_per_endpoint` are open.

use crate::http_proxy::body::RequestBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub type H1Sender = http1::SendRequest<RequestBody>;

/// A connection an exchange holds until its response ends: an HTTP/1.1 connection of its own
/// (returned to the idle stack after a clean end), or a stream on a shared HTTP/2 connection.
pub enum Sender {
    H1(H1Sender),
    H2(H2Stream),
}

/// What `connect` opened.
pub enum Connected {
    H1(H1Sender),
    H2(http2::SendRequest<RequestBody>),
}

/// A shared HTTP/2 connection and the streams open on it.
pub struct H2Conn {
    sender: http2::SendRequest<RequestBody>,
    streams: AtomicUsize,
}

/// One stream's hold on an HTTP/2 connection; counted until dropped.
pub struct H2Stream(Arc<H2Conn>);

impl H2Stream {
    fn new(conn: &Arc<H2Conn>) -> H2Stream {
        conn.streams.fetch_add(1, Ordering::Relaxed);
        H2Stream(conn.clone())
    }

    /// A handle to send one request on (HTTP/2 senders are cheap clones).
    pub fn sender(&self) -> http2::SendRequest<RequestBody> {
        self.0.sender.clone()
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the next HTTP/2 request of an endpoint goes.
pub enum H2Pick {
    Stream(H2Stream),
    /// Open another connection (the caller holds `h2_connecting` while it does).
    Connect,
}

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
    #[error("HTTP handshake with {endpoint} failed: {source}")]
    Handshake {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

struct Idle {
    sender: H1Sender,
    since: Instant,
}

pub struct EndpointPool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The endpoint left its cluster: connections coming back from in-flight requests close.
    closed: AtomicBool,
    h2: Mutex<Vec<Arc<H2Conn>>>,
    /// Held while an HTTP/2 connection is being opened, so concurrent requests wait for it
    /// instead of each opening their own.
    pub h2_connecting: tokio::sync::Mutex<()>,
    /// When the last HTTP/2 connection attempt failed.
    h2_failed_at: Mutex<Option<std::time::Instant>>,
}

impl EndpointPool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> EndpointPool {
        EndpointPool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            closed: AtomicBool::new(false),
            h2: Mutex::new(Vec::new()),
            h2_connecting: tokio::sync::Mutex::new(()),
            h2_failed_at: Mutex::new(None),
        }
    }

    /// Closes every idle connection and refuses returned ones from now on (the endpoint was
    /// removed; requests still in flight on it finish first).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        // Open streams keep their connection until they end; then it closes.
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The least busy open HTTP/2 connection, unless all are at `max_streams` and another may
    /// be opened.
    pub fn h2_pick(&self, max_streams: usize, max_conns: usize) -> H2Pick {
        let mut conns = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.sender.is_closed());
        let best = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed));
        match best {
            Some(c)
                if c.streams.load(Ordering::Relaxed) < max_streams || conns.len() >= max_conns =>
            {
                H2Pick::Stream(H2Stream::new(c))
            }
            _ => H2Pick::Connect,
        }
    }

    /// Shares a newly opened HTTP/2 connection and takes its first stream.
    pub fn h2_add(&self, sender: http2::SendRequest<RequestBody>) -> H2Stream {
        let conn = Arc::new(H2Conn {
            sender,
            streams: AtomicUsize::new(0),
        });
        let stream = H2Stream::new(&conn);
        if !self.closed.load(Ordering::Relaxed) {
            self.h2.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
        stream
    }

    /// Notes a failed HTTP/2 connection attempt (requests that waited for it fail too).
    pub fn h2_connect_failed(&self) {
        *self.h2_failed_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now());
    }

    /// Whether an HTTP/2 connection attempt failed after `since`.
    pub fn h2_failed_since(&self, since: std::time::Instant) -> bool {
        self.h2_failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t >= since)
    }

    /// Open HTTP/2 connections (for /clusters).
    pub fn h2_len(&self) -> usize {
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The most recently returned live connection, if any. Connections idle past the timeout
    /// are dropped (which closes them); since the stack is LIFO, everything below an expired
    /// entry is older still.
    pub fn take(&self) -> Option<H1Sender> {
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
    pub fn put(&self, sender: H1Sender) {
        if sender.is_closed() || self.max_idle == 0 || self.closed.load(Ordering::Relaxed) {
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
fn spawn_driver<F, E>(
    conn: F,
    endpoint: SocketAddr,
    active: IntGauge,
    slot: super::circuit_breaker::Slot,
) where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
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

/// The protocol to speak on a new connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Http1,
    /// Prior knowledge in cleartext; ALPN `h2` over TLS.
    Http2,
    /// Over TLS, whatever ALPN settles (h2 preferred); HTTP/1.1 in cleartext.
    Auto,
}

/// Opens a new connection (over TLS when the cluster originates it) and speaks `protocol` on
/// it; its driver task keeps `active` counted while it lives. `upgrades` lets an HTTP/1.1
/// connection be taken over after a 101 (WebSocket).
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
    protocol: Protocol,
) -> Result<Connected, ConnectError> {
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
    match tls {
        None => {
            handshake(
                TokioIo::new(stream),
                protocol == Protocol::Http2,
                endpoint,
                active,
                failures,
                slot,
            )
            .await
        }
        Some((connector, name)) => {
            let stream = connector.connect(name, stream).await.map_err(|source| {
                failures.inc();
                ConnectError::Tls { endpoint, source }
            })?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            handshake(TokioIo::new(stream), h2, endpoint, active, failures, slot).await
        }
    }
}

async fn handshake<T>(
    io: T,
    h2: bool,
    endpoint: SocketAddr,
    active: IntGauge,
    failures: &IntCounter,
    slot: super::circuit_breaker::Slot,
) -> Result<Connected, ConnectError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handshake_failed = |source| {
        failures.inc();
        ConnectError::Handshake { endpoint, source }
    };
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Detects a dead peer on an otherwise idle shared connection.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        spawn_driver(conn, endpoint, active, slot);
        Ok(Connected::H2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        // With upgrades, a 101 hands the connection over (WebSocket) instead of ending it.
        spawn_driver(conn.with_upgrades(), endpoint, active, slot);
        Ok(Connected::H1(sender))
    }
}
