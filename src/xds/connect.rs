//! The transport under the ADS channel: the server's name resolved through our own resolver
//! (tonic's default connector uses getaddrinfo, which the static image cannot), each address
//! tried in turn, and TLS (optionally mutual) with rustls when `xds.tls` is set; how the proxy
//! names itself (`node`) and how long it waits before trying again.

use crate::config::{ClusterTlsConfig, UpstreamProtocol, XdsConfig};
use crate::tls::client::{Alpn, TlsClient};
use crate::tls::TlsError;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to the management server: plain TCP or TLS over it.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How the client reaches its servers.
#[derive(Clone)]
pub(super) struct Transport {
    tls: Option<Arc<TlsClient>>,
}

impl Transport {
    /// Loads `xds.tls` (CA, client certificate) once, at start: a bad file stops the start.
    pub(super) fn new(tls: Option<&ClusterTlsConfig>, base: &Path) -> Result<Transport, TlsError> {
        let tls = tls
            .map(|t| TlsClient::build("xds.tls", t, base, UpstreamProtocol::Http2))
            .transpose()?
            .map(Arc::new);
        Ok(Transport { tls })
    }

    /// The URI tonic is given: `https` when TLS is on, so requests carry the right `:scheme`.
    pub(super) fn uri(&self, server: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{server}")
    }

    /// The connector tonic calls for each connection (its connect timeout wraps the whole).
    pub(super) fn connector(
        &self,
    ) -> impl tower::Service<
        http::Uri,
        Response = TokioIo<Pin<Box<dyn Io>>>,
        Error = std::io::Error,
        Future = impl Send,
    > + Send
           + 'static {
        let me = self.clone();
        tower::service_fn(move |uri: http::Uri| {
            let me = me.clone();
            async move { me.connect(uri).await.map(TokioIo::new) }
        })
    }

    async fn connect(&self, uri: http::Uri) -> std::io::Result<Pin<Box<dyn Io>>> {
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let addrs = crate::resolve::lookup(host, port)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| last.unwrap_or_else(|| std::io::Error::other("no address")))?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Box::pin(tcp));
        };
        let name = tls.server_name(host).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host:?} is not a TLS server name (set xds.tls.sni)"),
            )
        })?;
        let stream = tls.connector(Alpn::Http2).connect(name, tcp).await?;
        Ok(Box::pin(stream))
    }
}

/// How this proxy introduces itself in every request.
pub(super) fn node(cfg: &XdsConfig) -> Node {
    let fields = cfg
        .node
        .metadata
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value {
                    kind: Some(Kind::StringValue(v.clone())),
                },
            )
        })
        .collect();
    Node {
        id: cfg.node.id.clone(),
        cluster: cfg.node.cluster.clone(),
        metadata: Some(Struct { fields }),
        user_agent_name: "outrigger".into(),
        ..Default::default()
    }
}

/// Full jitter over an exponential ceiling: uniform in [0, min(max, base × 2^(n-1))].
pub(super) fn backoff(cfg: &XdsConfig, failures: u32) -> Duration {
    let base = cfg.backoff_base.get();
    let ceiling = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cfg.backoff_max.get());
    ceiling
        .mul_f64(fastrand::f64())
        .max(Duration::from_millis(10))
}
