//! Per-connection bookkeeping of one downstream connection, shared by the connection task
//! (idle and write timeouts, parking), its requests (in-flight count) and its framing guard.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Per-connection bookkeeping shared by the connection task, its requests and its framing
/// guard.
pub struct ConnTracker {
    pub(crate) active: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last became idle.
    pub(crate) idle_since_ms: AtomicU64,
    pub(crate) epoch: Instant,
    pub(crate) requests: AtomicU64,
    /// Ordinal (1-based) of the first request head with ambiguous framing; `u64::MAX` if none.
    pub(crate) rejected_from: AtomicU64,
    /// Request heads the framing guard has seen, when the byte stream stands at a message
    /// boundary (no partial head or body); `u64::MAX` when it does not or cannot tell.
    pub(crate) boundary_heads: AtomicU64,
    /// The last write to the client did not complete (hyper may hold unwritten bytes).
    pub(crate) write_blocked: AtomicBool,
    /// Milliseconds since `epoch` at which writes last became blocked.
    pub(crate) blocked_since_ms: AtomicU64,
    /// Set while an idle connection is being handed back by hyper: its shutdown is not passed
    /// to the socket.
    pub(crate) parking: AtomicBool,
    /// The connection's place under `max_connections`, held until the last user of the
    /// connection is gone: a tunnel (WebSocket, CONNECT) outlives hyper's connection task.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
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
            boundary_heads: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            blocked_since_ms: AtomicU64::new(0),
            parking: AtomicBool::new(false),
            _permit: None,
        }
    }

    /// A tracker that holds the connection's `max_connections` permit.
    pub fn holding(permit: tokio::sync::OwnedSemaphorePermit) -> ConnTracker {
        ConnTracker {
            _permit: Some(permit),
            ..ConnTracker::new()
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

    pub(crate) fn note_blocked(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.blocked_since_ms.store(now, Ordering::Relaxed);
    }

    /// How long writes to the client have been blocked (a client that stopped reading).
    pub(crate) fn blocked_for(&self) -> Option<Duration> {
        if !self.write_blocked.load(Ordering::Relaxed) {
            return None;
        }
        let since = Duration::from_millis(self.blocked_since_ms.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    /// How long the connection has had no request in flight; `None` while one is.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    /// Whether hyper can let go of the connection without losing or misframing a byte: every
    /// request it read has been answered, the stream stands between messages, and nothing waits
    /// to be written.
    pub(crate) fn parkable(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
            && !self.write_blocked.load(Ordering::Relaxed)
            && self.boundary_heads.load(Ordering::Relaxed) == self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn reject_framing_from(&self, ordinal: u64) {
        self.rejected_from.fetch_min(ordinal, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn first_rejected(&self) -> Option<u64> {
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
