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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    let activity = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let mut client = Tracked {
        inner: client,
        activity: activity.clone(),
        epoch,
    };
    let mut upstream_t = Tracked {
        inner: upstream,
        activity: activity.clone(),
        epoch,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream_t,
        settings.buffer,
        settings.buffer,
    );
    tokio::pin!(copy);
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let drain_timeout = snapshot.loaded.config.server.drain_timeout.get();
    let cutoff = tokio::time::sleep(Duration::MAX);
    tokio::pin!(cutoff);
    let mut closing = false;
    let (to_up, to_down) = loop {
        tokio::select! {
            r = &mut copy => match r {
                Ok(n) => break n,
                Err(e) => {
                    tracing::debug!(listener = %settings.listener, %peer, error = %e, "tcp connection ended with an error");
                    break (0, 0);
                }
            },
            _ = &mut idle => {
                let last = Duration::from_nanos(activity.load(Ordering::Relaxed));
                let quiet = epoch.elapsed().saturating_sub(last);
                if quiet >= settings.idle_timeout {
                    route.idle_timeouts.inc();
                    tracing::debug!(listener = %settings.listener, %peer, "closing an idle tcp connection");
                    break (0, 0);
                }
                idle.as_mut().reset(Instant::now() + (settings.idle_timeout - quiet));
            }
            _ = close.cancelled(), if !closing => {
                closing = true;
                cutoff.as_mut().reset(Instant::now() + drain_timeout);
            }
            _ = &mut cutoff => break (0, 0),
        }
    };
    drop(in_flight);
    // Bytes are counted when the connection ends (copy_bidirectional reports totals then).
    route.bytes_to_upstream.inc_by(to_up + initial.len() as u64);
    route.bytes_to_downstream.inc_by(to_down);
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
    crate::cluster::circuit_breaker::Slot,
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

/// A stream that stamps the time of its last read or write, for the idle timeout.
struct Tracked<S> {
    inner: S,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        self.activity
            .store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
