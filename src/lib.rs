//! outrigger: a load-balancing sidecar proxy.
//!
//! Data flows one way:
//!
//! ```text
//! YAML file ──config::load──▶ Config (validated; every error has file, line, key path)
//!                               │
//!                Snapshot::build(config, previous)   (unchanged clusters are reused)
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

pub mod access_log;
pub mod admin;
pub mod balancer;
pub mod build_info;
pub mod circuit_breaker;
pub mod cluster;
pub mod config;
pub mod conn_tracker;
pub mod cpus;
pub mod demo;
pub mod discovery;
pub mod endpoint;
pub mod hash;
pub mod health;
pub mod http_proxy;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod pool;
pub mod relay;
pub mod reload;
pub mod resolve;
pub mod route;
pub mod runtime;
pub mod shutdown;
pub mod snapshot;
pub mod tcp_proxy;
pub mod tls;
pub mod wake;
pub mod watch;

use config::LoadedConfig;
use metrics::Metrics;
use runtime::Runtime;
use snapshot::{Snapshot, SnapshotError};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Bind(#[from] listener::BindError),
    #[error("admin.address: cannot bind {address}: {source}")]
    AdminBind {
        address: String,
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
        let snapshot = Snapshot::build(loaded, None, &metrics, 1)?;
        let cfg = snapshot.loaded.config.clone();
        let admin_socket = tokio::net::TcpListener::bind(&cfg.admin.address)
            .await
            .map_err(|source| StartError::AdminBind {
                address: cfg.admin.address.clone(),
                source,
            })?;
        let admin_addr = admin_socket
            .local_addr()
            .map_err(|source| StartError::AdminBind {
                address: cfg.admin.address.clone(),
                source,
            })?;
        let mut bound = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let tls = listener::build_tls(i, l, &snapshot.loaded.base_dir, &metrics)
                .map_err(listener::BindError::from)?;
            bound.push(listener::Listener::bind(i, l, tls).await?);
        }
        for c in &snapshot.clusters {
            health::spawn(c);
            discovery::spawn(c);
        }
        metrics.config_reload.with_label_values(&["success"]).inc();
        // Present from the start, so an alert on failures sees 0 rather than no series.
        metrics.config_reload.with_label_values(&["failure"]);
        metrics.config_generation.set(1);
        metrics.config_last_success.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        let source = snapshot.loaded.source.clone();
        let runtime = Arc::new(Runtime::new(snapshot, metrics));
        let reloader = reload::Reloader::start(runtime.clone(), bound);
        tokio::spawn(admin::run(admin_socket, runtime.clone(), reloader.clone()));
        tracing::info!(address = %admin_addr, "admin listening");
        if cfg.server.watch_config && source.is_file() {
            if let Err(e) = reload::spawn_watcher(reloader.clone(), source.clone()) {
                tracing::warn!(file = %source.display(), error = %e, "cannot watch the config file; SIGHUP and POST /reload still reload");
            }
        }
        // Like Envoy's cluster warming: not ready until each discovered cluster has had its
        // first answer (or failed it), so the first requests do not meet an empty cluster.
        let clusters = runtime.snapshot().clusters.clone();
        let warm = async {
            for c in &clusters {
                c.discovered().await;
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(10), warm)
            .await
            .is_err()
        {
            tracing::warn!("discovery has not answered within 10 s; ready without it");
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

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

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
