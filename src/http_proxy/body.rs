//! Body types of the proxy: what goes upstream (`RequestBody`) and what goes back downstream
//! (`ResponseBody`). Both stream frame by frame; nothing is buffered whole. The response body
//! carries the exchange's end-of-life bookkeeping: when it finishes, the upstream connection
//! goes back to its pool and the in-flight counts drop.

use crate::conn_tracker::RequestGuard;
use crate::endpoint::InFlight;
use crate::metrics::GrpcCount;
pub use crate::pool::body::{BoxError, IdleTimer, RequestBody, StreamIdle};
use crate::pool::Sender;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Runs when a response finishes or is abandoned: a cleanly finished upstream exchange gives
/// its connection back to the endpoint's pool; an abandoned one drops it (closing it), since
/// unread response bytes would corrupt the next exchange.
pub struct Lease {
    pub(crate) sender: Option<Sender>,
    pub(crate) in_flight: InFlight,
    /// The cluster's circuit-breaker slot for this request.
    pub(crate) _slot: crate::circuit_breaker::Slot,
}

impl Lease {
    fn release(&mut self) {
        // An HTTP/1.1 connection goes back to the idle stack; an HTTP/2 stream just ends.
        if let Some(Sender::H1(conn)) = self.sender.take() {
            self.in_flight.endpoint().pool.put(conn);
        }
    }

    /// The HTTP/1.1 connection the response body comes through, if it is still open.
    fn h1(&mut self) -> Option<&mut crate::pool::H1Conn> {
        match &mut self.sender {
            Some(Sender::H1(conn)) => Some(conn),
            _ => None,
        }
    }
}

/// A gRPC response whose status comes in its trailers: counted when they pass, or as
/// `unknown` if the body ends (or is dropped) without them.
struct GrpcPending(Option<Arc<GrpcCount>>);

impl GrpcPending {
    fn seen(&mut self, status: &str) {
        if let Some(c) = self.0.take() {
            c.count(status);
        }
    }
}

impl Drop for GrpcPending {
    fn drop(&mut self) {
        self.seen("unknown");
    }
}

/// A response body on its way downstream.
pub struct ResponseBody {
    kind: Kind,
    lease: Option<Lease>,
    grpc: Option<GrpcPending>,
    /// Dropped with the body: ends the downstream connection's in-flight count.
    _guard: Option<RequestGuard>,
    /// An upstream that stalls mid-body ends the response after the stream idle timeout.
    idle: Option<IdleTimer>,
    log: Option<Box<PendingLog>>,
}

/// An access log line waiting for its response body to end.
pub(crate) struct PendingLog {
    pub log: Arc<crate::access_log::AccessLog>,
    pub entry: crate::access_log::Entry,
    pub started: tokio::time::Instant,
    pub received: Option<Arc<AtomicU64>>,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        self.entry.duration = self.started.elapsed();
        if let Some(r) = &self.received {
            self.entry.bytes_received = r.load(Ordering::Relaxed);
        }
        self.log.emit(&self.entry);
    }
}

/// The next frame of a response body that only `conn` feeds, which this task drives itself:
/// what hyper already read comes first; only if there is none is the connection driven (with
/// the real waker, for the socket). The body itself is polled without a waker, and with the
/// connection's own wake-ups hushed: either would only schedule this task again for what its
/// next poll does first anyway (see `pool::Relay`).
fn poll_h1_body(
    conn: &mut crate::pool::H1Conn,
    body: &mut Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    let mut quiet = crate::wake::quiet();
    if let Poll::Ready(r) = conn.hush(|| Pin::new(&mut *body).poll_frame(&mut quiet)) {
        return Poll::Ready(r);
    }
    if !conn.drive(cx) {
        // The connection has ended; the body says how (an error, or its end).
        return Pin::new(body).poll_frame(cx);
    }
    conn.hush(|| Pin::new(body).poll_frame(&mut quiet))
}

enum Kind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// A body held in memory.
    pub fn full(data: impl Into<Bytes>) -> ResponseBody {
        let data = data.into();
        ResponseBody {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
            lease: None,
            grpc: None,
            _guard: None,
            idle: None,
            log: None,
        }
    }

    /// No body.
    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    pub(crate) fn upstream(body: Incoming, lease: Lease) -> ResponseBody {
        let mut b = ResponseBody {
            kind: Kind::Upstream(body),
            lease: Some(lease),
            grpc: None,
            _guard: None,
            idle: None,
            log: None,
        };
        b.release_if_done();
        b
    }

    /// Counts the gRPC status this body's trailers carry.
    pub(crate) fn with_grpc_trailers(mut self, count: Arc<GrpcCount>) -> ResponseBody {
        self.grpc = Some(GrpcPending(Some(count)));
        self
    }

    /// Attaches something to drop when the body is done with.
    pub(crate) fn with_guard(mut self, guard: RequestGuard) -> ResponseBody {
        self._guard = Some(guard);
        self
    }

    /// Bounds the wait for each frame of an upstream body; `idle` is asked only for a body
    /// that can still wait (most small ones have already ended).
    pub(crate) fn with_idle_timeout(
        mut self,
        idle: impl FnOnce() -> Option<IdleTimer>,
    ) -> ResponseBody {
        if matches!(&self.kind, Kind::Upstream(b) if !b.is_end_stream()) {
            self.idle = idle();
        }
        self
    }

    /// Attaches an access log line, written when this body is done with.
    pub(crate) fn with_log(mut self, log: Box<PendingLog>) -> ResponseBody {
        self.log = Some(log);
        self
    }

    fn release_if_done(&mut self) {
        if let (Kind::Upstream(b), Some(lease)) = (&self.kind, &mut self.lease) {
            if b.is_end_stream() {
                lease.release();
                self.lease = None;
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(data) => {
                let frame = data.take();
                if let (Some(d), Some(log)) = (&frame, &mut this.log) {
                    log.entry.bytes_sent += d.len() as u64;
                }
                Poll::Ready(frame.map(|d| Ok(Frame::data(d))))
            }
            Kind::Upstream(b) => {
                let polled = match this.lease.as_mut().and_then(Lease::h1) {
                    Some(conn) => poll_h1_body(conn, b, cx),
                    None => Pin::new(b).poll_frame(cx),
                };
                let res = match &mut this.idle {
                    Some(idle) => std::task::ready!(idle.check(polled, cx)),
                    None => std::task::ready!(polled).map(|r| r.map_err(BoxError::from)),
                };
                if let (Some(Ok(f)), Some(log)) = (&res, &mut this.log) {
                    if let Some(d) = f.data_ref() {
                        log.entry.bytes_sent += d.len() as u64;
                    }
                }
                if let (Some(Ok(f)), Some(g)) = (&res, &mut this.grpc) {
                    if let Some(t) = f.trailers_ref() {
                        g.seen(super::grpc::status(t).unwrap_or("unknown"));
                    }
                }
                match &res {
                    None => {
                        if let Some(mut lease) = this.lease.take() {
                            lease.release();
                        }
                    }
                    Some(Ok(_)) => this.release_if_done(),
                    // The upstream connection is broken; dropping the lease closes it.
                    Some(Err(_)) => this.lease = None,
                }
                Poll::Ready(res)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Full(d) => d.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
