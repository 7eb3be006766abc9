//! The xDS client: one aggregated discovery (ADS) stream, State of the World, to the server
//! `xds.server` names. Responses are translated into the file's model (`translate`), merged
//! with the file's own resources and applied through the one reload path; each is then ACKed
//! (the version it carried) or NACKed (the last good version, and `error_detail` naming the
//! resource and field). While the server is away the last accepted config keeps serving; the
//! client reconnects with jittered exponential backoff and resubscribes with the versions it
//! holds. Types are requested in Envoy's order: clusters, then (once they are in) listeners;
//! endpoints and routes by the names the clusters and listeners use.

mod connect;
mod state;
pub mod translate;

use crate::config::{XdsConfig, XdsResourceType};
use crate::reload::{ReloadError, ReloadSummary, Reloader};
use crate::runtime::Runtime;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use state::{kind_of, label, type_url, Resources, TypeState, ORDER};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use translate::Rejected;

/// Starts the client; readiness is held until the first full config is in (or the initial
/// fetch timeout passes). Fails only when `xds.tls` names files that cannot be loaded
/// (relative to `base`, the config file's folder).
pub fn spawn(
    runtime: Arc<Runtime>,
    reloader: Arc<Reloader>,
    cfg: XdsConfig,
    base: &std::path::Path,
) -> Result<(), crate::tls::TlsError> {
    let transport = connect::Transport::new(cfg.tls.as_ref(), base)?;
    runtime.set_xds_pending(true);
    runtime
        .eds
        .set_initial_fetch_timeout(cfg.initial_fetch_timeout.get());
    let release = runtime.clone();
    let timeout = cfg.initial_fetch_timeout.get();
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if !release.is_ready() && !release.shutdown.is_requested() {
            tracing::warn!(
                timeout_s = timeout.as_secs_f64(),
                "xDS: no full config within the initial fetch timeout; ready with what is in"
            );
        }
        release.set_xds_pending(false);
    });
    let mut client = Client {
        types: ORDER
            .into_iter()
            .filter(|t| cfg.resources.contains(t))
            .map(|t| (t, TypeState::default()))
            .collect(),
        cfg,
        transport,
        runtime,
        reloader,
        resources: Resources::default(),
        pending: None,
        queued: VecDeque::new(),
        deferred: HashMap::new(),
    };
    tokio::spawn(async move { client.run().await });
    Ok(())
}

