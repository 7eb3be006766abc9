//! Listeners: bind, accept under the `max_connections` limit, and serve each connection
//! (HTTP/1.1 and HTTP/2 on one port via hyper-util's auto builder) until it ends, idles out,
//! or the process drains. Per-connection state lives in `ConnTracker`.

mod framing;

use crate::config::{ListenerConfig, ListenerProtocol};
use crate::http_proxy::{self, Downstream};
use crate::runtime::Runtime;
use crate::tls::server::TlsServer;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listeners[{index}] ({name}): cannot bind {address}: {source}")]
    Bind {
        index: usize,
        name: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A bound listening socket with the settings it serves connections with. The socket is
/// shared so that a reload can hand it from one accept loop to the next without closing it.
#[derive(Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub local_addr: SocketAddr,
    pub(crate) socket: Arc<TcpListener>,
    pub config: ListenerConfig,
    /// TLS termination, when `tls` is configured; rotation keeps it current.
    pub(crate) tls: Option<Arc<TlsServer>>,
}

/// Builds a listener's TLS state (its files are read now: errors name key and file).
pub fn build_tls(
    index: usize,
    cfg: &ListenerConfig,
    base: &Path,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Option<Arc<TlsServer>>, crate::tls::TlsError> {
    let Some(tls) = &cfg.tls else { return Ok(None) };
    let alpn: &[&str] = match cfg.protocol {
        ListenerProtocol::Http => &["h2", "http/1.1"],
        ListenerProtocol::Tcp => &[],
    };
    TlsServer::build(
        &cfg.name,
        &format!("listeners[{index}].tls"),
        tls,
        base,
        alpn,
        metrics,
    )
    .map(Some)
}

impl Listener {
    pub async fn bind(
        index: usize,
        cfg: &ListenerConfig,
        tls: Option<Arc<TlsServer>>,
    ) -> Result<Listener, BindError> {
        let err = |source| BindError::Bind {
            index,
            name: cfg.name.clone(),
            address: cfg.address.clone(),
            source,
        };
        let socket = TcpListener::bind(&cfg.address).await.map_err(err)?;
        let local_addr = socket.local_addr().map_err(err)?;
        Ok(Listener {
            name: cfg.name.as_str().into(),
            local_addr,
            socket: Arc::new(socket),
            config: cfg.clone(),
            tls,
        })
    }

    /// The same socket under a new listener definition (a reload that kept the address).
    pub fn with_config(&self, cfg: &ListenerConfig, tls: Option<Arc<TlsServer>>) -> Listener {
        Listener {
            name: cfg.name.as_str().into(),
            local_addr: self.local_addr,
            socket: self.socket.clone(),
            config: cfg.clone(),
            tls,
        }
    }

    /// Accepts until the runtime drains or `stop` is cancelled (a reload removed or replaced
    /// this listener). Waiting for a permit before `accept` leaves excess connections in the
    /// kernel's backlog rather than taking them and starving them. A stopped listener's
    /// connections close once idle and are cut after the drain timeout.
    pub async fn run(
        self,
        runtime: Arc<Runtime>,
        stop: CancellationToken,
        close_connections: CancellationToken,
    ) {
        let limits = &self.config.limits;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let builder = Arc::new(http_builder(&self.config));
        let idle_timeout = limits.idle_timeout.get();
        let max_head = limits.max_request_headers_kb * 1024;
        let active = runtime
            .metrics
            .downstream_connections_active
            .with_label_values(&[&self.name]);
        let accepted = runtime
            .metrics
            .downstream_connections
            .with_label_values(&[&self.name]);
        let drain = runtime.shutdown.drain_token();
        tracing::info!(listener = %self.name, address = %self.local_addr, "listening");
        if let Some(tls) = &self.tls {
            tls.spawn_rotation(stop.clone());
        }
        let shed = runtime
            .metrics
            .load_shed
            .with_label_values(&[&self.name, "max_connections"]);
        let timeouts = Arc::new(["idle", "header_read"].map(|k| {
            runtime
                .metrics
                .downstream_timeouts
                .with_label_values(&[&self.name, k])
        }));
        let tcp = (self.config.protocol == ListenerProtocol::Tcp).then(|| {
            Arc::new(crate::tcp_proxy::TcpSettings {
                listener: self.name.clone(),
                idle_timeout,
                buffer: limits.buffer_kb * 1024,
                connect_attempts: self.config.connect_attempts,
                accept_proxy_protocol: self.config.accept_proxy_protocol,
                header_timeout: limits.header_read_timeout.get(),
            })
        });
        loop {
            let (stream, peer) = tokio::select! {
                _ = drain.cancelled() => break,
                _ = stop.cancelled() => break,
                r = self.socket.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning on the error.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // At the limit, refuse at once rather than queue without bound: a client (or the
            // load balancer in front) can retry elsewhere instead of waiting in the backlog.
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                shed.inc();
                tokio::spawn(refuse(stream));
                continue;
            };
            accepted.inc();
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let local = stream.local_addr().unwrap_or(self.local_addr);
            let tls = self.tls.clone();
            let handshake_timeout = limits.header_read_timeout.get();
            if let Some(settings) = &tcp {
                let (active, settings, runtime2) =
                    (active.clone(), settings.clone(), runtime.clone());
                let close = close_connections.clone();
                runtime.shutdown.track(async move {
                    active.inc();
                    match tls {
                        None => {
                            crate::tcp_proxy::serve(stream, peer, local, runtime2, settings, close)
                                .await
                        }
                        Some(tls) => {
                            if let Some(s) = tls.accept(stream, handshake_timeout).await {
                                crate::tcp_proxy::serve(s, peer, local, runtime2, settings, close)
                                    .await;
                            }
                        }
                    }
                    active.dec();
                    drop(permit);
                });
                continue;
            }
            let conn = Connection {
                down: Downstream {
                    listener: self.name.clone(),
                    runtime: runtime.clone(),
                    peer,
                    scheme: if tls.is_some() { "https" } else { "http" },
                    conn: Arc::new(ConnTracker::new()),
                    client_cert: None,
                    tls_version: None,
                },
                builder: builder.clone(),
                idle_timeout,
                max_head,
                close: close_connections.clone(),
                timeouts: timeouts.clone(),
            };
            let active = active.clone();
            runtime.shutdown.track(async move {
                active.inc();
                match tls {
                    None => conn.serve(stream).await,
                    Some(tls) => {
                        if let Some(s) = tls.accept(stream, handshake_timeout).await {
                            // The verified client certificate, for x-forwarded-client-cert.
                            let xfcc = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| Arc::<str>::from(crate::tls::certs::xfcc(c)));
                            let mut conn = conn;
                            conn.down.client_cert = xfcc;
                            conn.down.tls_version =
                                s.get_ref().1.protocol_version().map(|v| match v {
                                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                                    _ => "TLS",
                                });
                            conn.serve(s).await;
                        }
                    }
                }
                active.dec();
                drop(permit);
            });
        }
        tracing::info!(listener = %self.name, "stopped accepting");
    }
}

