//! The accept loop: a permit per connection (at the limit, a refusal at once), then one task
//! per connection, tracked by the drain.

use super::detect::Detected;
use super::serve::{http_builders, Connection, HttpSettings};
use super::{Counted, Listener, OPEN};
use crate::config::{CaptureMethod, ListenerMode, ListenerProtocol};
use crate::conn_tracker::ConnTracker;
use crate::http_proxy::{self, Downstream};
use crate::runtime::Runtime;
use crate::tcp_proxy::{TcpConn, TcpSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

impl Listener {
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
        let permits = Arc::new(Semaphore::new(self.config.limits.max_connections));
        let metrics = &runtime.metrics;
        let active = metrics
            .downstream_connections_active
            .with_label_values(&[&self.name]);
        let accepted = metrics
            .downstream_connections
            .with_label_values(&[&self.name]);
        let shed = metrics
            .load_shed
            .with_label_values(&[&self.name, "max_connections"]);
        let drain = runtime.shutdown.drain_token();
        tracing::info!(listener = %self.name, address = %self.local_addr, "listening");
        if let Some(tls) = &self.tls {
            tls.spawn_rotation(stop.clone());
        }
        let http = Arc::new(self.http_settings(&runtime, &close_connections));
        let tcp = self.tcp_settings();
        let detect = Arc::new(Detect {
            cfg: self.config.detect.clone().unwrap_or_default(),
            counters: ["http1", "http2", "tls", "opaque", "silent"].map(|p| {
                metrics
                    .mesh
                    .protocol_detected
                    .with_label_values(&[&*self.name, p])
            }),
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
            let original_dst = match self.original_dst(&stream, &runtime) {
                Ok(d) => d,
                Err(()) => continue,
            };
            let conn = Accepted {
                stream,
                peer,
                original_dst,
                active: active.clone(),
                permit,
            };
            let close = close_connections.clone();
            match (self.config.protocol, &tcp) {
                (ListenerProtocol::Detect, Some(settings)) => self.spawn_detect(
                    conn,
                    &runtime,
                    (http.clone(), settings.clone()),
                    close,
                    detect.clone(),
                ),
                (_, Some(settings)) => self.spawn_tcp(conn, &runtime, settings.clone(), close),
                (_, None) => self.spawn_http(conn, &runtime, http.clone()),
            }
        }
        tracing::info!(listener = %self.name, "stopped accepting");
    }

    fn http_settings(&self, runtime: &Runtime, close: &CancellationToken) -> HttpSettings {
        let limits = &self.config.limits;
        let metrics = &runtime.metrics;
        HttpSettings {
            builders: http_builders(&self.config),
            idle_timeout: limits.idle_timeout.get(),
            park_after: Some(limits.park_idle_after.get()).filter(|d| !d.is_zero()),
            max_head: limits.max_request_headers_kb * 1024,
            header_timeout: limits.header_read_timeout.get(),
            close: close.clone(),
            close_timeout: limits.close_timeout.get(),
            stream_idle: Some(limits.stream_idle_timeout.get()).filter(|d| !d.is_zero()),
            timeouts: ["idle", "header_read", "stream_idle"].map(|k| {
                metrics
                    .downstream_timeouts
                    .with_label_values(&[&self.name, k])
            }),
            parked: metrics
                .downstream_connections_parked
                .with_label_values(&[&self.name]),
        }
    }

    fn tcp_settings(&self) -> Option<Arc<TcpSettings>> {
        let limits = &self.config.limits;
        let protocol = self.config.protocol;
        (protocol != ListenerProtocol::Http).then(|| {
            Arc::new(TcpSettings {
                listener: self.name.clone(),
                idle_timeout: limits.idle_timeout.get(),
                buffer: limits.buffer_kb * 1024,
                connect_attempts: self.config.connect_attempts,
                // A detect listener reads the header itself, before it looks at the protocol.
                accept_proxy_protocol: self.config.accept_proxy_protocol
                    && protocol == ListenerProtocol::Tcp,
                header_timeout: limits.header_read_timeout.get(),
            })
        })
    }

    /// A transparent listener's connection's original destination. `Err` refuses it: it
    /// would go to this very listener (a loop).
    fn original_dst(
        &self,
        stream: &TcpStream,
        runtime: &Runtime,
    ) -> Result<Option<SocketAddr>, ()> {
        if self.config.mode != ListenerMode::Transparent {
            return Ok(None);
        }
        let dst = crate::capture::original_dst(stream, self.config.capture);
        // Its destination is this listener (dialled on the pod's address, or captured twice).
        // Under TPROXY the local address *is* the original destination, so only the
        // listener's own address says loop.
        let here = stream
            .local_addr()
            .ok()
            .filter(|_| self.config.capture == CaptureMethod::Redirect);
        if dst.is_some_and(|d| d == self.local_addr || Some(d) == here) {
            runtime
                .metrics
                .mesh
                .original_dst_refused
                .with_label_values(&[&*self.name, "loop"])
                .inc();
            tracing::warn!(listener = %self.name, "refusing a connection whose original destination is this listener");
            return Err(());
        }
        Ok(dst)
    }

    /// A detect listener's connection: its first bytes decide between the HTTP and TCP paths.
    fn spawn_detect(
        &self,
        conn: Accepted,
        runtime: &Arc<Runtime>,
        settings: (Arc<HttpSettings>, Arc<TcpSettings>),
        close: CancellationToken,
        detect: Arc<Detect>,
    ) {
        let (me, rt, (http, tcp)) = (self.clone(), runtime.clone(), settings);
        runtime.shutdown.track(async move {
            let mut conn = conn;
            if !me.proxy_header(&mut conn).await {
                return;
            }
            let port = conn.original_dst.unwrap_or(me.local_addr).port();
            let found = if detect.cfg.opaque_ports.contains(&port) {
                Detected::Opaque
            } else {
                super::detect::detect(&conn.stream, detect.cfg.timeout.get()).await
            };
            detect.counters[found as usize].inc();
            if found.is_http() {
                me.serve_http(conn, &rt, http).await
            } else {
                me.serve_tcp(conn, &rt, tcp, close, found == Detected::Tls)
                    .await
            }
        });
    }

    /// With `accept_proxy_protocol` on an HTTP or detect listener: reads the header (within
    /// `header_read_timeout`) and takes its source as the client. False: a bad or late
    /// header, and the connection closes.
    async fn proxy_header(&self, conn: &mut Accepted) -> bool {
        if !self.config.accept_proxy_protocol {
            return true;
        }
        let timeout = self.config.limits.header_read_timeout.get();
        let read = crate::tcp_proxy::proxy_protocol::read(&mut conn.stream);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(Some((src, _)))) => {
                conn.peer = src;
                true
            }
            Ok(Ok(None)) => true,
            Ok(Err(e)) => {
                tracing::debug!(listener = %self.name, peer = %conn.peer, error = %e, "closing: bad PROXY header");
                false
            }
            Err(_) => false,
        }
    }

    fn spawn_tcp(
        &self,
        conn: Accepted,
        runtime: &Arc<Runtime>,
        settings: Arc<TcpSettings>,
        close: CancellationToken,
    ) {
        let (me, rt) = (self.clone(), runtime.clone());
        runtime
            .shutdown
            .track(async move { me.serve_tcp(conn, &rt, settings, close, true).await });
    }

    async fn serve_tcp(
        &self,
        conn: Accepted,
        runtime: &Arc<Runtime>,
        settings: Arc<TcpSettings>,
        close: CancellationToken,
        may_be_tls: bool,
    ) {
        let Accepted {
            stream,
            peer,
            original_dst,
            active,
            permit,
        } = conn;
        let facts = TcpConn {
            peer,
            local: stream.local_addr().unwrap_or(self.local_addr),
            original_dst,
            identities: Vec::new(),
            tls_version: None,
            may_be_tls,
        };
        let rt = runtime.clone();
        active.inc();
        match &self.tls {
            None => crate::tcp_proxy::serve(stream, facts, rt, settings, close).await,
            Some(tls) => {
                let handshake_timeout = self.config.limits.header_read_timeout.get();
                if let Some(s) = tls.accept(stream, handshake_timeout).await {
                    let facts = TcpConn {
                        identities: client_identities(s.get_ref().1),
                        tls_version: tls_version(s.get_ref().1),
                        ..facts
                    };
                    crate::tcp_proxy::serve(s, facts, rt, settings, close).await;
                }
            }
        }
        active.dec();
        drop(permit);
    }

    fn spawn_http(&self, conn: Accepted, runtime: &Arc<Runtime>, http: Arc<HttpSettings>) {
        let (me, rt) = (self.clone(), runtime.clone());
        runtime.shutdown.track(async move {
            let mut conn = conn;
            if me.proxy_header(&mut conn).await {
                me.serve_http(conn, &rt, http).await
            }
        });
    }

    async fn serve_http(&self, conn: Accepted, runtime: &Arc<Runtime>, http: Arc<HttpSettings>) {
        let Accepted {
            stream,
            peer,
            original_dst,
            active,
            permit,
        } = conn;
        let tls = self.tls.clone();
        let handshake_timeout = self.config.limits.header_read_timeout.get();
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
                trusted: crate::config::units::any_contains(&self.config.trusted_hops, peer.ip()),
                original_dst,
                identities: Vec::new(),
            }),
            http,
        };
        active.inc();
        let _open = Counted::new(&OPEN);
        match tls {
            None => conn.serve_plain(stream).await,
            // Boxed so that plain connections' tasks are not sized for TLS state (a
            // parked connection's task is then ~1 KiB).
            Some(tls) => Box::pin(conn.serve_tls(stream, tls, handshake_timeout)).await,
        }
        active.dec();
    }
}

