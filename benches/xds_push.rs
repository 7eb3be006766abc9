//! xDS push benchmark (`cargo bench --bench xds_push`): outrigger and a management server
//! (tonic, Envoy's protos: the one the tests use) in this process, an HTTP listener and
//! cluster from the server, keep-alive clients sending requests throughout.
//!
//! 1. Push to traffic: each round starts a new upstream, pushes an EDS update that adds it,
//!    and times the push until the upstream sees its first request. Percentiles over rounds.
//! 2. A 10,000-endpoint update: the process's CPU time (user + system, getrusage) and wall
//!    time from the push until the cluster holds all 10,000 endpoints. The resources are
//!    encoded before the clock starts, so what is timed is the proxy's decode, translation
//!    and apply, plus the server writing bytes it already has.

#[path = "../tests/it/support/xds.rs"]
#[allow(dead_code)]
mod control_plane;

use control_plane::{build, ControlPlane, ENDPOINT};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: usize = 100;
const CLIENTS: usize = 4;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// An upstream that answers 200 and remembers when its first request came.
struct Upstream {
    addr: SocketAddr,
    first: Arc<Mutex<Option<Instant>>>,
    stop: tokio_util::sync::CancellationToken,
}

async fn upstream() -> Upstream {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let first: Arc<Mutex<Option<Instant>>> = Default::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let (seen, token) = (first.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = tokio::select! {
                r = l.accept() => match r { Ok(c) => c, Err(_) => return },
                _ = token.cancelled() => return,
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().get_or_insert_with(Instant::now);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Upstream { addr, first, stop }
}

/// Keep-alive clients sending GET / back to back until `stop`.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    for _ in 0..CLIENTS {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = hyper::Request::get("/")
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let Ok(resp) = tx.send_request(req).await else {
                    return;
                };
                let _ = resp.into_body().collect().await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

fn cpu_seconds() -> f64 {
    // /proc/self/stat rather than getrusage, which would need unsafe code (the lints deny it).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are 11 and 12 after the command name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn run() {
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let base = upstream().await;
    cp.push_all("1", &[base.addr]);
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nxds:\n  server: \"{}\"\n  node: {{ id: bench }}\n",
        server.addr
    );
    let config = outrigger::config::parse(&yaml, "bench.yaml", &|_| None).expect("bootstrap");
    let proxy = outrigger::Server::start(outrigger::config::LoadedConfig {
        config,
        source: "bench.yaml".into(),
        base_dir: ".".into(),
    })
    .await
    .expect("proxy starts");
    let started = Instant::now();
    let addr = loop {
        if let Some(a) = proxy.listener_addr("ingress") {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no listener");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    load(addr, stop.clone(), sent.clone());

    let mut delays = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let new = upstream().await;
        let version = format!("r{round}");
        let pushed = Instant::now();
        cp.set(
            ENDPOINT,
            &version,
            vec![build::assignment("web", &[base.addr, new.addr])],
        );
        let deadline = pushed + Duration::from_secs(5);
        let first = loop {
            if let Some(t) = *new.first.lock().unwrap() {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no traffic in 5 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        delays.push(first.saturating_duration_since(pushed));
        new.stop.cancel();
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "EDS push → first request on the new endpoint, {ROUNDS} rounds under {CLIENTS} keep-alive clients ({} requests): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sent.load(Ordering::Relaxed),
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.9)),
        ms(percentile(&delays, 0.99)),
        ms(*delays.last().unwrap()),
    );
    stop.store(true, Ordering::Relaxed);

    for (n, label) in [(10_000usize, "10,000"), (10_001, "10,000 (one changed)")] {
        // Addresses nobody listens on: the cluster has no health check, nothing dials them.
        let endpoints: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8 + 1], 9000)))
            .collect();
        let la = build::assignment("web", &endpoints[n - 10_000..]);
        let version = format!("big-{n}");
        let cpu = cpu_seconds();
        let pushed = Instant::now();
        cp.set(ENDPOINT, &version, vec![la]);
        let deadline = pushed + Duration::from_secs(30);
        loop {
            let snap = proxy.runtime().snapshot();
            let have = snap.cluster("web").map_or(0, |c| c.endpoints().all.len());
            if have == 10_000
                && snap.cluster("web").is_some_and(|c| {
                    c.endpoints()
                        .all
                        .iter()
                        .any(|e| e.address == endpoints[n - 1])
                })
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "10,000 endpoints not applied in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!(
            "EDS update to {label} endpoints: applied in {:.1} ms wall, {:.0} ms CPU (process user + system, 10 ms ticks)",
            ms(pushed.elapsed()),
            (cpu_seconds() - cpu) * 1e3
        );
    }
    base.stop.cancel();
    server.stop().await;
}
