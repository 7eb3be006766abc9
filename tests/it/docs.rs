//! The documentation holds: every `yaml` block in README.md and docs/ is a complete config that
//! `outrigger validate` accepts (blocks of other YAML are fenced as `yaml kubernetes`,
//! `yaml compose`, ... and left out), every example under config/ validates, the reference
//! names every key the config model has, and every relative link points at a file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// (line of the opening fence, info string, text) of each fenced block.
fn fenced_blocks(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        match &mut open {
            None if t.starts_with("```") => {
                open = Some((i + 1, t[3..].trim().to_string(), String::new()));
            }
            Some(_) if t.starts_with("```") => out.push(open.take().unwrap()),
            Some((_, _, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["validate", "--config"])
        .arg(file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_yaml_block_in_the_readme_and_docs_validates() {
    let dir = std::env::temp_dir().join(format!("outrigger-doc-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut checked, mut failures) = (0, Vec::new());
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, info, body) in fenced_blocks(&text) {
            if info != "yaml" {
                continue;
            }
            let file = dir.join(format!("block-{checked}.yaml"));
            std::fs::write(&file, &body).unwrap();
            let (ok, out) = validate(&file);
            if !ok {
                failures.push(format!("{}:{line}: {out}", doc.display()));
            }
            checked += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "yaml blocks that do not validate:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 10, "only {checked} yaml blocks found");
}

#[test]
fn every_bundled_config_validates() {
    let mut files = vec![
        root().join("config/outrigger.yaml"),
        root().join("config/demo.yaml"),
    ];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples.sort();
    assert!(
        examples.len() >= 5,
        "config/examples holds {}",
        examples.len()
    );
    files.extend(examples);
    for f in files {
        let (ok, out) = validate(&f);
        assert!(ok, "{}: {out}", f.display());
    }
}

/// The names serde reads, struct by struct, from the model's source.
fn model_keys() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = root().join("src/config/model");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut current: Option<String> = None;
        let mut rename: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                current = (!line.ends_with("{}"))
                    .then(|| rest.split_whitespace().next().unwrap().to_string());
                continue;
            }
            if line == "}" {
                current = None;
            }
            let Some(st) = &current else { continue };
            let t = line.trim();
            if let Some(i) = t.find("rename = \"") {
                rename = Some(t[i + 10..].split('"').next().unwrap().to_string());
            }
            if let Some(field) = t.strip_prefix("pub ").and_then(|r| r.split(':').next()) {
                if t.contains(':') && !field.contains(' ') {
                    out.push((
                        st.clone(),
                        rename.take().unwrap_or_else(|| field.to_string()),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_configuration_reference_names_every_key() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let keys = model_keys();
    assert!(keys.len() > 100, "read {} keys from the model", keys.len());
    let missing: Vec<String> = keys
        .iter()
        .filter(|(_, k)| {
            ![
                format!("`{k}`"),
                format!(".{k}`"),
                format!("`{k}."),
                format!("`{k}[]"),
            ]
            .iter()
            .any(|form| doc.contains(form.as_str()))
        })
        .map(|(s, k)| format!("{s}.{k}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name: {missing:?}"
    );
}

#[test]
fn the_commented_example_shows_every_key() {
    let example = std::fs::read_to_string(root().join("config/outrigger.yaml")).unwrap();
    let missing: Vec<String> = model_keys()
        .iter()
        .filter(|(_, k)| {
            !example.lines().any(|l| {
                let l = l.trim_start().trim_start_matches('#').trim_start();
                let l = l.trim_start_matches("- ");
                l.starts_with(&format!("{k}:"))
                    || l.contains(&format!("{{ {k}:"))
                    || l.contains(&format!(", {k}:"))
            })
        })
        .map(|(s, k)| format!("{s}.{k}"))
        .collect();
    assert!(
        missing.is_empty(),
        "config/outrigger.yaml does not show: {missing:?}"
    );
}

#[test]
fn relative_links_in_the_docs_point_at_files() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let base = doc.parent().unwrap();
        for part in text.split("](").skip(1) {
            let target = part.split(')').next().unwrap_or("");
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            if !base.join(path).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
        assert!(
            !text.contains("../shared"),
            "{} links outside the repository",
            doc.display()
        );
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