/// The verified client certificate's names (URI SANs first), for `authz`.
pub(super) fn client_identities(session: &rustls::ServerConnection) -> Vec<String> {
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(crate::tls::certs::identities)
        .unwrap_or_default()
}

/// The negotiated TLS version, for the access log.
pub(super) fn tls_version(session: &rustls::ServerConnection) -> Option<&'static str> {
    session.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    })
}

/// A detect listener's settings and counters, made once per accept loop.
struct Detect {
    cfg: crate::config::DetectConfig,
    /// Indexed by `Detected`.
    counters: [prometheus::IntCounter; 5],
}

/// A connection taken from the socket, with its slot under `max_connections`.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    /// Where it was going (transparent listeners).
    original_dst: Option<SocketAddr>,
    active: prometheus::IntGauge,
    permit: OwnedSemaphorePermit,
}

/// Answers an HTTP connection over the limit with a bare 503 and closes it. It first reads what
/// the client sent (briefly), so an HTTP client sees an answer to its request rather than an
/// unsolicited message; the whole exchange is bounded (~1.2 s), so refused connections cannot
/// pile up descriptors.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    let refusal = crate::http_proxy::error::ProxyError::Overloaded.into_closing_bytes();
    // Best effort: the client may already be gone, and the socket closes either way.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refusal)).await;
    let _ = stream.shutdown().await;
}
