//! A cluster's inputs from outside the process, gathered before it is built.

use super::ClusterError;
use crate::config::units::split_host_port;
use crate::config::ClusterConfig;
use std::net::SocketAddr;

/// What a cluster needs from outside the process: its endpoints' addresses and its upstream
/// TLS material. The snapshot's warming step gathers these (names resolved asynchronously), so
/// that building the cluster itself does no I/O.
pub struct ClusterInputs {
    /// Upstream TLS, when the cluster has `tls`.
    pub tls: Option<crate::tls::client::TlsClient>,
    /// One per `endpoints` entry, in order.
    pub addresses: Vec<SocketAddr>,
}

impl ClusterInputs {
    /// Loads the TLS files and resolves the endpoint names (relative paths against `base`).
    pub async fn gather(
        index: usize,
        cfg: &ClusterConfig,
        base: &std::path::Path,
    ) -> Result<ClusterInputs, ClusterError> {
        let tls = load_tls(index, cfg, base)?;
        let mut addresses = Vec::with_capacity(cfg.endpoints.len());
        for (k, e) in cfg.endpoints.iter().enumerate() {
            let found = match literal_or_split(&e.address) {
                Ok(Ok(a)) => Ok(a),
                Ok(Err((host, port))) => first(crate::resolve::lookup(host, port).await),
                Err(reason) => Err(reason),
            };
            addresses.push(resolved(index, k, &e.address, found)?);
        }
        Ok(ClusterInputs { tls, addresses })
    }

    /// `gather` for code that is not async (tests, benches, `validate --deep`). It runs on a
    /// thread of its own, so it may be called from inside a runtime.
    pub fn gather_blocking(
        index: usize,
        cfg: &ClusterConfig,
        base: &std::path::Path,
    ) -> Result<ClusterInputs, ClusterError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ClusterError::Resolver {
                        index,
                        reason: e.to_string(),
                    })?;
                rt.block_on(Self::gather(index, cfg, base))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(ClusterError::Resolver {
                    index,
                    reason: "the lookup thread panicked".into(),
                })
            })
        })
    }
}

fn load_tls(
    index: usize,
    cfg: &ClusterConfig,
    base: &std::path::Path,
) -> Result<Option<crate::tls::client::TlsClient>, ClusterError> {
    let tls = cfg.tls.as_ref().map(|t| {
        crate::tls::client::TlsClient::build(
            &format!("clusters[{index}].tls"),
            t,
            base,
            cfg.protocol,
        )
    });
    Ok(tls.transpose()?)
}

/// An address literal, or the host and port to look up.
fn literal_or_split(address: &str) -> Result<Result<SocketAddr, (&str, u16)>, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(Ok(a));
    }
    split_host_port(address).map(Err)
}

fn first(
    found: Result<Vec<SocketAddr>, crate::resolve::ResolveError>,
) -> Result<SocketAddr, String> {
    found
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| "no addresses".to_string())
}

fn resolved(
    index: usize,
    endpoint: usize,
    address: &str,
    found: Result<SocketAddr, String>,
) -> Result<SocketAddr, ClusterError> {
    found.map_err(|reason| ClusterError::Resolve {
        index,
        endpoint,
        address: address.to_owned(),
        reason,
    })
}
