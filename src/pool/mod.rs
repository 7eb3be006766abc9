//! Upstream connections: connect with a timeout; per endpoint, a LIFO stack of idle HTTP/1.1
//! connections and a short list of shared HTTP/2 connections. No key hashing or extra task hop
//! per request: the endpoint already identifies the pool, and the most recently used HTTP/1.1
//! connection is the warmest. HTTP/2 requests go to the least busy connection; a new one is
//! opened only when every open one carries `http2_max_streams_per_connection` streams and
//! fewer than `http2_max_connections_per_endpoint` are open.
//!
//! An HTTP/1.1 connection carries one exchange at a time, so it has no task of its own: the
//! request that holds it drives its I/O (`H1Conn::drive`) while it sends and while its response
//! body streams. That saves two task wake-ups and hyper's dispatch channel hop per request
//! (figures in docs/performance.md). An HTTP/2 connection is
//! shared by concurrent streams and keeps its own driver task.

pub mod body;

use crate::pool::body::RequestBody;
use crate::wake::{quiet, TaskWaker};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub type H1Sender = http1::SendRequest<RequestBody>;

type ConnFuture = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A pooled HTTP/1.1 connection: hyper's request handle and its connection state machine,
/// which whoever holds the connection polls (see the module comment).
pub struct H1Conn {
    sender: H1Sender,
    /// `None` once the connection has ended (dropping hyper's state fails a pending exchange).
    conn: Option<ConnFuture>,
    relay: Arc<Relay>,
    /// `relay` as a waker, made once per connection.
    relay_waker: Waker,
    /// Whether the last request carried a body.
    body_sent: bool,
    endpoint: SocketAddr,
    _open: Open,
}

/// The waker hyper's connection state is polled with: it passes each wake-up on to the task
/// that holds the connection now, except those that task causes itself, on its own thread,
/// while it queues its request or takes the response body (`hush`). Each of those wakes
/// hyper's side, which the task drives next anyway; passed on, they would schedule the whole
/// downstream connection again for nothing. Callgrind counted 2.00 polls of the downstream
/// connection per request with this, up to 2.82 without.
#[derive(Default)]
struct Relay {
    task: TaskWaker,
}

thread_local! {
    /// The relay whose wake-ups are dropped on this thread right now.
    static HUSHED: Cell<*const Relay> = const { Cell::new(std::ptr::null()) };
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if HUSHED.with(Cell::get) == Arc::as_ptr(self) {
            return;
        }
        self.task.wake();
    }
}

