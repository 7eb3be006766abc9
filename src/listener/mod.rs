//! Listeners: bind, accept under the `max_connections` limit, and serve each connection until
//! it ends, idles out, or the process drains. HTTP/1.1 and HTTP/2 share a port: the protocol is
//! read from ALPN or from the first bytes (peeked, not consumed), then hyper serves it directly.
//! An idle HTTP/1.1 connection is *parked*: hyper hands the socket back at a message boundary
//! and its buffers are freed until the client speaks again (nginx and HAProxy likewise free the
//! buffers of idle keep-alive connections); 10,000 idle connections then cost ~50 MiB, not
//! ~270. Per-connection state lives in `ConnTracker`.

mod framing;

pub use framing::shadow as framing_shadow;

use crate::config::{ListenerConfig, ListenerProtocol};
use crate::conn_tracker::ConnTracker;
use crate::http_proxy::{self, Downstream};
use crate::runtime::Runtime;
use crate::tls::server::TlsServer;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
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
        let idle_timeout = limits.idle_timeout.get();
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
        let http = Arc::new(HttpSettings {
            builders: http_builders(&self.config),
            idle_timeout,
            park_after: Some(limits.park_idle_after.get()).filter(|d| !d.is_zero()),
            max_head: limits.max_request_headers_kb * 1024,
            header_timeout: limits.header_read_timeout.get(),
            close: close_connections.clone(),
            close_timeout: limits.close_timeout.get(),
            stream_idle: Some(limits.stream_idle_timeout.get()).filter(|d| !d.is_zero()),
            timeouts: ["idle", "header_read", "stream_idle"].map(|k| {
                runtime
                    .metrics
                    .downstream_timeouts
                    .with_label_values(&[&self.name, k])
            }),
            parked: runtime
                .metrics
                .downstream_connections_parked
                .with_label_values(&[&self.name]),
        });
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
                match tcp {
                    // Not an HTTP client: no HTTP answer, just the close, at once.
                    Some(_) => drop(stream),
                    None => {
                        tokio::spawn(refuse(stream));
                    }
                }
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
                down: Arc::new(Downstream {
                    listener: self.name.clone(),
                    runtime: runtime.clone(),
                    peer,
                    scheme: if tls.is_some() { "https" } else { "http" },
                    conn: Arc::new(ConnTracker::holding(permit)),
                    client_cert: None,
                    tls_version: None,
                    forwarded_for: http_proxy::forward::forwarded_for_value(peer.ip()),
                    trusted: crate::config::units::any_contains(
                        &self.config.trusted_hops,
                        peer.ip(),
                    ),
                }),
                http: http.clone(),
            };
            let active = active.clone();
            runtime.shutdown.track(async move {
                active.inc();
                let _open = Counted::new(&OPEN);
                match tls {
                    None => conn.serve_plain(stream).await,
                    // Boxed so that plain connections' tasks are not sized for TLS state (a
                    // parked connection's task is then ~1 KiB).
                    Some(tls) => Box::pin(conn.serve_tls(stream, tls, handshake_timeout)).await,
                }
                active.dec();
            });
        }
        tracing::info!(listener = %self.name, "stopped accepting");
    }
}

/// Answers an HTTP connection over the limit with a bare 503 and closes it. It first reads what
/// the client sent (briefly), so an HTTP client sees an answer to its request rather than an
/// unsolicited message; the whole exchange is bounded (~1.2 s), so refused connections cannot
/// pile up descriptors.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nx-outrigger-error: overloaded\r\nx-outrigger-overflow: 1\r\n\r\n";
    // Best effort: the client may already be gone, and the socket closes either way.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
    let _ = stream.shutdown().await;
}

/// The three ways a connection is served: HTTP/1.1 and HTTP/2 directly when the protocol is
/// known (ALPN, or the first bytes peeked from the socket), hyper-util's sniffing builder only
/// when it is not (a split HTTP/2 preface, TLS without ALPN). Serving directly skips the
/// sniffer's per-connection buffer and lets an idle HTTP/1.1 connection be parked.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

