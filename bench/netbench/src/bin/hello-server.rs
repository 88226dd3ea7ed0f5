//! The native baseline for bench/serve.sh: `Hello, world!\n` over HTTP.
//!
//! `hello-server ADDR [--threads N]` answers every request with 200,
//! `text/plain`, `Hello, world!\n` over HTTP/1.1 (keep-alive) and h2c with
//! prior knowledge. It uses the layout that serves small requests fastest on a
//! few cores: one current_thread tokio runtime per thread (default: one per
//! core), each accepting on its own listener bound with SO_REUSEPORT to the
//! same address, so the kernel spreads connections and no task or socket ever
//! crosses threads. Port 0 picks a free port once; the other listeners join
//! it. Prints `listening on http://ADDR` to stderr once every listener is
//! bound.
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};

const BODY: &[u8] = b"Hello, world!\n";

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// Runs one accept loop on the calling thread's own runtime, forever.
fn serve(listener: std::net::TcpListener) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: keep serving the others.
                Err(e) => {
                    eprintln!("hello-server: accept: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                // Clients hanging up mid-request is not an error worth a line.
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: hello-server ADDR [--threads N]");
        std::process::exit(2)
    };
    let mut addr: Option<SocketAddr> = None;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            a if addr.is_none() => addr = Some(a.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let addr = addr.unwrap_or_else(|| usage());

    // Bind all listeners before announcing the address, so a client that
    // connects as soon as it reads the line can land on any of them.
    let first = listener(addr).unwrap_or_else(|e| {
        eprintln!("hello-server: bind {addr}: {e}");
        std::process::exit(1)
    });
    let bound = first.local_addr().expect("local address of a bound socket");
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listener(bound).unwrap_or_else(|e| {
            eprintln!("hello-server: bind {bound}: {e}");
            std::process::exit(1)
        }));
    }
    let workers: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || serve(l)))
        .collect();
    eprintln!("listening on http://{bound}");
    for worker in workers {
        if let Ok(Err(e)) = worker.join() {
            eprintln!("hello-server: {e}");
            std::process::exit(1);
        }
    }
}
