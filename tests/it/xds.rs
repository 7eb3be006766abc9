//! The xDS client against a management server in the test (tonic, Envoy's protos): a
//! bootstrap with no listeners gets everything over ADS, bad resources are NACKed with the
//! field named while the old config serves, endpoints churn under load without a failed
//! request, and a server restart is survived and caught up with.

use crate::support::xds::{build, ControlPlane, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use crate::support::{eventually, get, metric, try_get, upstream::Behavior, Proxy, Upstream, H1};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bootstrap(server: SocketAddr) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n\
         xds:\n  server: \"{server}\"\n  node: {{ id: test-node, cluster: test }}\n  \
         initial_fetch_timeout: 10s\n  backoff_base: 50ms\n  backoff_max: 200ms\n"
    )
}

async fn ready(proxy: &Proxy) -> u16 {
    try_get(proxy.admin(), "/ready")
        .await
        .map_or(0, |r| r.status)
}

async fn until_ready(proxy: &Proxy) {
    eventually(
        Duration::from_secs(10),
        "ready after the first full config",
        || async { (ready(proxy).await == 200).then_some(()) },
    )
    .await;
}

/// The first NACK of `type_url` the server receives.
async fn first_nack(cp: &ControlPlane, type_url: &str) -> crate::support::xds::Answer {
    eventually(Duration::from_secs(10), "a NACK", || async {
        cp.answers()
            .into_iter()
            .find(|x| x.type_url == type_url && x.error.is_some())
    })
    .await
}

fn acked(cp: &ControlPlane, type_url: &str, version: &str) -> bool {
    cp.answers()
        .iter()
        .any(|a| a.type_url == type_url && a.version == version && a.error.is_none())
}