/// Answers a connection over the limit with a bare 503 and closes it. It first reads what the
/// client sent (briefly), so an HTTP client sees an answer to its request rather than an
/// unsolicited message.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nx-outrigger-error: overloaded\r\nx-outrigger-overflow: 1\r\n\r\n";
    // Best effort: the client may already be gone, and the socket closes either way.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
    let _ = stream.shutdown().await;
}

fn http_builder(cfg: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let limits = &cfg.limits;
    let header_bytes = limits.max_request_headers_kb * 1024;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        // hyper's read buffer bounds the request head: past it, 431.
        .max_buf_size(header_bytes.max(8192))
        .keep_alive(true);
    // hyper's h2 also bounds CONTINUATION frames by the header list size, so a flood of them
    // ends the connection instead of growing memory.
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(header_bytes.min(u32::MAX as usize) as u32)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
        // RFC 8441: WebSocket over HTTP/2 arrives as an extended CONNECT.
        .enable_connect_protocol();
    b
}

struct Connection {
    down: Downstream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    max_head: usize,
    /// Cancelled when a reload removes the listener: close like a drain.
    close: CancellationToken,
    /// idle, header_read.
    timeouts: Arc<[prometheus::IntCounter; 2]>,
}

impl Connection {
    async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let tracker = self.down.conn.clone();
        let io = TokioIo::new(framing::FramingGuard::new(
            stream,
            tracker.clone(),
            self.max_head,
        ));
        let drain = self.down.runtime.shutdown.drain_token();
        let drain_timeout = self
            .down
            .runtime
            .snapshot()
            .loaded
            .config
            .server
            .drain_timeout
            .get();
        let close = self.close;
        let down = Arc::new(self.down);
        let svc = service_fn(move |req| {
            let down = down.clone();
            async move { Ok::<_, Infallible>(http_proxy::handle(req, &down).await) }
        });
        // With upgrades: a 101 (WebSocket) or CONNECT hands the connection to a tunnel.
        let conn = self.builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let mut closing = false;
        let idle_check = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle_check);
        // Armed when closing starts: past it, in-flight work on this connection is cut.
        let cutoff = tokio::time::sleep(Duration::MAX);
        tokio::pin!(cutoff);
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        if e.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_timeout()) {
                            self.timeouts[1].inc();
                        }
                        tracing::debug!(error = %e, "downstream connection ended with an error");
                    }
                    return;
                }
                // Draining: HTTP/1.1 closes once idle (or after the in-flight response, with
                // `Connection: close`); HTTP/2 sends GOAWAY and finishes open streams.
                _ = drain.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = close.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    cutoff.as_mut().reset(Instant::now() + drain_timeout);
                }
                _ = &mut cutoff, if closing => {
                    tracing::debug!("closing a removed listener's connection at the drain timeout");
                    return;
                }
                _ = &mut idle_check, if !closing && !self.idle_timeout.is_zero() => {
                    match tracker.idle_for() {
                        Some(idle) if idle >= self.idle_timeout => {
                            self.timeouts[0].inc();
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Some(idle) => idle_check.as_mut().reset(Instant::now() + (self.idle_timeout - idle)),
                        None => idle_check.as_mut().reset(Instant::now() + self.idle_timeout),
                    }
                }
            }
        }
    }
}

