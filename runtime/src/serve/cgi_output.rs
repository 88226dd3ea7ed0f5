//! A CGI app's stdout as an HTTP response that streams.
//!
//! Only the header block is held whole (at most [`MAX_CGI_HEAD`] bytes).
//! The response head goes out as soon as the blank line that ends it
//! arrives; the body then passes through a queue of at most
//! [`CGI_BODY_BUFFER`] bytes. When the queue is full the guest's writes wait
//! (its `check-write` reports no room and its pollable is not ready), so a
//! client that reads slowly slows the guest down rather than filling the
//! host's memory; the function's timeout still bounds the whole exchange.

use super::Failure;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::oneshot;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// The largest header block a CGI app may write; more is a 502.
pub const MAX_CGI_HEAD: usize = 64 << 10;

/// Body bytes held between the guest and the client, per request.
pub const CGI_BODY_BUFFER: usize = 256 << 10;

/// The most one write may hand over (the permit `check-write` gives).
const MAX_WRITE: usize = 64 << 10;

/// A parsed response head, or why there will be none.
pub(crate) type Head = Result<(StatusCode, HeaderMap), Failure>;

/// Makes the three ends of one response: the guest's stdout, the receiver
/// of the response head, and the response body.
pub(crate) fn channel() -> (CgiStdout, oneshot::Receiver<Head>, CgiBody) {
    let (head_tx, head_rx) = oneshot::channel();
    let shared = Arc::new(Mutex::new(Shared {
        phase: Phase::Head(BytesMut::new()),
        head_tx: Some(head_tx),
        queue: VecDeque::new(),
        queued: 0,
        end: None,
        reader: None,
        writer: None,
        client_gone: false,
        error_deferred: false,
    }));
    (
        CgiStdout {
            shared: shared.clone(),
        },
        head_rx,
        CgiBody { shared },
    )
}

enum Phase {
    /// Collecting the header block.
    Head(BytesMut),
    /// The head went out; what the guest writes is body.
    Body,
    /// The guest broke the protocol; the reason, which the request's
    /// outcome reports.
    Broken(String),
}

struct Shared {
    phase: Phase,
    head_tx: Option<oneshot::Sender<Head>>,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Set when the instance has ended: `Err` cuts the body short.
    end: Option<Result<(), String>>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The client went away (the body was dropped).
    client_gone: bool,
    /// The body's error was held back once (see `poll_frame`).
    error_deferred: bool,
}