#[tokio::test]
async fn a_bootstrap_gets_listeners_routes_clusters_and_endpoints_over_ads() {
    let a = Upstream::start("a", Behavior::Name).await;
    let b = Upstream::start("b", Behavior::Name).await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(&bootstrap(server.addr)).await;
    // Nothing sent yet: not ready, no listener.
    assert_eq!(ready(&proxy).await, 503);
    assert!(proxy.server.listener_addr("ingress").is_none());

    cp.push_all("1", &[a.addr, b.addr]);
    until_ready(&proxy).await;
    let addr = proxy.listener("ingress");
    let mut c = H1::connect(addr).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = c.get("/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.text());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        assert!(
            acked(&cp, t, "1"),
            "{t} ACKed at version 1: {:?}",
            cp.answers()
        );
    }
    let m = proxy.metrics().await;
    assert_eq!(metric(&m, "outrigger_xds_connected"), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "outrigger_xds_updates_total{result=\"accepted\",type=\"clusters\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "outrigger_xds_version{type=\"routes\",version=\"1\"}"),
        Some(1.0)
    );
    let config = get(proxy.admin(), "/config").await.text();
    assert!(
        config.contains(
            "# xds versions: clusters \"1\", endpoints \"1\", listeners \"1\", routes \"1\""
        ),
        "{config}"
    );
    assert!(
        config.contains("#   listener \"ingress\"") && config.contains("#   cluster \"web\""),
        "{config}"
    );

    // A route change over RDS alone takes effect on the running listener.
    let c2 = Upstream::start("c", Behavior::Name).await;
    cp.set(
        CLUSTER,
        "2",
        vec![build::eds_cluster("web"), build::eds_cluster("other")],
    );
    cp.set(
        ENDPOINT,
        "2",
        vec![
            build::assignment("web", &[a.addr, b.addr]),
            build::assignment("other", &[c2.addr]),
        ],
    );
    cp.set(
        ROUTE,
        "2",
        vec![build::routes("main", &[("/other", "other"), ("/", "web")])],
    );
    eventually(Duration::from_secs(10), "the new route serves", || async {
        (get(addr, "/other/x").await.text() == "c").then_some(())
    })
    .await;
    assert_eq!(
        proxy.listener("ingress"),
        addr,
        "the listener kept its socket"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bad_resource_is_nacked_naming_the_field_and_the_old_config_keeps_serving() {
    let a = Upstream::start("a", Behavior::Name).await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(&bootstrap(server.addr)).await;
    cp.push_all("1", &[a.addr]);
    until_ready(&proxy).await;
    let addr = proxy.listener("ingress");

    // lb_subset_config would change which endpoints a request may use: rejected, by name.
    let (name, mut bad) = build::eds_cluster("web");
    bad.lb_subset_config = Some(Default::default());
    bad.lb_subset_config.as_mut().unwrap().fallback_policy = 1;
    cp.set(CLUSTER, "2", vec![(name, bad)]);
    let nack = first_nack(&cp, CLUSTER).await;
    let error = nack.error.unwrap();
    assert!(
        error.contains("cluster \"web\"") && error.contains("lb_subset_config"),
        "{error}"
    );
    assert_eq!(
        nack.version, "1",
        "a NACK carries the last accepted version"
    );
    // A route to a cluster nobody sent is rejected too; version 1 keeps serving.
    cp.set(ROUTE, "2", vec![build::routes("main", &[("/", "nowhere")])]);
    let nack = eventually(Duration::from_secs(10), "a NACK for routes v2", || async {
        cp.answers()
            .into_iter()
            .find(|x| x.type_url == ROUTE && x.error.is_some())
    })
    .await;
    assert!(
        nack.error.as_deref().unwrap_or("").contains("nowhere"),
        "{nack:?}"
    );
    for _ in 0..5 {
        let r = get(addr, "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "a"));
    }
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            "outrigger_xds_updates_total{result=\"rejected\",type=\"clusters\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "outrigger_xds_version{type=\"clusters\",version=\"1\"}"),
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn endpoints_churn_under_load_without_a_failed_request() {
    let ups: Vec<Upstream> = futures_util::future::join_all(
        ["a", "b", "c", "d"].map(|n| Upstream::start(n, Behavior::Name)),
    )
    .await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(&bootstrap(server.addr)).await;
    cp.push_all("1", &[ups[0].addr, ups[1].addr]);
    until_ready(&proxy).await;
    let addr = proxy.listener("ingress");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut c = H1::connect(addr).await;
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if c.get("/").await.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // 20 pushes, each a different pair; every push must reach traffic before the next.
    let mut delays = Vec::new();
    for round in 0..20usize {
        let pair = [ups[round % 4].addr, ups[(round + 1) % 4].addr];
        let newest = ups[(round + 1) % 4].name.clone();
        let version = format!("e{round}");
        let pushed = Instant::now();
        cp.set(ENDPOINT, &version, vec![build::assignment("web", &pair)]);
        eventually(Duration::from_secs(10), "the pushed set serves", || async {
            let r = get(addr, "/").await;
            (r.status == 200 && r.text() == newest).then_some(())
        })
        .await;
        delays.push(pushed.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    delays.sort();
    println!(
        "EDS push to traffic: median {:?}, max {:?}; {} requests under churn",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 100);
    server.stop().await;
}

#[tokio::test]
async fn the_last_config_serves_while_the_server_is_away_and_a_restart_catches_up() {
    let a = Upstream::start("a", Behavior::Name).await;
    let b = Upstream::start("b", Behavior::Name).await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let at = server.addr;
    let proxy = Proxy::start(&bootstrap(at)).await;
    cp.push_all("1", &[a.addr]);
    until_ready(&proxy).await;
    let addr = proxy.listener("ingress");

    server.stop().await;
    proxy.await_metric("outrigger_xds_connected", 0.0).await;
    for _ in 0..5 {
        assert_eq!(
            get(addr, "/").await.text(),
            "a",
            "serves while the server is away"
        );
    }
    assert_eq!(
        ready(&proxy).await,
        200,
        "still ready: the config it has is good"
    );
    // Changed while away; the restarted server has the new version.
    cp.set(ENDPOINT, "2", vec![build::assignment("web", &[b.addr])]);
    let server = cp.serve(at).await;
    eventually(
        Duration::from_secs(10),
        "caught up after the restart",
        || async { (get(addr, "/").await.text() == "b").then_some(()) },
    )
    .await;
    assert!(cp.streams() >= 2, "resubscribed on a new stream");
    assert!(acked(&cp, ENDPOINT, "2"));
    // The resubscription carried the versions it held: clusters were not sent again as new.
    let m = proxy.metrics().await;
    assert_eq!(metric(&m, "outrigger_xds_connected"), Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_clusters_of_ten_endpoints_apply_at_once() {
    let a = Upstream::start("a", Behavior::Name).await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(&bootstrap(server.addr)).await;
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(|l| l.to_string())
            })
            .unwrap_or_default()
    };
    let before = rss();
    let started = Instant::now();
    let mut clusters = vec![build::eds_cluster("web")];
    let mut assignments = vec![build::assignment("web", &[a.addr])];
    for i in 0..1000u32 {
        let name = format!("c{i}");
        clusters.push(build::eds_cluster(&name));
        let eps: Vec<SocketAddr> = (0..10u32)
            .map(|k| {
                SocketAddr::from((
                    [127, 1, (i / 250) as u8, (i % 250) as u8 + 1],
                    10_000 + k as u16,
                ))
            })
            .collect();
        assignments.push(build::assignment(&name, &eps));
    }
    cp.set(CLUSTER, "1", clusters);
    cp.set(ENDPOINT, "1", assignments);
    cp.set(
        LISTENER,
        "1",
        vec![build::http_listener(
            "ingress",
            "127.0.0.1:0".parse().unwrap(),
            "main",
        )],
    );
    cp.set(ROUTE, "1", vec![build::routes("main", &[("/", "web")])]);
    until_ready(&proxy).await;
    eventually(Duration::from_secs(30), "every cluster in", || async {
        let m = proxy.metrics().await;
        (metric(
            &m,
            "outrigger_cluster_endpoints{cluster=\"c999\",state=\"healthy\"}",
        ) == Some(10.0))
        .then_some(())
    })
    .await;
    let took = started.elapsed();
    println!(
        "1,000 clusters x 10 endpoints applied in {took:?}; test process {before} -> {}",
        rss()
    );
    assert_eq!(get(proxy.listener("ingress"), "/").await.text(), "a");
    server.stop().await;
}

#[tokio::test]
async fn the_ads_stream_runs_over_mutual_tls_and_a_proxy_without_the_client_certificate_gets_nothing(
) {
    use crate::support::tls::{mutual_acceptor, Ca};
    let a = Upstream::start("a", Behavior::Name).await;
    let ca = Ca::new("control plane ca");
    let server_cert = ca.issue(&["xds.test"], None);
    let client_cert = ca.issue(&["sidecar-0"], Some("spiffe://test/ns/default/sa/sidecar"));
    let dir = crate::support::temp_dir("xds-tls");
    for (name, text) in [
        ("ca.pem", &ca.pem),
        ("client.pem", &client_cert.pem),
        ("client.key", &client_cert.key_pem),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let cp = ControlPlane::new();
    let server = cp
        .serve_tls(
            "127.0.0.1:0".parse().unwrap(),
            mutual_acceptor(&server_cert, &ca, &["h2"]),
        )
        .await;
    cp.push_all("1", &[a.addr]);
    let d = dir.display();
    let tls = format!(
        "  tls: {{ ca: \"{d}/ca.pem\", cert: \"{d}/client.pem\", key: \"{d}/client.key\", sni: xds.test }}\n"
    );
    let proxy = Proxy::start(&(bootstrap(server.addr) + &tls)).await;
    until_ready(&proxy).await;
    assert_eq!(get(proxy.listener("ingress"), "/").await.text(), "a");
    assert!(acked(&cp, LISTENER, "1"));

    // The same server, a proxy that trusts it but shows no client certificate: the handshake
    // fails, nothing is subscribed, and the proxy stays unready while it retries.
    let streams = cp.streams();
    let no_cert = format!("  tls: {{ ca: \"{d}/ca.pem\", sni: xds.test }}\n");
    let refused = Proxy::start(&(bootstrap(server.addr) + &no_cert)).await;
    eventually(
        Duration::from_secs(10),
        "two handshakes refused (a retry)",
        || async { (cp.tls_refused() >= 2).then_some(()) },
    )
    .await;
    let m = refused.metrics().await;
    assert_eq!(metric(&m, "outrigger_xds_connected"), Some(0.0));
    assert_eq!(ready(&refused).await, 503);
    assert_eq!(
        cp.streams(),
        streams,
        "no stream without a client certificate"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_missing_xds_certificate_stops_the_start_naming_the_key() {
    let loaded = outrigger::config::LoadedConfig {
        config: outrigger::config::parse(
            &(bootstrap("127.0.0.1:1".parse().unwrap()) + "  tls: { ca: /nonexistent/ca.pem }\n"),
            "test.yaml",
            &|_| None,
        )
        .unwrap(),
        source: "test.yaml".into(),
        base_dir: ".".into(),
    };
    let err = match outrigger::Server::start(loaded).await {
        Ok(_) => panic!("started with a CA file that does not exist"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("xds.tls.ca: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}

/// A CDS cluster whose transport socket is Envoy's UpstreamTlsContext (files).
fn tls_cluster(
    name: &str,
    ca: envoy_types::pb::envoy::config::core::v3::DataSource,
) -> (String, envoy_types::pb::envoy::config::cluster::v3::Cluster) {
    use envoy_types::pb::envoy::config::core::v3::{transport_socket::ConfigType, TransportSocket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, CertificateValidationContext, CommonTlsContext,
        UpstreamTlsContext,
    };
    use prost::Message;
    let ctx = UpstreamTlsContext {
        sni: "api.internal".into(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(ca),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (n, mut c) = build::eds_cluster(name);
    c.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(ConfigType::TypedConfig(envoy_types::pb::google::protobuf::Any {
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext".into(),
            value: ctx.encode_to_vec(),
        })),
    });
    (n, c)
}

#[tokio::test]
async fn a_cds_transport_socket_originates_tls_and_inline_secrets_are_nacked() {
    use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
    let ca = crate::support::tls::Ca::new("upstream CA");
    let dir = crate::support::temp_dir("xds-upstream-tls");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let up = crate::tls::tls_upstream(&ca.issue(&["api.internal"], None), &[], |_| "tls-up".into())
        .await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    cp.push_all("1", &[up]);
    let file = |p: &std::path::Path| DataSource {
        specifier: Some(Specifier::Filename(p.display().to_string())),
        ..Default::default()
    };
    // Set before the proxy subscribes: version 1 is the TLS cluster from the start.
    cp.set(
        CLUSTER,
        "1",
        vec![tls_cluster("web", file(&dir.join("ca.pem")))],
    );
    let proxy = Proxy::start(&bootstrap(server.addr)).await;
    until_ready(&proxy).await;
    let addr = proxy.listener("ingress");
    let r = get(addr, "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls-up"));

    // A CA inline in the resource: NACKed by field, version 1 keeps serving over TLS.
    let inline = DataSource {
        specifier: Some(Specifier::InlineString(ca.pem.clone())),
        ..Default::default()
    };
    cp.set(CLUSTER, "2", vec![tls_cluster("web", inline)]);
    let nack = first_nack(&cp, CLUSTER).await;
    let error = nack.error.unwrap_or_default();
    assert!(
        error.contains("transport_socket.tls.common_tls_context.validation_context.trusted_ca")
            && error.contains("inline"),
        "{error}"
    );
    assert_eq!(get(addr, "/").await.text(), "tls-up");
    // A CA file that does not exist fails the apply: NACKed too, naming the file.
    cp.set(
        CLUSTER,
        "3",
        vec![tls_cluster("web", file(&dir.join("missing.pem")))],
    );
    let nack = eventually(
        Duration::from_secs(10),
        "a NACK for clusters v3",
        || async {
            cp.answers().into_iter().find(|x| {
                x.type_url == CLUSTER
                    && x.error
                        .as_deref()
                        .is_some_and(|e| e.contains("missing.pem"))
            })
        },
    )
    .await;
    assert_eq!(nack.version, "1");
    assert_eq!(get(addr, "/").await.text(), "tls-up");
    server.stop().await;
}

#[tokio::test]
async fn eds_priorities_fail_over_when_the_first_level_is_held_out_and_come_back() {
    let a = Upstream::start("a", Behavior::Name).await;
    let b = Upstream::start("b", Behavior::Name).await;
    let cp = ControlPlane::new();
    let server = cp.serve("127.0.0.1:0".parse().unwrap()).await;
    cp.push_all("1", &[]);
    cp.set(
        ENDPOINT,
        "1",
        vec![build::prioritized("web", &[&[(a.addr, 1)], &[(b.addr, 1)]])],
    );
    let proxy = Proxy::start(&bootstrap(server.addr)).await;
    until_ready(&proxy).await;
    let addr = proxy.listener("ingress");
    let mut c = H1::connect(addr).await;
    for _ in 0..20 {
        assert_eq!(c.get("/").await.text(), "a", "priority 1 is a standby");
    }
    // The control plane drains `a`: priority 0 has nothing routable, priority 1 takes all.
    cp.set(
        ENDPOINT,
        "2",
        vec![build::prioritized("web", &[&[(a.addr, 3)], &[(b.addr, 1)]])],
    );
    eventually(
        Duration::from_secs(10),
        "traffic fails over to b",
        || async { (get(addr, "/").await.text() == "b").then_some(()) },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.text(), "b");
    }
    cp.set(
        ENDPOINT,
        "3",
        vec![build::prioritized("web", &[&[(a.addr, 1)], &[(b.addr, 1)]])],
    );
    eventually(Duration::from_secs(10), "traffic returns to a", || async {
        (get(addr, "/").await.text() == "a").then_some(())
    })
    .await;
    for _ in 0..20 {
        assert_eq!(get(addr, "/").await.text(), "a");
    }
    let clusters = crate::support::get(proxy.admin(), "/clusters").await.text();
    assert!(clusters.contains("\"priority\": 1"), "{clusters}");
    server.stop().await;
}
