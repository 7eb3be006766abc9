//! TLS termination for a listener (HTTP or TCP): certificates chosen by SNI (exact names, then
//! `*.suffix` wildcards, then the listener's default), ALPN, optional client-certificate
//! verification (mTLS), a handshake timeout, and rotation: the files are checked every second
//! and a changed set is loaded for new handshakes, while established connections keep theirs.
//! A broken new file keeps the old certificates, logged and counted.

use super::certs::{self, certified_key};
use super::{resolve, TlsError};
use crate::config::ListenerTlsConfig;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// (".example.com", key) for "*.example.com".
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, k)| k.clone())
            .or_else(|| Some(self.default.clone()))
    }
}

pub struct TlsServer {
    listener: String,
    cfg: ListenerTlsConfig,
    base: PathBuf,
    key_prefix: String,
    alpn: Vec<Vec<u8>>,
    config: ArcSwap<ServerConfig>,
    fingerprint: Mutex<u64>,
    handshake_ok: IntCounter,
    handshake_failed: IntCounter,
    handshake_duration: Histogram,
    reload_ok: IntCounter,
    reload_failed: IntCounter,
    metrics: Arc<Metrics>,
}

impl TlsServer {
    /// Loads everything `cfg` names; any problem is an error naming the key and file.
    pub fn build(
        listener: &str,
        key_prefix: &str,
        cfg: &ListenerTlsConfig,
        base: &Path,
        default_alpn: &[&str],
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<TlsServer>, TlsError> {
        let alpn = match &cfg.alpn {
            Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
            None => default_alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        };
        let server = TlsServer {
            listener: listener.to_owned(),
            cfg: cfg.clone(),
            base: base.to_path_buf(),
            key_prefix: key_prefix.to_owned(),
            alpn,
            config: ArcSwap::from_pointee(
                ServerConfig::builder_with_provider(super::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Config {
                        key: key_prefix.into(),
                        message: e.to_string(),
                    })?
                    .with_no_client_auth()
                    .with_cert_resolver(
                        Arc::new(rustls::server::ResolvesServerCertUsingSni::new()),
                    ),
            ),
            fingerprint: Mutex::new(0),
            handshake_ok: metrics
                .tls_handshakes
                .with_label_values(&[listener, "success"]),
            handshake_failed: metrics
                .tls_handshakes
                .with_label_values(&[listener, "failure"]),
            handshake_duration: metrics
                .tls_handshake_duration
                .with_label_values(&[listener]),
            reload_ok: metrics
                .tls_reloads
                .with_label_values(&[listener, "success"]),
            reload_failed: metrics
                .tls_reloads
                .with_label_values(&[listener, "failure"]),
            metrics: metrics.clone(),
        };
        let loaded = server.load()?;
        server.config.store(Arc::new(loaded));
        *server.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = server.files_hash();
        Ok(Arc::new(server))
    }

    fn files(&self) -> Vec<PathBuf> {
        let c = &self.cfg;
        let mut f = vec![resolve(&self.base, &c.cert), resolve(&self.base, &c.key)];
        f.extend(c.client_ca.iter().map(|p| resolve(&self.base, p)));
        f.extend(c.crl.iter().map(|p| resolve(&self.base, p)));
        for s in &c.sni {
            f.push(resolve(&self.base, &s.cert));
            f.push(resolve(&self.base, &s.key));
        }
        f
    }

    fn files_hash(&self) -> u64 {
        let mut all = Vec::new();
        for f in self.files() {
            all.extend(std::fs::read(&f).unwrap_or_default());
            all.push(0);
        }
        crate::hash::hash_key(&all)
    }

    fn load(&self) -> Result<ServerConfig, TlsError> {
        let c = &self.cfg;
        let p = &self.key_prefix;
        let default = certified_key(
            &format!("{p}.cert"),
            &resolve(&self.base, &c.cert),
            &format!("{p}.key"),
            &resolve(&self.base, &c.key),
        )?;
        let mut expiry = vec![(names_label(&default, None), default.clone())];
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (i, s) in c.sni.iter().enumerate() {
            let k = certified_key(
                &format!("{p}.sni[{i}].cert"),
                &resolve(&self.base, &s.cert),
                &format!("{p}.sni[{i}].key"),
                &resolve(&self.base, &s.key),
            )?;
            for name in &s.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_owned(), k.clone())),
                    None => {
                        exact.insert(name, k.clone());
                    }
                }
            }
            expiry.push((names_label(&k, Some(&s.server_names)), k));
        }
        let resolver = Arc::new(SniResolver {
            default,
            exact,
            wildcard,
        });
        let builder = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config {
                key: p.clone(),
                message: e.to_string(),
            })?;
        let mut config = match &c.client_ca {
            Some(ca) => {
                let key = format!("{p}.client_ca");
                let roots = certs::root_store(&key, &resolve(&self.base, ca))?;
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider());
                if let Some(crl) = &c.crl {
                    let crls = certs::read_crls(&format!("{p}.crl"), &resolve(&self.base, crl))?;
                    // Only the client's own certificate is checked, and a CA the lists do not
                    // cover is not refused for that: the lists name what is revoked.
                    verifier = verifier
                        .with_crls(crls)
                        .only_check_end_entity_revocation()
                        .allow_unknown_revocation_status();
                }
                let verifier = verifier.build().map_err(|e| TlsError::Config {
                    key,
                    message: e.to_string(),
                })?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_cert_resolver(resolver)
            }
            None => builder.with_no_client_auth().with_cert_resolver(resolver),
        };
        config.alpn_protocols = self.alpn.clone();
        // TLS 1.2 resumption by ticket; TLS 1.3 resumes from the default in-memory session cache.
        if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = t;
        }
        for (label, k) in &expiry {
            if let Some(t) = k.end_entity_cert().ok().and_then(certs::not_after) {
                self.metrics
                    .tls_expiry
                    .with_label_values(&[&self.listener, label])
                    .set(t as f64);
            }
        }
        Ok(config)
    }

    /// Completes a handshake within `timeout`, counting and timing it.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<S>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                self.handshake_ok.inc();
                self.handshake_duration
                    .observe(started.elapsed().as_secs_f64());
                Some(s)
            }
            Ok(Err(e)) => {
                self.handshake_failed.inc();
                tracing::debug!(listener = %self.listener, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.handshake_failed.inc();
                tracing::debug!(listener = %self.listener, "TLS handshake timed out");
                None
            }
        }
    }

    /// Checks the files every second until `stop`, loading a changed set for new handshakes.
    pub fn spawn_rotation(self: &Arc<Self>, stop: CancellationToken) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(server) = me.upgrade() else { return };
                let now = server.files_hash();
                let mut seen = server.fingerprint.lock().unwrap_or_else(|p| p.into_inner());
                if *seen == now {
                    continue;
                }
                *seen = now;
                drop(seen);
                match server.load() {
                    Ok(cfg) => {
                        server.config.store(Arc::new(cfg));
                        server.reload_ok.inc();
                        tracing::info!(listener = %server.listener, "TLS certificates reloaded");
                    }
                    Err(e) => {
                        server.reload_failed.inc();
                        tracing::warn!(listener = %server.listener, error = %e, "TLS certificate files changed but do not load; keeping the previous ones");
                    }
                }
            }
        });
    }
}

/// The `server_name` label of a certificate's expiry gauge: the configured SNI names, or the
/// certificate's first DNS name, or "default".
fn names_label(k: &CertifiedKey, configured: Option<&Vec<String>>) -> String {
    if let Some(names) = configured {
        return names.join(",");
    }
    k.end_entity_cert()
        .ok()
        .and_then(|c| certs::dns_names(c).into_iter().next())
        .unwrap_or_else(|| "default".into())
}
