//! Request path normalisation before routing, as Envoy's `normalize_path`: percent-encoded
//! unreserved characters are decoded (RFC 3986 §6.2.2.2), dot segments removed (§5.2.4),
//! repeated slashes optionally merged, and encoded slashes refused by default. Without it,
//! `/public/../admin` or `/public/%2e%2e/admin` would match a `/public` route and reach
//! `/admin` upstream.

use serde::{Deserialize, Serialize};

/// `listeners[].escaped_slashes`: what `%2F` and `%5C` in a path do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400: an encoded slash lets a path mean one thing to the router and another upstream.
    #[default]
    Reject,
    /// Pass them through as they are.
    Keep,
    /// Decode them to `/` and `\` before normalising and routing.
    Unescape,
}

/// A listener's path settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    /// `normalize_path`: resolve `.` and `..` segments and decode unreserved escapes.
    pub normalize: bool,
    /// `merge_slashes`: `//` becomes `/`.
    pub merge_slashes: bool,
    /// `escaped_slashes`.
    pub escaped_slashes: EscapedSlashes,
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It has an escaped slash and the policy is `reject`.
    #[error("encoded slash (%2F or %5C) in the path")]
    EscapedSlash,
    /// A `%` not followed by two hex digits (RFC 3986 §2.1): decoding around it could make
    /// a new escape that a second decoder reads differently.
    #[error("malformed percent-encoding in the path")]
    BadEscape,
}

impl PathPolicy {
    /// The path to route and forward: `None` when `path` needs no change (the common case,
    /// decided by one scan), `Some` with the rewritten path otherwise.
    pub fn apply(&self, path: &str) -> Result<Option<String>, PathError> {
        let b = path.as_bytes();
        let suspicious = b.iter().enumerate().any(|(i, &c)| {
            c == b'%'
                || (c == b'.' && i > 0 && b[i - 1] == b'/')
                || (c == b'/' && self.merge_slashes && b.get(i + 1) == Some(&b'/'))
        });
        if !suspicious {
            return Ok(None);
        }
        let mut out = decode(path, self)?;
        if self.normalize {
            out = remove_dot_segments(&out);
        }
        if self.merge_slashes {
            out = merge_slashes(&out);
        }
        Ok((out != path).then_some(out))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes what normalisation may decode: unreserved characters (when normalising) and, with
/// `unescape`, slashes and backslashes; refuses encoded slashes under `reject`. Everything
/// else stays encoded, with its hex digits upper-cased (§6.2.2.1).
fn decode(path: &str, p: &PathPolicy) -> Result<String, PathError> {
    let b = path.as_bytes();
    // Bytes, not chars: only ASCII escapes are replaced (by ASCII), so UTF-8 stays intact.
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h << 4 | l;
                let slash = v == b'/' || v == b'\\';
                if slash {
                    match p.escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Unescape => {
                            out.push(b'/');
                            i += 3;
                            continue;
                        }
                        EscapedSlashes::Keep => {}
                    }
                }
                let unreserved =
                    v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~');
                if unreserved && p.normalize {
                    out.push(v);
                } else {
                    out.extend_from_slice(&[
                        b'%',
                        b[i + 1].to_ascii_uppercase(),
                        b[i + 2].to_ascii_uppercase(),
                    ]);
                }
                i += 3;
                continue;
            }
        }
        if c == b'%' {
            return Err(PathError::BadEscape);
        }
        out.push(c);
        i += 1;
    }
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// RFC 3986 §5.2.4 on an absolute path; the result always starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    // parts[0] is the empty string before the leading slash.
    let last = parts.len() - 1;
    for (i, seg) in parts.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if i == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(merge: bool, escaped: EscapedSlashes) -> PathPolicy {
        PathPolicy {
            normalize: true,
            merge_slashes: merge,
            escaped_slashes: escaped,
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        let p = policy(false, EscapedSlashes::Reject);
        let n = |s: &str| p.apply(s).unwrap().unwrap_or_else(|| s.to_owned());
        assert_eq!(n("/a/b"), "/a/b");
        assert_eq!(p.apply("/a/b").unwrap(), None);
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2E/admin"), "/admin");
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/.hidden"), "/a/.hidden");
        assert_eq!(n("/a%41%7e"), "/aA~");
        assert_eq!(n("/a%3f"), "/a%3F");
        assert_eq!(n("/a//b"), "/a//b");
        assert_eq!(p.apply("/100%"), Err(PathError::BadEscape));
        assert_eq!(p.apply("/%a%33"), Err(PathError::BadEscape));
        // Found by the fuzz target: bytes beyond ASCII pass through unchanged.
        assert_eq!(n("/\u{1}F\u{6db}%41"), "/\u{1}F\u{6db}A");
    }

    #[test]
    fn slashes_merge_when_asked() {
        let p = policy(true, EscapedSlashes::Reject);
        assert_eq!(p.apply("//a///b/").unwrap().as_deref(), Some("/a/b/"));
    }

    #[test]
    fn encoded_slashes_follow_the_policy() {
        assert_eq!(
            policy(false, EscapedSlashes::Reject).apply("/a%2Fb"),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            policy(false, EscapedSlashes::Reject).apply("/a%5cb"),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            policy(false, EscapedSlashes::Keep)
                .apply("/a%2fb")
                .unwrap()
                .as_deref(),
            Some("/a%2Fb")
        );
        assert_eq!(
            policy(false, EscapedSlashes::Unescape)
                .apply("/public%2F..%2Fadmin")
                .unwrap()
                .as_deref(),
            Some("/admin")
        );
    }
}
