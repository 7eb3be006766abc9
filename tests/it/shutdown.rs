//! The real binary under SIGTERM: /ready fails at once, an in-flight request finishes, an idle
//! keep-alive connection does not hold the exit back, and the process exits 0.

use crate::support::{get, upstream::Behavior, Upstream, H1};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Binary {
    pub child: Child,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub config: std::path::PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `yaml` (ports 0) and learns its addresses from its JSON log.
pub fn start_binary(yaml: &str) -> Binary {
    let dir = std::env::temp_dir().join(format!(
        "outrigger-bin-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("outrigger.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["--log-format", "json", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let (mut listener, mut admin) = (None, None);
    while listener.is_none() || admin.is_none() {
        let line = lines
            .next()
            .expect("binary exited before listening")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let addr = v["fields"]["address"].as_str().and_then(|a| a.parse().ok());
        match v["fields"]["message"].as_str() {
            Some("listening") => listener = addr,
            Some("admin listening") => admin = addr,
            _ => {}
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Binary {
        child,
        listener: listener.unwrap(),
        admin: admin.unwrap(),
        config: path,
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_lets_a_2s_request_finish_then_exits_0() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_secs(2))).await;
    let fast = Upstream::start("fast", Behavior::Name).await;
    let mut bin = start_binary(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
server: {{ drain_timeout: 10s }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    limits: {{ park_idle_after: 100ms }}
    routes:
      - {{ match: {{ path_prefix: /slow }}, cluster: slow }}
      - {{ match: {{ path_prefix: / }}, cluster: fast }}
clusters:
  - {{ name: slow, endpoints: [{{address: "{}"}}] }}
  - {{ name: fast, endpoints: [{{address: "{}"}}] }}
"#,
        slow.addr, fast.addr
    ));
    let admin = bin.admin;
    crate::support::eventually(
        Duration::from_secs(5),
        "/ready answers 200",
        || async move { (get(admin, "/ready").await.status == 200).then_some(()) },
    )
    .await;
    // Idle keep-alive connections that must not delay the exit: one that never sent a
    // request, one parked after its first.
    let idle = H1::connect(bin.listener).await;
    let mut parked = H1::connect(bin.listener).await;
    assert_eq!(parked.get("/").await.text(), "fast");
    crate::support::await_metric(
        admin,
        r#"outrigger_downstream_connections_parked{listener="ingress"}"#,
        1.0,
    )
    .await;
    let addr = bin.listener;
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    crate::support::eventually(
        Duration::from_secs(5),
        "request reached the upstream",
        || {
            let n = slow.requests();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    let sent_at = std::time::Instant::now();
    signal(&bin.child, "-TERM");
    crate::support::eventually(Duration::from_secs(2), "/ready turns 503", || async move {
        match tokio::time::timeout(Duration::from_millis(500), get(bin.admin, "/ready")).await {
            Ok(r) if r.status == 503 => Some(()),
            _ => None,
        }
    })
    .await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "slow");
    let status = crate::support::eventually(Duration::from_secs(8), "process exits", || {
        let s = bin.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(0));
    assert!(
        sent_at.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        sent_at.elapsed()
    );
    assert!(idle.is_closed() || sent_at.elapsed() < Duration::from_secs(5));
    assert!(parked.is_closed() || sent_at.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    // One worker: the binary then runs tokio's current-thread scheduler, which this covers
    // (signals, reload) while the SIGTERM test runs the multi-threaded one.
    let a = Upstream::start("a", Behavior::Name).await;
    let b = Upstream::start("b", Behavior::Name).await;
    let text = |target: &str| {
        format!(
            r#"
server: {{ watch_config: false, worker_threads: 1 }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes: [{{ match: {{ path_prefix: / }}, cluster: {target} }}]
clusters:
  - {{ name: a, endpoints: [{{address: "{}"}}] }}
  - {{ name: b, endpoints: [{{address: "{}"}}] }}
"#,
            a.addr, b.addr
        )
    };
    let bin = start_binary(&text("a"));
    let (listener, admin) = (bin.listener, bin.admin);
    crate::support::eventually(Duration::from_secs(5), "ready", || async move {
        (get(admin, "/ready").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(get(listener, "/").await.text(), "a");
    std::fs::write(&bin.config, text("b")).unwrap();
    // watch_config is off: only the signal can make this change visible.
    assert_eq!(get(listener, "/").await.text(), "a");
    signal(&bin.child, "-HUP");
    crate::support::eventually(
        Duration::from_secs(5),
        "SIGHUP reload routes to b",
        || async move { (get(listener, "/").await.text() == "b").then_some(()) },
    )
    .await;
}