fn http_builders(cfg: &ListenerConfig) -> Builders {
    let limits = &cfg.limits;
    let header_bytes = limits.max_request_headers_kb * 1024;
    // The same settings on hyper's builders and on hyper-util's wrappers of them.
    macro_rules! http1_settings {
        ($b:expr) => {
            // The framing guard enforces header_read_timeout (see `framing`); hyper's own
            // (30 s unless set) would also close keep-alive connections idle that long.
            $b.timer(TokioTimer::new())
                .header_read_timeout(None)
                // hyper's read buffer bounds the request head: past it, 431.
                .max_buf_size(header_bytes.max(8192))
                .keep_alive(true)
        };
    }
    macro_rules! http2_settings {
        ($b:expr) => {
            // hyper's h2 also bounds CONTINUATION frames by the header list size, so a flood of
            // them ends the connection instead of growing memory.
            $b.timer(TokioTimer::new())
                .max_header_list_size(header_bytes.min(u32::MAX as usize) as u32)
                .max_concurrent_streams(limits.http2_max_concurrent_streams)
                .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
                .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
                // RFC 8441: WebSocket over HTTP/2 arrives as an extended CONNECT.
                .enable_connect_protocol()
                // What one connection may make the proxy hold: the client's unread bytes
                // (windows) and response bytes buffered per stream for a slow reader.
                .initial_stream_window_size(limits.http2_stream_window_kb.saturating_mul(1024))
                .initial_connection_window_size(
                    limits.http2_connection_window_kb.saturating_mul(1024),
                )
                .max_send_buf_size(limits.http2_max_send_buffer_kb * 1024)
                .keep_alive_interval(
                    Some(limits.http2_keepalive_interval.get()).filter(|d| !d.is_zero()),
                )
                .keep_alive_timeout(limits.close_timeout.get())
        };
    }
    let mut auto = auto::Builder::new(TokioExecutor::new());
    http1_settings!(auto.http1());
    http2_settings!(auto.http2());
    let mut h1 = http1::Builder::new();
    http1_settings!(h1);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    http2_settings!(h2);
    Builders { h1, h2, auto }
}

/// What a client connection speaks, decided before hyper sees a byte.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    Http1,
    Http2,
    /// Not known yet: let hyper-util sniff.
    Sniff,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn protocol_of(first: &[u8]) -> Protocol {
    if first.starts_with(H2_PREFACE) {
        Protocol::Http2
    } else if H2_PREFACE.starts_with(first) {
        Protocol::Sniff
    } else {
        Protocol::Http1
    }
}

/// A client stream a parked HTTP/1.1 connection can wait on without hyper: readiness of the
/// socket underneath. (For TLS this is sound because a parked connection's last read returned
/// `Pending`, so rustls holds no plaintext the socket would not announce.)
trait Parkable {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl Parkable for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Parkable for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// How a served connection ended.
enum Ended {
    Closed,
    /// Parked: hyper let go of it (idle, at a message boundary, nothing left to write).
    Parked,
}

/// What every HTTP connection of a listener shares, built once per listener.
struct HttpSettings {
    builders: Builders,
    idle_timeout: Duration,
    /// An idle HTTP/1.1 connection is parked after this long (`None`: never).
    park_after: Option<Duration>,
    max_head: usize,
    /// A begun HTTP/1.1 request head must be complete within this (enforced by the framing
    /// guard, not hyper).
    header_timeout: Duration,
    /// Cancelled when a reload removes the listener: close like a drain.
    close: CancellationToken,
    /// A connection the proxy began to close is cut after this.
    close_timeout: Duration,
    /// A client that stops reading for this long loses the connection (HTTP/1.1).
    stream_idle: Option<Duration>,
    /// idle, header_read, stream_idle.
    timeouts: [prometheus::IntCounter; 3],
    parked: prometheus::IntGauge,
}

struct Connection {
    down: Arc<Downstream>,
    http: Arc<HttpSettings>,
}

impl Connection {
    /// Cleartext: wait for the first bytes without hyper (a connection that never speaks costs
    /// a socket and a task), peek to tell HTTP/2's preface from HTTP/1.1.
    async fn serve_plain(self, stream: TcpStream) {
        let mut first = [0u8; 24];
        let n = tokio::select! {
            r = stream.peek(&mut first) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = self.wait_idle_or_close() => return,
        };
        let protocol = protocol_of(&first[..n]);
        self.serve(stream, protocol).await
    }

