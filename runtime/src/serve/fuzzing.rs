//! Entry points for the fuzz targets in `fuzz/` into the CGI response
//! machinery, which is not otherwise public. Not an API: each function only
//! drives the code `wrun serve` runs on a guest's output, unchanged.

use super::Failure;
use super::cgi_output::channel;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Body as _;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime_wasi::p2::OutputStream as _;

/// What the client of a CGI request gets: the response head (or the
/// failure's status and reason) and the body (or the error that cut it).
pub type CgiResponse = (
    Result<(StatusCode, HeaderMap), (StatusCode, String)>,
    Result<Vec<u8>, String>,
);

/// Writes `chunks` to a CGI app's stdout as a guest does (each write within
/// the permit `check-write` gave), ends the instance (cleanly, or failing
/// with `exit_failure`), and collects what the client gets.
pub fn cgi_response(chunks: &[&[u8]], exit_failure: Option<&str>) -> CgiResponse {
    let (mut stdout, mut head, body) = channel();
    'chunks: for chunk in chunks {
        let mut chunk = Bytes::copy_from_slice(chunk);
        while !chunk.is_empty() {
            let Ok(room @ 1..) = stdout.check_write() else {
                break 'chunks;
            };
            let part = chunk.split_to(room.min(chunk.len()));
            if stdout.write(part).is_err() {
                break 'chunks;
            }
        }
    }
    stdout.finish(exit_failure.map(|reason| Failure {
        status: StatusCode::BAD_GATEWAY,
        reason: reason.to_owned(),
    }));
    let head = match head.try_recv() {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(failure)) => Err((failure.status, failure.reason)),
        Err(e) => panic!("no response head after the instance ended: {e}"),
    };
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = Vec::new();
    // Ended, the body never waits for long: at most one turn (the deferred
    // error), so a bound on the turns finds a body that hangs.
    for _ in 0..bytes_turns(chunks) {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(None) => return (head, Ok(bytes)),
            Poll::Ready(Some(Ok(frame))) => {
                bytes.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d.as_ref()));
            }
            Poll::Ready(Some(Err(e))) => return (head, Err(e.to_string())),
            Poll::Pending => {}
        }
    }
    panic!("the body of an ended CGI response did not end")
}

/// Frames the body may take, plus the turns of waiting it may take.
fn bytes_turns(chunks: &[&[u8]]) -> usize {
    chunks.iter().map(|c| c.len()).sum::<usize>() + 16
}
