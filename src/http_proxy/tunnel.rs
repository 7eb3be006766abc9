//! Byte tunnels after an HTTP handshake: a WebSocket (or other `Upgrade`) once the upstream
//! answered 101, and a plain `CONNECT` on a route that allows it. Both sides are copied until
//! either closes; each direction's shutdown is passed on, so a close from either side ends
//! the tunnel cleanly.

use super::body::ResponseBody;
use super::error::ProxyError;
use crate::balancer::PickContext;
use crate::cluster::{pool::ConnectError, Cluster};
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// Joins the client's and the upstream's upgraded connections once hyper hands them over
/// (after the 101 has been written to the client).
pub fn spawn_upgraded(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::join!(downstream, upstream) {
            (Ok(d), Ok(u)) => (d, u),
            (d, u) => {
                tracing::debug!(
                    downstream_ok = d.is_ok(),
                    upstream_ok = u.is_ok(),
                    "upgrade not completed"
                );
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}

/// Plain CONNECT: opens a TCP connection to an endpoint of the route's cluster, answers 200,
/// and tunnels the client's bytes to it.
pub async fn connect(
    cluster: &Cluster,
    downstream: Option<OnUpgrade>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some(downstream) = downstream else {
        return Err(ProxyError::BadRequest(
            "CONNECT cannot be tunnelled on this connection",
        ));
    };
    let ctx = PickContext {
        hash: None,
        avoid: None,
    };
    let Some(endpoint) = cluster.pick(&ctx) else {
        return Err(ProxyError::NoHealthyEndpoint {
            cluster: cluster.name.clone(),
        });
    };
    let timeout = cluster.config.connect_timeout.get();
    let address = endpoint.address;
    let upstream =
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                cluster.metrics.connect_failures.inc();
                cluster.record(&endpoint, true, None);
                return Err(ProxyError::Connect(ConnectError::Io {
                    endpoint: address,
                    source,
                }));
            }
            Err(_) => {
                cluster.metrics.connect_failures.inc();
                cluster.metrics.timeouts[2].inc();
                return Err(ProxyError::Connect(ConnectError::Timeout {
                    endpoint: address,
                    timeout,
                }));
            }
        };
    let in_flight = endpoint.start_request();
    tracing::debug!(%peer, endpoint = %address, "CONNECT tunnel opened");
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let Ok(down) = downstream.await else { return };
        let mut down = TokioIo::new(down);
        let mut up = upstream;
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "CONNECT tunnel ended with an error");
        }
    });
    Ok(Response::new(ResponseBody::empty()))
}
