use crate::support::{get, metric, tool, upstream::Behavior, Proxy, Upstream};

async fn proxy(up: &Upstream) -> Proxy {
    Proxy::start(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - match: {{ path_prefix: / }}
        cluster: web
        request_headers_add: {{ authorization: "Bearer hunter2" }}
clusters:
  - name: web
    endpoints: [{{address: "{}", weight: 2}}]
"#,
        up.addr
    ))
    .await
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let up = Upstream::start("web", Behavior::Name).await;
    let p = proxy(&up).await;
    assert_eq!(get(p.admin(), "/ready").await.status, 200);
    assert_eq!(get(p.admin(), "/healthz").await.status, 200);
    assert_eq!(get(p.admin(), "/nope").await.status, 404);
    let cfg = get(p.admin(), "/config").await;
    assert_eq!(cfg.status, 200);
    assert!(cfg.text().contains("name: ingress"), "{}", cfg.text());
    assert!(!cfg.text().contains("hunter2"), "secrets are redacted");
    let clusters: serde_json::Value =
        serde_json::from_slice(&get(p.admin(), "/clusters").await.body).unwrap();
    let ep = &clusters["clusters"][0]["endpoints"][0];
    assert_eq!(clusters["clusters"][0]["name"], "web");
    assert_eq!(ep["address"], up.addr.to_string());
    assert_eq!(ep["weight"], 2);
    assert_eq!(ep["healthy"], true);
    let m = p.metrics().await;
    assert_eq!(
        metric(
            &m,
            &format!(
                r#"outrigger_upstream_endpoint_healthy{{cluster="web",endpoint="{}"}}"#,
                up.addr
            )
        ),
        Some(1.0)
    );
    assert!(m.contains(r#"outrigger_build_info{commit=""#), "{m}");
    assert_eq!(
        metric(&m, r#"outrigger_config_reload_total{result="success"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let up = Upstream::start("web", Behavior::Name).await;
    let p = proxy(&up).await;
    for _ in 0..5 {
        assert_eq!(get(p.addr(), "/").await.status, 200);
    }
    assert_eq!(get(p.addr(), "/").await.header("x-outrigger-error"), None);
    let text = p.metrics().await;
    assert!(text.contains("outrigger_request_duration_seconds_bucket"));
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