/// Runs `f` with `relay`'s wake-ups on this thread dropped; a wake-up from the I/O driver on
/// another worker thread still gets through.
fn hush<R>(relay: &Relay, f: impl FnOnce() -> R) -> R {
    /// Restores the previous value even if `f` unwinds: a stale pointer could match a later
    /// relay at the same address and drop wake-ups it needs.
    struct Restore(*const Relay);
    impl Drop for Restore {
        fn drop(&mut self) {
            HUSHED.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HUSHED.with(|h| h.replace(relay)));
    f()
}

impl H1Conn {
    fn new(sender: H1Sender, conn: ConnFuture, endpoint: SocketAddr, open: Open) -> H1Conn {
        let relay = Arc::new(Relay::default());
        H1Conn {
            sender,
            conn: Some(conn),
            relay_waker: Waker::from(relay.clone()),
            relay,
            body_sent: false,
            endpoint,
            _open: open,
        }
    }

    /// Runs `f` (which takes from the response body) with this connection's self-inflicted
    /// wake-ups dropped; see `Relay`.
    pub fn hush<R>(&self, f: impl FnOnce() -> R) -> R {
        hush(&self.relay, f)
    }

    /// Whether hyper's side of the connection is still there and open.
    fn is_open(&self) -> bool {
        self.conn.is_some() && !self.sender.is_closed()
    }

    /// Moves the connection's I/O forward (reads the response, writes the request and its
    /// body); false once it has ended. Registers `cx` for the socket's readiness.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        self.relay.task.register(cx.waker());
        match conn
            .as_mut()
            .poll(&mut Context::from_waker(&self.relay_waker))
        {
            Poll::Pending => true,
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!(endpoint = %self.endpoint, error = %e, "upstream connection ended with an error");
                }
                self.conn = None;
                false
            }
        }
    }

    /// Sends `req` and drives the connection until the response head arrives. A request the
    /// connection could not start writing (it closed meanwhile) comes back in the error.
    pub async fn send(
        &mut self,
        req: hyper::Request<RequestBody>,
    ) -> Result<
        hyper::Response<hyper::body::Incoming>,
        hyper::client::conn::TrySendError<hyper::Request<RequestBody>>,
    > {
        self.body_sent = !http_body::Body::is_end_stream(req.body());
        // Queuing the request wakes hyper's side of the connection, which is driven right
        // below in this task anyway.
        let sender = &mut self.sender;
        let sent = hush(&self.relay, || sender.try_send_request(req));
        let mut sent = std::pin::pin!(sent);
        std::future::poll_fn(|cx| {
            // Only the connection moves the response future forward, so the connection is
            // polled first and the response future right after it, with a waker that does
            // nothing: its wake-up would only schedule this task again for work this very poll
            // has done.
            let alive = self.drive(cx);
            match sent.as_mut().poll(&mut quiet()) {
                Poll::Pending if !alive => {
                    // hyper's state is gone and has failed the exchange; look again at once.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                other => other,
            }
        })
        .await
    }
}

/// Keeps an open connection counted in `outrigger_upstream_connections_active` and in the
/// circuit breaker's connection limit until it closes.
struct Open {
    active: IntGauge,
    _slot: crate::circuit_breaker::Slot,
}

