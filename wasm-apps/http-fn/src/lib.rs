//! A `wasi:http/proxy` component for wrun's tests; the request path picks what
//! it does:
//!
//! - `/hello`: 200 `hello from http-fn`.
//! - `/counter`: increments a counter in guest memory and returns its value,
//!   so it shows whether instances are reused across requests.
//! - `/echo`: streams the request body back, with headers `x-method` and
//!   `x-path` (path and query).
//! - `/env?name=K`: the value of the environment variable `K`, or 404.
//! - `/file?path=P`: the contents of file `P`, or 500 with the error.
//! - `/write?path=P`: writes the request body to file `P`; 500 with the error
//!   if that fails.
//! - `/spin`: burns CPU forever.
//! - `/sleep?ms=N`: sleeps `N` ms, then 200.
//! - `/alloc?mib=N`: allocates and touches `N` MiB, then 200. A refused
//!   allocation aborts, as Rust's allocator does (the instance traps).
//! - `/trap`: executes `unreachable`.
//! - `/fetch?url=U`: GETs the `http` or `https` URL `U` through
//!   `wasi:http/outgoing-handler` and returns 200 `status <code>` followed by
//!   the upstream body, or 502 `error <ErrorCode>` if the request failed.
//! - anything else: 404.
//!
//! Query values are percent-decoded.

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::OutputStream;

static COUNTER: AtomicU64 = AtomicU64::new(0);

struct HttpFn;

impl Guest for HttpFn {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((&path_with_query, ""));
        let param = |name| query_param(query, name);
        match path {
            "/hello" => respond(out, 200, "hello from http-fn\n"),
            "/counter" => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
                respond(out, 200, format!("{n}\n"));
            }
            "/echo" => echo(request, out, &path_with_query),
            "/env" => match param("name").and_then(|name| std::env::var(name).ok()) {
                Some(value) => respond(out, 200, value),
                None => respond(out, 404, "not set\n"),
            },
            "/file" => match param("path").map(std::fs::read) {
                Some(Ok(contents)) => respond(out, 200, contents),
                Some(Err(e)) => respond(out, 500, format!("{e}\n")),
                None => respond(out, 400, "missing `path`\n"),
            },
            "/write" => match param("path") {
                Some(file) => match write_body(request, &file) {
                    Ok(n) => respond(out, 200, format!("wrote {n} bytes\n")),
                    Err(e) => respond(out, 500, format!("{e}\n")),
                },
                None => respond(out, 400, "missing `path`\n"),
            },
            "/spin" => spin(),
            "/sleep" => match param("ms").and_then(|ms| ms.parse().ok()) {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    respond(out, 200, format!("slept {ms} ms\n"));
                }
                None => respond(out, 400, "expected `ms=<integer>`\n"),
            },
            "/alloc" => match param("mib").and_then(|mib| mib.parse().ok()) {
                Some(mib) => match alloc(mib) {
                    Ok(()) => respond(out, 200, format!("allocated {mib} MiB\n")),
                    Err(e) => respond(out, 500, format!("failed to allocate {mib} MiB: {e}\n")),
                },
                None => respond(out, 400, "expected `mib=<integer>`\n"),
            },
            "/trap" => core::arch::wasm32::unreachable(),
            "/fetch" => match param("url") {
                Some(url) => fetch(out, &url),
                None => respond(out, 400, "missing `url`\n"),
            },
            _ => respond(out, 404, "not found\n"),
        }
    }
}

wasip2::http::proxy::export!(HttpFn);

fn echo(request: IncomingRequest, out: ResponseOutparam, path_with_query: &str) {
    let method = request.method();
    let headers = [
        ("x-method", method_name(&method).as_bytes()),
        ("x-path", path_with_query.as_bytes()),
    ];
    let Some(mut body) = start(out, 200, &headers) else {
        return;
    };
    if let Ok(incoming) = request.consume() {
        if let Ok(mut input) = incoming.stream() {
            // A failed copy cuts the response short, which the client sees.
            let _ = io::copy(&mut input, &mut body);
        }
        let _ = IncomingBody::finish(incoming);
    }
    let _ = body.finish();
}

