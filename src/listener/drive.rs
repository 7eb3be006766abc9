//! Driving a hyper connection to its end: graceful close on drain, listener removal and idle
//! timeout, a cut-off after that, and the moment an idle HTTP/1.1 connection is handed back to
//! be parked.

use super::serve::Connection;
use super::{far_future, Counted, HOLDING_BUFFERS};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// How a served connection ended.
pub(super) enum Ended {
    Closed,
    /// Parked: hyper let go of it (idle, at a message boundary, nothing left to write).
    Parked,
}

/// What an idle check decided.
enum IdleStep {
    /// Ask hyper to close; cut the connection after the given time, if any.
    Shutdown(Option<Duration>),
    /// Drop the connection now.
    Cut,
    /// Nothing yet: look again after this long.
    Recheck(Duration),
}

impl Connection {
    /// Polls a hyper connection to its end, closing it gracefully on drain, listener removal
    /// and idle timeout, and parking it (when `parkable`) once it has idled `park_after`.
    pub(super) async fn drive<C, E>(
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
            // of them woke the task (see `Gated`): polling them all on each wake-up costs
            // measurably per HTTP/1.1 request.
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
                Ok(Err(e)) => {
                    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                    return Ended::Closed;
                }
                Ok(Ok(())) if self.down.conn.parking.load(Ordering::Relaxed) => {
                    return Ended::Parked
                }
                Ok(Ok(())) => return Ended::Closed,
                // Draining: HTTP/1.1 closes once idle (or after the in-flight response, with
                // `Connection: close`); HTTP/2 sends GOAWAY and finishes open streams.
                Err(Side::Drain | Side::Removed) => {
                    shutdown(conn.as_mut());
                    closing = true;
                    cutoff.as_mut().reset(Instant::now() + drain_timeout);
                }
                Err(Side::Cutoff) => {
                    tracing::debug!("closing a connection at the drain timeout");
                    return Ended::Closed;
                }
                Err(Side::IdleCheck) => match self.idle_step(park_after) {
                    IdleStep::Shutdown(cut_after) => {
                        shutdown(conn.as_mut());
                        closing = true;
                        if let Some(d) = cut_after {
                            cutoff.as_mut().reset(Instant::now() + d);
                        }
                    }
                    IdleStep::Cut => return Ended::Closed,
                    IdleStep::Recheck(next) => {
                        let at = Instant::now().checked_add(next);
                        idle_check.as_mut().reset(at.unwrap_or_else(far_future));
                    }
                },
            }
        }
    }

    /// Whether a connection that has idled (or whose client has stopped reading) is closed,
    /// parked, cut, or looked at again later.
    fn idle_step(&self, park_after: Option<Duration>) -> IdleStep {
        let (http, tracker) = (&self.http, &self.down.conn);
        let idle = tracker.idle_for();
        let timeout = (!http.idle_timeout.is_zero()).then_some(http.idle_timeout);
        match idle {
            Some(idle) if timeout.is_some_and(|t| idle >= t) => {
                http.timeouts[0].inc();
                // HTTP/2's graceful close waits for the client to answer a PING; one that
                // never does is cut.
                IdleStep::Shutdown(Some(http.close_timeout))
            }
            Some(idle) if park_after.is_some_and(|p| idle >= p) && tracker.parkable() => {
                // hyper closes an idle connection at once; the framing guard keeps the socket
                // open through the shutdown hyper then asks for. (A drain or removal arriving
                // meanwhile finds the parked connection and closes it there.)
                tracker.parking.store(true, Ordering::Relaxed);
                IdleStep::Shutdown(None)
            }
            None if http
                .stream_idle
                .zip(tracker.blocked_for())
                .is_some_and(|(limit, blocked)| blocked >= limit) =>
            {
                // A client that stopped reading: nothing it is owed can reach it, and dropping
                // the connection frees its upstream side too.
                http.timeouts[2].inc();
                tracing::debug!("closing a connection whose client stopped reading");
                IdleStep::Cut
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
                IdleStep::Recheck(next)
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
