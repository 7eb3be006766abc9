//! `outrigger validate` on broken files: exit 1 and a message naming file, line and key path.

use std::path::PathBuf;
use std::process::Command;

const GOOD: &str = "\
listeners:
  - name: ingress
    address: 127.0.0.1:15001
    routes:
      - match: { path_prefix: / }
        cluster: web
        timeout: 5s
clusters:
  - name: web
    endpoints:
      - address: 127.0.0.1:8080
        weight: 2
";

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outrigger-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn validate(path: &PathBuf) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["validate", "--config"])
        .arg(path)
        .env_remove("UNSET_FOR_TEST")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_file_validates_with_a_summary() {
    let (code, stdout, stderr) = validate(&write("good.yaml", GOOD));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("valid (1 listeners, 1 routes, 1 clusters)"),
        "{stdout}"
    );
}

#[test]
fn broken_files_exit_1_naming_line_and_key_path() {
    // (case, file text, expected fragment of the message including the key path)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad yaml",
            GOOD.replace("  - name: web", "  - name: [web"),
            ":10:14: did not find expected ',' or ']', while parsing a flow sequence",
        ),
        (
            "unknown key",
            GOOD.replace("timeout: 5s", "timeuot: 5s"),
            ":7:9: listeners[0].routes[0].timeuot: unknown field `timeuot`",
        ),
        (
            "missing cluster",
            GOOD.replace("cluster: web", "cluster: api"),
            ":6:9: listeners[0].routes[0].cluster: no cluster named \"api\"",
        ),
        (
            "duplicate listener",
            GOOD.replace(
                "clusters:",
                "  - { name: ingress, address: \"127.0.0.1:15002\", cluster: web }\nclusters:",
            ),
            ":8:7: listeners[1].name: duplicate listener name \"ingress\"",
        ),
        (
            "duplicate cluster",
            format!("{GOOD}  - {{ name: web, endpoints: [{{address: \"127.0.0.1:1\"}}] }}\n"),
            ":13:7: clusters[1].name: duplicate cluster name \"web\"",
        ),
        (
            "bad duration",
            GOOD.replace("timeout: 5s", "timeout: 5 parsecs"),
            ":7:9: listeners[0].routes[0].timeout: duration \"5 parsecs\"",
        ),
        (
            "duration without unit",
            GOOD.replace("timeout: 5s", "timeout: \"5\""),
            "listeners[0].routes[0].timeout: duration \"5\" has no unit",
        ),
        (
            "bad listener address",
            GOOD.replace("127.0.0.1:15001", "localhost"),
            ":3:5: listeners[0].address: \"localhost\" is not an IP address with a port",
        ),
        (
            "endpoint without port",
            GOOD.replace("127.0.0.1:8080", "web.internal"),
            ":11:9: clusters[0].endpoints[0].address: address \"web.internal\" needs a port",
        ),
        (
            "zero weight",
            GOOD.replace("weight: 2", "weight: 0"),
            ":12:9: clusters[0].endpoints[0].weight: must be greater than 0",
        ),
        (
            "negative weight",
            GOOD.replace("weight: 2", "weight: -1"),
            "clusters[0].endpoints[0].weight: invalid value: integer `-1`",
        ),
        (
            "zero split weight",
            GOOD.replace(
                "cluster: web\n",
                "weighted_clusters: [{cluster: web, weight: 0}]\n",
            ),
            ":6:44: listeners[0].routes[0].weighted_clusters[0].weight: must be greater than 0",
        ),
        (
            "bad regex",
            GOOD.replace("path_prefix: /", "path_regex: \"([a-z\""),
            ":5:18: listeners[0].routes[0].match.path_regex: invalid regex",
        ),
        (
            "two path matchers",
            GOOD.replace("path_prefix: /", "path_prefix: /, path: /x"),
            ":5:9: listeners[0].routes[0].match: use only one of path, path_prefix and path_regex",
        ),
        (
            "unknown lb",
            GOOD.replace("  - name: web\n", "  - name: web\n    lb: fastest\n"),
            ":10:5: clusters[0].lb: unknown variant `fastest`",
        ),
        (
            "wrong type",
            GOOD.replace(
                "    routes:",
                "    limits: { max_connections: many }\n    routes:",
            ),
            "listeners[0].limits.max_connections: invalid type: string \"many\"",
        ),
        (
            "no listeners",
            "listeners: []\nclusters: []\n".to_string(),
            ":1: listeners: at least one listener is required",
        ),
        (
            "missing listeners key",
            "clusters: []\n".to_string(),
            "listeners: at least one listener is required (or an xds server that sends them)",
        ),
        (
            "unset variable",
            GOOD.replace("127.0.0.1:8080", "${UNSET_FOR_TEST}"),
            ":11: environment variable UNSET_FOR_TEST is not set",
        ),
        (
            "bad method",
            GOOD.replace("path_prefix: /", "path_prefix: /, method: \"G T\""),
            ":5:34: listeners[0].routes[0].match.method: \"G T\" is not an HTTP method",
        ),
        (
            "two discovery sources",
            GOOD.replace(
                "    endpoints:",
                "    discovery: { dns: \"web.svc:80\", file: eps.yaml }\n    endpoints:",
            ),
            ":10:5: clusters[0].discovery: set exactly one of dns, dns_srv, file or eds",
        ),
        (
            "bad resolver",
            GOOD.replace(
                "    endpoints:",
                "    discovery: { dns: \"web.svc:80\", resolvers: [dns.local] }\n    endpoints:",
            ),
            ":10:49: clusters[0].discovery.resolvers[0]: \"dns.local\" is not an IP address or IP:port",
        ),
    ];
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (i, (name, text, want)) in cases.iter().enumerate() {
        let path = write(&format!("case{i}.yaml"), text);
        let (code, _, stderr) = validate(&path);
        let file = path.display().to_string();
        if code != 1 || !stderr.starts_with(&file) || !stderr.contains(want) {
            failures.push(format!(
                "{name}: exit {code}, expected {want:?} after the file name in:\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, stderr) = validate(&PathBuf::from("/nonexistent/outrigger.yaml"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/outrigger.yaml: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn bundled_example_configs_are_valid() {
    for f in ["config/outrigger.yaml", "config/demo.yaml"] {
        let (code, _, stderr) = validate(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(f));
        assert_eq!(code, 0, "{f}: {stderr}");
    }
}

#[test]
fn every_type_error_is_reported_in_one_run_with_line_and_column() {
    let text = GOOD
        .replace("timeout: 5s", "timeuot: 5s")
        .replace("weight: 2", "weight: heavy")
        .replace("  - name: web", "  - name: web\n    lb: fastest");
    let (code, _, stderr) = validate(&write("three-type-errors.yaml", &text));
    assert_eq!(code, 1, "{stderr}");
    for want in [
        ":7:9: listeners[0].routes[0].timeuot: unknown field `timeuot`",
        ":10:5: clusters[0].lb: unknown variant `fastest`",
        ":13:9: clusters[0].endpoints[0].weight: invalid type",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert_eq!(
        stderr.lines().filter(|l| l.contains(".yaml:")).count(),
        3,
        "{stderr}"
    );
}

#[test]
fn a_broken_list_element_does_not_shift_the_lines_of_the_next() {
    // The first endpoint lacks its required address; the second has a bad weight: each error
    // names its own element and line, though the first element is dropped to go on.
    let text = GOOD.replace(
        "      - address: 127.0.0.1:8080\n        weight: 2\n",
        "      - weight: 1\n      - address: 127.0.0.1:8081\n        weight: lots\n",
    );
    let (code, _, stderr) = validate(&write("two-endpoints.yaml", &text));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("clusters[0].endpoints[0]: missing field `address`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":13:9: clusters[0].endpoints[1].weight: invalid type"),
        "{stderr}"
    );
}

#[test]
fn semantic_errors_carry_a_column() {
    let (code, _, stderr) = validate(&write(
        "no-such-cluster.yaml",
        &GOOD.replace("cluster: web", "cluster: api"),
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":6:9: listeners[0].routes[0].cluster: no cluster named \"api\""),
        "{stderr}"
    );
}

#[test]
fn deep_validation_loads_certificates_and_resolves_names() {
    let text = GOOD.replace(
        "    routes:",
        "    tls: { cert: missing/server.pem, key: missing/server.key }\n    routes:",
    );
    let path = write("deep.yaml", &text);
    let (code, _, stderr) = validate(&path);
    assert_eq!(code, 0, "without --deep the files are not read: {stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["validate", "--deep", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("listeners[0].tls"), "{stderr}");
    assert!(stderr.contains("missing/server.pem"), "{stderr}");
    let (code, _, _) = validate(&write("deep-good.yaml", GOOD));
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_outrigger"))
        .args(["validate", "--deep", "--config"])
        .arg(write("deep-good2.yaml", GOOD))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
