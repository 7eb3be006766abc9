//! Byte tunnels after an HTTP handshake: a WebSocket (or other `Upgrade`) once the upstream
//! answered 101, and a plain `CONNECT` on a route that allows it. Both sides are copied until
//! either closes; each direction's shutdown is passed on, so a close from either side ends
//! the tunnel cleanly.

use super::body::ResponseBody;
use super::error::ProxyError;
use crate::balancer::PickContext;
use crate::circuit_breaker::Slot;
use crate::cluster::Cluster;
use crate::cluster::InFlight;
use crate::conn_tracker::ConnTracker;
use crate::pool::ConnectError;
use crate::runtime::Runtime;
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a tunnel holds while it lives, and how it is bounded: its downstream connection (so
/// the listener's `max_connections` still counts it), an upstream connection slot of the
/// cluster's circuit breaker, and the process drain that ends it at the drain timeout.
pub struct Hold {
    /// Held for their `Drop`: each lets go of its count when the tunnel ends.
    #[allow(dead_code)]
    pub conn: Arc<ConnTracker>,
    #[allow(dead_code)]
    pub slot: Slot,
    #[allow(dead_code)]
    pub in_flight: Option<InFlight>,
    pub runtime: Arc<Runtime>,
    pub bounds: crate::relay::Bounds,
}

impl Hold {
    /// Runs `tunnel` as a task the drain waits for.
    fn spawn<F>(self, tunnel: impl FnOnce(Arc<Runtime>, crate::relay::Bounds) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = self.runtime.clone();
        let work = tunnel(self.runtime.clone(), self.bounds.clone());
        runtime.shutdown.track(async move {
            work.await;
            drop(self);
        });
    }
}

async fn relay<A, B>(runtime: &Runtime, bounds: &crate::relay::Bounds, a: A, b: B, what: &str)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let drain = runtime.shutdown.drain_token();
    let counts = Arc::new(crate::relay::Counts::default());
    let (end, moved) = crate::relay::run(a, b, bounds, &[&drain], counts).await;
    tracing::debug!(
        ?end,
        to_upstream = moved.a_to_b,
        to_downstream = moved.b_to_a,
        "{what} ended"
    );
}

/// Joins the client's and the upstream's upgraded connections once hyper hands them over
/// (after the 101 has been written to the client).
pub fn spawn_upgraded(downstream: OnUpgrade, upstream: OnUpgrade, hold: Hold) {
    hold.spawn(|runtime, bounds| async move {
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
        relay(
            &runtime,
            &bounds,
            TokioIo::new(down),
            TokioIo::new(up),
            "upgraded connection",
        )
        .await;
    });
}

/// Plain CONNECT: opens a TCP connection to an endpoint of the route's cluster, answers 200,
/// and tunnels the client's bytes to it.
pub async fn connect(
    cluster: &Cluster,
    downstream: Option<OnUpgrade>,
    peer: SocketAddr,
    conn: Arc<ConnTracker>,
    runtime: Arc<Runtime>,
    bounds: crate::relay::Bounds,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some(downstream) = downstream else {
        return Err(ProxyError::BadRequest(
            "CONNECT cannot be tunnelled on this connection",
        ));
    };
    let ctx = PickContext {
        original_dst: None,
        hash: None,
        avoid: None,
    };
    let Some(endpoint) = cluster.pick(&ctx) else {
        return Err(ProxyError::NoHealthyEndpoint {
            cluster: cluster.name.clone(),
        });
    };
    let slot = cluster.breaker.connection().map_err(|o| {
        cluster.metrics.overflow[o as usize].inc();
        ProxyError::Overflow(o)
    })?;
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
    let hold = Hold {
        conn,
        slot,
        in_flight: Some(in_flight),
        runtime,
        bounds,
    };
    hold.spawn(|runtime, bounds| async move {
        let Ok(down) = downstream.await else { return };
        relay(
            &runtime,
            &bounds,
            TokioIo::new(down),
            upstream,
            "CONNECT tunnel",
        )
        .await;
    });
    Ok(Response::new(ResponseBody::empty()))
}
