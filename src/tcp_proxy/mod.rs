//! The L4 path: one accepted connection → (PROXY header in) → (SNI peek) → cluster → endpoint,
//! trying other endpoints when a connect fails → (PROXY header out) → bytes copied both ways
//! with half-close until either side is done or the connection idles out. Picks, health,
//! ejection and circuit breakers are the cluster's, as on the HTTP path.

pub mod proxy_protocol;
pub mod sni;

use crate::balancer::PickContext;
use crate::cluster::Cluster;
use crate::runtime::Runtime;
use crate::snapshot::{TcpRoute, TcpRoutes};
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
    /// The listener's name.
    pub listener: Arc<str>,
    /// `limits.idle_timeout`: a connection with no bytes either way this long is closed.
    pub idle_timeout: Duration,
    /// The relay buffer size per direction.
    pub buffer: usize,
    /// Endpoints tried before the connection is given up.
    pub connect_attempts: u32,
    /// `accept_proxy_protocol`: a PROXY header is read first.
    pub accept_proxy_protocol: bool,
    /// Bounds reading a PROXY header or ClientHello.
    pub header_timeout: Duration,
}

/// What is known of one accepted connection before its first byte is read.
#[derive(Clone, Debug)]
pub struct TcpConn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it reached (the listener's, or the original one under TPROXY).
    pub local: SocketAddr,
    /// Where it was going before capture (transparent listeners).
    pub original_dst: Option<SocketAddr>,
    /// The verified client certificate's names (TLS listeners with `client_ca`).
    pub identities: Vec<String>,
    /// The TLS version, when the listener terminated TLS.
    pub tls_version: Option<&'static str>,
    /// Whether SNI routes may read a ClientHello: false for a detect listener's connection
    /// that is not TLS (a silent client would otherwise be held for a hello that never comes).
    pub may_be_tls: bool,
}

/// How a connection ended, for its access log line.
#[derive(Default)]
struct Outcome {
    flags: &'static str,
    cluster: Option<String>,
    endpoint: Option<String>,
    moved: crate::relay::Moved,
    source: Option<SocketAddr>,
    sni: Option<String>,
}

/// Serves one accepted connection to its end. `close` is cancelled when a reload removes the
/// listener: the connection then gets `drain_timeout` more before it is cut.
pub async fn serve<S>(
    client: S,
    conn: TcpConn,
    runtime: Arc<Runtime>,
    settings: Arc<TcpSettings>,
    close: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (started, wall) = (Instant::now(), std::time::SystemTime::now());
    let snapshot = runtime.snapshot();
    let mut out = Outcome {
        flags: "-",
        ..Default::default()
    };
    serve_inner(
        client, &conn, &runtime, &snapshot, &settings, close, &mut out,
    )
    .await;
    let Some(log) = snapshot
        .listeners
        .get(&*settings.listener)
        .and_then(|l| l.access_log.as_ref())
    else {
        return;
    };
    log.emit(&crate::access_log::Entry {
        start: Some(wall),
        authority: out.sni.unwrap_or_default(),
        protocol: "TCP",
        flags: out.flags,
        bytes_received: out.moved.a_to_b,
        bytes_sent: out.moved.b_to_a,
        duration: started.elapsed(),
        endpoint: out.endpoint,
        cluster: out.cluster,
        downstream: Some(out.source.unwrap_or(conn.peer)),
        tls_version: conn.tls_version,
        identity: conn.identities.first().cloned(),
        original_dst: conn.original_dst,
        ..Default::default()
    });
}

async fn serve_inner<S>(
    mut client: S,
    conn: &TcpConn,
    runtime: &Runtime,
    snapshot: &crate::snapshot::Snapshot,
    settings: &TcpSettings,
    close: CancellationToken,
    out: &mut Outcome,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let peer = conn.peer;
    let Some((src, dst)) = addresses(&mut client, peer, conn.local, settings).await else {
        out.flags = "DPE";
        return;
    };
    out.source = Some(src);
    let Some(listener) = snapshot.listeners.get(&*settings.listener) else {
        return;
    };
    let Some(state) = listener.tcp.as_ref() else {
        return;
    };
    let mesh = &runtime.metrics.mesh;
    if !authorized(listener, conn, settings, mesh) {
        out.flags = "RBAC";
        return;
    }
    // SNI passthrough: peek the ClientHello; the bytes read are sent on first.
    let mut initial = Vec::new();
    let by_sni = conn.may_be_tls;
    let Some(route) = choose_route(state, &mut client, settings, &mut initial, by_sni).await else {
        tracing::debug!(listener = %settings.listener, %peer, "closing: no tcp route for this connection");
        out.flags = "NR";
        return;
    };
    out.sni = (!initial.is_empty())
        .then(|| sni::server_name(&initial))
        .flatten();
    let cluster = &route.cluster;
    out.cluster = Some(cluster.name.clone());
    if !original_destination(cluster, conn, settings, mesh) {
        out.flags = "NR";
        return;
    }
    route.connections.inc();
    let Some((mut upstream, in_flight, _slot)) =
        connect(cluster, settings, peer, conn.original_dst).await
    else {
        out.flags = "UF";
        return;
    };
    out.endpoint = Some(in_flight.endpoint().label.clone());
    if let Some(v) = cluster.config.send_proxy_protocol {
        if upstream
            .write_all(&proxy_protocol::encode(v, src, dst))
            .await
            .is_err()
        {
            out.flags = "UF";
            return;
        }
    }
    if !initial.is_empty() && upstream.write_all(&initial).await.is_err() {
        out.flags = "UF";
        return;
    }
    route.bytes_to_upstream.inc_by(initial.len() as u64);
    let bounds = crate::relay::Bounds {
        buffer: settings.buffer,
        idle_timeout: settings.idle_timeout,
        drain_timeout: snapshot.loaded.config.server.drain_timeout.get(),
    };
    // A drain ends the connection at the drain timeout, counted and closed by us, rather than
    // leaving it to be cut when the process exits.
    let drain = runtime.shutdown.drain_token();
    let (end, moved) = relay(client, upstream, route, &bounds, [&close, &drain]).await;
    out.moved = crate::relay::Moved {
        a_to_b: moved.a_to_b + initial.len() as u64,
        b_to_a: moved.b_to_a,
    };
    match end {
        crate::relay::End::Idle => {
            route.idle_timeouts.inc();
            out.flags = "SI";
            tracing::debug!(listener = %settings.listener, %peer, "closing an idle tcp connection");
        }
        crate::relay::End::Cut => {
            out.flags = "DC";
            tracing::debug!(listener = %settings.listener, %peer, "closing a tcp connection at the drain timeout");
        }
        crate::relay::End::Closed => {}
    }
    drop(in_flight);
    route.duration.observe(started.elapsed().as_secs_f64());
}