impl Shared {
    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// How much the guest may write now; 0 means wait.
    fn room(&self) -> StreamResult<usize> {
        if self.client_gone || self.end.is_some() {
            return Err(StreamError::Closed);
        }
        match &self.phase {
            Phase::Head(head) => Ok(MAX_CGI_HEAD - head.len()),
            Phase::Body => Ok(CGI_BODY_BUFFER.saturating_sub(self.queued).min(MAX_WRITE)),
            Phase::Broken(why) => Err(StreamError::Trap(wasmtime::format_err!("{why}"))),
        }
    }

    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let room = self.room()?;
        if bytes.len() > room {
            return Err(StreamError::trap(
                "a write to stdout was larger than check-write allowed",
            ));
        }
        match &mut self.phase {
            Phase::Head(head) => {
                // The blank line may straddle two writes.
                let from = head.len().saturating_sub(3);
                head.extend_from_slice(&bytes);
                match find_blank_line(&head[from..]) {
                    Some((len, sep)) => {
                        let mut head = std::mem::take(head);
                        let body = head.split_off(from + len + sep).freeze();
                        match parse_cgi_head(&head[..from + len]) {
                            Ok(parsed) => {
                                self.phase = Phase::Body;
                                if let Some(tx) = self.head_tx.take() {
                                    let _ = tx.send(Ok(parsed));
                                }
                                self.push(body);
                                Ok(())
                            }
                            Err(why) => Err(self.broken(why)),
                        }
                    }
                    None if head.len() >= MAX_CGI_HEAD => Err(self.broken(format!(
                        "the CGI app's header block exceeds the limit of {} KiB (no blank line \
                         ends it)",
                        MAX_CGI_HEAD >> 10
                    ))),
                    None => Ok(()),
                }
            }
            Phase::Body => {
                self.push(bytes);
                Ok(())
            }
            Phase::Broken(_) => unreachable!("room() refused the write"),
        }
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.queue.push_back(bytes);
        self.wake_reader();
    }

    /// Records a protocol error: the client gets a 502 at once, and the
    /// guest's write traps, which stops the instance.
    fn broken(&mut self, why: String) -> StreamError {
        if let Some(tx) = self.head_tx.take() {
            let _ = tx.send(Err(Failure {
                status: StatusCode::BAD_GATEWAY,
                reason: why.clone(),
            }));
        }
        let error = StreamError::Trap(wasmtime::format_err!("{why}"));
        self.phase = Phase::Broken(why);
        error
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<StreamResult<usize>> {
        match self.room() {
            Ok(0) => {
                self.writer = Some(cx.waker().clone());
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

/// The guest's stdout (one per request; every stream the guest opens on it
/// writes to the same response).
#[derive(Clone)]
pub(crate) struct CgiStdout {
    shared: Arc<Mutex<Shared>>,
}

impl CgiStdout {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the queue half-updated
        // in a way that matters more than the panic itself.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The protocol error the guest made, if any: it decides the request's
    /// outcome over whatever the trap it caused says.
    pub(crate) fn protocol_error(&self) -> Option<String> {
        match &self.lock().phase {
            Phase::Broken(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// Whether the client went away before the response was complete.
    pub(crate) fn client_gone(&self) -> bool {
        self.lock().client_gone
    }

    /// Whether the response head went out.
    pub(crate) fn head_sent(&self) -> bool {
        matches!(self.lock().phase, Phase::Body)
    }

    /// Ends the response once the instance has ended: before the head went
    /// out, the client gets `failure` (or, after a clean exit, the header
    /// block as far as it went is an error); after it, the body ends, cut
    /// short when the instance failed.
    pub(crate) fn finish(&self, failure: Option<Failure>) {
        let mut shared = self.lock();
        shared.end = Some(match &failure {
            None => Ok(()),
            Some(failure) => Err(failure.reason.clone()),
        });
        if let Phase::Head(_) = shared.phase {
            let failure = failure.unwrap_or_else(|| Failure {
                status: StatusCode::BAD_GATEWAY,
                reason: "the CGI app's output has no header block (expected header lines, a \
                         blank line, then the body)"
                    .to_owned(),
            });
            if let Some(tx) = shared.head_tx.take() {
                let _ = tx.send(Err(failure));
            }
        }
        shared.wake_reader();
        shared.wake_writer();
    }
}

impl IsTerminal for CgiStdout {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CgiStdout {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CgiStdout {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.lock().write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        // What is queued counts as delivered: the queue is the response.
        self.lock().room().map(drop)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.lock().room()
    }
}

impl Pollable for CgiStdout {
    // `#[async_trait]`'s expansion of `async fn ready(&mut self)`.
    fn ready<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::poll_fn(|cx| {
            self.lock().poll_room(cx).map(drop)
        }))
    }
}

impl tokio::io::AsyncWrite for CgiStdout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut shared = self.lock();
        let room = match shared.poll_room(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(room)) => room,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
        };
        let n = buf.len().min(room);
        match shared.write(Bytes::copy_from_slice(&buf[..n])) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The response body: what the guest writes after its header block.
pub(crate) struct CgiBody {
    shared: Arc<Mutex<Shared>>,
}

impl CgiBody {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl http_body::Body for CgiBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let mut shared = self.lock();
        if let Some(chunk) = shared.queue.pop_front() {
            shared.queued -= chunk.len();
            shared.wake_writer();
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        let deferred = shared.error_deferred;
        match &mut shared.end {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(_)) if !deferred => {
                // hyper drops what it has buffered when a body fails, so the
                // error waits one turn: hyper flushes the head and the body
                // so far first, and the client sees a response cut short
                // rather than none.
                shared.error_deferred = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Err(why)) => {
                // Once: the body ends after its error.
                let why = std::mem::take(why);
                shared.end = Some(Ok(()));
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    why,
                )))))
            }
            None => {
                shared.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        shared.queue.is_empty() && matches!(shared.end, Some(Ok(())))
    }
}

impl Drop for CgiBody {
    fn drop(&mut self) {
        let mut shared = self.lock();
        shared.client_gone = true;
        shared.queue.clear();
        shared.queued = 0;
        shared.wake_writer();
    }
}

/// Parses a CGI header block (without the blank line that ends it): header
/// lines, where `Status:` sets the status and `Location:` alone means a
/// redirect (RFC 3875 section 6.3).
pub(crate) fn parse_cgi_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), String> {
    let head = std::str::from_utf8(head)
        .map_err(|_| "the CGI app's header block is not UTF-8".to_owned())?;
    let mut status = None;
    let mut headers = HeaderMap::new();
    for line in head.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("the CGI app wrote a malformed header line `{line}`"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            status = Some(
                code.parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| format!("the CGI app wrote an invalid status `{value}`"))?,
            );
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("the CGI app wrote an invalid header name `{name}`"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the CGI app wrote an invalid value for header `{name}`"))?;
        headers.append(name, value);
    }
    let status = status.unwrap_or(if headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok((status, headers))
}

/// The end of the header block: its length and the separator's.
fn find_blank_line(output: &[u8]) -> Option<(usize, usize)> {
    let crlf = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn cgi_heads() {
        let (status, headers) =
            parse_cgi_head(b"Content-Type: text/plain\r\nStatus: 404 Not Found\r\nX-A: 1").unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["x-a"], "1");
        let (status, _) = parse_cgi_head(b"Location: /there").unwrap();
        assert_eq!(status, StatusCode::FOUND);
        for bad in [
            &b"no colon"[..],
            b"Status: abc",
            b"Bad Name: x",
            b"X-A: a\x01b",
            b"\xff: x",
        ] {
            assert!(parse_cgi_head(bad).is_err(), "{bad:?}");
        }
    }

    /// Writes `chunks` as a guest would (each within its permit) and returns
    /// the head and the body the client gets.
    async fn respond(chunks: &[&[u8]], exit: Option<Failure>) -> (Head, Result<Bytes, String>) {
        let (mut stdout, head, body) = channel();
        for chunk in chunks {
            let mut chunk = Bytes::copy_from_slice(chunk);
            while !chunk.is_empty() {
                let room = match stdout.check_write() {
                    Ok(room) => room,
                    Err(_) => break,
                };
                let part = chunk.split_to(room.min(chunk.len()));
                if stdout.write(part).is_err() {
                    break;
                }
            }
        }
        stdout.finish(exit);
        let head = head.await.unwrap();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("{e:?}"));
        (head, body)
    }

    #[tokio::test]
    async fn the_head_may_straddle_writes() {
        let (head, body) = respond(&[b"Status: 201\r", b"\n\r", b"\nbo", b"dy"], None).await;
        assert_eq!(head.unwrap().0, StatusCode::CREATED);
        assert_eq!(body.unwrap(), "body");
        let (head, body) = respond(&[b"X-A: 1\n", b"\nbody\n\nmore"], None).await;
        assert_eq!(head.unwrap().1["x-a"], "1");
        assert_eq!(body.unwrap(), "body\n\nmore");
    }

    #[tokio::test]
    async fn protocol_errors_are_bad_gateway() {
        let too_long = vec![b'a'; MAX_CGI_HEAD + 10];
        for (chunks, needle) in [
            (&[&b"just text"[..]][..], "no header block"),
            (&[b"no colon\n\nbody"], "malformed header line"),
            (&[b"X-A: 1\n", &too_long], "exceeds the limit of 64 KiB"),
        ] {
            let (head, _) = respond(chunks, None).await;
            let failure = head.unwrap_err();
            assert_eq!(failure.status, StatusCode::BAD_GATEWAY);
            assert!(failure.reason.contains(needle), "{}", failure.reason);
        }
    }

    #[tokio::test]
    async fn a_failure_after_the_head_cuts_the_body() {
        let failure = Failure {
            status: StatusCode::BAD_GATEWAY,
            reason: "the CGI app exited with code 3".to_owned(),
        };
        let (head, body) = respond(&[b"X-A: 1\n\npartial"], Some(failure)).await;
        assert_eq!(head.unwrap().0, StatusCode::OK);
        assert!(body.unwrap_err().contains("exited with code 3"));
    }

    #[test]
    fn a_full_queue_makes_the_guest_wait() {
        let (mut stdout, _head, body) = channel();
        stdout.write(Bytes::from_static(b"X-A: 1\n\n")).unwrap();
        let mut written = 0;
        while let Ok(room @ 1..) = stdout.check_write() {
            stdout.write(Bytes::from(vec![0; room])).unwrap();
            written += room;
        }
        assert_eq!(written, CGI_BODY_BUFFER);
        assert_eq!(stdout.check_write().unwrap(), 0);
        // The client going away ends the guest's writes.
        drop(body);
        assert!(matches!(stdout.check_write(), Err(StreamError::Closed)));
    }
}
