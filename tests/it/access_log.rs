//! JSON access log lines checked field by field against what happened.

use crate::support::{eventually, request, temp_dir, upstream::Behavior, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;

#[tokio::test]
async fn json_access_log_records_each_request_with_flags() {
    let up = Upstream::start("up", Behavior::Bytes(1234)).await;
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_secs(5))).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = temp_dir("access-log");
    let yaml = format!(
        r#"
server: {{ watch_config: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    access_log: {{ format: json, path: access.log }}
    routes:
      - {{ match: {{ path_prefix: /ok }}, cluster: up }}
      - {{ match: {{ path_prefix: /dead }}, cluster: dead }}
      - {{ match: {{ path_prefix: /slow }}, cluster: slow, timeout: 200ms }}
clusters:
  - {{ name: up, endpoints: [{{address: "{}"}}] }}
  - {{ name: dead, endpoints: [{{address: "{dead}"}}] }}
  - {{ name: slow, endpoints: [{{address: "{}"}}] }}
"#,
        up.addr, slow.addr
    );
    std::fs::write(dir.join("outrigger.yaml"), yaml).unwrap();
    let proxy = Proxy::start_file(&dir.join("outrigger.yaml")).await;
    let addr = proxy.addr();
    let mut c = H1::connect(addr).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = request("POST", addr, "/ok?x=1")
        .header("user-agent", "log-test/1.0")
        .header("x-request-id", "req-1")
        .header("traceparent", traceparent)
        .body(Full::new(Bytes::from_static(b"hello body")))
        .unwrap();
    let r = c.send(req).await;
    assert_eq!((r.status, r.body.len()), (200, 1234));
    assert_eq!(c.get("/dead").await.status, 503);
    assert_eq!(c.get("/slow").await.status, 504);
    assert_eq!(c.get("/nowhere").await.status, 404);
    let path = dir.join("access.log");
    let lines: Vec<serde_json::Value> =
        eventually(Duration::from_secs(5), "four log lines", || {
            let path = path.clone();
            async move {
                let text = std::fs::read_to_string(&path).ok()?;
                let lines: Vec<serde_json::Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                (lines.len() == 4).then_some(lines)
            }
        })
        .await;
    let ok = &lines[0];
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/ok?x=1");
    assert_eq!(ok["authority"], "127.0.0.1");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["bytes_received"], 10);
    assert_eq!(ok["bytes_sent"], 1234);
    assert_eq!(ok["upstream_endpoint"], up.addr.to_string());
    assert_eq!(ok["cluster"], "up");
    assert_eq!(ok["route"], 0);
    assert_eq!(ok["request_id"], "req-1");
    assert_eq!(ok["user_agent"], "log-test/1.0");
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(ok["downstream_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["upstream_duration_ms"].as_f64().unwrap());
    assert!(ok["start_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ok["tls_version"], serde_json::Value::Null);
    // The upstream saw the trace context unchanged.
    assert_eq!(
        up.last_headers().unwrap().get("traceparent").unwrap(),
        traceparent
    );
    let dead_line = &lines[1];
    assert_eq!(
        (
            dead_line["status"].as_u64(),
            dead_line["response_flags"].as_str()
        ),
        (Some(503), Some("UF"))
    );
    assert_eq!(dead_line["cluster"], "dead");
    assert_eq!(dead_line["upstream_endpoint"], serde_json::Value::Null);
    let timeout_line = &lines[2];
    assert_eq!(
        (
            timeout_line["status"].as_u64(),
            timeout_line["response_flags"].as_str()
        ),
        (Some(504), Some("UT"))
    );
    assert_eq!(
        (
            lines[3]["status"].as_u64(),
            lines[3]["response_flags"].as_str()
        ),
        (Some(404), Some("NR"))
    );
    assert_eq!(lines[3]["cluster"], serde_json::Value::Null);
    // A request id was generated for the ones that did not bring one.
    assert_eq!(dead_line["request_id"].as_str().unwrap().len(), 36);
}
