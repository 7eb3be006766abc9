//! Parking: an idle HTTP/1.1 connection waits on socket readiness alone, without hyper and its
//! buffers, until the client speaks again, the connection idles out, or the process drains.

use super::framing::FramingGuard;
use super::serve::Connection;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// A client stream a parked HTTP/1.1 connection can wait on without hyper: readiness of the
/// socket underneath. (For TLS this is sound because a parked connection's last read returned
/// `Pending`, so rustls holds no plaintext the socket would not announce.)
pub(super) trait Parkable {
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

impl Connection {
    /// Parks `io` until the client sends again (true: serve it anew) or the connection must
    /// close (false: it has been shut down).
    pub(super) async fn park<S>(&self, io: &mut TokioIo<FramingGuard<S>>) -> bool
    where
        S: Parkable + AsyncWrite + Unpin,
    {
        let http = &self.http;
        self.down.conn.parking.store(false, Ordering::Relaxed);
        let readable = std::future::poll_fn(|cx| io.inner().get_ref().poll_read_ready(cx));
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
        }
        woke
    }

    /// Waits, for a connection hyper is not serving, until it idles out, the process drains or
    /// the listener is removed (the caller selects this against the socket).
    pub(super) async fn wait_idle_or_close(&self) {
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
}
