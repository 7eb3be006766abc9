//! `${VAR}` and `${VAR:-default}` substitution on the file's text, before YAML parsing, so
//! that line numbers in later errors still point into the file as written. `$${` writes a
//! literal `${`. Whole-line comments are left alone, so an example in a comment needs no
//! variable. The lookup is a closure: tests never touch the process environment.

/// A reference to a variable that is unset and has no default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvIssue {
    pub line: usize,
    pub message: String,
}

pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<EnvIssue>> {
    if !text.contains("${") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut issues = Vec::new();
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        substitute_line(line, idx + 1, lookup, &mut out, &mut issues);
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

fn substitute_line(
    line: &str,
    line_no: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    issues: &mut Vec<EnvIssue>,
) {
    let mut rest = line;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = body.find('}') else {
            issues.push(EnvIssue {
                line: line_no,
                message: "unclosed ${ in value".into(),
            });
            out.push_str(tail);
            return;
        };
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            issues.push(EnvIssue {
                line: line_no,
                message: format!("${{{expr}}} is not a valid variable reference"),
            });
        } else {
            match lookup(name).or_else(|| default.map(str::to_owned)) {
                Some(v) if v.contains('\n') => issues.push(EnvIssue {
                    line: line_no,
                    message: format!("environment variable {name} contains a newline"),
                }),
                Some(v) => out.push_str(&v),
                None => issues.push(EnvIssue {
                    line: line_no,
                    message: format!(
                        "environment variable {name} is not set and ${{{name}}} has no default (write ${{{name}:-default}})"
                    ),
                }),
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_defaults() {
        let t = "a: 127.0.0.1:${PORT}\nb: ${HOST:-localhost}\nc: x${EMPTY}y\nd: x$\ne: cost $5\n";
        assert_eq!(
            substitute(t, &env).unwrap(),
            "a: 127.0.0.1:8080\nb: localhost\nc: xy\nd: x$\ne: cost $5\n"
        );
        assert_eq!(substitute("x: $${PORT}", &env).unwrap(), "x: ${PORT}");
    }

    #[test]
    fn unset_is_an_error_with_line() {
        let err = substitute("a: 1\nb: ${NOPE}\n# ${IGNORED}\n", &env).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].line, 2);
        assert!(
            err[0].message.contains("NOPE is not set"),
            "{}",
            err[0].message
        );
    }
}
