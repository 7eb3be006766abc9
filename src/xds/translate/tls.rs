//! CDS `transport_socket` → `clusters[].tls`: Envoy's `UpstreamTlsContext` with its CA, client
//! certificate and SNI given as files. Certificates inline in the resource, SDS and
//! certificate providers are refused: the model names files, and a secret in a config dump is
//! a leak (SDS is the way to send them, and it is not supported yet).

use super::{fields, ignored, no_leftovers, reject, unpack, Rejected};
use crate::config::ClusterTlsConfig;
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, transport_socket::ConfigType, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
    TlsCertificate, UpstreamTlsContext,
};

const UPSTREAM_TLS_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// The cluster's TLS, or `None` for a plaintext (`raw_buffer`) socket.
pub fn upstream(mut ts: TransportSocket, what: &str) -> Result<Option<ClusterTlsConfig>, Rejected> {
    let w = format!("{what}.transport_socket");
    let any = match ts.config_type.take() {
        Some(ConfigType::TypedConfig(any)) => any,
        None if ts.name.ends_with("raw_buffer") => return Ok(None),
        None => return reject(format!("{w}: typed_config is required")),
    };
    ts.name.clear();
    no_leftovers(&w, &ts, fields::TRANSPORT_SOCKET)?;
    if any.type_url == RAW_BUFFER_URL {
        return Ok(None);
    }
    let mut ctx: UpstreamTlsContext = unpack(&any, UPSTREAM_TLS_URL, &w)?;
    let w = format!("{w}.tls");
    let mut out = ClusterTlsConfig {
        sni: Some(std::mem::take(&mut ctx.sni)).filter(|s| !s.is_empty()),
        ca: None,
        cert: None,
        key: None,
    };
    if let Some(common) = ctx.common_tls_context.take() {
        common_context(common, &mut out, &format!("{w}.common_tls_context"))?;
    }
    no_leftovers(&w, &ctx, fields::UPSTREAM_TLS_CONTEXT)?;
    Ok(Some(out))
}

fn common_context(
    mut c: CommonTlsContext,
    out: &mut ClusterTlsConfig,
    w: &str,
) -> Result<(), Rejected> {
    let certs = std::mem::take(&mut c.tls_certificates);
    if certs.len() > 1 {
        return reject(format!("{w}.tls_certificates: one certificate at most"));
    }
    if let Some(cert) = certs.into_iter().next() {
        let (chain, key) = certificate(cert, &format!("{w}.tls_certificates[0]"))?;
        (out.cert, out.key) = (Some(chain), Some(key));
    }
    match c.validation_context_type.take() {
        None => {}
        Some(ValidationContextType::ValidationContext(v)) => {
            out.ca = validation(v, &format!("{w}.validation_context"))?;
        }
        Some(_) => {
            return reject(format!(
                "{w}: only validation_context is supported (SDS and certificate providers are not)"
            ))
        }
    }
    // The offered protocols follow the cluster's own (http2_protocol_options), as they do for
    // a cluster from the file.
    ignored(
        w,
        &[(
            "alpn_protocols",
            !std::mem::take(&mut c.alpn_protocols).is_empty(),
        )],
    );
    no_leftovers(w, &c, fields::COMMON_TLS_CONTEXT)
}

fn certificate(mut c: TlsCertificate, w: &str) -> Result<(String, String), Rejected> {
    let chain = file(
        c.certificate_chain.take(),
        &format!("{w}.certificate_chain"),
    )?;
    let key = file(c.private_key.take(), &format!("{w}.private_key"))?;
    no_leftovers(w, &c, fields::TLS_CERTIFICATE)?;
    Ok((chain, key))
}

fn validation(mut v: CertificateValidationContext, w: &str) -> Result<Option<String>, Rejected> {
    let ca = v
        .trusted_ca
        .take()
        .map(|d| file(Some(d), &format!("{w}.trusted_ca")))
        .transpose()?;
    no_leftovers(w, &v, fields::CERTIFICATE_VALIDATION_CONTEXT)?;
    Ok(ca)
}

/// A `DataSource` that names a file.
fn file(d: Option<DataSource>, w: &str) -> Result<String, Rejected> {
    match d.and_then(|d| d.specifier) {
        Some(Specifier::Filename(f)) if !f.is_empty() => Ok(f),
        Some(Specifier::InlineBytes(_) | Specifier::InlineString(_)) => reject(format!(
            "{w}: inline certificates and keys are not supported; name a file (filename)"
        )),
        Some(Specifier::EnvironmentVariable(_)) => reject(format!(
            "{w}: environment_variable is not supported; name a file (filename)"
        )),
        _ => reject(format!("{w}: filename is required")),
    }
}