/// Per-connection bookkeeping shared by the connection task, its requests and its framing
/// guard.
pub struct ConnTracker {
    active: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    epoch: Instant,
    requests: AtomicU64,
    /// Ordinal (1-based) of the first request head with ambiguous framing; `u64::MAX` if none.
    rejected_from: AtomicU64,
}

impl Default for ConnTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnTracker {
    pub fn new() -> ConnTracker {
        ConnTracker {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            requests: AtomicU64::new(0),
            rejected_from: AtomicU64::new(u64::MAX),
        }
    }

    /// Counts a request in flight until the guard drops (with the response body).
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        let ordinal = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        RequestGuard {
            tracker: self.clone(),
            ordinal,
        }
    }

    /// How long the connection has had no request in flight; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    fn reject_framing_from(&self, ordinal: u64) {
        self.rejected_from.fetch_min(ordinal, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn first_rejected(&self) -> Option<u64> {
        let v = self.rejected_from.load(Ordering::Relaxed);
        (v != u64::MAX).then_some(v)
    }
}

/// One request's hold on its connection's in-flight count.
pub struct RequestGuard {
    tracker: Arc<ConnTracker>,
    ordinal: u64,
}

impl RequestGuard {
    /// Whether this request (or one before it on the connection) had ambiguous framing.
    pub fn framing_rejected(&self) -> bool {
        self.ordinal >= self.tracker.rejected_from.load(Ordering::Relaxed)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let t = &self.tracker;
        if t.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = t.epoch.elapsed().as_millis() as u64;
            t.idle_since_ms.store(now, Ordering::Relaxed);
        }
    }
}
