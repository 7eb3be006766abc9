//! Request-smuggling defence for HTTP/1.1 that hyper does not give: a request head carrying
//! both `Content-Length` and `Transfer-Encoding` (hyper follows RFC 9112 §6.1 and accepts it,
//! dropping Content-Length and closing afterwards; Envoy and we refuse it with 400).
//!
//! hyper owns parsing; this wrapper only shadows the byte stream it reads, following message
//! framing (heads, Content-Length bodies, chunked bodies) just far enough to find each request
//! head, and marks the ordinal of the first ambiguous one on the connection's tracker. Whatever
//! it cannot follow (HTTP/2, upgrades, malformed input hyper will refuse anyway) switches it
//! off: it never blocks or alters bytes.
//!
//! It also enforces `header_read_timeout`, from a head's first byte (as Envoy's
//! `request_headers_timeout` does). hyper's own timer starts when it begins waiting for the next
//! request, so it also cut off keep-alive connections idle longer than the header timeout, and
//! it cost a boxed, registered timer per request; this one exists only while a head is split
//! across reads.

use crate::conn_tracker::ConnTracker;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest chunk-size line or trailer block followed before giving up (hyper enforces its own
/// limits; past this we simply stop shadowing).
const MAX_LINE: usize = 4096;

enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    Trailers,
    Off,
}

