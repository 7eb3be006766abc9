//! The shared root every task holds: the current snapshot (one `ArcSwap`, one writer), the
//! metrics registry and the shutdown state.

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The shared root every task holds.
pub struct Runtime {
    snapshot: ArcSwap<Snapshot>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Shutdown and drain state.
    pub shutdown: Shutdown,
    ready: AtomicBool,
    /// Requests in flight in the whole process (for `server.max_in_flight_requests`).
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The last reload's error, if it failed (shown by `GET /config`).
    last_reload_error: std::sync::Mutex<Option<String>>,
    /// Endpoints the xDS server pushed, by EDS service name.
    pub(crate) eds: Arc<crate::discovery::eds::Registry>,
    /// Held while the xDS client waits for its first full config.
    xds_pending: AtomicBool,
    /// The version last accepted per xDS type (for `GET /config`).
    xds_versions: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl Runtime {
    /// A runtime serving `snapshot`.
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Runtime {
        Runtime {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            shutdown: Shutdown::new(),
            ready: AtomicBool::new(false),
            last_reload_error: std::sync::Mutex::new(None),
            in_flight: Default::default(),
            eds: Default::default(),
            xds_pending: AtomicBool::new(false),
            xds_versions: Default::default(),
        }
    }

    /// The current snapshot; the `Arc` may be held across awaits (for a request's lifetime).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a complete new snapshot in one store.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Admits a request under the process-wide in-flight limit (`max` 0 = none); `None` means
    /// shed it.
    pub fn admit(&self, max: usize) -> Option<Option<crate::circuit_breaker::Slot>> {
        if max == 0 {
            return Some(None);
        }
        crate::circuit_breaker::take(&self.in_flight, max).map(Some)
    }

    /// Records the last apply's error (`None` after a success).
    pub fn set_last_reload_error(&self, error: Option<String>) {
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// The last apply's error, if it failed.
    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the proxy ready (`/ready` answers 200).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Records the version last accepted for an xDS type.
    pub fn set_xds_version(&self, kind: &'static str, version: &str) {
        self.xds_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind, version.to_owned());
    }

    /// The versions last accepted per xDS type.
    pub fn xds_versions(&self) -> std::collections::BTreeMap<&'static str, String> {
        self.xds_versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Holds (true) or releases readiness for the xDS client's first full config.
    pub fn set_xds_pending(&self, pending: bool) {
        self.xds_pending.store(pending, Ordering::Release);
    }

    /// Ready: every listener is bound, the xDS server (if any) has sent its first full config
    /// and no shutdown has been asked for.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.xds_pending.load(Ordering::Acquire)
            && !self.shutdown.is_requested()
    }
}