    async fn serve_tls(mut self, stream: TcpStream, tls: Arc<TlsServer>, handshake: Duration) {
        let Some(stream) = tls.accept(stream, handshake).await else {
            return;
        };
        let session = stream.get_ref().1;
        if let Some(down) = Arc::get_mut(&mut self.down) {
            // The verified client certificate, for x-forwarded-client-cert.
            down.client_cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::<str>::from(crate::tls::certs::xfcc(c)));
            down.tls_version = session.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                _ => "TLS",
            });
        }
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            Some(_) => Protocol::Http1,
            None => Protocol::Sniff,
        };
        self.serve(stream, protocol).await
    }

    async fn serve<S>(self, stream: S, protocol: Protocol)
    where
        S: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static,
    {
        let http = &self.http;
        let tracker = self.down.conn.clone();
        let down = self.down.clone();
        let service = move || {
            service_fn(move |req| {
                let down = down.clone();
                async move { Ok::<_, Infallible>(http_proxy::handle(req, &down).await) }
            })
        };
        let guarded = |stream| {
            TokioIo::new(
                framing::FramingGuard::new(stream, tracker.clone(), http.max_head)
                    .with_header_timeout(http.header_timeout, http.timeouts[1].clone()),
            )
        };
        match protocol {
            Protocol::Http2 => {
                // hyper spawns a task per HTTP/2 stream and moves the request future into it;
                // boxed, that move copies a pointer instead of ~1.5 KiB (callgrind, h2c:
                // 62,363 -> 60,158 instructions per request; HTTP/1.1 keeps the future inline,
                // where boxing costs more than it saves).
                let down = self.down.clone();
                let svc = service_fn(move |req| {
                    let down = down.clone();
                    async move { Ok::<_, Infallible>(Box::pin(http_proxy::handle(req, &down)).await) }
                });
                let mut conn =
                    Box::pin(http.builders.h2.serve_connection(TokioIo::new(stream), svc));
                Box::pin(self.drive(conn.as_mut(), |c| c.graceful_shutdown(), false)).await;
            }
            Protocol::Sniff => {
                let conn = http
                    .builders
                    .auto
                    .serve_connection_with_upgrades(guarded(stream), service());
                let mut conn = Box::pin(conn);
                Box::pin(self.drive(conn.as_mut(), |c| c.graceful_shutdown(), false)).await;
            }
            Protocol::Http1 => {
                let (mut io, mut svc) = (guarded(stream), service());
                loop {
                    // Boxed (with `drive`), and in a block so that the box is freed before the
                    // park: a parked connection's task holds only the socket.
                    let parts = {
                        let mut conn =
                            Box::new(http.builders.h1.serve_connection(io, svc).with_upgrades());
                        let parkable = http.park_after.is_some();
                        let ended = Box::pin(self.drive(
                            Pin::new(&mut *conn),
                            |c| c.graceful_shutdown(),
                            parkable,
                        ))
                        .await;
                        if matches!(ended, Ended::Closed) {
                            return;
                        }
                        (*conn).into_parts()
                    };
                    // `None`: upgraded, the tunnel owns the socket now.
                    let Some(parts) = parts else {
                        return;
                    };
                    // At a message boundary hyper has consumed all it read; bytes left would be
                    // an unread request body, and serving on from there would misframe.
                    if !parts.read_buf.is_empty() {
                        return;
                    }
                    // Even empty, the read buffer holds hyper's 8 KiB allocation: let it go.
                    drop(parts.read_buf);
                    tracker.parking.store(false, Ordering::Relaxed);
                    (io, svc) = (parts.io, parts.service);
                    let readable =
                        std::future::poll_fn(|cx| io.inner().get_ref().poll_read_ready(cx));
                    http.parked.inc();
                    let woke = tokio::select! {
                        r = readable => r.is_ok(),
                        _ = self.wait_idle_or_close() => false,
                    };
                    http.parked.dec();
                    if !woke {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::io::AsyncWriteExt::shutdown(io.inner_mut().get_mut()),
                        )
                        .await;
                        return;
                    }
                }
            }
        }
    }

    /// Waits, for a connection hyper is not serving, until it idles out, the process drains or
    /// the listener is removed (the caller selects this against the socket).
    async fn wait_idle_or_close(&self) {
        let (http, drain) = (&self.http, self.down.runtime.shutdown.drain_token());
        loop {
            let remaining = match self.down.conn.idle_for() {
                _ if http.idle_timeout.is_zero() => Duration::MAX,
                Some(idle) => http.idle_timeout.saturating_sub(idle),
                None => http.idle_timeout,
            };
            if remaining.is_zero() {
                http.timeouts[0].inc();
                return;
            }
            tokio::select! {
                _ = drain.cancelled() => return,
                _ = http.close.cancelled() => return,
                _ = tokio::time::sleep(remaining) => {}
            }
        }
    }

    /// Polls a hyper connection to its end, closing it gracefully on drain, listener removal
    /// and idle timeout, and parking it (when `parkable`) once it has idled `park_after`.
    async fn drive<C, E>(
        &self,
        mut conn: Pin<&mut C>,
        shutdown: impl Fn(Pin<&mut C>),
        parkable: bool,
    ) -> Ended
    where
        C: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _holds = Counted::new(&HOLDING_BUFFERS);
        let http = &self.http;
        let tracker = &self.down.conn;
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
        let park_after = http.park_after.filter(|_| parkable);
        let mut closing = false;
        let first_check = match park_after {
            Some(p) if http.idle_timeout.is_zero() || p < http.idle_timeout => p,
            _ => http.idle_timeout,
        };
        let idle_check = tokio::time::sleep(first_check);
        tokio::pin!(idle_check);
        // Armed when closing starts: past it, in-flight work on this connection is cut.
        let cutoff = tokio::time::sleep(Duration::MAX);
        tokio::pin!(cutoff);
        loop {
            // The connection is polled on every wake-up; the timers and tokens only when one
            // of them woke the task (see `Gated`): polling all four on each wake-up cost ~350
            // instructions per HTTP/1.1 request (callgrind).
            let event = {
                let side = Gated::new(async {
                    tokio::select! {
                        biased;
                        _ = drain.cancelled(), if !closing => Side::Drain,
                        _ = http.close.cancelled(), if !closing => Side::Removed,
                        _ = &mut cutoff, if closing => Side::Cutoff,
                        _ = &mut idle_check, if !closing && !first_check.is_zero() => Side::IdleCheck,
                    }
                });
                tokio::pin!(side);
                tokio::select! {
                    biased;
                    res = conn.as_mut() => Ok(res),
                    side = side => Err(side),
                }
            };
            match event {
                Ok(res) => {
                    if let Err(e) = res {
                        let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                        tracing::debug!(error = %e, "downstream connection ended with an error");
                        return Ended::Closed;
                    }
                    return if tracker.parking.load(Ordering::Relaxed) {
                        Ended::Parked
                    } else {
                        Ended::Closed
                    };
                }
                // Draining: HTTP/1.1 closes once idle (or after the in-flight response, with
                // `Connection: close`); HTTP/2 sends GOAWAY and finishes open streams.
                Err(Side::Drain) => {
                    shutdown(conn.as_mut());
                    closing = true;
                    cutoff.as_mut().reset(Instant::now() + drain_timeout);
                }
                Err(Side::Removed) => {
                    shutdown(conn.as_mut());
                    closing = true;
                    cutoff.as_mut().reset(Instant::now() + drain_timeout);
                }
                Err(Side::Cutoff) => {
                    tracing::debug!("closing a removed listener's connection at the drain timeout");
                    return Ended::Closed;
                }
                Err(Side::IdleCheck) => {
                    let idle = tracker.idle_for();
                    let timeout = (!http.idle_timeout.is_zero()).then_some(http.idle_timeout);
                    match idle {
                        Some(idle) if timeout.is_some_and(|t| idle >= t) => {
                            http.timeouts[0].inc();
                            shutdown(conn.as_mut());
                            closing = true;
                            // HTTP/2's graceful close waits for the client to answer a PING;
                            // one that never does is cut.
                            cutoff.as_mut().reset(Instant::now() + http.close_timeout);
                        }
                        Some(idle)
                            if park_after.is_some_and(|p| idle >= p) && tracker.parkable() =>
                        {
                            // hyper closes an idle connection at once; the framing guard keeps
                            // the socket open through the shutdown hyper then asks for. (A drain
                            // or removal arriving meanwhile finds the parked connection and
                            // closes it there.)
                            tracker.parking.store(true, Ordering::Relaxed);
                            shutdown(conn.as_mut());
                            closing = true;
                        }
                        None if http
                            .stream_idle
                            .zip(tracker.blocked_for())
                            .is_some_and(|(limit, blocked)| blocked >= limit) =>
                        {
                            // A client that stopped reading: nothing it is owed can reach it,
                            // and dropping the connection frees its upstream side too.
                            http.timeouts[2].inc();
                            tracing::debug!("closing a connection whose client stopped reading");
                            return Ended::Closed;
                        }
                        _ => {
                            let mut next = match (idle, http.stream_idle) {
                                (None, Some(limit)) => limit
                                    .saturating_sub(tracker.blocked_for().unwrap_or_default())
                                    .max(Duration::from_millis(10)),
                                _ => Duration::MAX,
                            };
                            let idle = idle.unwrap_or_default();
                            next = next.min(timeout.map_or(Duration::MAX, |t| t - idle));
                            if let Some(p) = park_after {
                                // Not parkable yet (a response still being written): look again.
                                next = next.min(
                                    p.saturating_sub(idle)
                                        .max(p / 4)
                                        .max(Duration::from_millis(10)),
                                );
                            }
                            let at = Instant::now().checked_add(next);
                            idle_check.as_mut().reset(at.unwrap_or_else(far_future));
                        }
                    }
                }
            }
        }
    }
}