pub struct FramingGuard<IO> {
    io: IO,
    state: State,
    /// Bytes of an incomplete head, size line or trailer block carried between reads.
    pending: Vec<u8>,
    max_head: usize,
    heads: u64,
    tracker: Arc<ConnTracker>,
    started: bool,
    /// `header_read_timeout` and the counter of connections it cut off (`None`: no limit).
    head_timeout: Option<(Duration, prometheus::IntCounter)>,
    /// Armed while a request head has begun but not ended.
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FramingGuard<IO> {
    pub fn new(io: IO, tracker: Arc<ConnTracker>, max_head: usize) -> Self {
        FramingGuard {
            io,
            state: State::Head,
            pending: Vec::new(),
            max_head,
            heads: 0,
            tracker,
            started: false,
            head_timeout: None,
            head_deadline: None,
        }
    }

    /// Closes the connection (a read error to hyper) when a request head takes longer than
    /// `limit` from its first byte; `timeouts` counts those.
    pub fn with_header_timeout(
        mut self,
        limit: Duration,
        timeouts: prometheus::IntCounter,
    ) -> Self {
        self.head_timeout = Some((limit, timeouts)).filter(|(l, _)| !l.is_zero());
        self
    }

    /// Stops shadowing the stream for good, letting go of anything gathered.
    fn switch_off(&mut self) {
        self.pending = Vec::new();
        self.state = State::Off;
    }

    /// Arms the head deadline when a head has begun and not ended, disarms it otherwise.
    fn track_head(&mut self) {
        let partial = matches!(self.state, State::Head) && !self.pending.is_empty();
        if let (true, None, Some((limit, _))) = (partial, &self.head_deadline, &self.head_timeout) {
            self.head_deadline = Some(Box::pin(tokio::time::sleep(*limit)));
        } else if !partial && self.head_deadline.is_some() {
            self.head_deadline = None;
        }
    }

    /// Called when the socket has nothing to read: an error once a begun head is overdue.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(deadline) = self.head_deadline.as_mut() else {
            return Poll::Pending;
        };
        std::task::ready!(deadline.as_mut().poll(cx));
        self.head_deadline = None;
        if let Some((_, timeouts)) = &self.head_timeout {
            timeouts.inc();
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not complete within header_read_timeout",
        )))
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// Tells the tracker whether the stream now stands between messages, and after how many
    /// heads (what parking an idle connection relies on).
    fn publish_boundary(&self) {
        let at = match self.state {
            State::Head if self.pending.is_empty() => self.heads,
            _ => u64::MAX,
        };
        self.tracker.boundary_heads.store(at, Ordering::Relaxed);
    }

    fn observe(&mut self, mut data: &[u8]) {
        if !self.started && !data.is_empty() {
            self.started = true;
            // The HTTP/2 preface; a split preface fails httparse's version check just the same.
            if data.starts_with(b"PRI ") {
                self.state = State::Off;
            }
        }
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = (n as usize).min(data.len()) as u64;
                    data = &data[take as usize..];
                    self.state = if n == take {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(data.len()) as u64;
                    data = &data[take as usize..];
                    self.state = if n == take {
                        State::ChunkSize
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::Head => {
                    // The common case, a whole head in one read, is parsed where it lies;
                    // only a head split across reads is gathered in `pending`.
                    let carried = self.pending.len();
                    let parsed = if carried == 0 {
                        parse_head(data)
                    } else {
                        self.pending.extend_from_slice(data);
                        parse_head(&self.pending)
                    };
                    match parsed {
                        Parsed::Complete(end, head) => {
                            self.pending.clear();
                            data = &data[end.saturating_sub(carried).min(data.len())..];
                            self.state = self.on_head(head);
                        }
                        Parsed::Partial => {
                            if carried == 0 {
                                self.pending.extend_from_slice(data);
                            }
                            if self.pending.len() > self.max_head {
                                self.switch_off();
                            }
                            return;
                        }
                        Parsed::Invalid => return self.switch_off(),
                    }
                }
                State::ChunkSize => {
                    let Some(used) = self.take_until(data, b"\r\n", MAX_LINE) else {
                        return;
                    };
                    data = &data[used..];
                    let line = std::mem::take(&mut self.pending);
                    self.state = chunk_size(&line).map_or(State::Off, |size| {
                        if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size.saturating_add(2))
                        }
                    });
                }
                State::Trailers => {
                    // Trailers end at an empty line; with none, that is the very next CRLF.
                    let Some(used) = self.take_until(data, b"\r\n", MAX_LINE) else {
                        return;
                    };
                    data = &data[used..];
                    if self.pending == b"\r\n" || self.pending.ends_with(b"\r\n\r\n") {
                        self.pending.clear();
                        self.state = State::Head;
                    }
                }
            }
        }
    }

    /// Appends `data` to `pending` up to and including the first `delim`; returns the number of
    /// bytes of `data` consumed, or `None` when `delim` has not arrived yet (all of `data` was
    /// kept). Going past `limit` switches the guard off.
    fn take_until(&mut self, data: &[u8], delim: &[u8], limit: usize) -> Option<usize> {
        let start = self.pending.len().saturating_sub(delim.len() - 1);
        self.pending.extend_from_slice(data);
        let found = self.pending[start..]
            .windows(delim.len())
            .position(|w| w == delim)
            .map(|p| start + p + delim.len());
        match found {
            Some(end) => {
                let before = self.pending.len() - data.len();
                self.pending.truncate(end);
                Some(end - before)
            }
            None => {
                if self.pending.len() > limit {
                    self.switch_off();
                }
                None
            }
        }
    }

    fn on_head(&mut self, head: Head) -> State {
        self.heads += 1;
        if head.content_length.is_some() && head.transfer_encoding.is_some() {
            self.tracker.reject_framing_from(self.heads);
            return State::Off;
        }
        if head.upgrade {
            return State::Off;
        }
        match (head.transfer_encoding, head.content_length) {
            (Some(true), _) => State::ChunkSize,
            (Some(false), _) | (None, Some(None)) => State::Off,
            (None, Some(Some(0)) | None) => State::Head,
            (None, Some(Some(n))) => State::Body(n),
        }
    }
}

/// What framing needs from a request head.
struct Head {
    /// Present, and its value if it parses as a number.
    content_length: Option<Option<u64>>,
    /// Present, and whether chunked is its final coding.
    transfer_encoding: Option<bool>,
    /// An upgrade or CONNECT: what follows is not HTTP/1.1 messages.
    upgrade: bool,
}