/// Streams the request body into the file at `path`, returning its size.
fn write_body(request: IncomingRequest, path: &str) -> io::Result<u64> {
    let mut file = File::create(path)?;
    let incoming = request
        .consume()
        .map_err(|()| io::Error::other("request body already consumed"))?;
    let mut input = incoming
        .stream()
        .map_err(|()| io::Error::other("request body stream already taken"))?;
    let n = io::copy(&mut input, &mut file)?;
    drop(input);
    let _ = IncomingBody::finish(incoming);
    file.flush()?;
    Ok(n)
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates `mib` MiB and writes to every page of it, so the memory is
/// really committed rather than only reserved.
fn alloc(mib: usize) -> Result<(), String> {
    let len = mib
        .checked_mul(1 << 20)
        .ok_or("size overflows the address space")?;
    let mut buf = vec![0u8; len];
    for page in buf.chunks_mut(4096) {
        page[0] = 1;
    }
    black_box(&buf);
    Ok(())
}

fn fetch(out: ResponseOutparam, url: &str) {
    let upstream = match get(url) {
        Ok(response) => response,
        Err(FetchError::BadUrl) => return respond(out, 400, format!("bad url `{url}`\n")),
        Err(FetchError::Http(e)) => return respond(out, 502, format!("error {e:?}\n")),
    };
    let Some(mut body) = start(out, 200, &[("content-type", b"text/plain")]) else {
        return;
    };
    if writeln!(body, "status {}", upstream.status()).is_ok()
        && let Ok(incoming) = upstream.consume()
    {
        if let Ok(mut input) = incoming.stream() {
            let _ = io::copy(&mut input, &mut body);
        }
        let _ = IncomingBody::finish(incoming);
    }
    let _ = body.finish();
}

enum FetchError {
    BadUrl,
    Http(ErrorCode),
}

impl From<ErrorCode> for FetchError {
    fn from(e: ErrorCode) -> Self {
        FetchError::Http(e)
    }
}

/// Sends a GET for `url` and waits for the response head.
fn get(url: &str) -> Result<IncomingResponse, FetchError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(FetchError::BadUrl);
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };

    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&scheme))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(&path)))
        .map_err(|()| FetchError::BadUrl)?;
    let pending = outgoing_handler::handle(request, None)?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(result)) => Ok(result?),
        // Only after a second `get`, or before the pollable is ready.
        Some(Err(())) | None => {
            Err(ErrorCode::InternalError(Some("response future not ready".into())).into())
        }
    }
}

/// Sends a `text/plain` response with `body`.
fn respond(out: ResponseOutparam, status: u16, body: impl AsRef<[u8]>) {
    if let Some(mut out_body) = start(out, status, &[("content-type", b"text/plain")]) {
        let _ = out_body.write_all(body.as_ref());
        let _ = out_body.finish();
    }
}

/// Sends the response head and returns the body to write. If the head cannot
/// be built the host gets an error instead, and this returns `None`.
fn start(out: ResponseOutparam, status: u16, headers: &[(&str, &[u8])]) -> Option<Body> {
    match response(status, headers) {
        Ok((response, body)) => {
            ResponseOutparam::set(out, Ok(response));
            Some(body)
        }
        Err(e) => {
            ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(e))));
            None
        }
    }
}

fn response(status: u16, headers: &[(&str, &[u8])]) -> Result<(OutgoingResponse, Body), String> {
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value)
            .map_err(|e| format!("invalid header `{name}`: {e:?}"))?;
    }
    let response = OutgoingResponse::new(fields);
    response
        .set_status_code(status)
        .map_err(|()| format!("invalid status {status}"))?;
    let body = response.body().map_err(|()| "body already taken")?;
    let stream = body.write().map_err(|()| "body stream already taken")?;
    Ok((response, Body { body, stream }))
}

/// An outgoing body and its stream, which must be dropped before the body is
/// finished. Writes go through `std::io::Write`, which waits for the host to
/// accept more; the stream's inherent `write` and `flush` do not.
struct Body {
    body: OutgoingBody,
    stream: OutputStream,
}

impl Body {
    fn finish(self) -> Result<(), ErrorCode> {
        let Body { body, mut stream } = self;
        let _ = Write::flush(&mut stream);
        drop(stream);
        OutgoingBody::finish(body, None)
    }
}

impl Write for Body {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(&mut self.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::flush(&mut self.stream)
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// The percent-decoded value of `name` in the query string `query`.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let digit = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (digit(i + 1), digit(i + 2))
        {
            // Two hex digits make at most 0xff.
            decoded.push((high * 16 + low) as u8);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
