//! Process lifecycle: a shutdown request (SIGTERM, SIGINT, `POST /shutdown`) first fails
//! `/ready`, keeps accepting for `drain_delay`, then drains: listeners stop accepting,
//! connections close once idle (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`), and in-flight
//! work gets up to `drain_timeout` to finish.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub struct Shutdown {
    requested: CancellationToken,
    drain: CancellationToken,
    connections: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the process to stop; idempotent.
    pub fn request(&self) {
        if !self.requested.is_cancelled() {
            tracing::info!("shutdown requested");
        }
        self.requested.cancel();
    }

    pub fn is_requested(&self) -> bool {
        self.requested.is_cancelled()
    }

    pub async fn requested(&self) {
        self.requested.cancelled().await
    }

    /// Cancelled when draining starts: accept loops and connections watch it.
    pub fn drain_token(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Spawns a connection task that draining waits for.
    pub fn track<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.connections.spawn(fut);
    }

    /// Runs the drain sequence; returns whether every connection finished within `timeout`.
    pub async fn drain(&self, delay: Duration, timeout: Duration) -> bool {
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "drain delay: still accepting while /ready fails"
            );
            tokio::time::sleep(delay).await;
        }
        self.drain.cancel();
        self.connections.close();
        tracing::info!(open = self.connections.len(), "draining connections");
        match tokio::time::timeout(timeout, self.connections.wait()).await {
            Ok(()) => true,
            Err(_) => {
                // Connections still open end themselves at this deadline (their own cut-off
                // timers): a moment more lets them close and count what they moved.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.connections.wait()).await;
                tracing::warn!(
                    still_open = self.connections.len(),
                    timeout_ms = timeout.as_millis() as u64,
                    "drain timeout reached with connections still open"
                );
                false
            }
        }
    }
}
