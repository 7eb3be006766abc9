//! gRPC through the proxy with a real tonic server and client over HTTP/2 end to end: the
//! four call shapes, statuses and trailers unchanged, proxy-made errors in gRPC form,
//! deadlines, and the grpc status metric.

#[allow(clippy::all, unused_qualifications)]
#[path = "echo_proto.rs"]
mod echo_proto;

use crate::support::{metric, single_route, Proxy};
use echo_proto::echo_client::EchoClient;
use echo_proto::echo_server::{Echo, EchoServer};
use echo_proto::{EchoRequest, EchoResponse};
use futures_util::{Stream, StreamExt};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status, Streaming};

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

struct EchoService;

fn reply(message: String, index: u32) -> EchoResponse {
    EchoResponse { message, index }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let r = req.into_inner();
        if r.message == "slow" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if r.count != 0 {
            return Err(Status::new(Code::from(r.count as i32), "requested failure"));
        }
        Ok(Response::new(reply(r.message, 0)))
    }

    type ServerStreamStream = ReplyStream;
    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let r = req.into_inner();
        let items = (0..r.count).map(move |i| Ok(reply(format!("{}-{i}", r.message), i)));
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut s = req.into_inner();
        let (mut n, mut bytes) = (0u32, 0usize);
        while let Some(m) = s.next().await {
            bytes += m?.message.len();
            n += 1;
        }
        Ok(Response::new(reply(bytes.to_string(), n)))
    }

    type BidiStream = ReplyStream;
    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let s = req.into_inner();
        let out = s
            .enumerate()
            .map(|(i, m)| m.map(|m| reply(m.message, i as u32)));
        Ok(Response::new(Box::pin(out)))
    }
}

async fn start_server() -> SocketAddr {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = incoming.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn proxy_to(endpoint: SocketAddr, route_extra: &str) -> Proxy {
    Proxy::start(&single_route(
        "echo",
        &[endpoint],
        route_extra,
        "    protocol: http2\n",
    ))
    .await
}

async fn client(proxy: &Proxy) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://{}", proxy.addr()))
        .await
        .expect("connect to the proxy")
}

fn req(message: &str, count: u32) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        count,
    }
}

async fn grpc_count(proxy: &Proxy, status: &str) -> f64 {
    metric(
        &proxy.metrics().await,
        &format!(r#"outrigger_grpc_responses_total{{cluster="echo",grpc_status="{status}"}}"#),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn unary_and_all_three_streaming_modes_pass_through() {
    let proxy = proxy_to(start_server().await, "").await;
    let mut c = client(&proxy).await;

    let r = c.unary(req("hello", 0)).await.expect("unary");
    assert_eq!(r.into_inner().message, "hello");

    let mut s = c
        .server_stream(req("m", 1000))
        .await
        .expect("server streaming")
        .into_inner();
    let mut n = 0u32;
    while let Some(m) = s.message().await.expect("stream item") {
        assert_eq!((m.index, m.message), (n, format!("m-{n}")));
        n += 1;
    }
    assert_eq!(n, 1000, "every streamed message arrives, in order");

    let outbound = futures_util::stream::iter((0..500).map(|_| req("abcd", 0)));
    let r = c.client_stream(outbound).await.expect("client streaming");
    let r = r.into_inner();
    assert_eq!((r.index, r.message.as_str()), (500, "2000"));

    // Bidirectional, in lock step: each reply must come back before the next message goes
    // out, so nothing may be buffered along the way.
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    tx.send(req("ping-0", 0)).await.unwrap();
    let mut replies = c.bidi(outbound).await.expect("bidi").into_inner();
    for i in 0..200u32 {
        let m = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("a reply before the next message is sent")
            .expect("bidi item")
            .expect("not ended");
        assert_eq!((m.index, m.message), (i, format!("ping-{i}")));
        if i < 199 {
            tx.send(req(&format!("ping-{}", i + 1), 0)).await.unwrap();
        }
    }
    drop(tx);
    assert!(replies.message().await.expect("clean end").is_none());
    assert_eq!(grpc_count(&proxy, "0").await, 4.0);
}

#[tokio::test]
async fn a_server_status_reaches_the_client_unchanged() {
    let proxy = proxy_to(start_server().await, "").await;
    let mut c = client(&proxy).await;
    let err = c.unary(req("x", 7)).await.expect_err("permission denied");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "requested failure");
    let err = c.unary(req("x", 5)).await.expect_err("not found");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(grpc_count(&proxy, "7").await, 1.0);
    assert_eq!(grpc_count(&proxy, "5").await, 1.0);
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_to_grpc_clients() {
    let dead = {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let proxy = proxy_to(dead, "").await;
    let mut c = client(&proxy).await;
    let err = c.unary(req("x", 0)).await.expect_err("unavailable");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "upstream connect error");
    assert_eq!(grpc_count(&proxy, "14").await, 1.0);
}

#[tokio::test]
async fn the_client_deadline_and_the_route_timeout_give_deadline_exceeded() {
    let proxy = proxy_to(start_server().await, "        timeout: 1s\n").await;
    let mut c = client(&proxy).await;
    // grpc-timeout (200 ms) is shorter than the route's 1 s: it wins. Sent by a plain HTTP/2
    // client, since tonic's client enforces its own deadline and would race the proxy.
    let started = Instant::now();
    let (status, headers) = raw_unary(proxy.addr(), &req("slow", 0), Some("200m")).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..])
    );
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/grpc"[..])
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // Without a client deadline the route's timeout applies, also as DEADLINE_EXCEEDED.
    let err = c.unary(req("slow", 0)).await.expect_err("route timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(grpc_count(&proxy, "4").await, 2.0);
}

