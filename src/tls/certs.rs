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
    let Ok(Some(san)) = x.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// The names `authz` matches in a client certificate: URI SANs (SPIFFE IDs) first, then DNS
/// SANs, in certificate order.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = x.subject_alternative_name() else {
        return Vec::new();
    };
    let names = &san.value.general_names;
    let uris = names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
        _ => None,
    });
    let dns = names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    });
    uris.chain(dns).collect()
}

/// The `x-forwarded-client-cert` value for a verified client certificate, in Envoy's format:
/// `Hash=<sha256 hex>;Subject="<subject>";URI=<uri SAN>;DNS=<dns SAN>`.
pub fn xfcc(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("Hash={hash}");
    if let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
        out.push_str(&format!(
            ";Subject=\"{}\"",
            x.subject().to_string().replace('"', "\\\"")
        ));
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::URI(u) => {
                        out.push_str(&format!(";URI={u}"))
                    }
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        out.push_str(&format!(";DNS={d}"))
                    }
                    _ => {}
                }
            }
        }
    }
    out
}
