//! TLS origination to a cluster's endpoints: SNI, a CA bundle (default: the webpki roots), an
//! optional client certificate (mTLS upstream), ALPN by the cluster's `protocol`.

use super::{certs, resolve, TlsError};
use crate::config::ClusterTlsConfig;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::path::Path;
use std::sync::Arc;

/// The protocols a TLS connection offers by ALPN.
#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    /// What the cluster's `protocol` says.
    Cluster,
    Http1,
    Http2,
}

pub struct TlsClient {
    /// Offers the cluster's protocols by ALPN.
    connector: tokio_rustls::TlsConnector,
    /// Offers only http/1.1 (health probes, upgrades).
    h1_connector: tokio_rustls::TlsConnector,
    /// Offers only h2 (gRPC health probes).
    h2_connector: tokio_rustls::TlsConnector,
    /// Configured SNI; otherwise the endpoint's host.
    sni: Option<ServerName<'static>>,
}

impl TlsClient {
    pub fn build(
        key_prefix: &str,
        cfg: &ClusterTlsConfig,
        base: &Path,
        protocol: crate::config::UpstreamProtocol,
    ) -> Result<TlsClient, TlsError> {
        let roots = match &cfg.ca {
            Some(ca) => certs::root_store(&format!("{key_prefix}.ca"), &resolve(base, ca))?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let builder = ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config {
                key: key_prefix.into(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => {
                let (ck, kk) = (format!("{key_prefix}.cert"), format!("{key_prefix}.key"));
                let chain = certs::read_certs(&ck, &resolve(base, cert))?;
                let der = certs::read_key(&kk, &resolve(base, key))?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| TlsError::Config {
                        key: kk,
                        message: e.to_string(),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config {
                    key: format!("{key_prefix}.cert"),
                    message: "cert and key go together".into(),
                })
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let h1_connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
        config.alpn_protocols = vec![b"h2".to_vec()];
        let h2_connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
        config.alpn_protocols = match protocol {
            crate::config::UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            crate::config::UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
            crate::config::UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let sni = cfg
            .sni
            .as_ref()
            .map(|s| {
                ServerName::try_from(s.clone()).map_err(|e| TlsError::Config {
                    key: format!("{key_prefix}.sni"),
                    message: format!("{s:?} is not a server name: {e}"),
                })
            })
            .transpose()?;
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            h1_connector,
            h2_connector,
            sni,
        })
    }

    /// The name to verify for an endpoint configured as `label` (`host:port`).
    /// The configured `sni`, else the endpoint's host name.
    pub fn server_name(&self, host: &str) -> Option<ServerName<'static>> {
        if let Some(s) = &self.sni {
            return Some(s.clone());
        }
        ServerName::try_from(host.to_owned()).ok()
    }

    pub fn connector(&self, alpn: Alpn) -> &tokio_rustls::TlsConnector {
        match alpn {
            Alpn::Cluster => &self.connector,
            Alpn::Http1 => &self.h1_connector,
            Alpn::Http2 => &self.h2_connector,
        }
    }
}
