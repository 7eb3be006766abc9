//! The body every upstream connection sends: streamed from the client (optionally counted, and
//! under the stream idle timeout) or held whole for a replayable retry.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A request body on its way upstream.
pub enum RequestBody {
    /// Streamed from the downstream connection.
    Incoming(Incoming, Option<IdleTimer>),
    /// Streamed, counting bytes for the access log.
    Counted(Incoming, Arc<AtomicU64>, Option<IdleTimer>),
    /// Held in memory (empty bodies, replayable retries).
    Full(Option<Bytes>),
}

impl RequestBody {
    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody::Full(None)
    }
}

/// A body error: hyper's, or a stream idle timeout of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `limits.stream_idle_timeout` on one body: no frame for that long is an error. The timer
/// exists only once the body has had to wait, so a body that is ready at once (most small
/// ones) never registers one; after progress it is re-armed at the next wait.
pub struct IdleTimer {
    timeout: std::time::Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was last armed.
    progressed: bool,
    timeouts: prometheus::IntCounter,
}

/// What a body returns when its stream idle timeout passes.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes moved within the stream idle timeout ({0:?})")]
pub struct StreamIdle(pub std::time::Duration);

impl IdleTimer {
    /// A timer that ends a body idle for `timeout`, counting it in `timeouts`.
    pub fn new(timeout: std::time::Duration, timeouts: prometheus::IntCounter) -> IdleTimer {
        IdleTimer {
            timeout,
            sleep: None,
            progressed: false,
            timeouts,
        }
    }

    /// Called with a body's poll result: passes it on, or turns a wait that has gone on too
    /// long into an error.
    pub(crate) fn check<T, E: Into<BoxError>>(
        &mut self,
        r: Poll<Option<Result<T, E>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T, BoxError>>> {
        match r {
            Poll::Ready(r) => {
                self.progressed = true;
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                match &mut self.sleep {
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(s) if self.progressed => s.as_mut().reset(deadline),
                    Some(_) => {}
                }
                self.progressed = false;
                let Some(sleep) = self.sleep.as_mut() else {
                    return Poll::Pending;
                };
                std::task::ready!(sleep.as_mut().poll(cx));
                self.timeouts.inc();
                Poll::Ready(Some(Err(Box::new(StreamIdle(self.timeout)))))
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Incoming(b, None) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Incoming(b, Some(idle)) => {
                let r = Pin::new(b).poll_frame(cx);
                idle.check(r, cx)
            }
            RequestBody::Counted(b, n, idle) => {
                let r = Pin::new(b).poll_frame(cx);
                let r = match idle {
                    Some(idle) => std::task::ready!(idle.check(r, cx)),
                    None => std::task::ready!(r).map(|r| r.map_err(Into::into)),
                };
                if let Some(Ok(f)) = &r {
                    if let Some(d) = f.data_ref() {
                        n.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(r)
            }
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b, _) | RequestBody::Counted(b, _, _) => b.is_end_stream(),
            RequestBody::Full(d) => d.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b, _) | RequestBody::Counted(b, _, _) => b.size_hint(),
            RequestBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
