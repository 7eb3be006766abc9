//! The binary as a citizen of a fleet: its version stamp, process metrics, the per-endpoint
//! switch, TCP byte counters that move while a connection is open, JSON-only stderr, the
//! run-time log filter, and worker threads from the cgroup CPU limit.

use crate::support::{eventually, metric, request, single_route, temp_dir, Proxy};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary on `yaml`, with every stderr line kept.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn start(args: &[&str], yaml: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outrigger"));
        cmd.args(args);
        if let Some(yaml) = yaml {
            let path = temp_dir("citizen").join("outrigger.yaml");
            std::fs::write(&path, yaml).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.env_remove("RUST_LOG")
            .env_remove("TOKIO_WORKER_THREADS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        Run { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first JSON line whose message is `message`.
    async fn await_line(&self, message: &str) -> serde_json::Value {
        eventually(Duration::from_secs(10), message, || async {
            self.lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["fields"]["message"] == message)
        })
        .await
    }

    async fn admin(&self) -> SocketAddr {
        let v = self.await_line("admin listening").await;
        v["fields"]["address"].as_str().unwrap().parse().unwrap()
    }

    async fn exit(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the binary did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn all_json(lines: &[String]) {
    assert!(!lines.is_empty());
    for l in lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not JSON: {l}"
        );
    }
}

#[test]
fn version_names_commit_flavour_and_linkage() {
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!(
        "outrigger {} (commit {}, {}, {})\n",
        outrigger::build_info::VERSION,
        outrigger::build_info::COMMIT,
        outrigger::build_info::FLAVOUR,
        outrigger::build_info::LINKAGE
    );
    assert_eq!(text, expected);
    // A test build is neither profile-guided nor static; a checkout has a commit.
    assert_eq!(outrigger::build_info::FLAVOUR, "plain");
    assert_eq!(outrigger::build_info::LINKAGE, "dynamic");
    assert_ne!(outrigger::build_info::COMMIT, "unknown");
}

#[tokio::test]
async fn build_info_and_process_metrics_are_exported() {
    let proxy = Proxy::start(&single_route(
        "c",
        &["127.0.0.1:1".parse().unwrap()],
        "",
        "",
    ))
    .await;
    let m = proxy.metrics().await;
    let build = format!(
        r#"outrigger_build_info{{commit="{}",flavour="{}",linkage="{}",version="{}"}}"#,
        outrigger::build_info::COMMIT,
        outrigger::build_info::FLAVOUR,
        outrigger::build_info::LINKAGE,
        outrigger::build_info::VERSION
    );
    assert_eq!(metric(&m, &build), Some(1.0), "{m}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let v = metric(&m, name).unwrap_or_else(|| panic!("no {name} in\n{m}"));
        assert!(v > 0.0 || name == "process_cpu_seconds_total", "{name} {v}");
    }
}

/// Series (sample lines) in an exposition, leaving out the process's own.
fn series(m: &str) -> usize {
    m.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("process_") && !l.is_empty())
        .count()
}

#[tokio::test]
async fn per_endpoint_false_drops_the_series_that_grow_with_endpoints() {
    let endpoints: Vec<SocketAddr> = (0..100)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 20000 + i)))
        .collect();
    let mut counts = Vec::new();
    for per_endpoint in [true, false] {
        let yaml = format!(
            "metrics: {{ per_endpoint: {per_endpoint} }}\n{}",
            single_route("web", &endpoints, "", "")
        );
        let proxy = Proxy::start(&yaml).await;
        let m = proxy.metrics().await;
        let endpoint_series = m
            .lines()
            .filter(|l| l.contains("endpoint=\"") && !l.starts_with('#'))
            .count();
        if per_endpoint {
            // healthy, ewma, in flight, effective weight, and responses by five status
            // classes: nine per endpoint.
            assert_eq!(endpoint_series, 900, "{m}");
        } else {
            assert_eq!(endpoint_series, 0, "{m}");
            assert!(!m.contains("outrigger_upstream_endpoint_"), "{m}");
        }
        counts.push(series(&m));
    }
    eprintln!(
        "series for one 100-endpoint cluster: per_endpoint true {}, false {}",
        counts[0], counts[1]
    );
    assert_eq!(counts[0] - counts[1], 900);
}

