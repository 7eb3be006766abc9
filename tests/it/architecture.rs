//! The shape of the code, held by tests so it does not drift back: top-level modules import
//! only downward (no cycle between them), no source file grows past 600 lines, and no
//! function past 100. Test code (a `#[cfg(test)]` module, or a `tests.rs` / `*_tests.rs`
//! file) may reach anywhere and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 100;

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The file's text without its `#[cfg(test)] mod … { … }` blocks (brace-counted), comments
/// and string contents left in: `crate::` in a comment is rare and harmless to count.
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            if let Some(next) = lines.peek() {
                let n = next.trim_start();
                if n.starts_with("mod ") || n.starts_with("pub mod ") {
                    let next = lines.next().unwrap();
                    if next.trim_end().ends_with(';') {
                        continue;
                    }
                    let mut depth = brace_delta(next);
                    while depth > 0 {
                        match lines.next() {
                            Some(l) => depth += brace_delta(l),
                            None => break,
                        }
                    }
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn brace_delta(line: &str) -> i64 {
    let code = line.split("//").next().unwrap_or("");
    code.matches('{').count() as i64 - code.matches('}').count() as i64
}

fn top_module(p: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = p.strip_prefix(&src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::X` uses between top-level modules, by module.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in sources() {
        let top = top_module(&p);
        if top == "lib" || top == "main" || is_test_file(&p) {
            continue;
        }
        let text = without_test_modules(&std::fs::read_to_string(&p).unwrap());
        for (i, _) in text.match_indices("crate::") {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `outrigger_crate::`, not ours
            }
            let dst: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !dst.is_empty() && dst != top {
                edges.entry(top.clone()).or_default().insert(dst);
            }
        }
    }
    edges
}

/// Strongly connected groups of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn strong<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    strong(s, w);
                    let l = s.low[v].min(s.low[w]);
                    s.low.insert(v, l);
                } else if s.on.contains(w) {
                    let l = s.low[v].min(s.index[w]);
                    s.low.insert(v, l);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(v.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            strong(&mut s, v);
        }
    }
    s.out
}

#[test]
fn top_level_modules_import_only_downward() {
    let edges = imports();
    let found = cycles(&edges);
    let detail: Vec<String> = found
        .iter()
        .map(|c| {
            let inner: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    edges[m]
                        .iter()
                        .filter(|d| c.contains(d))
                        .map(move |d| format!("{m} -> {d}"))
                })
                .collect();
            format!("cycle {c:?}: {}", inner.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", detail.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    edges.entry("c".into()).or_default().insert("a".into());
    edges.entry("c".into()).or_default().insert("d".into());
    assert_eq!(cycles(&edges), vec![vec!["a", "b", "c"]]);
    let text = "use crate::x;\n#[cfg(test)]\nmod tests {\n    use crate::y;\n    fn f() {}\n}\n";
    assert_eq!(without_test_modules(text), "use crate::x;\n");
    for f in [
        "fn a() {",
        "pub(super) async fn b(",
        "pub const fn c(",
        "pub(crate) unsafe fn d(",
    ] {
        assert!(is_fn_line(f), "{f}");
    }
    assert!(!is_fn_line("let f = fn_ptr;"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(&p).unwrap().lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines: {long:#?}"
    );
}

/// Whether a trimmed line starts a function item, whatever its visibility and qualifiers.
fn is_fn_line(t: &str) -> bool {
    let mut rest = t;
    for prefix in ["pub(crate) ", "pub(super) ", "pub "] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
            break;
        }
    }
    for q in ["const ", "async ", "unsafe "] {
        if let Some(r) = rest.strip_prefix(q) {
            rest = r;
        }
    }
    rest.starts_with("fn ")
}

/// Functions that are tables of data, not logic: long by nature, and no clearer split.
const TABLES: &[(&str, &str)] = &[
    // One entry per metric family: name, help text, labels.
    ("src/metrics/mod.rs", "build"),
];

/// Functions by the lines from their `fn` line to the closing brace at the same indentation
/// (rustfmt's layout). Test code counts too: a 100-line test is as hard to read.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let is_fn = is_fn_line(t);
        if !is_fn || t.ends_with(';') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[i + 1..].iter().position(|x| *x == close) {
            let n = end + 2;
            if n > MAX_FN_LINES {
                let name: String = t
                    .split("fn ")
                    .nth(1)
                    .unwrap_or("")
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((i + 1, name, n));
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_100_lines() {
    let mut long = Vec::new();
    for p in sources() {
        let rel = p
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        for (line, name, n) in long_functions(&std::fs::read_to_string(&p).unwrap()) {
            if TABLES.contains(&(rel.as_str(), name.as_str())) {
                continue;
            }
            long.push(format!("{}:{line} {name} ({n} lines)", p.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines: {long:#?}"
    );
}