enum Parsed {
    /// The head ends after this many bytes (leading empty lines included).
    Complete(usize, Head),
    Partial,
    Invalid,
}

/// Parses a request head with httparse, as hyper does, so both agree on where it ends.
fn parse_head(buf: &[u8]) -> Parsed {
    // Uninitialised slots: a 128-header array of initialised ones is 4 KiB of stores per
    // request.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut req = httparse::Request::new(&mut []);
    let end = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let mut head = Head {
        content_length: None,
        transfer_encoding: None,
        upgrade: req.method == Some("CONNECT"),
    };
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok()),
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.transfer_encoding = Some(
                h.value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
            );
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = true;
        }
    }
    Parsed::Complete(end, head)
}

impl<IO> FramingGuard<IO> {
    fn note_write(&self, blocked: bool) {
        // Written only on a change: the common case costs a load, not a store.
        if self.tracker.write_blocked.load(Ordering::Relaxed) != blocked {
            self.tracker.write_blocked.store(blocked, Ordering::Relaxed);
            if blocked {
                self.tracker.note_blocked();
            }
        }
    }
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let hex = line.split(|b| *b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => return self.poll_head_deadline(cx),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        }
        if !matches!(self.state, State::Off) {
            let new = &buf.filled()[before..];
            // Borrow juggling: `observe` needs `&mut self` while `new` borrows `buf`, not self.
            self.observe(new);
            self.publish_boundary();
        }
        // Also disarms the deadline once the guard has switched off.
        self.track_head();
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        self.note_write(r.is_pending());
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parking: hyper is done with the connection, the client is not.
        if self.tracker.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note_write(r.is_pending());
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Feeds `data` through a guard's shadow parser in reads cut at `splits` (positions into
/// `data`), as a connection would see it: the entry point of the framing guard's fuzz target
/// and of property tests. Returns (request heads seen, ordinal of the first refused one).
pub fn shadow(data: &[u8], splits: &[usize], max_head: usize) -> (u64, Option<u64>) {
    let tracker = Arc::new(ConnTracker::new());
    let mut guard = FramingGuard::new((), tracker.clone(), max_head);
    let mut at = 0;
    for &cut in splits.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(at, data.len());
        guard.observe(&data[at..cut]);
        guard.publish_boundary();
        at = cut;
    }
    let rejected = tracker.rejected_from.load(Ordering::Relaxed);
    (guard.heads, (rejected != u64::MAX).then_some(rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Arc<ConnTracker>, u64) {
        let t = Arc::new(ConnTracker::new());
        let mut g = FramingGuard::new((), t.clone(), 65536);
        for c in chunks {
            g.observe(c);
        }
        let heads = g.heads;
        (t, heads)
    }

    #[test]
    fn follows_keepalive_bodies_and_flags_the_ambiguous_head() {
        let (t, heads) = run(&[
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
            b"lo",
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n",
            b"GET /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        assert_eq!(heads, 3);
        assert_eq!(t.first_rejected(), Some(3));
    }

    #[test]
    fn body_text_that_looks_like_headers_is_not_a_head() {
        let body = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (t, heads) = run(&[head.as_bytes(), body]);
        assert_eq!(heads, 1);
        assert_eq!(t.first_rejected(), None);
    }

    #[test]
    fn heads_split_anywhere_are_followed() {
        let stream: &[u8] = b"\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
GET /c HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for size in [1, 2, 3, 7, 16, stream.len()] {
            let chunks: Vec<&[u8]> = stream.chunks(size).collect();
            let (t, heads) = run(&chunks);
            assert_eq!(heads, 3, "chunks of {size}");
            assert_eq!(t.first_rejected(), Some(3), "chunks of {size}");
        }
    }

    #[test]
    fn h2_preface_switches_off() {
        let (t, heads) = run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(heads, 0);
        assert_eq!(t.first_rejected(), None);
    }
}
