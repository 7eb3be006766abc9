//! File discovery: a YAML or JSON list of endpoints (`address`, `weight`, optional `zone`,
//! `metadata` and `priority`) that an external agent writes, watched on disk (its folder, so
//! atomic renames and Kubernetes ConfigMap symlink swaps are seen) and re-read every refresh
//! as a fallback.

use super::{DiscoveryError, Target};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    priority: u32,
}

fn one() -> u32 {
    1
}

pub struct FileSource {
    path: PathBuf,
    watch: Option<crate::watch::FileWatch>,
}

impl FileSource {
    pub fn new(path: PathBuf) -> FileSource {
        let watch = match crate::watch::FileWatch::new(&path) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot watch the endpoints file; re-reading it every refresh");
                None
            }
        };
        FileSource { path, watch }
    }

    /// Reads and parses the file; any problem fails the whole round (the last good set stays).
    pub async fn fetch(&self) -> Result<Vec<Target>, DiscoveryError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| self.error(e.to_string()))?;
        let entries = parse(&text).map_err(|m| self.error(m))?;
        let mut targets = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let (host, port) = crate::config::units::split_host_port(&e.address)
                .map_err(|m| self.error(format!("[{i}].address: {m}")))?;
            if e.weight == 0 {
                return Err(self.error(format!("[{i}].weight: must be at least 1")));
            }
            if e.priority > crate::config::MAX_PRIORITY {
                return Err(self.error(format!("[{i}].priority: must be at most 127")));
            }
            let addresses: Vec<SocketAddr> = match e.address.parse::<SocketAddr>() {
                Ok(a) => vec![a],
                Err(_) => crate::resolve::lookup(host, port)
                    .await
                    .map_err(|err| self.error(format!("[{i}].address: {err}")))?,
            };
            for address in addresses {
                let mut t = Target::new(address, e.weight, host.to_owned());
                t.zone = e.zone.clone();
                t.metadata = e.metadata.clone();
                t.priority = e.priority;
                targets.push(t);
            }
        }
        Ok(targets)
    }

    /// Until the file changes (debounced) or `refresh` passes.
    pub async fn wait(&mut self, refresh: Duration) {
        match &mut self.watch {
            Some(w) => {
                let _ = tokio::time::timeout(refresh, w.changed(Duration::from_millis(50))).await;
            }
            None => tokio::time::sleep(refresh).await,
        }
    }

    fn error(&self, message: String) -> DiscoveryError {
        DiscoveryError::File {
            path: self.path.clone(),
            message,
        }
    }
}

fn parse(text: &str) -> Result<Vec<FileEndpoint>, String> {
    // JSON is YAML, so one parser reads both.
    serde_yaml::from_str::<Option<Vec<FileEndpoint>>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| match e.location() {
            Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })
}

/// The file a cluster's `discovery.file` names, relative to the config file's folder.
pub fn resolve_path(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_and_json_lists() {
        let y =
            parse("- address: 10.0.0.7:8080\n  weight: 2\n  zone: a\n- address: 10.0.0.8:8080\n")
                .expect("yaml");
        assert_eq!(y.len(), 2);
        assert_eq!(y[0].weight, 2);
        assert_eq!(y[1].weight, 1);
        let j =
            parse(r#"[{"address": "10.0.0.7:8080", "weight": 2}, {"address": "10.0.0.8:8080"}]"#)
                .expect("json");
        assert_eq!(j.len(), 2);
        assert!(parse("").expect("empty").is_empty());
        let bad = parse("- address: 10.0.0.7:8080\n  wieght: 2\n")
            .err()
            .unwrap_or_default();
        assert!(bad.contains("line 2") && bad.contains("wieght"), "{bad}");
    }
}