/// One unary call by hand over HTTP/2: the status and the trailers-only headers.
async fn raw_unary(
    addr: SocketAddr,
    msg: &EchoRequest,
    grpc_timeout: Option<&str>,
) -> (u16, http::HeaderMap) {
    use http_body_util::{BodyExt, Full};
    use prost::Message;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let payload = msg.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    let mut b = http::Request::post(format!("http://{addr}/outrigger.test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = grpc_timeout {
        b = b.header("grpc-timeout", t);
    }
    let resp = sender
        .send_request(b.body(Full::new(bytes::Bytes::from(framed))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let _ = resp.into_body().collect().await;
    (status, headers)
}

#[tokio::test]
async fn grpc_health_check_marks_a_not_serving_endpoint_unhealthy_and_back() {
    use tonic_health::ServingStatus;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = incoming.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    let proxy = Proxy::start(&single_route(
        "echo",
        &[addr],
        "",
        "    protocol: http2\n    panic_threshold: 0\n    health_check: { interval: 100ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2, grpc: { service: \"\" } }\n",
    ))
    .await;
    let state = |want: &'static str| {
        let proxy = &proxy;
        async move {
            metric(
                &proxy.metrics().await,
                &format!(r#"outrigger_cluster_endpoints{{cluster="echo",state="{want}"}}"#),
            ) == Some(1.0)
        }
    };
    crate::support::eventually(Duration::from_secs(3), "probes pass", || async {
        let m = proxy.metrics().await;
        (metric(
            &m,
            r#"outrigger_health_check_total{cluster="echo",result="success"}"#,
        )? >= 2.0)
            .then_some(())
    })
    .await;
    assert!(state("healthy").await);
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    crate::support::eventually(
        Duration::from_secs(3),
        "NOT_SERVING is unhealthy",
        || async { state("unhealthy").await.then_some(()) },
    )
    .await;
    let mut c = client(&proxy).await;
    let err = c.unary(req("x", 0)).await.expect_err("no healthy endpoint");
    assert_eq!(err.code(), Code::Unavailable);
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    crate::support::eventually(Duration::from_secs(3), "SERVING again", || async {
        state("healthy").await.then_some(())
    })
    .await;
    assert_eq!(
        c.unary(req("back", 0)).await.unwrap().into_inner().message,
        "back"
    );
}
