//! The one path by which a config takes effect. Start-up applies the first config over an
//! empty running set; SIGHUP, `POST /reload` and a change of the config file on disk call
//! `Reloader::reload`, which reads and validates the whole file and applies it the same way.
//! Applying warms (resolves names, opens files), builds a complete new snapshot beside the
//! running one (reusing unchanged clusters with their health, balancer state and pools), binds
//! any new listener addresses, waits for new discovered clusters' first answer, and only then
//! publishes with one `ArcSwap` store. Anything failing before the store changes nothing.
//! After it, removed listeners stop accepting and drain, and replaced clusters' tasks are
//! retired.

use crate::cluster::Cluster;
use crate::config::{self, ConfigError, ListenerConfig, LoadedConfig};
use crate::listener::{BindError, Listener};
use crate::runtime::Runtime;
use crate::snapshot::{Snapshot, SnapshotError};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a config was not applied (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The snapshot cannot be built.
    #[error("{0}")]
    Build(#[from] SnapshotError),
    /// A listener cannot be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
    /// A listener's TLS files cannot be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A shutdown has started.
    #[error("shutting down: reloads are refused")]
    ShuttingDown,
}

/// What a reload changed, by name.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReloadSummary {
    /// The generation now running.
    pub generation: u64,
    /// Listeners added, removed and changed.
    pub listeners: Changes,
    /// Clusters added, removed and changed.
    pub clusters: Changes,
    /// Listeners whose route table (or default cluster) changed.
    pub routes_changed: Vec<String>,
}

/// Names added, removed and changed.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    /// Names new in this config.
    pub added: Vec<String>,
    /// Names gone from it.
    pub removed: Vec<String>,
    /// Names whose definition changed.
    pub changed: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Resources an xDS server sent, translated into the file's model; merged after the file's own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dynamic {
    /// Listeners (LDS, with their RDS routes filled in).
    pub listeners: Vec<ListenerConfig>,
    /// Clusters (CDS).
    pub clusters: Vec<config::ClusterConfig>,
}

/// The file's config with `dynamic` added, validated as a whole; problems name resources by
/// name rather than by their index in the merged lists.
fn merge(statics: &LoadedConfig, dynamic: &Dynamic) -> Result<LoadedConfig, ConfigError> {
    let mut merged = statics.clone();
    merged
        .config
        .listeners
        .extend(dynamic.listeners.iter().cloned());
    merged
        .config
        .clusters
        .extend(dynamic.clusters.iter().cloned());
    if dynamic.listeners.is_empty() && dynamic.clusters.is_empty() {
        return Ok(merged);
    }
    let cfg = &merged.config;
    config::check(cfg, "xds").map_err(|e| {
        let by_name = |path: &str| -> String {
            for (key, names) in [
                (
                    "listeners",
                    cfg.listeners.iter().map(|l| &l.name).collect::<Vec<_>>(),
                ),
                ("clusters", cfg.clusters.iter().map(|c| &c.name).collect()),
            ] {
                if let Some(rest) = path.strip_prefix(&format!("{key}[")) {
                    if let Some((i, tail)) = rest.split_once(']') {
                        if let Some(n) = i.parse::<usize>().ok().and_then(|i| names.get(i)) {
                            return format!("{key}[{n:?}]{tail}");
                        }
                    }
                }
            }
            path.to_owned()
        };
        ConfigError::Invalid(
            e.issues()
                .iter()
                .map(|i| config::ConfigIssue {
                    path: by_name(&i.path),
                    ..i.clone()
                })
                .collect(),
        )
    })?;
    Ok(merged)
}

/// An accept loop and the tokens that end it.
struct Running {
    listener: Listener,
    /// Stops the accept loop.
    stop: CancellationToken,
    /// Closes the loop's connections (a removed listener drains them).
    close: CancellationToken,
}

