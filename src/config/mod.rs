//! The configuration file: read, `${VAR}` substitution, YAML parsing into the typed model, and
//! whole-file validation. Output is plain validated data (`Config`); turning it into runtime
//! objects is `snapshot.rs`'s job. Every error names file, line and key path.

mod env;
mod lines;
pub mod model;
pub mod units;
mod validate;

pub use model::*;
pub use units::ConfigDuration;

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Key path such as `listeners[0].routes[2].cluster`; empty when the problem has none.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn render(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(v) => v,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// A validated config and where it came from (relative paths in it are relative to `base_dir`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: Config,
    pub source: PathBuf,
    pub base_dir: PathBuf,
}

/// Reads and validates a config file, substituting variables from the process environment.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })?;
    let config = parse(&text, &path.display().to_string(), &|k| std::env::var(k).ok())?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(LoadedConfig {
        config,
        source: path.to_path_buf(),
        base_dir,
    })
}

/// Parses and validates config text; `file` is only used in messages.
pub fn parse(
    text: &str,
    file: &str,
    env_lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = env::substitute(text, env_lookup).map_err(|issues| {
        ConfigError::Invalid(
            issues
                .into_iter()
                .map(|i| ConfigIssue {
                    file: file.to_owned(),
                    line: Some(i.line),
                    column: None,
                    path: String::new(),
                    message: i.message,
                })
                .collect(),
        )
    })?;
    let config: Config = serde_yaml::from_str(&text).map_err(|e| {
        let loc = e.location();
        let mut message = e.to_string();
        // serde_yaml appends the position to its message; it is already in front of ours.
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        let (path, message) = split_serde_path(&message);
        ConfigError::Invalid(vec![ConfigIssue {
            file: file.to_owned(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            path,
            message,
        }])
    })?;
    let problems = validate::validate(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    let map = lines::LineMap::build(&text);
    Err(ConfigError::Invalid(
        problems
            .into_iter()
            .map(|p| ConfigIssue {
                file: file.to_owned(),
                line: map.line_of(&p.path),
                column: None,
                path: p.path,
                message: p.message,
            })
            .collect(),
    ))
}

/// serde_yaml writes `listeners[0].routes[1]: unknown field ...`; split the path off so that it
/// is reported in the same place as validation paths.
fn split_serde_path(message: &str) -> (String, String) {
    if let Some((head, tail)) = message.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'));
        if looks_like_path {
            return (head.to_owned(), tail.to_owned());
        }
    }
    (String::new(), message.to_owned())
}

/// The running config as YAML for `GET /config`, with key material and credential-looking
/// header values replaced.
pub fn redacted_yaml(cfg: &Config) -> String {
    let mut cfg = cfg.clone();
    const SECRET: &str = "<redacted>";
    for l in &mut cfg.listeners {
        if let Some(tls) = &mut l.tls {
            tls.key = SECRET.into();
            for s in &mut tls.sni {
                s.key = SECRET.into();
            }
        }
        for r in &mut l.routes {
            for (name, value) in r.request_headers_add.iter_mut() {
                let n = name.to_ascii_lowercase();
                if ["auth", "token", "secret", "cookie", "key", "password"]
                    .iter()
                    .any(|s| n.contains(s))
                {
                    *value = SECRET.into();
                }
            }
        }
    }
    for c in &mut cfg.clusters {
        if let Some(tls) = &mut c.tls {
            if tls.key.is_some() {
                tls.key = Some(SECRET.into());
            }
        }
    }
    serde_yaml::to_string(&cfg).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests;
