//! outrigger: a load-balancing sidecar proxy.
//!
//! Data flows one way:
//!
//! ```text
//! YAML file ──config::load──▶ Config (validated; every error has file, line, key path)
//!                               │
//!                Reloader::apply: warm (DNS, files) ─▶ Snapshot::build(config, previous)
//!                                                    (unchanged clusters are reused)
//!                               │
//!                runtime.publish(snapshot)           (one ArcSwap store)
//!                               │
//!  listener: accept ─▶ serve (hyper HTTP/1.1 + HTTP/2, framing guard) ─▶ drive / park
//!  http_proxy::handle per request, holding runtime.snapshot() to its end:
//!      admit ─▶ route (RouteTable::find, pick_target) ─▶ forward (Cluster::pick, pool) ─▶ respond
//! ```
//!
//! Modules are layers and import only downward (`tests/it/architecture.rs` holds it):
//! leaves (`config`, `metrics`, `hash`, `circuit_breaker`, `conn_tracker`, `path`, `relay`,
//! `shutdown`, `wake`, `watch`, ...); `tls`, `endpoint`, `pool`; `balancer` (picks over
//! endpoints, never sees a cluster); `cluster`, `health`, `discovery`; `route`, `snapshot`,
//! `runtime`; `http_proxy`, `tcp_proxy`; `listener`; `reload`, `admin` and `Server` here.
//! docs/architecture.md walks one request and one reload through them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub(crate) mod access_log;
pub mod admin;
pub mod authz;
pub mod balancer;
pub mod build_info;
pub mod capture;
pub(crate) mod circuit_breaker;
pub mod cluster;
pub mod config;
pub(crate) mod conn_tracker;
pub mod cpus;
pub mod demo;
pub(crate) mod discovery;
pub(crate) mod endpoint;
pub(crate) mod hash;
pub(crate) mod health;
pub mod http_proxy;
pub mod iptables;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod path;
pub(crate) mod pool;
pub(crate) mod relay;
pub mod reload;
pub mod resolve;
pub mod route;
pub mod runtime;
pub(crate) mod shutdown;
pub(crate) mod snapshot;
pub mod tcp_proxy;
pub(crate) mod tls;
pub(crate) mod wake;
pub(crate) mod watch;
pub mod xds;

use config::LoadedConfig;
use metrics::Metrics;
use runtime::Runtime;
use snapshot::Snapshot;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The first config cannot be applied.
    #[error(transparent)]
    Config(#[from] reload::ReloadError),
    /// `xds.tls` names a certificate, key or CA that cannot be loaded.
    #[error(transparent)]
    XdsTls(#[from] tls::TlsError),
    /// The admin address cannot be bound.
    #[error("admin.address: cannot bind {address}: {source}")]
    AdminBind {
        /// `admin.address`.
        address: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy: bound listeners, admin server, the shared runtime and its reloader.
pub struct Server {
    runtime: Arc<Runtime>,
    reloader: Arc<reload::Reloader>,
    admin_addr: SocketAddr,
}

impl Server {
    /// Builds the first snapshot, binds every listener and the admin address (a port of 0
    /// picks a free one: see `listener_addr`), and starts serving. Must run inside a tokio
    /// runtime.
    pub async fn start(loaded: LoadedConfig) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::with_per_endpoint(
            loaded.config.metrics.per_endpoint,
        ));
        // Present from the start, so an alert on failures sees 0 rather than no series.
        metrics.config_reload.with_label_values(&["failure"]);
        let admin = loaded.config.admin.address.clone();
        let admin_error = |source| StartError::AdminBind {
            address: admin.clone(),
            source,
        };
        let admin_socket = tokio::net::TcpListener::bind(&admin)
            .await
            .map_err(admin_error)?;
        let admin_addr = admin_socket.local_addr().map_err(admin_error)?;
        let watch = loaded.config.server.watch_config;
        let source = loaded.source.clone();
        let runtime = Arc::new(Runtime::new(Snapshot::empty(&loaded), metrics));
        let reloader = reload::Reloader::new(runtime.clone());
        // The first config goes through the reload path: warmed, built, bound, its discovered
        // clusters' first answers awaited, then published.
        let xds = loaded.config.xds.clone();
        let base = loaded.base_dir.clone();
        reloader.apply(loaded).await?;
        if let Some(x) = xds {
            xds::spawn(runtime.clone(), reloader.clone(), x, &base)?;
        }
        tokio::spawn(admin::run(admin_socket, runtime.clone(), reloader.clone()));
        tracing::info!(address = %admin_addr, "admin listening");
        if watch && source.is_file() {
            if let Err(e) = reload::spawn_watcher(reloader.clone(), source.clone()) {
                tracing::warn!(file = %source.display(), error = %e, "cannot watch the config file; SIGHUP and POST /reload still reload");
            }
        }
        runtime.set_ready();
        Ok(Server {
            runtime,
            reloader,
            admin_addr,
        })
    }

    /// The reloader (what SIGHUP and `POST /reload` call).
    pub fn reloader(&self) -> &Arc<reload::Reloader> {
        &self.reloader
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.reloader
            .listener_addrs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Asks the server to drain and stop (what SIGTERM does).
    pub fn request_shutdown(&self) {
        self.runtime.shutdown.request();
    }

    /// Serves until a shutdown is requested, then drains. Returns whether every connection
    /// finished within the drain timeout.
    pub async fn run(self) -> bool {
        self.runtime.shutdown.requested().await;
        let server = self.runtime.snapshot().loaded.config.server.clone();
        self.runtime
            .shutdown
            .drain(server.drain_delay.get(), server.drain_timeout.get())
            .await
    }
}
