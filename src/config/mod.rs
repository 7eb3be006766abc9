//! The configuration file: read, `${VAR}` substitution, YAML parsing into the typed model, and
//! whole-file validation. Output is plain validated data (`Config`); turning it into runtime
//! objects is `snapshot.rs`'s job. Every error names file, line and key path.

mod env;
mod lines;
pub mod model;
mod typed;
pub mod units;
mod validate;

pub use model::*;
pub use units::{Cidr, ConfigDuration};

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The config file's name.
    pub file: String,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// 1-based column of the offending key, when known.
    pub column: Option<usize>,
    /// Key path such as `listeners[0].routes[2].cluster`; empty when the problem has none.
    pub path: String,
    /// What is wrong, starting with the key's path.
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

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        /// The file's name.
        file: String,
        /// The reading error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems: every one found, in file order.
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
    /// The problems found (empty for a read error).
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
    /// The validated config.
    pub config: Config,
    /// The file it was read from (what a reload reads again).
    pub source: PathBuf,
    /// The file's folder.
    pub base_dir: PathBuf,
}

/// Reads and validates a config file, substituting variables from the process environment.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })?;
    let config = parse(&text, &path.display().to_string(), &|k| {
        std::env::var(k).ok()
    })?;
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
    let issue = |line: Option<usize>, column: Option<usize>, path: String, message: String| {
        ConfigError::Invalid(vec![ConfigIssue {
            file: file.to_owned(),
            line,
            column,
            path,
            message,
        }])
    };
    // Two steps: YAML syntax (serde_yaml knows the position), then the typed model through
    // serde_path_to_error (knows the exact key path, which the line map turns into a position).
    let mut value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        let loc = e.location();
        // serde_yaml puts the position inside its message; it is already in front of ours.
        let message = strip_position(&e.to_string());
        issue(
            loc.as_ref().map(|l| l.line()),
            loc.as_ref().map(|l| l.column()),
            String::new(),
            message,
        )
    })?;
    value
        .apply_merge()
        .map_err(|e| issue(None, None, String::new(), format!("YAML merge key: {e}")))?;
    let map = lines::LineMap::build(&text);
    let config = typed::typed(value, &map, file)?;
    let problems = validate::validate(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    Err(ConfigError::Invalid(
        problems
            .into_iter()
            .map(|p| ConfigIssue {
                file: file.to_owned(),
                line: map.position_of(&p.path).map(|p| p.0),
                column: map.position_of(&p.path).map(|p| p.1),
                path: p.path,
                message: p.message,
            })
            .collect(),
    ))
}

/// Validates a config assembled in memory (the file's resources merged with those of an xDS
/// server); `source` names where it came from in messages. Problems carry key paths only.
pub fn check(cfg: &Config, source: &str) -> Result<(), ConfigError> {
    let problems = validate::validate(cfg);
    if problems.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Invalid(
        problems
            .into_iter()
            .map(|p| ConfigIssue {
                file: source.to_owned(),
                line: None,
                column: None,
                path: p.path,
                message: p.message,
            })
            .collect(),
    ))
}

fn strip_position(message: &str) -> String {
    static POSITION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r" at line \d+ column \d+").expect("constant regex")
    });
    POSITION.replace_all(message, "").into_owned()
}

/// The running config as YAML for `GET /config`, with key material and header values (unless
/// `admin.public_headers` names them) replaced.
pub fn redacted_yaml(cfg: &Config) -> String {
    let mut cfg = cfg.clone();
    const SECRET: &str = "<redacted>";
    let public = std::mem::take(&mut cfg.admin.public_headers);
    for l in &mut cfg.listeners {
        if let Some(tls) = &mut l.tls {
            tls.key = SECRET.into();
            for s in &mut tls.sni {
                s.key = SECRET.into();
            }
        }
        // Header values are often credentials (API keys, bearer tokens matched or added):
        // none is printed unless the config names it public.
        let hide = |name: &str, value: &mut String| {
            if !public.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                *value = SECRET.into();
            }
        };
        for r in &mut l.routes {
            for (name, value) in r.request_headers_add.iter_mut() {
                hide(name, value);
            }
            for (name, value) in r.matcher.headers.iter_mut() {
                hide(name, value);
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
    cfg.admin.public_headers = public;
    serde_yaml::to_string(&cfg).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests;
