//! TLS with rustls (ring provider): termination on listeners (SNI certificates, ALPN, mutual
//! TLS, certificate rotation) and origination to upstream endpoints. TLS 1.2 and 1.3 only,
//! rustls's default cipher suites, no renegotiation (rustls has none), session resumption on.

pub mod certs;
pub mod client;
pub mod server;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {file}: {source}")]
    Read {
        key: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {file}: {message}")]
    Invalid {
        key: String,
        file: PathBuf,
        message: String,
    },
    #[error("{key}: {message}")]
    Config { key: String, message: String },
}

/// The one crypto provider every TLS config uses.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Resolves a path from the config against the config file's folder.
pub fn resolve(base: &std::path::Path, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}
