//! The smallest `wasi:http/proxy` component: answers every request with 200
//! `Hello, world!`. It is the benchmark guest, so it does nothing more and
//! allocates nothing.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::new();
        // A constant, valid header: the host has no reason to refuse it.
        let _ = headers.append("content-type", b"text/plain");
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        // Write errors mean the client went away; there is no one left to tell.
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(b"Hello, world!\n");
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Hello);
