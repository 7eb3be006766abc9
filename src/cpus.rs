//! How many worker threads to run: the container's CPU limit, not the node's core count. A
//! sidecar limited to one CPU on a 64-core node that starts 64 workers spends its quota on
//! scheduling and gets throttled. The limit is the cgroup's CFS quota (v2 `cpu.max`, v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up, at least 1, and never more than the
//! CPUs this process may run on.

use std::path::{Path, PathBuf};

/// The chosen count and why, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerThreads {
    /// The number of worker threads.
    pub threads: usize,
    /// Where it came from (the config, the cgroup quota, the CPU count).
    pub source: String,
}

/// `configured` (`server.worker_threads`, 0 for automatic) wins, then `TOKIO_WORKER_THREADS`,
/// then the cgroup limit under `cgroup_root` (normally `/sys/fs/cgroup`), then the CPU count.
pub fn worker_threads(configured: usize, env: Option<&str>, cgroup_root: &Path) -> WorkerThreads {
    if configured > 0 {
        return WorkerThreads {
            threads: configured,
            source: "server.worker_threads".into(),
        };
    }
    // A bad or zero value falls back to the automatic choice rather than failing the start.
    if let Some(n) = env
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return WorkerThreads {
            threads: n,
            source: "TOKIO_WORKER_THREADS".into(),
        };
    }
    let cpus = allowed_cpus();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    match cgroup_limit(cgroup_root, &own) {
        Some(limit) => {
            let threads = (limit.ceil() as usize).clamp(1, cpus.max(1));
            WorkerThreads {
                threads,
                source: format!("cgroup CPU limit {limit:.2}, {cpus} CPUs"),
            }
        }
        None => WorkerThreads {
            threads: cpus.max(1),
            source: format!("{cpus} CPUs, no cgroup CPU limit"),
        },
    }
}

/// The tightest CFS quota, in CPUs, on the path from this process's cgroup up to the root
/// (a pod-level limit binds a container that has none of its own). `own` is
/// `/proc/self/cgroup`; inside a cgroup namespace its path is `/`.
pub fn cgroup_limit(root: &Path, own: &str) -> Option<f64> {
    let mut found: Vec<f64> = Vec::new();
    let mut take = |q: Option<f64>| found.extend(q);
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            for dir in ancestors(root, path) {
                take(v2_quota(&dir));
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            for base in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
                for dir in ancestors(&root.join(base), path) {
                    take(v1_quota(&dir));
                }
            }
        }
    }
    // No /proc/self/cgroup (or nothing under its paths): the mount root is the container's own.
    if found.is_empty() {
        found.extend(v2_quota(root));
        found.extend(v1_quota(&root.join("cpu")));
        found.extend(v1_quota(&root.join("cpu,cpuacct")));
    }
    found.into_iter().reduce(f64::min)
}

fn ancestors(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut p = Path::new(path.trim());
    loop {
        let rel = p.strip_prefix("/").unwrap_or(p);
        dirs.push(root.join(rel));
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    dirs
}

/// `cpu.max`: `max 100000` (no limit) or `150000 100000` (1.5 CPUs).
fn v2_quota(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let quota = it.next()?.parse::<f64>().ok()?;
    let period = it
        .next()
        .and_then(|p| p.parse::<f64>().ok())
        .unwrap_or(100_000.0);
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// v1: a quota of -1 is no limit.
fn v1_quota(dir: &Path) -> Option<f64> {
    let read = |f: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
    };
    let (quota, period) = (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?);
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// CPUs in this process's affinity mask (`taskset`, cpusets), from `/proc/self/status`.
fn allowed_cpus() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| count_list(l.trim()))
        })
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// `0-3,8,10-11` → 7.
fn count_list(list: &str) -> usize {
    list.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
            None => part.parse::<usize>().ok().map(|_| 1),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "outrigger-cgroup-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn v2_quota_rounds_up_and_the_tightest_ancestor_wins() {
        let root = fake(&[
            ("cpu.max", "max 100000\n"),
            ("kubepods/pod1/cpu.max", "250000 100000\n"),
            ("kubepods/pod1/app/cpu.max", "150000 100000\n"),
        ]);
        assert_eq!(cgroup_limit(&root, "0::/kubepods/pod1/app\n"), Some(1.5));
        // Inside a cgroup namespace the process sits at the root.
        let ns = fake(&[("cpu.max", "50000 100000\n")]);
        assert_eq!(cgroup_limit(&ns, "0::/\n"), Some(0.5));
        let none = fake(&[("cpu.max", "max 100000\n")]);
        assert_eq!(cgroup_limit(&none, "0::/\n"), None);
    }

    #[test]
    fn v1_quota() {
        let root = fake(&[
            ("cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
            ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
            ("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n"),
            ("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(
            cgroup_limit(&root, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n"),
            Some(2.0)
        );
    }

    #[test]
    fn overrides_come_first_and_limits_are_at_least_one() {
        let root = fake(&[("cpu.max", "10000 100000\n")]);
        assert_eq!(worker_threads(3, Some("5"), &root).threads, 3);
        assert_eq!(worker_threads(0, Some("5"), &root).threads, 5);
        assert_eq!(worker_threads(0, Some("zero"), &root).threads, 1);
        assert_eq!(count_list("0-3,8,10-11"), 7);
    }
}