/// Applies configs (the first at start, then each reload) and runs the accept loops.
pub struct Reloader {
    runtime: Arc<Runtime>,
    running: tokio::sync::Mutex<Vec<Running>>,
    /// (name, bound address) of each listener, for `/listeners` and tests.
    addrs: Mutex<Vec<(String, SocketAddr)>>,
    /// Content hash of the file as last read by a reload, so the watcher ignores events that
    /// did not change it.
    last_seen: Mutex<Option<u64>>,
    /// The file's config as last applied (what xDS resources are merged into).
    statics: Mutex<Option<LoadedConfig>>,
    /// The xDS resources as last applied.
    dynamic: Mutex<Dynamic>,
}

impl Reloader {
    /// A reloader with nothing running yet; `apply` the first config to start serving.
    pub(crate) fn new(runtime: Arc<Runtime>) -> Arc<Reloader> {
        let reloader = Arc::new(Reloader {
            runtime,
            running: tokio::sync::Mutex::new(Vec::new()),
            addrs: Mutex::new(Vec::new()),
            last_seen: Mutex::new(None),
            statics: Mutex::new(None),
            dynamic: Mutex::new(Dynamic::default()),
        });
        // Once draining starts (after drain_delay), the listening sockets close, so that new
        // connections are refused at once instead of waiting unanswered in the kernel's
        // backlog: the accept loops let go of theirs, and these are the last other owners.
        let weak = Arc::downgrade(&reloader);
        let drain = reloader.runtime.shutdown.drain_token();
        tokio::spawn(async move {
            drain.cancelled().await;
            if let Some(r) = weak.upgrade() {
                let closed = std::mem::take(&mut *r.running.lock().await);
                tracing::info!(
                    listeners = closed.len(),
                    "listening sockets closed for the drain"
                );
            }
        });
        reloader
    }

