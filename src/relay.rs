//! Bytes copied both ways between two streams, with half-close, an idle deadline and a cut-off
//! once the proxy drains: what a TCP proxy connection and an HTTP tunnel (WebSocket after its
//! 101, CONNECT after its 200) share. Each side's reads are counted as they happen, so the
//! totals are right however the relay ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a relay is bounded.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Copy buffer per direction.
    pub buffer: usize,
    /// No byte either way for this long ends it; zero for never.
    pub idle_timeout: Duration,
    /// After `stop` is cancelled (a drain, a removed listener), the relay gets this long.
    pub drain_timeout: Duration,
}

/// How a relay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (or one failed).
    Closed,
    Idle,
    /// Still open at the drain timeout.
    Cut,
}

/// Bytes moved: from `a` to `b`, and from `b` to `a`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Live byte counts of a running relay, readable from outside it.
#[derive(Default, Debug)]
pub struct Counts {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

impl Counts {
    pub fn moved(&self) -> Moved {
        Moved {
            a_to_b: self.a_to_b.load(Ordering::Relaxed),
            b_to_a: self.b_to_a.load(Ordering::Relaxed),
        }
    }
}

/// Copies between `a` and `b` until both are done, either fails, they idle out, or `stops`
/// (any of them) fires and then `drain_timeout` passes.
pub async fn run<A, B>(
    a: A,
    b: B,
    bounds: &Bounds,
    stops: &[&CancellationToken],
    counts: Arc<Counts>,
) -> (End, Moved)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut a = Tracked {
        inner: a,
        activity: activity.clone(),
        epoch,
        counts: counts.clone(),
        a_side: true,
    };
    let mut b = Tracked {
        inner: b,
        activity: activity.clone(),
        epoch,
        counts: counts.clone(),
        a_side: false,
    };
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, bounds.buffer, bounds.buffer);
    tokio::pin!(copy);
    let idle_timeout = (!bounds.idle_timeout.is_zero()).then_some(bounds.idle_timeout);
    let idle = tokio::time::sleep(idle_timeout.unwrap_or(Duration::from_secs(86400 * 365)));
    tokio::pin!(idle);
    let cutoff = tokio::time::sleep(Duration::from_secs(86400 * 365));
    tokio::pin!(cutoff);
    let stopped = async {
        let waits = stops.iter().map(|t| Box::pin(t.cancelled()));
        futures_select_any(waits.collect()).await
    };
    tokio::pin!(stopped);
    let mut closing = false;
    let end = loop {
        tokio::select! {
            r = &mut copy => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "relay ended with an error");
                }
                break End::Closed;
            }
            _ = &mut idle, if idle_timeout.is_some() => {
                let t = idle_timeout.unwrap_or_default();
                let last = Duration::from_nanos(activity.load(Ordering::Relaxed));
                let quiet = epoch.elapsed().saturating_sub(last);
                if quiet >= t {
                    break End::Idle;
                }
                idle.as_mut().reset(Instant::now() + (t - quiet));
            }
            _ = &mut stopped, if !closing => {
                closing = true;
                cutoff.as_mut().reset(Instant::now() + bounds.drain_timeout);
            }
            _ = &mut cutoff => break End::Cut,
        }
    };
    (end, counts.moved())
}

/// Resolves when any of `futs` does (none: never).
async fn futures_select_any<F: std::future::Future<Output = ()> + Unpin>(mut futs: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if Pin::new(f).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// A stream that stamps the time of its last read or write, and counts what it reads.
struct Tracked<S> {
    inner: S,
    activity: Arc<AtomicU64>,
    epoch: Instant,
    counts: Arc<Counts>,
    /// Reads from this side move bytes `a_to_b`.
    a_side: bool,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        self.activity
            .store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            self.touch();
            let c = if self.a_side {
                &self.counts.a_to_b
            } else {
                &self.counts.b_to_a
            };
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
