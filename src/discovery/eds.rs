//! EDS: endpoints pushed by the xDS server. The xDS client (top layer) publishes each
//! ClusterLoadAssignment into this registry by service name; the discovery task of every
//! cluster with `discovery.eds` watches its name. The registry outlives snapshots, so a
//! cluster rebuilt by a reload or a CDS push starts from the last assignment at once.

use super::{DiscoveryError, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A service's endpoints as last pushed (`None`: nothing received yet).
type Slot = watch::Sender<Option<Arc<Vec<Target>>>>;

/// Every EDS service name anyone watches or the server has sent, with its last assignment.
#[derive(Default)]
pub struct Registry {
    slots: Mutex<HashMap<String, Slot>>,
    /// How long a new watcher waits for a first assignment (`xds.initial_fetch_timeout`).
    initial_fetch_timeout: Mutex<Option<Duration>>,
}

impl Registry {
    /// Sets how long a cluster waits for its first assignment before going on empty.
    pub fn set_initial_fetch_timeout(&self, d: Duration) {
        *self.lock_timeout() = Some(d);
    }

    /// Publishes a service's endpoints (sorted, one per address).
    pub fn publish(&self, service: &str, targets: Vec<Target>) {
        let targets = Arc::new(targets);
        let mut slots = self.lock();
        match slots.get(service) {
            Some(s) => {
                s.send_replace(Some(targets));
            }
            None => {
                slots.insert(service.to_owned(), watch::Sender::new(Some(targets)));
            }
        }
    }

    /// Forgets what was sent for services no cluster names any more.
    pub fn retain(&self, wanted: &std::collections::HashSet<String>) {
        self.lock()
            .retain(|name, s| wanted.contains(name) || s.receiver_count() > 0);
    }

    pub(super) fn watch(&self, service: &str) -> EdsSource {
        let rx = self
            .lock()
            .entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe();
        EdsSource {
            service: service.to_owned(),
            rx,
            first: true,
            initial_fetch_timeout: self.lock_timeout().unwrap_or(Duration::from_secs(15)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_timeout(&self) -> std::sync::MutexGuard<'_, Option<Duration>> {
        self.initial_fetch_timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// One cluster's view of its service's assignments.
pub(super) struct EdsSource {
    service: String,
    rx: watch::Receiver<Option<Arc<Vec<Target>>>>,
    first: bool,
    initial_fetch_timeout: Duration,
}

impl EdsSource {
    /// The first call waits for an assignment (up to the initial fetch timeout: the cluster is
    /// then published without endpoints); later calls read the latest one.
    pub(super) async fn fetch(&mut self) -> Result<Vec<Target>, DiscoveryError> {
        if std::mem::take(&mut self.first) {
            let arrived = tokio::time::timeout(
                self.initial_fetch_timeout,
                self.rx.wait_for(Option::is_some),
            )
            .await;
            if !matches!(arrived, Ok(Ok(_))) {
                return Err(DiscoveryError::Config {
                    message: format!(
                        "EDS service {:?}: no endpoints within the initial fetch timeout",
                        self.service
                    ),
                });
            }
        }
        let current = self.rx.borrow_and_update().clone();
        Ok(current.map(|t| t.as_ref().clone()).unwrap_or_default())
    }

    /// Until the next assignment (at once if one arrived since the last fetch).
    pub(super) async fn wait(&mut self) {
        if self.rx.changed().await.is_err() {
            // The registry is gone (the process is ending): nothing more will come.
            std::future::pending::<()>().await;
        }
    }
}
