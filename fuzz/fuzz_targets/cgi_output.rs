//! `wrun serve`'s CGI responses: a guest's stdout, written in pieces, as the
//! response head and the streamed body the client gets (cgi_output, through
//! serve_fuzzing::cgi_response).
//!
//! The first byte: bits 0-3 the size of each write (1 to 16 bytes, the last
//! piece shorter), bit 4 the instance fails after writing, bit 5 the rest is
//! written after 64 KiB of header lines (past the header block's cap). The
//! rest is what the guest writes.
//!
//! Beyond not panicking: the pieces do not change the response (one write of
//! everything gives the same), a head that went out is the bytes before the
//! first blank line and the body is every byte after it, unchanged, and every
//! failure before the head is a 502.

#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use wrun_runtime::MAX_CGI_HEAD;
use wrun_runtime::serve_fuzzing::cgi_response;

/// Where the first blank line (`\r\n\r\n` or `\n\n`) starts, and its length.
fn blank_line(output: &[u8]) -> Option<(usize, usize)> {
    (0..output.len()).find_map(|i| {
        if output[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if output[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(flags & 0x0f) + 1;
    let failure = (flags & 0x10 != 0).then_some("the CGI app exited with code 3");
    let mut output = Vec::new();
    if flags & 0x20 != 0 {
        while output.len() <= MAX_CGI_HEAD {
            output.extend_from_slice(b"X-Padding: 0123456789abcdef\n");
        }
    }
    output.extend_from_slice(rest);

    let pieces: Vec<&[u8]> = output.chunks(piece).collect();
    let (head, body) = cgi_response(&pieces, failure);
    let whole = cgi_response(&[&output], failure);
    assert_eq!(
        (&head, &body),
        (&whole.0, &whole.1),
        "writes of {piece} bytes changed the response"
    );

    match (head, blank_line(&output)) {
        (Ok((status, headers)), Some((at, len))) => {
            assert!(at <= MAX_CGI_HEAD, "a head of {at} bytes went out");
            assert!(headers.len() <= at, "more headers than header bytes");
            let _ = status;
            match (body, failure) {
                (Ok(body), None) => assert_eq!(body, &output[at + len..], "the body changed"),
                (Err(why), Some(failure)) => assert!(why.contains(failure), "{why}"),
                (body, failure) => panic!("body {body:?} after exit failure {failure:?}"),
            }
        }
        (Ok(_), None) => panic!("a head went out with no blank line to end it"),
        (Err((status, reason)), _) => {
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{reason}");
            assert!(!reason.is_empty());
        }
    }
});
