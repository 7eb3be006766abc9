//! PEM files → rustls types, and the facts about a certificate that metrics and the
//! `x-forwarded-client-cert` header need (expiry, subject, SANs, hash).

use super::TlsError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;

pub fn read_certs(key: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_blocks(key, file, "CERTIFICATE", |mut b| {
        rustls_pemfile::certs(&mut b).collect()
    })
}

/// Certificate revocation lists from a PEM file (`X509 CRL` blocks).
pub fn read_crls(
    key: &str,
    file: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    read_blocks(key, file, "X509 CRL", |mut b| {
        rustls_pemfile::crls(&mut b).collect()
    })
}

/// Every `label` block of a PEM file, at least one; errors name the key and the file.
fn read_blocks<T>(
    key: &str,
    file: &Path,
    label: &str,
    parse: impl FnOnce(&[u8]) -> std::io::Result<Vec<T>>,
) -> Result<Vec<T>, TlsError> {
    let bytes = std::fs::read(file).map_err(|source| TlsError::Read {
        key: key.into(),
        file: file.into(),
        source,
    })?;
    let invalid = |message: String| TlsError::Invalid {
        key: key.into(),
        file: file.into(),
        message,
    };
    let blocks = parse(&bytes).map_err(|e| invalid(format!("bad PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(invalid(format!("no {label} block found")));
    }
    Ok(blocks)
}

pub fn read_key(key: &str, file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(file).map_err(|source| TlsError::Read {
        key: key.into(),
        file: file.into(),
        source,
    })?;
    rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| TlsError::Invalid {
            key: key.into(),
            file: file.into(),
            message: format!("bad PEM: {e}"),
        })?
        .ok_or_else(|| TlsError::Invalid {
            key: key.into(),
            file: file.into(),
            message: "no private key (PKCS#8, RSA or EC) found".into(),
        })
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    cert_key: &str,
    cert: &Path,
    key_key: &str,
    key: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert_key, cert)?;
    let der = read_key(key_key, key)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Invalid {
            key: key_key.into(),
            file: key.into(),
            message: format!("unusable key: {e}"),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::Invalid {
        key: key_key.into(),
        file: key.into(),
        message: format!("does not match {}: {e}", cert.display()),
    })?;
    Ok(Arc::new(ck))
}

pub fn root_store(key: &str, file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in read_certs(key, file)? {
        store.add(c).map_err(|e| TlsError::Invalid {
            key: key.into(),
            file: file.into(),
            message: format!("bad CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// Unix time the certificate expires, if it parses.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(x.validity().not_after.timestamp())
}

/// DNS names in the certificate's subject alternative names.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    sans(&x)
        .into_iter()
        .filter(|(uri, _)| !uri)
        .map(|(_, n)| n)
        .collect()
}

/// A certificate's URI (`true`) and DNS (`false`) SANs, in certificate order.
fn sans(x: &x509_parser::certificate::X509Certificate<'_>) -> Vec<(bool, String)> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = x.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((true, u.to_string())),
            GeneralName::DNSName(d) => Some((false, d.to_string())),
            _ => None,
        })
        .collect()
}

/// The names `authz` matches: URI SANs (SPIFFE IDs) first, then DNS SANs.
fn names_for_authz(sans: Vec<(bool, String)>) -> Vec<String> {
    let (uris, dns): (Vec<_>, Vec<_>) = sans.into_iter().partition(|(uri, _)| *uri);
    uris.into_iter().chain(dns).map(|(_, n)| n).collect()
}

/// What an mTLS listener learns from a verified client certificate, from one parse: the
/// `x-forwarded-client-cert` value in Envoy's format
/// (`Hash=<sha256 hex>;Subject="<subject>";URI=<uri SAN>;DNS=<dns SAN>`), and the names
/// `authz` matches.
pub fn client_cert(cert: &CertificateDer<'_>) -> (String, Vec<String>) {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("Hash={hash}");
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return (out, Vec::new());
    };
    out.push_str(&format!(
        ";Subject=\"{}\"",
        x.subject().to_string().replace('"', "\\\"")
    ));
    let sans = sans(&x);
    for (uri, name) in &sans {
        out.push_str(&format!(";{}={name}", if *uri { "URI" } else { "DNS" }));
    }
    (out, names_for_authz(sans))
}

/// The names `authz` matches in a client certificate (see `client_cert`).
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, x)| names_for_authz(sans(&x)))
        .unwrap_or_default()
}
