//! Listeners: bind, accept under the `max_connections` limit (`accept`), serve each connection
//! until it ends, idles out, or the process drains (`serve`, `drive`). HTTP/1.1 and HTTP/2 share
//! a port: the protocol is read from ALPN or from the first bytes (peeked, not consumed), then
//! hyper serves it directly. An idle HTTP/1.1 connection is *parked* (`park`): hyper hands the
//! socket back at a message boundary and its buffers are freed until the client speaks again
//! (nginx and HAProxy likewise free the buffers of idle keep-alive connections); see
//! docs/performance.md for what that saves. Per-connection state lives in `ConnTracker`.

mod accept;
pub mod detect;
mod drive;
mod framing;
mod park;
mod serve;

pub use framing::shadow as framing_shadow;

use crate::config::{CaptureMethod, ListenerConfig, ListenerMode, ListenerProtocol};
use crate::tls::server::TlsServer;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The listener's address cannot be bound.
    #[error("listeners[{index}] ({name}): cannot bind {address}: {source}")]
    Bind {
        /// The listener's index in `listeners`.
        index: usize,
        /// The listener's name.
        name: String,
        /// The address as configured.
        address: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// Its TLS files cannot be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A bound listening socket with the settings it serves connections with. The socket is
/// shared so that a reload can hand it from one accept loop to the next without closing it.
#[derive(Clone)]
pub struct Listener {
    /// `listeners[].name`.
    pub name: Arc<str>,
    /// The address the socket is bound to (a port of 0 resolved).
    pub local_addr: SocketAddr,
    pub(crate) socket: Arc<TcpListener>,
    /// The listener's definition, shared: each connection task holds a clone of the listener.
    pub config: Arc<ListenerConfig>,
    /// TLS termination, when `tls` is configured; rotation keeps it current.
    pub(crate) tls: Option<Arc<TlsServer>>,
}

/// Builds a listener's TLS state (its files are read now: errors name key and file).
pub fn build_tls(
    index: usize,
    cfg: &ListenerConfig,
    base: &Path,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Option<Arc<TlsServer>>, crate::tls::TlsError> {
    let Some(tls) = &cfg.tls else { return Ok(None) };
    let alpn: &[&str] = match cfg.protocol {
        ListenerProtocol::Http | ListenerProtocol::Detect => &["h2", "http/1.1"],
        ListenerProtocol::Tcp => &[],
    };
    TlsServer::build(
        &cfg.name,
        &format!("listeners[{index}].tls"),
        tls,
        base,
        alpn,
        metrics,
    )
    .map(Some)
}

impl Listener {
    /// Binds the listener's socket.
    pub async fn bind(
        index: usize,
        cfg: &ListenerConfig,
        tls: Option<Arc<TlsServer>>,
    ) -> Result<Listener, BindError> {
        let err = |source| BindError::Bind {
            index,
            name: cfg.name.clone(),
            address: cfg.address.clone(),
            source,
        };
        let socket =
            if cfg.mode == ListenerMode::Transparent && cfg.capture == CaptureMethod::Tproxy {
                let addr = cfg
                    .address
                    .parse()
                    .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
                crate::capture::bind(addr, Some(CaptureMethod::Tproxy)).map_err(err)?
            } else {
                TcpListener::bind(&cfg.address).await.map_err(err)?
            };
        let local_addr = socket.local_addr().map_err(err)?;
        Ok(Listener {
            name: cfg.name.as_str().into(),
            local_addr,
            socket: Arc::new(socket),
            config: Arc::new(cfg.clone()),
            tls,
        })
    }

    /// The same socket under a new listener definition (a reload that kept the address).
    pub fn with_config(&self, cfg: &ListenerConfig, tls: Option<Arc<TlsServer>>) -> Listener {
        Listener {
            name: cfg.name.as_str().into(),
            local_addr: self.local_addr,
            socket: self.socket.clone(),
            config: Arc::new(cfg.clone()),
            tls,
        }
    }
}

/// Client connections open, and those hyper is serving (so holding ~16 KiB or more of
/// buffers; parked ones are not). The memory trimmer reads them to learn when a burst is over.
static OPEN: AtomicUsize = AtomicUsize::new(0);
static HOLDING_BUFFERS: AtomicUsize = AtomicUsize::new(0);

/// (open client connections, those of them holding hyper's buffers).
pub fn client_connections() -> (usize, usize) {
    (
        OPEN.load(Ordering::Relaxed),
        HOLDING_BUFFERS.load(Ordering::Relaxed),
    )
}

/// Counts a connection in one of those while alive.
struct Counted(&'static AtomicUsize);

impl Counted {
    fn new(counter: &'static AtomicUsize) -> Counted {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What `sleep(Duration::MAX)` uses: a deadline that never comes, without overflowing.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}