    /// The name and bound address of each listener.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the config file the running snapshot came from. Concurrent calls run one after
    /// the other.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let mut running = self.running.lock().await;
        let path = self.runtime.snapshot().loaded.source.clone();
        *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = content_hash(&path);
        let result = match config::load(&path) {
            Ok(loaded) => self.install_merged(&mut running, loaded, None).await,
            Err(e) => Err(e.into()),
        };
        self.account(result)
    }

    /// Makes `loaded` the running config (with the xDS resources already applied, if any):
    /// start-up and every reload come through here. Concurrent calls run one after the other.
    pub async fn apply(&self, loaded: LoadedConfig) -> Result<ReloadSummary, ReloadError> {
        let mut running = self.running.lock().await;
        let result = self.install_merged(&mut running, loaded, None).await;
        self.account(result)
    }

    /// Replaces the xDS resources: merged with the file's, validated and applied as one
    /// config. On error nothing changes (the caller NACKs).
    pub async fn apply_dynamic(&self, dynamic: Dynamic) -> Result<ReloadSummary, ReloadError> {
        let mut running = self.running.lock().await;
        let statics = self
            .statics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let result = match statics {
            Some(s) => self.install_merged(&mut running, s, Some(dynamic)).await,
            None => Err(ReloadError::ShuttingDown),
        };
        self.account(result)
    }

    /// The file's clusters as last applied.
    pub fn static_clusters(&self) -> Vec<config::ClusterConfig> {
        self.statics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.config.clusters.clone())
            .unwrap_or_default()
    }

    /// The xDS resources now applied.
    pub fn dynamic(&self) -> Dynamic {
        self.dynamic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn install_merged(
        &self,
        running: &mut Vec<Running>,
        statics: LoadedConfig,
        dynamic: Option<Dynamic>,
    ) -> Result<ReloadSummary, ReloadError> {
        let dynamic = dynamic.unwrap_or_else(|| self.dynamic());
        let merged = merge(&statics, &dynamic)?;
        let summary = self.install(running, merged).await?;
        *self.statics.lock().unwrap_or_else(|p| p.into_inner()) = Some(statics);
        *self.dynamic.lock().unwrap_or_else(|p| p.into_inner()) = dynamic;
        Ok(summary)
    }

    /// Counts and logs the outcome of an apply.
    fn account(
        &self,
        result: Result<ReloadSummary, ReloadError>,
    ) -> Result<ReloadSummary, ReloadError> {
        let m = &self.runtime.metrics;
        match &result {
            Ok(summary) => {
                m.config_reload.with_label_values(&["success"]).inc();
                m.config_last_success.set(unix_now());
                m.config_generation.set(summary.generation as i64);
                self.runtime.set_last_reload_error(None);
                tracing::info!(
                    generation = summary.generation,
                    summary = %serde_json::to_string(summary).unwrap_or_default(),
                    "configuration applied"
                );
            }
            Err(e) => {
                m.config_reload.with_label_values(&["failure"]).inc();
                self.runtime.set_last_reload_error(Some(e.to_string()));
                tracing::warn!(error = %e, "configuration rejected; the running one stays");
            }
        }
        result
    }

    async fn install(
        &self,
        running: &mut Vec<Running>,
        loaded: LoadedConfig,
    ) -> Result<ReloadSummary, ReloadError> {
        if self.runtime.shutdown.is_requested() {
            return Err(ReloadError::ShuttingDown);
        }
        let old = self.runtime.snapshot();
        let metrics = &self.runtime.metrics;
        let warmed = crate::snapshot::warm(&loaded, Some(&old), metrics).await?;
        let snapshot = Snapshot::build(loaded, Some(&old), warmed, metrics, old.generation + 1)?;
        warn_restart_only(&old.loaded.config, &snapshot.loaded.config);
        let plan = self.plan_listeners(&snapshot, running).await?;

        let summary = summarize(&old, &snapshot);
        let new_clusters: Vec<Arc<Cluster>> = snapshot
            .clusters
            .iter()
            .filter(|c| old.cluster(&c.name).is_none_or(|o| !Arc::ptr_eq(o, c)))
            .cloned()
            .collect();
        let retired: Vec<Arc<Cluster>> = old
            .clusters
            .iter()
            .filter(|o| snapshot.cluster(&o.name).is_none_or(|c| !Arc::ptr_eq(o, c)))
            .cloned()
            .collect();
        // Nothing can fail from here on. New clusters' tasks start before the store, so that
        // a discovered cluster is published with its first answer, not empty (Envoy's cluster
        // warming).
        for c in &new_clusters {
            crate::health::spawn(c);
            crate::discovery::spawn(c, &self.runtime.eds);
        }
        warm_discovery(&new_clusters).await;
        let generation = snapshot.generation;
        self.runtime.publish(snapshot);

        // After the store: start, restart and stop accept loops, then retire old clusters.
        self.switch_listeners(plan, running);
        self.retire(&retired);
        Ok(ReloadSummary {
            generation,
            ..summary
        })
    }

    /// Listeners: reuse a running socket when the address is the same; bind the rest now,
    /// before the store, so a bind failure changes nothing.
    /// Each running socket goes to at most one listener: the same name at the same address
    /// first, then (renames) the same concrete address. Port 0 means "any port", so it only
    /// matches by name.
    async fn plan_listeners(
        &self,
        snapshot: &Snapshot,
        running: &[Running],
    ) -> Result<Vec<Plan>, ReloadError> {
        let cfg = &snapshot.loaded.config;
        let base = &snapshot.loaded.base_dir;
        let mut plan = Vec::with_capacity(cfg.listeners.len());
        let mut claimed = vec![false; running.len()];
        for (i, lc) in cfg.listeners.iter().enumerate() {
            let by_name = running.iter().enumerate().position(|(k, r)| {
                !claimed[k] && *r.listener.name == *lc.name && same_address(&r.listener, lc)
            });
            let by_addr = || {
                running.iter().enumerate().position(|(k, r)| {
                    !claimed[k] && matches!(lc.address.parse::<SocketAddr>(), Ok(a) if a.port() != 0 && a == r.listener.local_addr)
                })
            };
            match by_name.or_else(by_addr) {
                Some(k) => {
                    claimed[k] = true;
                    // Unchanged TLS settings keep the running TLS state (and its rotation).
                    let tls = if running[k].listener.config.tls == lc.tls {
                        running[k].listener.tls.clone()
                    } else {
                        crate::listener::build_tls(i, lc, base, &self.runtime.metrics)?
                    };
                    plan.push(Plan::Reuse(k, Box::new(lc.clone()), tls));
                }
                None => {
                    let tls = crate::listener::build_tls(i, lc, base, &self.runtime.metrics)?;
                    plan.push(Plan::New(Listener::bind(i, lc, tls).await?));
                }
            }
        }
        Ok(plan)
    }

    /// Carries out a plan once the new snapshot is published.
    fn switch_listeners(&self, plan: Vec<Plan>, running: &mut Vec<Running>) {
        let mut kept = vec![false; running.len()];
        let mut next = Vec::with_capacity(plan.len());
        for p in plan {
            match p {
                Plan::Reuse(k, lc, tls) => {
                    kept[k] = true;
                    let r = &running[k];
                    if r.listener.config.name == lc.name
                        && accept_settings_equal(&r.listener.config, &lc)
                    {
                        next.push(Running {
                            listener: r.listener.with_config(&lc, tls),
                            stop: r.stop.clone(),
                            close: r.close.clone(),
                        });
                    } else {
                        // New settings on the same socket: the old loop's connections finish
                        // on theirs; new connections get the new ones.
                        r.stop.cancel();
                        next.push(spawn_accept(
                            &self.runtime,
                            r.listener.with_config(&lc, tls),
                        ));
                    }
                }
                Plan::New(l) => next.push(spawn_accept(&self.runtime, l)),
            }
        }
        for (r, keep) in running.iter().zip(kept) {
            if !keep {
                tracing::info!(listener = %r.listener.name, "listener removed: draining its connections");
                r.stop.cancel();
                r.close.cancel();
            }
        }
        *running = next;
        *self.addrs.lock().unwrap_or_else(|p| p.into_inner()) = running
            .iter()
            .map(|r| (r.listener.name.to_string(), r.listener.local_addr))
            .collect();
    }

    /// Stops the tasks of clusters the new snapshot replaced or dropped, and forgets the
    /// series of endpoints that are gone (their cluster removed, or no longer listing them).
    fn retire(&self, retired: &[Arc<Cluster>]) {
        for c in retired {
            c.retire();
        }
        let now = self.runtime.snapshot();
        for c in retired {
            let still = now.cluster(&c.name);
            for e in c.endpoints().all.iter() {
                let kept =
                    still.is_some_and(|n| n.endpoints().all.iter().any(|x| x.label == e.label));
                if !kept {
                    self.runtime.metrics.forget_endpoint(&c.name, &e.label);
                }
            }
        }
    }

    /// Whether the file's content differs from what the last reload read.
    fn file_changed(&self, path: &Path) -> bool {
        let now = content_hash(path);
        now.is_some() && now != *self.last_seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long an apply waits for new discovered clusters' first round before publishing them
/// anyway (a failed round counts, so this is only reached when a source hangs).
const WARM_TIMEOUT: Duration = Duration::from_secs(10);

async fn warm_discovery(clusters: &[Arc<Cluster>]) {
    let first_rounds = async {
        for c in clusters {
            c.discovered().await;
        }
    };
    if tokio::time::timeout(WARM_TIMEOUT, first_rounds)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = WARM_TIMEOUT.as_secs(),
            "discovery has not answered; publishing the clusters without it"
        );
    }
}