impl Open {
    fn new(active: IntGauge, slot: crate::circuit_breaker::Slot) -> Open {
        active.inc();
        Open {
            active,
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// A connection an exchange holds until its response ends: an HTTP/1.1 connection of its own
/// (returned to the idle stack after a clean end), one that may switch protocols (never
/// pooled), or a stream on a shared HTTP/2 connection.
pub enum Sender {
    /// Boxed once per connection: responses and their bodies move through several layers
    /// per request, and a pointer moves for less than the connection's ~100 bytes.
    H1(Box<H1Conn>),
    /// Held, never read again: dropping it lets the connection's driver finish.
    Upgradable(#[allow(dead_code)] H1Sender),
    /// Held, never read again: dropping it gives the stream back to its connection.
    H2(#[allow(dead_code)] H2Stream),
}

/// What `connect` opened.
pub enum Connected {
    H1(Box<H1Conn>),
    /// HTTP/1.1 with its own driver task, which hands the socket over after a 101.
    Upgradable(H1Sender),
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
    Overflow(crate::circuit_breaker::Overflow),
    #[error("HTTP handshake with {endpoint} failed: {source}")]
    Handshake {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

struct Idle {
    conn: Box<H1Conn>,
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

    /// The most recently returned connection that is still open, if any. Connections idle
    /// past the timeout are dropped (which closes them); since the stack is LIFO, everything
    /// below an expired entry is older still. A connection the upstream closed while it sat
    /// here is found out when the request is sent: hyper hands the request back unsent.
    pub fn take(&self) -> Option<Box<H1Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() >= self.idle_timeout {
                idle.clear();
                return None;
            }
            if entry.conn.is_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub fn put(&self, mut conn: Box<H1Conn>) {
        // A request body may still be on its way up after the response ended (an early
        // answer): such a connection is not idle and must not take an idle slot (hyper would
        // hand the next request back unsent). Requests without a body are all written before
        // their response could end.
        if conn.body_sent && !(conn.drive(&mut quiet()) && conn.sender.is_ready()) {
            return;
        }
        if !conn.is_open() || self.max_idle == 0 || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= self.max_idle {
            // Keep the warm end of the stack; the oldest connection goes.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes connections idle for longer than the timeout, and those the upstream closed
    /// (called periodically so an unused pool does not hold sockets forever). Idle connections
    /// have no task, so this is what reads the upstream's close; nothing waits to be woken.
    pub fn purge_expired(&self) {
        let mut cx = quiet();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.idle_timeout;
        idle.retain_mut(|e| e.since.elapsed() < timeout && e.conn.drive(&mut cx));
    }

    pub fn idle_len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Runs a connection's driver task, keeping it counted while it lives.
fn spawn_driver<F, E>(conn: F, endpoint: SocketAddr, open: Open)
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %endpoint, error = %e, "upstream connection ended with an error");
        }
        drop(open);
    });
}

/// The protocol to speak on a new connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Http1,
    /// HTTP/1.1 that may switch protocols (WebSocket): the connection gets its own task, which
    /// hands the socket to the tunnel after a 101.
    Upgrade,
    /// Prior knowledge in cleartext; ALPN `h2` over TLS.
    Http2,
    /// Over TLS, whatever ALPN settles (h2 preferred); HTTP/1.1 in cleartext.
    Auto,
}

/// Opens a new connection (over TLS when the cluster originates it) and speaks `protocol` on
/// it, counted in `active` while it lives.
pub async fn connect(
    endpoint: SocketAddr,
    timeout: Duration,
    active: &IntGauge,
    failures: &IntCounter,
    slot: crate::circuit_breaker::Slot,
    tls: Option<(
        &tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    protocol: Protocol,
) -> Result<Connected, ConnectError> {
    // One deadline for TCP, TLS and the HTTP handshake together: a peer that accepts and then
    // stalls must not hold the request (or the endpoint's HTTP/2 opener) past connect_timeout.
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || {
        failures.inc();
        ConnectError::Timeout { endpoint, timeout }
    };
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(endpoint)).await {
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
    let open = Open::new(active.clone(), slot);
    // What is spoken once HTTP/2 is settled: by prior knowledge in cleartext, by ALPN over TLS.
    let speak = |h2: bool| match protocol {
        _ if h2 => Protocol::Http2,
        Protocol::Upgrade => Protocol::Upgrade,
        _ => Protocol::Http1,
    };
    match tls {
        None => {
            let speak = speak(protocol == Protocol::Http2);
            tokio::time::timeout_at(
                deadline,
                handshake(TokioIo::new(stream), speak, endpoint, open, failures),
            )
            .await
            .map_err(|_| timed_out())?
        }
        Some((connector, name)) => {
            let stream = tokio::time::timeout_at(deadline, connector.connect(name, stream))
                .await
                .map_err(|_| timed_out())?
                .map_err(|source| {
                    failures.inc();
                    ConnectError::Tls { endpoint, source }
                })?;
            let speak = speak(stream.get_ref().1.alpn_protocol() == Some(b"h2"));
            tokio::time::timeout_at(
                deadline,
                handshake(TokioIo::new(stream), speak, endpoint, open, failures),
            )
            .await
            .map_err(|_| timed_out())?
        }
    }
}

async fn handshake<T>(
    io: T,
    speak: Protocol,
    endpoint: SocketAddr,
    open: Open,
    failures: &IntCounter,
) -> Result<Connected, ConnectError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handshake_failed = |source| {
        failures.inc();
        ConnectError::Handshake { endpoint, source }
    };
    if speak == Protocol::Http2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Detects a dead peer on an otherwise idle shared connection.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        spawn_driver(conn, endpoint, open);
        Ok(Connected::H2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        if speak == Protocol::Upgrade {
            // With upgrades, a 101 hands the connection over (WebSocket) instead of ending it.
            spawn_driver(conn.with_upgrades(), endpoint, open);
            return Ok(Connected::Upgradable(sender));
        }
        Ok(Connected::H1(Box::new(H1Conn::new(
            sender,
            Box::pin(conn),
            endpoint,
            open,
        ))))
    }
}
