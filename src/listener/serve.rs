//! Serving one HTTP connection: the protocol is chosen (ALPN, peeked preface, or hyper-util's
//! sniffer), then hyper serves it; HTTP/1.1 alternates between being served and being parked.

use super::drive::Ended;
use super::framing::FramingGuard;
use super::park::Parkable;
use crate::config::ListenerConfig;
use crate::http_proxy::{self, Downstream};
use crate::tls::server::TlsServer;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The three ways a connection is served: HTTP/1.1 and HTTP/2 directly when the protocol is
/// known (ALPN, or the first bytes peeked from the socket), hyper-util's sniffing builder only
/// when it is not (a split HTTP/2 preface, TLS without ALPN). Serving directly skips the
/// sniffer's per-connection buffer and lets an idle HTTP/1.1 connection be parked.
pub(super) struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

pub(super) fn http_builders(cfg: &ListenerConfig) -> Builders {
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
/// What every HTTP connection of a listener shares, built once per listener.
pub(super) struct HttpSettings {
    pub(super) builders: Builders,
    pub(super) idle_timeout: Duration,
    /// An idle HTTP/1.1 connection is parked after this long (`None`: never).
    pub(super) park_after: Option<Duration>,
    pub(super) max_head: usize,
    /// A begun HTTP/1.1 request head must be complete within this (enforced by the framing
    /// guard, not hyper).
    pub(super) header_timeout: Duration,
    /// Cancelled when a reload removes the listener: close like a drain.
    pub(super) close: CancellationToken,
    /// A connection the proxy began to close is cut after this.
    pub(super) close_timeout: Duration,
    /// A client that stops reading for this long loses the connection (HTTP/1.1).
    pub(super) stream_idle: Option<Duration>,
    /// idle, header_read, stream_idle.
    pub(super) timeouts: [prometheus::IntCounter; 3],
    pub(super) parked: prometheus::IntGauge,
}

pub(super) struct Connection {
    pub(super) down: Arc<Downstream>,
    pub(super) http: Arc<HttpSettings>,
}

/// hyper's service for one connection: each request goes to `http_proxy::handle`.
macro_rules! proxy_service {
    ($down:expr) => {{
        let down = $down.clone();
        service_fn(move |req| {
            let down = down.clone();
            async move { Ok::<_, Infallible>(http_proxy::handle(req, &down).await) }
        })
    }};
}

impl Connection {
    /// Cleartext: wait for the first bytes without hyper (a connection that never speaks costs
    /// a socket and a task), peek to tell HTTP/2's preface from HTTP/1.1.
    pub(super) async fn serve_plain(self, stream: TcpStream) {
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

    pub(super) async fn serve_tls(
        mut self,
        stream: TcpStream,
        tls: Arc<TlsServer>,
        handshake: Duration,
    ) {
        let Some(stream) = tls.accept(stream, handshake).await else {
            return;
        };
        let session = stream.get_ref().1;
        if let Some(down) = Arc::get_mut(&mut self.down) {
            // The verified client certificate, parsed once: x-forwarded-client-cert and the
            // names authz matches.
            if let Some(cert) = session.peer_certificates().and_then(|c| c.first()) {
                let (xfcc, identities) = crate::tls::certs::client_cert(cert);
                down.client_cert = Some(Arc::from(xfcc));
                down.identities = identities;
            }
            down.tls_version = super::accept::tls_version(session);
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
        match protocol {
            Protocol::Http2 => {
                // hyper spawns a task per HTTP/2 stream and moves the request future into it;
                // boxed, that move copies a pointer instead of the whole future (HTTP/1.1 keeps
                // the future inline, where boxing costs more than it saves).
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
                let conn = http.builders.auto.serve_connection_with_upgrades(
                    self.guarded(stream),
                    proxy_service!(self.down),
                );
                let mut conn = Box::pin(conn);
                Box::pin(self.drive(conn.as_mut(), |c| c.graceful_shutdown(), false)).await;
            }
            Protocol::Http1 => self.serve_h1(stream).await,
        }
    }

    /// The framing guard between the socket and hyper's HTTP/1.1 parser.
    fn guarded<S>(&self, stream: S) -> TokioIo<FramingGuard<S>> {
        let http = &self.http;
        TokioIo::new(
            FramingGuard::new(stream, self.down.conn.clone(), http.max_head)
                .with_header_timeout(http.header_timeout, http.timeouts[1].clone()),
        )
    }

    /// hyper serves the connection until it idles at a message boundary; then it is parked
    /// without hyper's buffers until the client speaks again, and served anew.
    async fn serve_h1<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Parkable + Unpin + Send + 'static,
    {
        let http = &self.http;
        let (mut io, mut svc) = (self.guarded(stream), proxy_service!(self.down));
        loop {
            // Boxed (with `drive`), and in a block so that the box is freed before the
            // park: a parked connection's task holds only the socket.
            let parts = {
                let mut conn = Box::new(http.builders.h1.serve_connection(io, svc).with_upgrades());
                let parkable = http.park_after.is_some();
                let ended =
                    Box::pin(self.drive(Pin::new(&mut *conn), |c| c.graceful_shutdown(), parkable))
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
            (io, svc) = (parts.io, parts.service);
            if !self.park(&mut io).await {
                return;
            }
        }
    }
}
