use crate::support::upstream::{checksum, pattern, Behavior};
use crate::support::{request, Proxy, Upstream, H1};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const FIFTY_MIB: usize = 50 * 1024 * 1024;

fn config(up: &Upstream) -> String {
    crate::support::single_route("big", &[up.addr], "        timeout: 60s", "")
}

#[tokio::test]
async fn fifty_mib_response_streams_through_byte_exact() {
    let up = Upstream::start("big", Behavior::Bytes(FIFTY_MIB)).await;
    let proxy = Proxy::start(&config(&up)).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            request("GET", proxy.addr(), "/")
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut offset = 0usize;
    let mut mismatches = 0usize;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        for (i, b) in data.iter().enumerate() {
            if *b != pattern(offset + i) {
                mismatches += 1;
            }
        }
        offset += data.len();
    }
    assert_eq!(offset, FIFTY_MIB);
    assert_eq!(mismatches, 0);
}

#[tokio::test]
async fn fifty_mib_upload_streams_through_byte_exact_chunked_and_sized() {
    let up = Upstream::start("sink", Behavior::Digest).await;
    let proxy = Proxy::start(&config(&up)).await;
    let expected_sum = {
        let data: Vec<u8> = (0..FIFTY_MIB).map(pattern).collect();
        checksum(&data, 0, 0)
    };
    for sized in [false, true] {
        let chunks = (0..FIFTY_MIB).step_by(1 << 16).map(|start| {
            let end = (start + (1 << 16)).min(FIFTY_MIB);
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(
                (start..end).map(pattern).collect::<Vec<u8>>(),
            )))
        });
        let body = StreamBody::new(crate::support::upstream::IterStreamPub::new(chunks));
        let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = request("POST", proxy.addr(), "/upload");
        if sized {
            req = req.header("content-length", FIFTY_MIB);
        }
        let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&text),
            format!("{FIFTY_MIB} {expected_sum}"),
            "sized={sized}"
        );
    }
    let _ = H1::connect; // keep the helper import used in every configuration
}
