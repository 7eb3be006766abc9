//! Pooled upstream HTTP/1.1 connections have no task of their own: the request holding one
//! drives it. These cases check what a driver task used to notice by itself: an upstream that
//! closes an idle connection, and a connection still busy uploading after its response ended.
//! The upstreams are raw TCP servers, so each case controls exactly when bytes and closes go.

use crate::support::{get, raw_exchange, raw_server, single_route, Proxy};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one request head (up to the blank line); None if the peer closed first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An upstream that answers each connection's first request with a keep-alive 200 and then
/// closes the connection, as an upstream whose keep-alive timeout ran out does. Returns its
/// address and how many connections it accepted and has closed.
async fn closes_after_one() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let closed = Arc::new(AtomicUsize::new(0));
    let d = closed.clone();
    let (addr, connections) = raw_server(move |mut s| {
        let d = d.clone();
        async move {
            if read_head(&mut s).await.is_some() {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
            drop(s);
            d.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    (addr, connections, closed)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used_and_no_request_fails() {
    let (addr, connections, closed) = closes_after_one().await;
    let proxy = Proxy::start(&single_route("raw", &[addr], "", "")).await;
    for i in 1..=20 {
        let reply = get(proxy.addr(), "/").await;
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.text(), "ok", "request {i}");
        // The upstream's close has happened before the next request goes out: the pooled
        // connection it leaves behind must be found closed, not used.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while closed.load(Ordering::SeqCst) < i {
            assert!(
                tokio::time::Instant::now() < deadline,
                "upstream did not close"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 20);
}

/// An upstream that answers a POST at once with 413, before reading its body, and then reads
/// the body slowly forever; GETs get 200 "ok".
async fn answers_early() -> (SocketAddr, Arc<AtomicUsize>) {
    raw_server(|mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            if head.starts_with("POST") {
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                    .await;
                // Keep the connection open, reading whatever comes.
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await
}

#[tokio::test]
async fn a_connection_still_uploading_after_an_early_answer_is_not_reused() {
    let (addr, connections) = answers_early().await;
    let proxy = Proxy::start(&single_route("early", &[addr], "", "")).await;
    // Warm one pooled connection, so the POST reuses it rather than opening its own.
    assert_eq!(get(proxy.addr(), "/").await.status, 200);
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // A chunked upload that never ends; the answer comes back while it is still open.
    let mut client = TcpStream::connect(proxy.addr()).await.expect("connect");
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .expect("write");
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client))
        .await
        .expect("the early answer arrives while the upload is open")
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 413"), "got {head}");

    // The connection carrying the unfinished upload must not be handed to the next request,
    // which would wait behind it forever.
    for _ in 0..3 {
        let (reply, _) = raw_exchange(
            proxy.addr(),
            b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "got {reply:?}");
        assert!(reply.ends_with("ok"), "got {reply:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    drop(client);
}
