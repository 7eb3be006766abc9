use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

const GOOD: &str = r#"
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - match: { path_prefix: /api/ }
        cluster: api
      - match: { path_prefix: / }
        weighted_clusters: [{cluster: api, weight: 90}, {cluster: web, weight: 10}]
clusters:
  - name: api
    endpoints: [{address: 127.0.0.1:8080}]
  - name: web
    endpoints: [{address: "127.0.0.1:8081", weight: 3}]
"#;

fn issues(text: &str) -> Vec<String> {
    match parse(text, "f.yaml", &no_env) {
        Ok(_) => vec![],
        Err(e) => e.issues().iter().map(|i| i.to_string()).collect(),
    }
}

#[test]
fn good_config_parses_with_defaults() {
    let c = parse(GOOD, "f.yaml", &no_env).unwrap();
    assert_eq!(c.admin.address, "127.0.0.1:9901");
    assert_eq!(c.server.drain_timeout, ConfigDuration::secs(15));
    assert_eq!(c.listeners[0].limits.max_connections, 10_000);
    assert_eq!(c.listeners[0].routes[0].timeout, ConfigDuration::secs(15));
    assert_eq!(c.clusters[1].endpoints[0].weight, 3);
    assert_eq!(c.clusters[0].pool.max_idle_per_endpoint, 64);
}

#[test]
fn missing_cluster_names_line_and_path() {
    let text = GOOD.replace("cluster: api\n", "cluster: apx\n");
    assert_eq!(
        issues(&text),
        vec!["f.yaml:7:9: listeners[0].routes[0].cluster: no cluster named \"apx\""]
    );
}

#[test]
fn unknown_key_names_path_and_line() {
    let text = GOOD.replace("cluster: api\n", "clustr: api\n");
    let got = issues(&text);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("f.yaml:7:9: listeners[0].routes[0].clustr: unknown field `clustr`"),
        "{got:?}"
    );
}

#[test]
fn every_problem_is_reported() {
    let text = GOOD
        .replace("weight: 90", "weight: 0")
        .replace("127.0.0.1:8081", "nowhere")
        .replace("name: web", "name: api");
    let got = issues(&text);
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(got.contains(
        &"f.yaml:9:44: listeners[0].routes[1].weighted_clusters[0].weight: must be greater than 0"
            .to_string()
    ));
    assert!(
        got.contains(&"f.yaml:13:5: clusters[1].name: duplicate cluster name \"api\"".to_string())
    );
    assert!(
        got.iter()
            .any(|g| g.starts_with("f.yaml:14:18: clusters[1].endpoints[0].address:")),
        "{got:#?}"
    );
    assert!(got.contains(
        &"f.yaml:9:57: listeners[0].routes[1].weighted_clusters[1].cluster: no cluster named \"web\""
            .to_string()
    ));
}

#[test]
fn env_substitution_feeds_parsing() {
    let text = GOOD.replace("127.0.0.1:8080", "127.0.0.1:${API_PORT:-9000}");
    let c = parse(&text, "f.yaml", &|k| {
        (k == "API_PORT").then(|| "7000".into())
    })
    .unwrap();
    assert_eq!(c.clusters[0].endpoints[0].address, "127.0.0.1:7000");
    let c = parse(&text, "f.yaml", &no_env).unwrap();
    assert_eq!(c.clusters[0].endpoints[0].address, "127.0.0.1:9000");
}

#[test]
fn redaction_hides_credentials() {
    let text = GOOD.replace(
        "cluster: api\n",
        "cluster: api\n        request_headers_add: { authorization: \"Bearer s3cret\", x-env: prod }\n",
    );
    let c = parse(&text, "f.yaml", &no_env).unwrap();
    let y = redacted_yaml(&c);
    assert!(!y.contains("s3cret"), "{y}");
    // Every header value is hidden unless named public.
    assert!(y.contains("x-env: <redacted>"), "{y}");
    let mut c = c;
    c.admin.public_headers = vec!["X-Env".into()];
    let y = redacted_yaml(&c);
    assert!(y.contains("x-env: prod"), "{y}");
    assert!(!y.contains("s3cret"), "{y}");
}
