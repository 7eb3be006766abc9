//! The L4 path: one accepted connection → (PROXY header in) → (SNI peek) → cluster → endpoint,
//! trying other endpoints when a connect fails → (PROXY header out) → bytes copied both ways
//! with half-close until either side is done or the connection idles out. Picks, health,
//! ejection and circuit breakers are the cluster's, as on the HTTP path.

pub mod proxy_protocol;
pub mod sni;

use crate::balancer::PickContext;
use crate::cluster::Cluster;
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often an open connection's byte counts are added to `outrigger_tcp_bytes_total`.
const BYTES_FLUSH: Duration = Duration::from_secs(2);

/// What a TCP listener's connections are served with.
pub struct TcpSettings {
    pub listener: Arc<str>,
    pub idle_timeout: Duration,
    pub buffer: usize,
    pub connect_attempts: u32,
    pub accept_proxy_protocol: bool,
    /// Bounds reading a PROXY header or ClientHello.
    pub header_timeout: Duration,
}

/// Serves one accepted connection to its end. `close` is cancelled when a reload removes the
/// listener: the connection then gets `drain_timeout` more before it is cut.
pub async fn serve<S>(
    mut client: S,
    peer: SocketAddr,
    local: SocketAddr,
    runtime: Arc<Runtime>,
    settings: Arc<TcpSettings>,
    close: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let (src, dst) = if settings.accept_proxy_protocol {
        match tokio::time::timeout(settings.header_timeout, proxy_protocol::read(&mut client)).await
        {
            Ok(Ok(Some(addrs))) => addrs,
            Ok(Ok(None)) => (peer, local),
            Ok(Err(e)) => {
                tracing::debug!(listener = %settings.listener, %peer, error = %e, "closing: bad PROXY header");
                return;
            }
            Err(_) => return,
        }
    } else {
        (peer, local)
    };
    let snapshot = runtime.snapshot();
    let Some(state) = snapshot
        .listeners
        .get(&*settings.listener)
        .and_then(|l| l.tcp.as_ref())
    else {
        return;
    };
    // SNI passthrough: peek the ClientHello; the bytes read are sent on first.
    let mut initial = Vec::new();
    let route = if state.by_sni.is_empty() {
        state.default.as_ref()
    } else {
        let name = match tokio::time::timeout(
            settings.header_timeout,
            read_client_hello(&mut client, &mut initial),
        )
        .await
        {
            Ok(Ok(())) => sni::server_name(&initial),
            _ => return,
        };
        name.as_deref()
            .and_then(|n| {
                state
                    .by_sni
                    .iter()
                    .find(|(p, _)| sni::matches(p, n))
                    .map(|(_, r)| r)
            })
            .or(state.default.as_ref())
    };
    let Some(route) = route else {
        tracing::debug!(listener = %settings.listener, %peer, "closing: no tcp route for this connection");
        return;
    };
    let cluster = &route.cluster;
    route.connections.inc();
    let Some((upstream, in_flight, _slot)) = connect(cluster, &settings, peer).await else {
        return;
    };
    let mut upstream = upstream;
    if let Some(v) = cluster.config.send_proxy_protocol {
        if upstream
            .write_all(&proxy_protocol::encode(v, src, dst))
            .await
            .is_err()
        {
            return;
        }
    }
    if !initial.is_empty() && upstream.write_all(&initial).await.is_err() {
        return;
    }
    let bounds = crate::relay::Bounds {
        buffer: settings.buffer,
        idle_timeout: settings.idle_timeout,
        drain_timeout: snapshot.loaded.config.server.drain_timeout.get(),
    };
    // A drain ends the connection at the drain timeout, counted and closed by us, rather than
    // leaving it to be cut when the process exits.
    let drain = runtime.shutdown.drain_token();
    let counts = Arc::new(crate::relay::Counts::default());
    route.bytes_to_upstream.inc_by(initial.len() as u64);
    // The byte counters move while the connection is open, so a long-lived connection's
    // traffic shows in a rate rather than as one step when it closes.
    let mut flushed = crate::relay::Moved::default();
    let flush = |flushed: &mut crate::relay::Moved, now: crate::relay::Moved| {
        route.bytes_to_upstream.inc_by(now.a_to_b - flushed.a_to_b);
        route
            .bytes_to_downstream
            .inc_by(now.b_to_a - flushed.b_to_a);
        *flushed = now;
    };
    let stops = [&close, &drain];
    let relay = crate::relay::run(client, upstream, &bounds, &stops, counts.clone());
    tokio::pin!(relay);
    let mut tick = tokio::time::interval_at(Instant::now() + BYTES_FLUSH, BYTES_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (end, moved) = loop {
        tokio::select! {
            done = &mut relay => break done,
            _ = tick.tick() => flush(&mut flushed, counts.moved()),
        }
    };
    flush(&mut flushed, moved);
    match end {
        crate::relay::End::Idle => {
            route.idle_timeouts.inc();
            tracing::debug!(listener = %settings.listener, %peer, "closing an idle tcp connection");
        }
        crate::relay::End::Cut => {
            tracing::debug!(listener = %settings.listener, %peer, "closing a tcp connection at the drain timeout");
        }
        crate::relay::End::Closed => {}
    }
    drop(in_flight);
    route.duration.observe(started.elapsed().as_secs_f64());
}

/// Connects to an endpoint of `cluster`, moving on to another endpoint after a failure, at
/// most `connect_attempts` tries. Returns the stream, its in-flight hold (what least_request
/// counts for TCP) and its circuit-breaker slot.
async fn connect(
    cluster: &Cluster,
    settings: &TcpSettings,
    peer: SocketAddr,
) -> Option<(
    TcpStream,
    crate::cluster::InFlight,
    crate::circuit_breaker::Slot,
)> {
    let mut avoid = None;
    for attempt in 1..=settings.connect_attempts {
        let slot = match cluster.breaker.connection() {
            Ok(s) => s,
            Err(o) => {
                cluster.metrics.overflow[o as usize].inc();
                return None;
            }
        };
        let ctx = PickContext {
            hash: None,
            avoid: avoid.as_deref(),
        };
        let Some(endpoint) = cluster.pick(&ctx) else {
            tracing::debug!(cluster = %cluster.name, %peer, "no healthy endpoint for a tcp connection");
            return None;
        };
        let in_flight = endpoint.start_request();
        let t = Instant::now();
        let timeout = cluster.config.connect_timeout.get();
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint.address)).await {
            Ok(Ok(s)) => {
                cluster.record(&endpoint, false, Some(t.elapsed()));
                if let Err(e) = s.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                return Some((s, in_flight, slot));
            }
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.name, endpoint = %endpoint.label, attempt, error = %e, "tcp connect failed");
            }
            Err(_) => {
                cluster.metrics.timeouts[2].inc();
                tracing::debug!(cluster = %cluster.name, endpoint = %endpoint.label, attempt, "tcp connect timed out");
            }
        }
        cluster.metrics.connect_failures.inc();
        cluster.record(&endpoint, true, None);
        if attempt < settings.connect_attempts {
            cluster.metrics.retries.inc();
        }
        avoid = Some(endpoint);
    }
    None
}

/// Reads until the first TLS record is complete (or clearly not TLS), bounded at 16 KiB + 5.
async fn read_client_hello<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    while !sni::record_complete(buf) && buf.len() < 16 * 1024 + 5 {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