/// What ends a connection's wait besides the connection itself.
enum Side {
    Drain,
    Removed,
    Cutoff,
    IdleCheck,
}

/// A future polled only after it woke its task (and once at first): for futures that sit
/// beside a busy one in a `select!`, which would otherwise poll them on each of its wake-ups.
struct Gated<F> {
    /// Boxed (once per side event, which is rare) so that `Gated` is `Unpin`.
    fut: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: std::task::Waker,
}

struct Flag {
    woken: AtomicBool,
    task: crate::wake::TaskWaker,
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> Gated<F> {
    fn new(fut: F) -> Gated<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: crate::wake::TaskWaker::new(),
        });
        Gated {
            fut: Box::pin(fut),
            waker: std::task::Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.flag.task.register(cx.waker());
        // The waker is stored before the flag is read, so a wake-up in between is not lost.
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// Client connections open, and those hyper is serving (so holding ~16 KiB or more of
/// buffers; parked ones are not). The memory trimmer reads them to learn when a burst is over.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static HOLDING_BUFFERS: AtomicUsize = AtomicUsize::new(0);

/// (open client connections, those of them holding hyper's buffers).
pub fn client_connections() -> (usize, usize) {
    (
        OPEN.load(Ordering::Relaxed),
        HOLDING_BUFFERS.load(Ordering::Relaxed),
    )
}

/// Counts a connection in one of those while alive.
struct Counted(&'static AtomicUsize);

impl Counted {
    fn new(counter: &'static AtomicUsize) -> Counted {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What `sleep(Duration::MAX)` uses: a deadline that never comes, without overflowing.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}
