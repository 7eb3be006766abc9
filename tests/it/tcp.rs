//! The L4 proxy with real TCP peers: bulk streams, half-close, balancing many connections,
//! connect retry, idle timeout, PROXY protocol and SNI passthrough.

use crate::support::{eventually, metric, raw_server, tls, Proxy};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server that counts connections.
pub(crate) async fn echo() -> (SocketAddr, Arc<AtomicUsize>) {
    raw_server(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

fn tcp_yaml(listener_extra: &str, clusters: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: ingress
    address: 127.0.0.1:0
    protocol: tcp
{listener_extra}
clusters:
{clusters}
"#
    )
}

fn cluster(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    format!(
        "  - {{ name: {name}, endpoints: [{}] {extra} }}\n",
        eps.join(", ")
    )
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

#[tokio::test]
async fn two_hundred_mib_each_way_is_byte_exact() {
    let (up, _) = echo().await;
    let proxy = Proxy::start(&tcp_yaml("    cluster: echo", &cluster("echo", &[up], ""))).await;
    let s = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut r, mut w) = s.into_split();
    const N: usize = 200 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < N {
            let n = buf.len().min(N - sent);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(sent + i);
            }
            w.write_all(&buf[..n]).await.unwrap();
            sent += n;
        }
        w.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let mut bad = 0usize;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        bad += buf[..n]
            .iter()
            .enumerate()
            .filter(|(i, b)| **b != pattern(got + i))
            .count();
        got += n;
    }
    writer.await.unwrap();
    assert_eq!((got, bad), (N, 0));
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_tcp_bytes_total{direction="to_upstream",listener="ingress"}"#
        ),
        Some(N as f64)
    );
    assert_eq!(
        metric(
            &m,
            r#"outrigger_tcp_bytes_total{direction="to_downstream",listener="ingress"}"#
        ),
        Some(N as f64)
    );
}

#[tokio::test]
async fn half_close_passes_the_fin_and_the_reply_still_arrives() {
    // The upstream reads to EOF, then answers and closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
    });
    let proxy = Proxy::start(&tcp_yaml("    cluster: up", &cluster("up", &[up], ""))).await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "got 5 bytes");
}

#[tokio::test]
async fn thousand_concurrent_connections_spread_evenly_over_four_endpoints() {
    let mut ups = Vec::new();
    for _ in 0..4 {
        ups.push(echo().await);
    }
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.0).collect();
    let proxy = Proxy::start(&tcp_yaml(
        "    cluster: echo",
        &cluster("echo", &addrs, ", lb: round_robin"),
    ))
    .await;
    let addr = proxy.addr();
    let mut conns = Vec::new();
    for _ in 0..1000 {
        conns.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            s // held open until every connection is up
        }));
    }
    let mut held = Vec::new();
    for c in conns {
        held.push(c.await.unwrap());
    }
    let counts: Vec<usize> = ups.iter().map(|u| u.1.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, vec![250, 250, 250, 250]);
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"outrigger_downstream_connections_active{listener="ingress"}"#
        ),
        Some(1000.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"outrigger_tcp_connections_total{cluster="echo",listener="ingress"}"#
        ),
        Some(1000.0)
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_by_connect_retry() {
    let (up, count) = echo().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&tcp_yaml("    cluster: c", &cluster("c", &[dead, up], ""))).await;
    for i in 0..10 {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(&b, b"ping");
    }
    assert_eq!(count.load(Ordering::SeqCst), 10);
    let m = proxy.metrics().await;
    // Round robin starts every other connection on the dead endpoint (a retry does not move
    // the rotation); health checks or outlier detection would take it out altogether.
    assert_eq!(
        metric(
            &m,
            r#"outrigger_upstream_connect_failures_total{cluster="c"}"#
        ),
        Some(5.0)
    );
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_connection() {
    let (up, _) = echo().await;
    let proxy = Proxy::start(&tcp_yaml(
        "    cluster: c\n    limits: { idle_timeout: 300ms }",
        &cluster("c", &[up], ""),
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"a").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed by the proxy");
    assert!(
        started.elapsed() >= Duration::from_millis(250)
            && started.elapsed() < Duration::from_secs(2)
    );
}

#[tokio::test]
async fn proxy_protocol_v2_carries_the_client_address_and_v1_is_accepted_in_front() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let header = outrigger::tcp_proxy::proxy_protocol::read(&mut s)
                    .await
                    .unwrap();
                let mut rest = [0u8; 4];
                s.read_exact(&mut rest).await.unwrap();
                tx.send((header, rest)).unwrap();
            });
        }
    });
    let proxy = Proxy::start(&tcp_yaml(
        "    cluster: c",
        &cluster("c", &[up], ", send_proxy_protocol: v2"),
    ))
    .await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let client = s.local_addr().unwrap();
    s.write_all(b"data").await.unwrap();
    let (header, rest) = rx.recv().await.unwrap();
    assert_eq!(header, Some((client, proxy.addr())));
    assert_eq!(&rest, b"data");

    // A load balancer in front speaks PROXY v1: its announced client is what goes upstream.
    let front = Proxy::start(&tcp_yaml(
        "    cluster: c\n    accept_proxy_protocol: true",
        &cluster("c", &[up], ", send_proxy_protocol: v2"),
    ))
    .await;
    let mut s = TcpStream::connect(front.addr()).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.9 192.0.2.1 51000 443\r\ndata")
        .await
        .unwrap();
    let (header, rest) = rx.recv().await.unwrap();
    assert_eq!(
        header,
        Some((
            "203.0.113.9:51000".parse().unwrap(),
            "192.0.2.1:443".parse().unwrap()
        ))
    );
    assert_eq!(&rest, b"data");
}

#[tokio::test]
async fn sni_passthrough_sends_two_names_to_two_clusters_with_tls_end_to_end() {
    let cert_a = tls::self_signed(&["a.test"]);
    let cert_b = tls::self_signed(&["b.test"]);
    async fn tls_server(cert: &tls::Cert, answer: &'static str) -> SocketAddr {
        let acceptor = tls::acceptor(cert);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut t) = acceptor.accept(s).await {
                        let _ = t.write_all(answer.as_bytes()).await;
                        let _ = t.shutdown().await;
                    }
                });
            }
        });
        addr
    }
    let a = tls_server(&cert_a, "from a").await;
    let b = tls_server(&cert_b, "from b").await;
    let routes = "    routes:\n      - { match: { sni: a.test }, cluster: a }\n      - { match: { sni: \"*.b.test\" }, cluster: b }\n      - { match: { sni: b.test }, cluster: b }";
    let proxy = Proxy::start(&tcp_yaml(
        routes,
        &format!("{}{}", cluster("a", &[a], ""), cluster("b", &[b], "")),
    ))
    .await;
    let connector = tls::connector(&[&cert_a, &cert_b]);
    for (name, want) in [
        ("a.test", "from a"),
        ("b.test", "from b"),
        ("a.test", "from a"),
    ] {
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        // The client verifies the upstream's certificate for `name`: TLS really is end to end.
        let mut t = connector.connect(tls::name(name), tcp).await.unwrap();
        let mut got = String::new();
        t.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, want);
    }
    // An unknown name has no route and no default: the connection is closed.
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(connector.connect(tls::name("c.test"), tcp).await.is_err());
    let m = proxy.metrics().await;
    eventually(Duration::from_secs(2), "counted", || {
        let m = m.clone();
        async move {
            (metric(
                &m,
                r#"outrigger_tcp_connections_total{cluster="a",listener="ingress"}"#,
            )? == 2.0)
                .then_some(())
        }
    })
    .await;
}
