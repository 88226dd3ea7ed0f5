//! A CGI/1.1 script: reads the request from the CGI environment variables and
//! stdin, and writes a CGI response (header lines, a blank line, the body) on
//! stdout. `PATH_INFO` picks what it does:
//!
//! - `/hello`: `Status: 200 OK`, `hello from cgi`.
//! - `/echo`: copies the request body (`CONTENT_LENGTH` bytes, or all of stdin)
//!   back, with headers `X-Method` and `X-Query`, and, when the request has
//!   them, `X-Content-Type` and `X-Header-Foo` (the request's `X-Foo`).
//! - `/counter`: increments a counter in guest memory and prints it (always 1,
//!   as every request is a new process).
//! - `/status?code=N`: `Status: N Custom`, body `status N`.
//! - `/spin`: burns CPU forever.
//! - `/exit?code=N`: prints nothing and exits with code `N`.
//! - `/nohead`: prints text with no header block, a malformed response.
//! - `/file?path=P`: the contents of file `P`, or status 500 with the error.
//! - `/bytes?mib=N`: a body of `N` MiB (a repeating `0123456789abcdef`
//!   pattern, with `X-Bytes: <size>`), written 64 KiB at a time from one
//!   buffer, so the app needs little memory whatever `N` is.
//! - `/bighead?kib=N`: a header line of `N` KiB, never ended by a blank line.
//! - `/partial?code=N`: a header block and `partial body`, then exits with
//!   code `N`.
//! - `/hoard?conns=N&ms=M`: connects to itself over loopback up to `N` times
//!   (each connection is two host sockets), holds them for `M` ms, then
//!   answers `held K` and, if it stopped early, `stopped: <ErrorKind>`.
//!   Components only (a core module has no sockets).
//! - anything else: `Status: 404 Not Found`.
//!
//! Query values are taken as they are, without percent-decoding.
use std::env;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn main() -> io::Result<()> {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let path = var("PATH_INFO");
    let query = var("QUERY_STRING");
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let mut out = io::stdout().lock();
    match path.as_str() {
        "/hello" => respond(&mut out, Some("200 OK"), "hello from cgi\n")?,
        "/echo" => {
            let mut headers = vec![
                ("X-Method", var("REQUEST_METHOD")),
                ("X-Query", query.clone()),
            ];
            for (name, from) in [
                ("X-Content-Type", "CONTENT_TYPE"),
                ("X-Header-Foo", "HTTP_X_FOO"),
            ] {
                if let Ok(value) = env::var(from) {
                    headers.push((name, value));
                }
            }
            head(&mut out, None, &headers)?;
            let len = env::var("CONTENT_LENGTH").ok().and_then(|l| l.parse().ok());
            io::copy(
                &mut io::stdin().lock().take(len.unwrap_or(u64::MAX)),
                &mut out,
            )?;
        }
        "/counter" => {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
            respond(&mut out, None, &format!("{n}\n"))?;
        }
        "/status" => match param("code").and_then(|code| code.parse::<u16>().ok()) {
            Some(code) => respond(
                &mut out,
                Some(&format!("{code} Custom")),
                &format!("status {code}\n"),
            )?,
            None => respond(&mut out, Some("400 Bad Request"), "expected `code=N`\n")?,
        },
        "/spin" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "/exit" => {
            let code = param("code")
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            std::process::exit(code);
        }
        "/nohead" => out.write_all(b"this is not a CGI response\n")?,
        "/bytes" => {
            let mib: u64 = param("mib").and_then(|n| n.parse().ok()).unwrap_or(1);
            let size = mib << 20;
            head(&mut out, None, &[("X-Bytes", size.to_string())])?;
            let chunk: Vec<u8> = b"0123456789abcdef".repeat(4096);
            for _ in 0..size / chunk.len() as u64 {
                out.write_all(&chunk)?;
            }
        }
        "/bighead" => {
            let kib: usize = param("kib").and_then(|n| n.parse().ok()).unwrap_or(1);
            out.write_all(b"X-Big: ")?;
            let line = [b'a'; 1024];
            for _ in 0..kib {
                out.write_all(&line)?;
            }
        }
        "/partial" => {
            head(&mut out, None, &[])?;
            out.write_all(b"partial body")?;
            out.flush()?;
            let code = param("code")
                .and_then(|code| code.parse().ok())
                .unwrap_or(1);
            std::process::exit(code);
        }
        "/hoard" => {
            let number = |name: &str| param(name).and_then(|n| n.parse().ok()).unwrap_or(0);
            let (held, stopped) = hoard(number("conns"));
            std::thread::sleep(std::time::Duration::from_millis(number("ms")));
            let mut text = format!("held {}\n", held.len());
            if let Some(e) = stopped {
                text.push_str(&format!("stopped: {:?}\n", e.kind()));
            }
            respond(&mut out, Some("200 OK"), &text)?;
        }
        "/file" => match param("path").map(std::fs::read) {
            Some(Ok(contents)) => {
                head(&mut out, None, &[])?;
                out.write_all(&contents)?;
            }
            Some(Err(e)) => respond(
                &mut out,
                Some("500 Internal Server Error"),
                &format!("{e}\n"),
            )?,
            None => respond(&mut out, Some("400 Bad Request"), "missing `path`\n")?,
        },
        _ => respond(&mut out, Some("404 Not Found"), "not found\n")?,
    }
    out.flush()
}

/// Connects to a listener of its own up to `n` times, keeping both ends of
/// each connection; the error that stopped it, if one did.
fn hoard(
    n: u64,
) -> (
    Vec<(std::net::TcpStream, std::net::TcpStream)>,
    Option<io::Error>,
) {
    let mut held = Vec::new();
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener,
        Err(e) => return (held, Some(e)),
    };
    let target = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => return (held, Some(e)),
    };
    for _ in 0..n {
        let pair = std::net::TcpStream::connect(target).and_then(|ours| {
            let (theirs, _) = listener.accept()?;
            Ok((ours, theirs))
        });
        match pair {
            Ok(pair) => held.push(pair),
            Err(e) => return (held, Some(e)),
        }
    }
    (held, None)
}

/// Writes the header block: `Content-Type: text/plain`, then `Status` if
/// given (CGI's default is 200), then `headers`.
fn head(out: &mut impl Write, status: Option<&str>, headers: &[(&str, String)]) -> io::Result<()> {
    writeln!(out, "Content-Type: text/plain")?;
    if let Some(status) = status {
        writeln!(out, "Status: {status}")?;
    }
    for (name, value) in headers {
        writeln!(out, "{name}: {value}")?;
    }
    writeln!(out)
}

fn respond(out: &mut impl Write, status: Option<&str>, body: &str) -> io::Result<()> {
    head(out, status, &[])?;
    out.write_all(body.as_bytes())
}