/// The listener's `authz` against the client certificate; a refusal is counted and logged.
fn authorized(
    listener: &crate::snapshot::ListenerState,
    conn: &TcpConn,
    settings: &TcpSettings,
    mesh: &crate::metrics::MeshMetrics,
) -> bool {
    let Some(Err(denied)) = listener.authz.as_ref().map(|a| a.check(&conn.identities)) else {
        return true;
    };
    mesh.authz_denied
        .with_label_values(&[&*settings.listener, denied.rule.as_str()])
        .inc();
    let identity = conn.identities.first().map_or("", |s| s.as_str());
    tracing::info!(listener = %settings.listener, peer = %conn.peer, identity, rule = %denied.rule, "tcp connection refused by authz");
    false
}

/// For an original_dst cluster: the connection must have an original destination inside the
/// allow-list (a refusal is counted and logged). Other clusters take any connection.
fn original_destination(
    cluster: &Cluster,
    conn: &TcpConn,
    settings: &TcpSettings,
    mesh: &crate::metrics::MeshMetrics,
) -> bool {
    let Some(Err(reason)) = cluster
        .original_dst
        .as_ref()
        .map(|o| o.admits(conn.original_dst))
    else {
        return true;
    };
    mesh.original_dst_refused
        .with_label_values(&[&*settings.listener, reason])
        .inc();
    tracing::info!(listener = %settings.listener, peer = %conn.peer, original_dst = ?conn.original_dst, reason, "tcp connection refused: original destination");
    false
}

/// The connection's (source, destination): from a PROXY header when the listener accepts
/// one, else the socket's own. `None`: a bad or late header, and the connection closes.
async fn addresses<S>(
    client: &mut S,
    peer: SocketAddr,
    local: SocketAddr,
    settings: &TcpSettings,
) -> Option<(SocketAddr, SocketAddr)>
where
    S: AsyncRead + Unpin,
{
    if !settings.accept_proxy_protocol {
        return Some((peer, local));
    }
    match tokio::time::timeout(settings.header_timeout, proxy_protocol::read(client)).await {
        Ok(Ok(Some(addrs))) => Some(addrs),
        Ok(Ok(None)) => Some((peer, local)),
        Ok(Err(e)) => {
            tracing::debug!(listener = %settings.listener, %peer, error = %e, "closing: bad PROXY header");
            None
        }
        Err(_) => None,
    }
}

/// The route by the ClientHello's server name (read into `initial`), else the default.
async fn choose_route<'a, S>(
    state: &'a TcpRoutes,
    client: &mut S,
    settings: &TcpSettings,
    initial: &mut Vec<u8>,
    by_sni: bool,
) -> Option<&'a TcpRoute>
where
    S: AsyncRead + Unpin,
{
    if state.by_sni.is_empty() || !by_sni {
        return state.default.as_ref();
    }
    let hello = tokio::time::timeout(settings.header_timeout, read_client_hello(client, initial));
    let name = match hello.await {
        Ok(Ok(())) => sni::server_name(initial),
        _ => return None,
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
}

/// Relays both ways to the end, moving the byte counters while the connection is open so that
/// a long-lived connection's traffic shows in a rate rather than as one step when it closes.
async fn relay<S, U>(
    client: S,
    upstream: U,
    route: &TcpRoute,
    bounds: &crate::relay::Bounds,
    stops: [&CancellationToken; 2],
) -> (crate::relay::End, crate::relay::Moved)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let counts = Arc::new(crate::relay::Counts::default());
    let mut flushed = crate::relay::Moved::default();
    let flush = |flushed: &mut crate::relay::Moved, now: crate::relay::Moved| {
        route.bytes_to_upstream.inc_by(now.a_to_b - flushed.a_to_b);
        route
            .bytes_to_downstream
            .inc_by(now.b_to_a - flushed.b_to_a);
        *flushed = now;
    };
    let relay = crate::relay::run(client, upstream, bounds, &stops, counts.clone());
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
    (end, moved)
}

/// Connects to an endpoint of `cluster`, moving on to another endpoint after a failure, at
/// most `connect_attempts` tries. Returns the stream, its in-flight hold (what least_request
/// counts for TCP) and its circuit-breaker slot.
async fn connect(
    cluster: &Cluster,
    settings: &TcpSettings,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
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
            original_dst,
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
