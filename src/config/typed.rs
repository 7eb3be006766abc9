//! From the YAML value to the typed model, with every type error found in one run: serde stops
//! at the first, so each offending node is taken out and deserialization runs again.

use super::{lines, Config, ConfigError, ConfigIssue};

/// The typed model from the YAML value, or every type error in it: after each error the
/// offending node is taken out and deserialization runs again (a bounded number of times), so
/// one run reports what would otherwise take one edit per error to find.
pub(super) fn typed(
    mut value: serde_yaml::Value,
    map: &lines::LineMap,
    file: &str,
) -> Result<Config, ConfigError> {
    const MAX_ERRORS: usize = 50;
    let mut issues: Vec<ConfigIssue> = Vec::new();
    let mut removed = Removed::default();
    loop {
        let err = match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
            Ok(config) if issues.is_empty() => return Ok(config),
            Ok(_) => break,
            Err(e) => e,
        };
        let current = segments(&err.path().to_string());
        let original = removed.original(&current);
        let path = render_path(&original);
        let message = err.into_inner().to_string();
        // A required key taken out after its own error leaves its parent incomplete: that is
        // not a second problem, so the parent goes too, silently.
        let follows_removal = message.starts_with("missing field")
            && removed
                .paths
                .iter()
                .any(|r| r.len() == original.len() + 1 && r.starts_with(&original));
        if !follows_removal {
            let pos = map.position_of(&path);
            issues.push(ConfigIssue {
                file: file.to_owned(),
                line: pos.map(|p| p.0),
                column: pos.map(|p| p.1),
                path,
                message,
            });
        }
        if issues.len() >= MAX_ERRORS || current.is_empty() || !remove_at(&mut value, &current) {
            break;
        }
        removed.paths.push(original);
    }
    Err(ConfigError::Invalid(issues))
}

/// One step of a key path: a map key or a sequence index.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[2].c` as segments (serde_path_to_error's rendering; `.` is the root).
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn render_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Nodes taken out so far, by their path in the file as written.
#[derive(Default)]
struct Removed {
    paths: Vec<Vec<Seg>>,
}

impl Removed {
    /// A path in the value as it is now, translated back to the file as written: a sequence
    /// that lost elements has shifted the indices after them.
    fn original(&self, current: &[Seg]) -> Vec<Seg> {
        let mut out: Vec<Seg> = Vec::with_capacity(current.len());
        for seg in current {
            let seg = match seg {
                Seg::Index(i) => {
                    let mut gone: Vec<usize> = self
                        .paths
                        .iter()
                        .filter(|r| r.len() == out.len() + 1 && r.starts_with(&out))
                        .filter_map(|r| match r.last() {
                            Some(Seg::Index(g)) => Some(*g),
                            _ => None,
                        })
                        .collect();
                    gone.sort_unstable();
                    let mut orig = *i;
                    for g in gone {
                        if g <= orig {
                            orig += 1;
                        }
                    }
                    Seg::Index(orig)
                }
                key => key.clone(),
            };
            out.push(seg);
        }
        out
    }
}

/// Takes the node at `path` out of `value`; false when the path does not lead to a node.
fn remove_at(value: &mut serde_yaml::Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        let next = match (seg, node) {
            (Seg::Index(i), serde_yaml::Value::Sequence(s)) => s.get_mut(*i),
            (Seg::Key(k), serde_yaml::Value::Mapping(m)) => m.get_mut(k.as_str()),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Seg::Index(i), serde_yaml::Value::Sequence(s)) if *i < s.len() => {
            s.remove(*i);
            true
        }
        (Seg::Key(k), serde_yaml::Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        _ => false,
    }
}