/// Keys a reload reads but only a restart applies.
fn warn_restart_only(old: &config::Config, cfg: &config::Config) {
    for (key, changed) in [
        ("admin.address", cfg.admin.address != old.admin.address),
        ("xds", cfg.xds != old.xds),
        (
            "metrics.per_endpoint",
            cfg.metrics.per_endpoint != old.metrics.per_endpoint,
        ),
        (
            "server.worker_threads",
            cfg.server.worker_threads != old.server.worker_threads,
        ),
    ] {
        if changed {
            tracing::warn!(key, "changed, but takes effect only at the next start");
        }
    }
}

enum Plan {
    Reuse(
        usize,
        Box<ListenerConfig>,
        Option<Arc<crate::tls::server::TlsServer>>,
    ),
    New(Listener),
}

fn spawn_accept(runtime: &Arc<Runtime>, listener: Listener) -> Running {
    let stop = CancellationToken::new();
    let close = CancellationToken::new();
    tokio::spawn(
        listener
            .clone()
            .run(runtime.clone(), stop.clone(), close.clone()),
    );
    Running {
        listener,
        stop,
        close,
    }
}

fn same_address(running: &Listener, cfg: &ListenerConfig) -> bool {
    if running.config.address == cfg.address {
        return true;
    }
    matches!(cfg.address.parse::<SocketAddr>(), Ok(a) if a.port() != 0 && a == running.local_addr)
}

