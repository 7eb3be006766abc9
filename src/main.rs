//! The `outrigger` command: flags, logging, runtime, signals. Everything else is the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

mod memory;

#[derive(Parser)]
#[command(
    name = "outrigger",
    version = outrigger::build_info::LONG_VERSION,
    about = "A load-balancing sidecar proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The YAML config file to run.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log line format (logs go to stderr; RUST_LOG filters them, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file and exit 0 if it is valid, 1 with every problem listed if not.
    Validate {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Also load every certificate and key, and resolve every endpoint and DNS discovery
        /// name, as a start would.
        #[arg(long)]
        deep: bool,
    },
    /// Wait until an outrigger is ready (GET /ready answers 200), then run CMD in its place:
    /// lets an app container start only once its sidecar is up.
    Await {
        /// The sidecar's admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
        /// The command to run once ready.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy this binary to PATH (for `await` in an app container, via a shared volume).
    Install { path: PathBuf },
    /// Write (or with --clean remove) the nat rules that capture a pod's traffic into its
    /// sidecar's transparent listeners; run once per pod by an init container with NET_ADMIN.
    Iptables(IptablesArgs),
    /// Run the bundled demo: three upstreams on 127.0.0.1:18081-18083 behind 127.0.0.1:15001
    /// (or behind the listeners of --config, whose endpoints should be those three).
    Demo {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct IptablesArgs {
    /// The uid the proxy runs as: its own traffic is never captured.
    #[arg(long, default_value_t = 65532)]
    proxy_uid: u32,
    /// The proxy's gid, also never captured.
    #[arg(long)]
    proxy_gid: Option<u32>,
    /// The transparent inbound listener's port.
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// The transparent outbound listener's port.
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// Inbound ports to capture (comma-separated); all when not given.
    #[arg(long, value_delimiter = ',')]
    inbound_ports: Vec<u16>,
    /// Inbound ports never captured (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks never captured (comma-separated CIDRs).
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<outrigger::config::Cidr>,
    /// IPv6 rules (ip6tables) instead of IPv4.
    #[arg(long)]
    ipv6: bool,
    /// Print the rules (iptables-restore input), change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the rules (and their chains) instead.
    #[arg(long)]
    clean: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && json_asked() => {
            let line = serde_json::json!({"level": "ERROR", "fields": {"message": "invalid arguments", "error": e.render().to_string()}, "target": "outrigger"});
            eprintln!("{line}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    if cli.print_default_config {
        print!("{}", outrigger::demo::EXAMPLE_CONFIG);
        return ExitCode::SUCCESS;
    }
    let json = matches!(cli.log_format, LogFormat::Json);
    outrigger::logging::init(if json {
        outrigger::logging::Format::Json
    } else {
        outrigger::logging::Format::Text
    });
    let result = match cli.command {
        Some(Command::Await {
            admin,
            timeout_secs,
            command,
        }) => await_ready(admin, timeout_secs, &command),
        Some(Command::Install { path }) => std::env::current_exe()
            .and_then(|exe| std::fs::copy(exe, &path))
            .map(|_| ExitCode::SUCCESS)
            .with_context(|| format!("cannot copy outrigger to {}", path.display())),
        Some(Command::Validate { config, deep }) => validate(&config, deep, json),
        Some(Command::Iptables(args)) => iptables(args),
        Some(Command::Demo { config: Some(path) }) => outrigger::config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|l| serve(l, true, json)),
        Some(Command::Demo { config: None }) => {
            let loaded =
                outrigger::config::parse(outrigger::demo::DEMO_CONFIG, "config/demo.yaml", &|k| {
                    std::env::var(k).ok()
                })
                .map(|config| outrigger::config::LoadedConfig {
                    config,
                    source: "config/demo.yaml (built in)".into(),
                    base_dir: ".".into(),
                })
                .map_err(anyhow::Error::from);
            loaded.and_then(|l| serve(l, true, json))
        }
        None => match cli.config {
            Some(path) => outrigger::config::load(&path)
                .map_err(anyhow::Error::from)
                .and_then(|l| serve(l, false, json)),
            None => Err(anyhow::anyhow!(
                "no config given: run `outrigger --config FILE` (or `outrigger demo`)"
            )),
        },
    };
    match result {
        Ok(code) => code,
        // Under JSON the fatal error is a log line like every other, so a log pipeline that
        // parses each line keeps it.
        Err(e) if json => {
            tracing::error!(error = %format!("{e:#}"), "fatal");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("outrigger: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--log-format json` on a command line that clap refused, so even that error is JSON.
fn json_asked() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--log-format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--log-format" && w[1] == "json")
}

/// Polls GET /ready on the admin address, then replaces this process with `command`.
fn await_ready(
    admin: std::net::SocketAddr,
    timeout_secs: u64,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    let ready = || -> bool {
        let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(1))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if s.write_all(
            format!("GET /ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
    };
    while !ready() {
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("outrigger at {admin} was not ready within {timeout_secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (program, args) = command.split_first().context("no command given after --")?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(anyhow::Error::from(err).context(format!("cannot run {program}")))
}

fn validate(path: &std::path::Path, deep: bool, json: bool) -> anyhow::Result<ExitCode> {
    match outrigger::config::load(path) {
        Ok(l) => {
            let problems = if deep { deep_problems(&l) } else { Vec::new() };
            if !problems.is_empty() {
                for p in problems {
                    if json {
                        tracing::error!(error = %p, "invalid config");
                    } else {
                        eprintln!("{}: {p}", path.display());
                    }
                }
                return Ok(ExitCode::from(1));
            }
            let c = &l.config;
            let routes: usize = c.listeners.iter().map(|l| l.routes.len()).sum();
            println!(
                "{}: valid ({} listeners, {} routes, {} clusters)",
                path.display(),
                c.listeners.len(),
                routes,
                c.clusters.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if json => {
            tracing::error!(error = %e, "invalid config");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// What only loading files and asking DNS can find: every certificate, key, CA and CRL, every
/// static endpoint name, every `discovery.dns` name.
fn deep_problems(l: &outrigger::config::LoadedConfig) -> Vec<String> {
    let metrics = std::sync::Arc::new(outrigger::metrics::Metrics::with_per_endpoint(false));
    let mut problems = Vec::new();
    for (i, lc) in l.config.listeners.iter().enumerate() {
        if let Err(e) = outrigger::listener::build_tls(i, lc, &l.base_dir, &metrics) {
            problems.push(e.to_string());
        }
    }
    if let Some(x) = &l.config.xds {
        if let Err(e) = outrigger::xds::check_tls(x, &l.base_dir) {
            problems.push(e);
        }
    }
    for (i, c) in l.config.clusters.iter().enumerate() {
        if let Err(e) = outrigger::cluster::ClusterInputs::gather_blocking(i, c, &l.base_dir) {
            problems.push(e.to_string());
        }
        let dns = c.discovery.as_ref().and_then(|d| d.dns.as_deref());
        if let Some(Ok((host, port))) = dns.map(outrigger::config::units::split_host_port) {
            match outrigger::resolve::lookup_blocking(host, port) {
                Ok(found) if !found.is_empty() => {}
                Ok(_) => problems.push(format!(
                    "clusters[{i}].discovery.dns: {host:?} has no A or AAAA records"
                )),
                Err(e) => problems.push(format!("clusters[{i}].discovery.dns: {e}")),
            }
        }
    }
    problems
}

fn serve(
    loaded: outrigger::config::LoadedConfig,
    demo: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // OUTRIGGER_CGROUP_ROOT points at another cgroup mount (tests use a fake one).
    let cgroup_root = std::env::var_os("OUTRIGGER_CGROUP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    let choice = outrigger::cpus::worker_threads(
        loaded.config.server.worker_threads,
        std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
        &cgroup_root,
    );
    let workers = choice.threads;
    // One worker (the usual sidecar with one core): a single-threaded scheduler, as
    // linkerd2-proxy does, without the work-stealing scheduler's cross-thread bookkeeping on
    // each wake-up and park (docs/performance.md has the measurement).
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    memory::spawn_trimmer();
    rt.block_on(async move {
        tracing::info!(threads = workers, source = %choice.source, "worker threads");
        if demo {
            let addrs: Vec<std::net::SocketAddr> = (18081..=18083).map(|p| ([127, 0, 0, 1], p).into()).collect();
            outrigger::demo::spawn_upstreams(&addrs)
                .await
                .context("cannot bind the demo upstreams on 127.0.0.1:18081-18083")?;
        }
        let server = outrigger::Server::start(loaded).await?;
        if demo {
            let a = server.runtime().snapshot().loaded.config.listeners.first().and_then(|l| server.listener_addr(&l.name)).map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(listener = %a, admin = %server.admin_addr(), "demo running");
            if !json { eprintln!("\noutrigger demo is running. Try:\n  curl -s http://{a}/            (round robin over two upstreams)\n  curl -s http://{a}/canary      (90/10 split)\n  curl -s http://{}/clusters\n  curl -s http://{}/metrics\nCtrl-C drains and stops.\n", server.admin_addr(), server.admin_addr()); }
        }
        spawn_signal_handlers(server.runtime().clone(), server.reloader().clone())?;
        let drained = server.run().await;
        if !drained {
            tracing::warn!("exiting with connections still open after the drain timeout");
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn spawn_signal_handlers(
    runtime: std::sync::Arc<outrigger::runtime::Runtime>,
    reloader: std::sync::Arc<outrigger::reload::Reloader>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        runtime.shutdown.request();
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            // The outcome is logged and counted by the reloader.
            let _ = reloader.reload().await;
        }
    });
    Ok(())
}

fn iptables(a: IptablesArgs) -> anyhow::Result<ExitCode> {
    use outrigger::iptables;
    if a.clean {
        if a.dry_run {
            for cmd in iptables::clean_commands(a.ipv6) {
                println!("{}", cmd.join(" "));
            }
        } else {
            iptables::clean(a.ipv6)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rules = iptables::CaptureRules {
        proxy_uid: a.proxy_uid,
        proxy_gid: a.proxy_gid,
        inbound_port: a.inbound_port,
        outbound_port: a.outbound_port,
        inbound_ports: a.inbound_ports,
        exclude_inbound_ports: a.exclude_inbound_ports,
        exclude_outbound_ports: a.exclude_outbound_ports,
        exclude_outbound_cidrs: a.exclude_outbound_cidrs,
        ipv6: a.ipv6,
    };
    if a.dry_run {
        print!("{}", rules.restore_script());
    } else {
        rules.apply()?;
        tracing::info!(
            proxy_uid = a.proxy_uid,
            inbound_port = a.inbound_port,
            outbound_port = a.outbound_port,
            "capture rules written"
        );
    }
    Ok(ExitCode::SUCCESS)
}
