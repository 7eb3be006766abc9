//! Ambiguous framing must get 400, close the connection, and reach no upstream. Each case is
//! sent as raw bytes, since well-behaved clients cannot produce them.

use crate::support::{raw_exchange, upstream::Behavior, Proxy, Upstream};
use std::time::Duration;

const CASES: &[(&str, &str)] = &[
    (
        "content-length and transfer-encoding",
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    ),
    (
        "transfer-encoding then content-length",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    ),
    (
        "differing content-length values",
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 12\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    ),
    (
        "comma-listed differing content-length",
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 12\r\n\r\nhello",
    ),
    (
        "obs-fold header line",
        "GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n",
    ),
    (
        "whitespace before the colon",
        "GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello",
    ),
    (
        "transfer-encoding not ending in chunked",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "invalid chunk size",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "overflowing chunk size",
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    ),
];

#[tokio::test]
async fn ambiguous_framing_gets_400_closes_and_reaches_no_upstream() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&crate::support::single_route("web", &[up.addr], "", "")).await;
    for (name, bytes) in CASES {
        let (resp, closed) =
            raw_exchange(proxy.addr(), bytes.as_bytes(), Duration::from_secs(5)).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{name}: got {resp:?}");
        assert_eq!(
            resp.matches("HTTP/1.1").count(),
            1,
            "{name}: exactly one response, got {resp:?}"
        );
        assert!(closed, "{name}: connection must be closed");
        assert_eq!(up.requests(), 0, "{name}: reached the upstream");
    }
    // A well-formed chunked request on the same proxy still works.
    let (resp, _) = raw_exchange(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn a_keepalive_request_after_a_clean_one_is_still_checked() {
    let up = Upstream::start("web", Behavior::Name).await;
    let proxy = Proxy::start(&crate::support::single_route("web", &[up.addr], "", "")).await;
    let pipelined = "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
                     POST /bad HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (resp, closed) =
        raw_exchange(proxy.addr(), pipelined.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    assert!(closed);
    assert_eq!(
        up.requests(),
        1,
        "only the clean request reached the upstream"
    );
}
