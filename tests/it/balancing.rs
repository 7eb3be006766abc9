use crate::support::{upstream::Behavior, Proxy, Upstream, H1};

#[tokio::test]
async fn round_robin_spreads_3000_requests_exactly_evenly() {
    let ups = [
        Upstream::start("a", Behavior::Name).await,
        Upstream::start("b", Behavior::Name).await,
        Upstream::start("c", Behavior::Name).await,
    ];
    let addrs = [ups[0].addr, ups[1].addr, ups[2].addr];
    let proxy = Proxy::start(&crate::support::single_route(
        "web",
        &addrs,
        "",
        "    lb: round_robin",
    ))
    .await;
    // Four client connections, as a real client pool would use.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(H1::connect(proxy.addr()).await);
    }
    let mut seen = std::collections::HashMap::new();
    for i in 0..3000 {
        let r = clients[i % 4].get("/").await;
        assert_eq!(r.status, 200);
        *seen.entry(r.text()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&1000));
    assert_eq!(seen.get("b"), Some(&1000));
    assert_eq!(seen.get("c"), Some(&1000));
    for u in &ups {
        assert_eq!(u.requests(), 1000);
        // Keep-alive upstream pooling: a handful of connections, not one per request.
        assert!(
            u.connections() <= 4,
            "{} opened {} connections",
            u.name,
            u.connections()
        );
    }
    let m = proxy.metrics().await;
    assert_eq!(
        crate::support::metric(
            &m,
            r#"outrigger_downstream_requests_total{cluster="web",code_class="2xx",listener="ingress"}"#
        ),
        Some(3000.0)
    );
}
