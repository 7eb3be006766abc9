use crate::support::{get, metric, upstream::Behavior, Proxy, Upstream};
use std::time::Duration;

#[tokio::test]
async fn refused_upstream_gives_503_with_cause_and_metric() {
    // Bind then drop: nothing listens on this port.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&crate::support::single_route("dead", &[dead], "", "")).await;
    for _ in 0..3 {
        let r = get(proxy.addr(), "/").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-outrigger-error"), Some("connect_failed"));
        assert_eq!(r.text(), "upstream connect error\n");
    }
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_upstream_connect_failures_total{cluster="dead"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"outrigger_proxy_errors_total{error="connect_failed",listener="ingress"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"outrigger_downstream_requests_total{cluster="dead",code_class="5xx",listener="ingress"}"#
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn upstream_reset_gives_502_and_slow_upstream_gives_504() {
    // An upstream that reads the request and hangs up without answering.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude_addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = rude.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_secs(5))).await;
    let proxy = Proxy::start(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /rude }}, cluster: rude }}
      - {{ match: {{ path_prefix: /slow }}, cluster: slow, timeout: 300ms }}
clusters:
  - {{ name: rude, endpoints: [{{address: "{rude_addr}"}}] }}
  - {{ name: slow, endpoints: [{{address: "{}"}}] }}
"#,
        slow.addr
    ))
    .await;
    let r = get(proxy.addr(), "/rude").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-outrigger-error"), Some("upstream_reset"));
    let started = std::time::Instant::now();
    let r = get(proxy.addr(), "/slow").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-outrigger-error"), Some("timeout"));
    assert!(started.elapsed() < Duration::from_secs(3));
}