#[tokio::test]
async fn tcp_byte_counters_move_while_the_connection_is_open() {
    let (up, _) = crate::tcp::echo().await;
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - name: ingress\n    address: 127.0.0.1:0\n    protocol: tcp\n    cluster: echo\nclusters:\n  - {{ name: echo, endpoints: [{{address: \"{up}\"}}] }}\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&[7u8; 5000]).await.unwrap();
    let mut back = vec![0u8; 5000];
    s.read_exact(&mut back).await.unwrap();
    let up_series = r#"outrigger_tcp_bytes_total{direction="to_upstream",listener="ingress"}"#;
    let down_series = r#"outrigger_tcp_bytes_total{direction="to_downstream",listener="ingress"}"#;
    eventually(
        Duration::from_secs(10),
        "byte counts while open",
        || async {
            let m = proxy.metrics().await;
            (metric(&m, up_series) == Some(5000.0) && metric(&m, down_series) == Some(5000.0))
                .then_some(())
        },
    )
    .await;
    // Still open: the echo answers.
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
    drop(s);
    proxy.await_metric(up_series, 5001.0).await;
}

#[tokio::test]
async fn under_json_every_stderr_line_is_json_fatal_errors_included() {
    // A config that fails to load.
    let run = Run::start(&["--log-format", "json"], Some("listeners: 3\n"), &[]);
    let lines = run.lines.clone();
    assert_eq!(run.exit().await.code(), Some(1));
    let lines = lines.lock().unwrap().clone();
    all_json(&lines);
    assert!(lines.iter().any(|l| l.contains("\"fatal\"")), "{lines:?}");
    // Arguments clap refuses.
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["--log-format", "json", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stderr).unwrap();
    all_json(&text.lines().map(String::from).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_log_filter_changes_at_run_time_from_loopback_only() {
    let yaml = single_route("c", &["127.0.0.1:1".parse().unwrap()], "", "");
    let run = Run::start(&["--log-format", "json"], Some(&yaml), &[]);
    let admin = run.admin().await;
    let send = |method: &str, path: &str| {
        let req = request(method, admin, path)
            .header("x-outrigger-admin", "1")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        async move {
            let mut c = crate::support::H1::connect(admin).await;
            c.send(req).await
        }
    };
    assert_eq!(send("GET", "/logging").await.text(), "info\n");
    let r = send("POST", "/logging?level=verbose").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send("POST", "/logging?level=debug").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(send("GET", "/logging").await.text(), "debug\n");
    // Debug lines now appear: an admin request logs one at debug.
    let r = send(
        "POST",
        "/logging?filter=warn%2Coutrigger%3A%3Aadmin%3Ddebug",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        send("GET", "/logging").await.text(),
        "warn,outrigger::admin=debug\n"
    );
    drop(run);

    // Only peers in admin.allow may change it.
    let yaml = yaml.replacen(
        "admin: { address: \"127.0.0.1:0\" }",
        "admin: { address: \"127.0.0.1:0\", allow: [10.0.0.0/8] }",
        1,
    );
    let run = Run::start(&["--log-format", "json"], Some(&yaml), &[]);
    let admin = run.admin().await;
    let req = request("POST", admin, "/logging?level=debug")
        .header("x-outrigger-admin", "1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = crate::support::H1::connect(admin).await.send(req).await;
    assert_eq!(r.status, 403);
    all_json(&run.lines());
}

#[tokio::test]
async fn worker_threads_follow_the_cgroup_cpu_limit() {
    let yaml = single_route("c", &["127.0.0.1:1".parse().unwrap()], "", "");
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (cpu_max, env, want, source) in [
        ("50000 100000\n", None, 1, "cgroup CPU limit 0.50"),
        (
            "150000 100000\n",
            None,
            2.min(cpus),
            "cgroup CPU limit 1.50",
        ),
        ("max 100000\n", None, cpus, "no cgroup CPU limit"),
        ("50000 100000\n", Some("3"), 3, "TOKIO_WORKER_THREADS"),
    ] {
        let root = temp_dir("cgroup");
        std::fs::write(root.join("cpu.max"), cpu_max).unwrap();
        let mut vars = vec![("OUTRIGGER_CGROUP_ROOT", root.to_str().unwrap())];
        if let Some(n) = env {
            vars.push(("TOKIO_WORKER_THREADS", n));
        }
        let run = Run::start(&["--log-format", "json"], Some(&yaml), &vars);
        let line = run.await_line("worker threads").await;
        assert_eq!(line["fields"]["threads"], want, "{cpu_max} {line}");
        let got = line["fields"]["source"].as_str().unwrap();
        assert!(got.contains(source), "{got}");
    }
}