/// Loads `xds.tls`'s files as the client would (for `validate --deep`).
pub fn check_tls(cfg: &XdsConfig, base: &std::path::Path) -> Result<(), String> {
    connect::Transport::new(cfg.tls.as_ref(), base)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An apply in flight, and what to commit and answer when it ends.
struct Pending {
    task: JoinHandle<Result<ReloadSummary, ReloadError>>,
    kind: XdsResourceType,
    version: String,
    nonce: String,
    resources: Resources,
    /// The response, kept to try again if it fails on a reference another type may supply.
    response: DiscoveryResponse,
    /// A deferred response tried again (already NACKed once: not answered again on failure).
    retry: bool,
}

struct Client {
    cfg: XdsConfig,
    transport: connect::Transport,
    runtime: Arc<Runtime>,
    reloader: Arc<Reloader>,
    types: HashMap<XdsResourceType, TypeState>,
    resources: Resources,
    pending: Option<Pending>,
    /// Responses that arrived while an apply was in flight (endpoints never wait), and
    /// whether each is a retry.
    queued: VecDeque<(DiscoveryResponse, bool)>,
    /// The last response of each type that failed to apply. A SotW server sends types in any
    /// order, so routes may name clusters that are still on their way: each is NACKed, then
    /// tried again after the next accepted update (and ACKed if it then applies).
    deferred: HashMap<XdsResourceType, DiscoveryResponse>,
}

type Tx = mpsc::Sender<DiscoveryRequest>;

impl Client {
    async fn run(&mut self) {
        let servers: Vec<String> = self
            .cfg
            .server
            .list()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut failures = 0u32;
        let runtime = self.runtime.clone();
        let mut shutdown = std::pin::pin!(runtime.shutdown.requested());
        for attempt in 0usize.. {
            let server = &servers[attempt % servers.len()];
            let connected = tokio::select! {
                _ = &mut shutdown => return,
                r = self.session(server) => r,
            };
            self.runtime.metrics.xds_connected.set(0);
            // Whatever was being applied finishes; its result is committed for the next stream.
            if let Some(p) = self.pending.take() {
                let result = p.task.await;
                if matches!(result, Ok(Ok(_))) {
                    self.commit(p.kind, p.version, p.resources);
                }
            }
            failures = if connected {
                1
            } else {
                failures.saturating_add(1)
            };
            let delay = connect::backoff(&self.cfg, failures);
            tracing::warn!(server = %server, retry_in_ms = delay.as_millis() as u64, "xDS: stream ended; the last accepted config keeps serving");
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream, until it fails. Returns whether any response arrived on it.
    async fn session(&mut self, server: &str) -> bool {
        let endpoint = match tonic::transport::Endpoint::from_shared(self.transport.uri(server)) {
            Ok(e) => e
                .connect_timeout(self.cfg.connect_timeout.get())
                .tcp_nodelay(true)
                // A server that stops answering is noticed within ~40 s, not never.
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10)),
            Err(e) => {
                tracing::error!(server, error = %e, "xDS: bad server address");
                return false;
            }
        };
        let channel = match endpoint
            .connect_with_connector(self.transport.connector())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(server, error = %e, "xDS: cannot connect");
                return false;
            }
        };
        let max = self.cfg.max_message_kb.saturating_mul(1024);
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(max);
        let (tx, rx) = mpsc::channel(64);
        for t in self.types.values_mut() {
            t.nonce.clear();
            t.requested = false;
        }
        // Clusters first; listeners once clusters are in (or at once without CDS).
        self.subscribe(&tx, XdsResourceType::Clusters, None).await;
        self.subscribe_endpoints(&tx, None).await;
        if !self.types.contains_key(&XdsResourceType::Clusters)
            || self.answered(XdsResourceType::Clusters)
        {
            self.subscribe(&tx, XdsResourceType::Listeners, None).await;
            self.subscribe_routes(&tx, self.resources.rds_names()).await;
        }
        let mut inbound = match client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => {
                tracing::warn!(server, error = %e, "xDS: the server refused the stream");
                return false;
            }
        };
        self.runtime.metrics.xds_connected.set(1);
        tracing::info!(server, "xDS: stream open");
        let mut got_any = false;
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(resp)) => {
                        got_any = true;
                        self.received(&tx, resp, false).await;
                    }
                    Ok(None) => return got_any,
                    Err(e) => {
                        tracing::warn!(server, error = %e, "xDS: stream error");
                        return got_any;
                    }
                },
                result = wait(&mut self.pending) => {
                    self.finish(&tx, result).await;
                    while self.pending.is_none() {
                        let Some((resp, retry)) = self.queued.pop_front() else { break };
                        self.received(&tx, resp, retry).await;
                    }
                }
            }
        }
    }

    fn answered(&self, t: XdsResourceType) -> bool {
        self.types.get(&t).is_some_and(|s| s.answered)
    }

    async fn received(&mut self, tx: &Tx, resp: DiscoveryResponse, retry: bool) {
        let Some(kind) = kind_of(&resp.type_url) else {
            tracing::warn!(type_url = %resp.type_url, "xDS: response of a type not asked for; ignored");
            return;
        };
        let Some(st) = self.types.get_mut(&kind) else {
            return;
        };
        if !retry {
            st.nonce = resp.nonce.clone();
            if self.pending.as_ref().is_none_or(|p| p.kind != kind) {
                // A newer response of the type supersedes the one waiting for a retry.
                self.deferred.remove(&kind);
            }
        }
        if kind == XdsResourceType::Endpoints {
            return self.endpoints(tx, resp).await;
        }
        if self.pending.is_some() {
            self.queued.push_back((resp, retry));
            return;
        }
        let mut next = self.resources.clone();
        let translated = translate_all(kind, &resp, &mut next);
        if let Err(e) = translated {
            if retry {
                return;
            }
            return self
                .answer(tx, kind, &resp.version_info, &resp.nonce, Some(e.0))
                .await;
        }
        match kind {
            XdsResourceType::Clusters => {
                // Ask for the new clusters' endpoints now, so they can warm during the apply.
                let statics = self.reloader.static_clusters();
                let mut names = state::eds_names(statics.iter().chain(next.clusters.values()));
                if let Some(st) = self.types.get(&XdsResourceType::Endpoints) {
                    names.extend(st.names.iter().cloned());
                    names.sort();
                    names.dedup();
                }
                self.subscribe_endpoints(tx, Some(names)).await;
            }
            XdsResourceType::Listeners => {
                let mut names = next.rds_names();
                names.extend(self.resources.rds_names());
                names.sort();
                names.dedup();
                self.subscribe_routes(tx, names).await;
            }
            _ => {}
        }
        let reloader = self.reloader.clone();
        let dynamic = next.dynamic();
        self.pending = Some(Pending {
            task: tokio::spawn(async move { reloader.apply_dynamic(dynamic).await }),
            kind,
            version: resp.version_info.clone(),
            nonce: resp.nonce.clone(),
            resources: next,
            response: resp,
            retry,
        });
    }

    async fn endpoints(&mut self, tx: &Tx, resp: DiscoveryResponse) {
        let mut assignments = Vec::with_capacity(resp.resources.len());
        for any in &resp.resources {
            let result = translate::unpack(any, translate::endpoint::TYPE_URL, "endpoints")
                .and_then(
                    |la: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment| {
                        let name = la.cluster_name.clone();
                        translate::endpoint::targets(
                            la,
                            &format!("cluster load assignment {name:?}"),
                        )
                        .map(|t| (name, t))
                    },
                );
            match result {
                Ok(a) => assignments.push(a),
                Err(e) => {
                    return self
                        .answer(
                            tx,
                            XdsResourceType::Endpoints,
                            &resp.version_info,
                            &resp.nonce,
                            Some(e.0),
                        )
                        .await
                }
            }
        }
        for (name, targets) in assignments {
            self.runtime.eds.publish(&name, targets);
        }
        self.commit_version(XdsResourceType::Endpoints, &resp.version_info);
        self.answer(
            tx,
            XdsResourceType::Endpoints,
            &resp.version_info,
            &resp.nonce,
            None,
        )
        .await;
    }

    async fn finish(
        &mut self,
        tx: &Tx,
        result: Result<Result<ReloadSummary, ReloadError>, tokio::task::JoinError>,
    ) {
        let Some(p) = self.pending.take() else { return };
        let error = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the apply task failed: {e}")),
        };
        let kind = p.kind;
        match &error {
            None => {
                self.commit(kind, p.version.clone(), p.resources);
                self.deferred.remove(&kind);
                for (_, resp) in self.deferred.drain() {
                    self.queued.push_front((resp, true));
                }
            }
            Some(_) => {
                self.deferred.insert(kind, p.response);
            }
        }
        if error.is_none() || !p.retry {
            self.answer(tx, kind, &p.version, &p.nonce, error).await;
        }
        if kind == XdsResourceType::Clusters {
            let names = state::eds_names(
                self.reloader
                    .static_clusters()
                    .iter()
                    .chain(self.resources.clusters.values()),
            );
            self.subscribe_endpoints(tx, Some(names)).await;
            self.subscribe(tx, XdsResourceType::Listeners, None).await;
        }
        if kind == XdsResourceType::Listeners {
            self.subscribe_routes(tx, self.resources.rds_names()).await;
        }
        self.update_ready();
    }

    fn commit(&mut self, kind: XdsResourceType, version: String, resources: Resources) {
        self.resources = resources;
        self.commit_version(kind, &version);
        let keep: std::collections::HashSet<String> = state::eds_names(
            self.reloader
                .static_clusters()
                .iter()
                .chain(self.resources.clusters.values()),
        )
        .into_iter()
        .collect();
        self.runtime.eds.retain(&keep);
    }

    fn commit_version(&mut self, kind: XdsResourceType, version: &str) {
        let Some(st) = self.types.get_mut(&kind) else {
            return;
        };
        let m = &self.runtime.metrics;
        if st.version != version {
            let _ = m
                .xds_version
                .remove_label_values(&[label(kind), &st.version]);
            st.version = version.to_owned();
        }
        m.xds_version
            .with_label_values(&[label(kind), version])
            .set(1);
        self.runtime.set_xds_version(label(kind), version);
    }

    /// ACK (no error) or NACK one response.
    async fn answer(
        &mut self,
        tx: &Tx,
        kind: XdsResourceType,
        version: &str,
        nonce: &str,
        error: Option<String>,
    ) {
        let result = if error.is_some() {
            "rejected"
        } else {
            "accepted"
        };
        self.runtime
            .metrics
            .xds_updates
            .with_label_values(&[label(kind), result])
            .inc();
        let Some(st) = self.types.get_mut(&kind) else {
            return;
        };
        st.answered = true;
        match &error {
            Some(e) => {
                tracing::warn!(r#type = label(kind), version, error = %e, "xDS: update rejected (NACK); the last accepted one stays")
            }
            None => tracing::info!(r#type = label(kind), version, "xDS: update accepted (ACK)"),
        }
        let req = DiscoveryRequest {
            version_info: st.version.clone(),
            node: Some(connect::node(&self.cfg)),
            resource_names: st.names.clone(),
            type_url: type_url(kind).to_owned(),
            response_nonce: nonce.to_owned(),
            error_detail: error.map(|message| Status {
                code: 3,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        };
        let _ = tx.send(req).await;
        self.update_ready();
    }

    /// Sends a subscription for `kind` (wildcard, or these names) if it is configured and the
    /// names differ from what the stream already asked for.
    async fn subscribe(&mut self, tx: &Tx, kind: XdsResourceType, names: Option<Vec<String>>) {
        let Some(st) = self.types.get_mut(&kind) else {
            return;
        };
        if let Some(n) = names {
            if st.requested && st.names == n {
                return;
            }
            st.names = n;
        } else if st.requested {
            return;
        }
        st.requested = true;
        let req = DiscoveryRequest {
            version_info: st.version.clone(),
            node: Some(connect::node(&self.cfg)),
            resource_names: st.names.clone(),
            type_url: type_url(kind).to_owned(),
            response_nonce: st.nonce.clone(),
            ..Default::default()
        };
        let _ = tx.send(req).await;
    }

    async fn subscribe_endpoints(&mut self, tx: &Tx, names: Option<Vec<String>>) {
        let names = names.unwrap_or_else(|| {
            state::eds_names(
                self.reloader
                    .static_clusters()
                    .iter()
                    .chain(self.resources.clusters.values()),
            )
        });
        // EDS is never wildcard here: an empty list would mean "everything".
        if !names.is_empty() {
            self.subscribe(tx, XdsResourceType::Endpoints, Some(names))
                .await;
        }
    }

    async fn subscribe_routes(&mut self, tx: &Tx, names: Vec<String>) {
        if !names.is_empty() {
            self.subscribe(tx, XdsResourceType::Routes, Some(names))
                .await;
        }
    }

    /// Ready once clusters and listeners have answered and no listener waits for its routes.
    fn update_ready(&self) {
        let done = [XdsResourceType::Clusters, XdsResourceType::Listeners]
            .into_iter()
            .all(|t| !self.types.contains_key(&t) || self.answered(t))
            && (!self.types.contains_key(&XdsResourceType::Routes)
                || self.resources.warming_listeners() == 0)
            && self.pending.is_none();
        if done {
            self.runtime.set_xds_pending(false);
        }
    }
}

async fn wait(
    pending: &mut Option<Pending>,
) -> Result<Result<ReloadSummary, ReloadError>, tokio::task::JoinError> {
    match pending {
        Some(p) => (&mut p.task).await,
        None => std::future::pending().await,
    }
}

/// Translates a whole SotW response into `next` (replacing that type's resources).
fn translate_all(
    kind: XdsResourceType,
    resp: &DiscoveryResponse,
    next: &mut Resources,
) -> Result<(), Rejected> {
    use translate::{cluster, listener, route, unpack};
    let url = type_url(kind);
    match kind {
        XdsResourceType::Clusters => {
            next.clusters.clear();
            for any in &resp.resources {
                let c = cluster::translate(unpack(any, url, "clusters")?)?;
                if next.clusters.insert(c.name.clone(), c).is_some() {
                    return Err(Rejected("clusters: a name appears twice".into()));
                }
            }
        }
        XdsResourceType::Listeners => {
            next.listeners.clear();
            for any in &resp.resources {
                let l = listener::translate(unpack(any, url, "listeners")?)?;
                if next.listeners.insert(l.config.name.clone(), l).is_some() {
                    return Err(Rejected("listeners: a name appears twice".into()));
                }
            }
        }
        XdsResourceType::Routes => {
            next.routes.clear();
            for any in &resp.resources {
                let t = route::translate(unpack(any, url, "routes")?)?;
                next.routes.insert(t.name.clone(), t);
            }
        }
        XdsResourceType::Endpoints => {}
    }
    Ok(())
}