/// Equal in everything the accept loop uses (routes live in the snapshot, not here).
fn accept_settings_equal(a: &ListenerConfig, b: &ListenerConfig) -> bool {
    a.protocol == b.protocol
        && a.limits == b.limits
        && a.tls == b.tls
        && a.access_log == b.access_log
        && a.accept_proxy_protocol == b.accept_proxy_protocol
}

fn summarize(old: &Snapshot, new: &Snapshot) -> ReloadSummary {
    let oc = &old.loaded.config;
    let nc = &new.loaded.config;
    let mut listeners = Changes::default();
    let mut routes_changed = Vec::new();
    for l in &nc.listeners {
        match oc.listeners.iter().find(|o| o.name == l.name) {
            None => listeners.added.push(l.name.clone()),
            Some(o) => {
                if o.address != l.address || !accept_settings_equal(o, l) {
                    listeners.changed.push(l.name.clone());
                }
                if o.routes != l.routes || o.cluster != l.cluster {
                    routes_changed.push(l.name.clone());
                }
            }
        }
    }
    for o in &oc.listeners {
        if !nc.listeners.iter().any(|l| l.name == o.name) {
            listeners.removed.push(o.name.clone());
        }
    }
    let mut clusters = Changes::default();
    for c in &new.clusters {
        match old.cluster(&c.name) {
            None => clusters.added.push(c.name.clone()),
            Some(o) if !Arc::ptr_eq(o, c) => clusters.changed.push(c.name.clone()),
            Some(_) => {}
        }
    }
    for o in &old.clusters {
        if new.cluster(&o.name).is_none() {
            clusters.removed.push(o.name.clone());
        }
    }
    if listeners.is_empty() && clusters.is_empty() && routes_changed.is_empty() {
        tracing::debug!("reload: no changes");
    }
    ReloadSummary {
        generation: new.generation,
        listeners,
        clusters,
        routes_changed,
    }
}

fn content_hash(path: &Path) -> Option<u64> {
    std::fs::read(path).ok().map(|b| crate::hash::hash_key(&b))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Watches the config file (see `watch::FileWatch`, which also catches Kubernetes ConfigMap
/// updates) and reloads, after ~250 ms of quiet, when the file's content changed.
pub fn spawn_watcher(reloader: Arc<Reloader>, path: PathBuf) -> Result<(), notify::Error> {
    let mut watch = crate::watch::FileWatch::new(&path)?;
    tracing::info!(folder = %watch.folder.display(), "watching the config file for changes");
    tokio::spawn(async move {
        while watch.changed(Duration::from_millis(250)).await {
            if reloader.file_changed(&path) {
                tracing::info!(file = %path.display(), "config file changed: reloading");
                // The outcome is logged and counted inside reload().
                let _ = reloader.reload().await;
            }
        }
    });
    Ok(())
}
