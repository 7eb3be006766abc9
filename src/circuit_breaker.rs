//! Envoy-style circuit breakers of a cluster: limits on open upstream connections, on requests
//! waiting for a connection, and on requests in flight. Each is an atomic counter taken with
//! `fetch_add` and given back by a guard, so a burst over the limit is refused exactly and at
//! once (no queueing) with 503 and `x-outrigger-overflow: 1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    Connections,
    Pending,
    Requests,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Connections => "connections",
            Overflow::Pending => "pending",
            Overflow::Requests => "requests",
        }
    }
}

/// Limits; `usize::MAX` where none is configured.
#[derive(Default)]
pub struct Breaker {
    pub(crate) max_connections: usize,
    pub(crate) max_pending: usize,
    pub(crate) max_requests: usize,
    pub(crate) connections: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Gives one unit back to its counter when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes one unit of `counter` if that keeps it within `max`.
pub(crate) fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    if counter.fetch_add(1, Ordering::Relaxed) >= max {
        counter.fetch_sub(1, Ordering::Relaxed);
        None
    } else {
        Some(Slot(counter.clone()))
    }
}

impl Breaker {
    pub fn new(max_connections: usize, max_pending: usize, max_requests: usize) -> Breaker {
        Breaker {
            max_connections,
            max_pending,
            max_requests,
            ..Breaker::default()
        }
    }

    pub fn unlimited() -> Breaker {
        Breaker::new(usize::MAX, usize::MAX, usize::MAX)
    }

    pub fn request(&self) -> Result<Slot, Overflow> {
        take(&self.requests, self.max_requests).ok_or(Overflow::Requests)
    }

    pub fn pending(&self) -> Result<Slot, Overflow> {
        take(&self.pending, self.max_pending).ok_or(Overflow::Pending)
    }

    /// A slot for a new upstream connection, held by the connection's driver task.
    pub fn connection(&self) -> Result<Slot, Overflow> {
        take(&self.connections, self.max_connections).ok_or(Overflow::Connections)
    }

    /// Some limit is reached right now (the `outrigger_circuit_breaker_open` gauge).
    pub fn is_open(&self) -> bool {
        self.requests.load(Ordering::Relaxed) >= self.max_requests
            || self.pending.load(Ordering::Relaxed) >= self.max_pending
            || self.connections.load(Ordering::Relaxed) >= self.max_connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_limit_is_admitted() {
        let b = Breaker::new(1, 1, 10);
        let slots: Vec<_> = (0..50).filter_map(|_| b.request().ok()).collect();
        assert_eq!(slots.len(), 10);
        assert!(b.is_open());
        drop(slots);
        assert!(!b.is_open());
        assert!(b.request().is_ok());
    }
}
