//! Certificates made at test time (rcgen) and rustls client/server configs from them.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;

pub struct Cert {
    pub der: CertificateDer<'static>,
    pub key: Vec<u8>,
    pub pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for `names`.
pub fn self_signed(names: &[&str]) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    Cert {
        der: ck.cert.der().clone(),
        key: ck.key_pair.serialize_der(),
        pem: ck.cert.pem(),
        key_pem: ck.key_pair.serialize_pem(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn acceptor(cert: &Cert) -> tokio_rustls::TlsAcceptor {
    acceptor_with_alpn(cert, &[])
}

/// A server for `cert` that offers `alpn` (e.g. `["h2", "http/1.1"]`).
pub fn acceptor_with_alpn(cert: &Cert, alpn: &[&str]) -> tokio_rustls::TlsAcceptor {
    server(
        cert,
        alpn,
        rustls::server::WebPkiClientVerifier::no_client_auth(),
    )
}

/// A server for `cert` offering `alpn`, checking clients with `verifier`.
fn server(
    cert: &Cert,
    alpn: &[&str],
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> tokio_rustls::TlsAcceptor {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone())),
        )
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A client trusting exactly `roots`.
pub fn connector(roots: &[&Cert]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

pub fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).unwrap()
}

/// A test certificate authority that issues leaf certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            cert,
            key,
        }
    }

    /// A leaf for DNS `names` (and an optional URI SAN such as a SPIFFE ID).
    pub fn issue(&self, names: &[&str], uri: Option<&str>) -> Cert {
        self.issue_serial(names, uri, None)
    }

    /// A PEM CRL signed by this CA that revokes the certificates with `serials`.
    pub fn crl(&self, serials: &[u64]) -> String {
        let revoked = serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2040, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .unwrap()
            .pem()
            .unwrap()
    }

    /// A leaf with a chosen serial number (for revocation tests).
    pub fn issue_serial(&self, names: &[&str], uri: Option<&str>, serial: Option<u64>) -> Cert {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        if let Some(u) = uri {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::Ia5String::try_from(u.to_string()).unwrap(),
            ));
        }
        if let Some(n) = serial {
            params.serial_number = Some(rcgen::SerialNumber::from(n));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Cert {
            der: cert.der().clone(),
            key: key.serialize_der(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A client trusting `roots`, offering `alpn`, presenting `client` if given.
pub fn client_config(
    roots: &[&CertificateDer<'static>],
    alpn: &[&str],
    client: Option<&Cert>,
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut cfg = match client {
        Some(c) => b
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A server for `cert` offering `alpn` that demands a client certificate issued by `ca`.
pub fn mutual_acceptor(cert: &Cert, ca: &Ca, alpn: &[&str]) -> tokio_rustls::TlsAcceptor {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    server(cert, alpn, verifier)
}
