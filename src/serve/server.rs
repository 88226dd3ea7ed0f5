//! The public listener: one single-threaded tokio runtime per worker thread,
//! each accepting on its own socket bound to the same address with
//! SO_REUSEPORT, so the kernel spreads connections over the workers and a
//! request stays on one core from accept to response (measured: +25-35%
//! over tokio's multi-thread scheduler, see notes/serve-performance.md).

use super::config::normalize_host;
use super::metrics::Rejection;
use super::{Deployed, Platform};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, watch};
use wrun_runtime::{Body, CgiRequest, Failure, FunctionKind, Outcome};

/// How long a client may take to send a request's head, once it started.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const BACKLOG: i32 = 1024;

/// How long a connection may sit with no request in flight and no bytes
/// moving before it is closed: from accept, and between the requests of a
/// keep-alive or HTTP/2 connection. nginx closes such connections after 60 s
/// (`client_header_timeout`) and 75 s (`keepalive_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections one worker holds open, however many descriptors
/// the process may have.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;

/// How the process's file descriptors are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// Connections one worker holds open at once; more wait in the backlog.
    pub connections_per_worker: usize,
    /// Descriptors left for what guests cause (sockets, files), across all
    /// instances.
    pub guest_budget: u64,
}

/// Shares `nofile` descriptors (the soft `RLIMIT_NOFILE`) between `threads`
/// workers' connections and the guests. A reserve of 256 + nofile/16 is kept
/// for the listeners, the compile cache, config and volume files and the
/// admin API; connections get half of the rest, spread over the workers (at
/// least one each, at most [`MAX_CONNECTIONS_PER_WORKER`]); guests get the
/// other half. So an attacker holding every connection slot still leaves
/// the guests and the reserve their descriptors, and a guest using all of
/// its budget cannot stop the server accepting.
pub fn fd_plan(nofile: u64, threads: usize) -> FdPlan {
    let reserve = 256 + nofile / 16;
    let rest = nofile.saturating_sub(reserve);
    let connections = rest / 2;
    let per_worker = connections / threads.max(1) as u64;
    FdPlan {
        connections_per_worker: usize::try_from(per_worker)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_CONNECTIONS_PER_WORKER),
        guest_budget: rest - connections,
    }
}

/// What a worker needs to know besides its listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long SIGTERM waits for running requests.
    pub drain: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`FdPlan::connections_per_worker`].
    pub max_connections: usize,
}

/// Binds `threads` listening sockets to `addr` with SO_REUSEPORT (the first
/// one picks the port when `addr` has port 0). Errors name the address.
pub fn bind(addr: SocketAddr, threads: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let mut listeners = Vec::with_capacity(threads);
    let mut addr = addr;
    for _ in 0..threads.max(1) {
        let family = if addr.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let bound = (|| -> std::io::Result<std::net::TcpListener> {
            let fd = rustix::net::socket(family, SocketType::STREAM, None)?;
            sockopt::set_socket_reuseaddr(&fd, true)?;
            sockopt::set_socket_reuseport(&fd, true)?;
            rustix::net::bind(&fd, &addr)?;
            rustix::net::listen(&fd, BACKLOG)?;
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(listener)
        })()
        .map_err(|e| anyhow::anyhow!("failed to listen on `{addr}`: {e}"))?;
        addr = bound.local_addr()?;
        listeners.push(bound);
    }
    Ok(listeners)
}

/// Serves requests on `listener` until `shutdown` turns true, then stops
/// accepting and lets the connections finish their requests, for at most
/// `options.drain`.
pub async fn serve(
    platform: Arc<Platform>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    let connections = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let epoch = Instant::now();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit?,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset while
                    // queued: keep serving the others.
                    tracing::warn!("failed to accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(epoch));
        let platform = platform.clone();
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request| {
                let busy = Busy::new(activity.clone());
                let response = handle(platform.clone(), peer, local, request);
                async move {
                    let response = response.await?;
                    Ok::<_, Infallible>(response.map(|inner| ConnBody { inner, _busy: busy }))
                }
            })
        };
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let connection = builder.serve_connection(io, service).into_owned();
        let connection = graceful.watch(connection);
        let idle_timeout = options.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                },
                () = activity.idle(idle_timeout) => {
                    tracing::debug!(%peer, "closing a connection idle for {}",
                        humantime::format_duration(idle_timeout));
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running after the drain timeout of {}; stopping them",
            humantime::format_duration(options.drain)
        );
    }
    Ok(())
}

/// What a connection is doing, for its idle deadline: when bytes last moved
/// either way, and how many requests are in flight (from the moment hyper
/// has their head until their response body is done or dropped).
struct Activity {
    epoch: Instant,
    /// Nanoseconds after `epoch`.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        };
        activity.touch();
        activity
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    /// Resolves once no request has been in flight and no byte has moved for
    /// `timeout`. A running request (however long its function takes)
    /// holds the connection open; so do bytes arriving, slowly or not (a
    /// request head that takes too long is hyper's header timeout's).
    async fn idle(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let wake = if self.in_flight.load(Ordering::Relaxed) > 0 {
                now + timeout
            } else {
                let last = self.epoch + Duration::from_nanos(self.last.load(Ordering::Relaxed));
                let deadline = last + timeout;
                if deadline <= now {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// One request in flight on a connection; the idle clock restarts when it
/// ends.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is
/// done (or the connection drops it).
struct ConnBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for ConnBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, noting when bytes move.
struct Watched {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = polled {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(1..)) = polled {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// Routes one request, applies its function's limits, and runs it.
async fn handle(
    platform: Arc<Platform>,
    peer: SocketAddr,
    local: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let id = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
    let table = platform.table.load_full();
    let host = request_host(request.uri(), request.headers());
    let Some((deployed, prefix)) = table.route(host, request.uri().path()) else {
        platform.unrouted.fetch_add(1, Ordering::Relaxed);
        return Ok(plain(
            StatusCode::NOT_FOUND,
            id,
            "no function serves this path\n",
        ));
    };
    let span = tracing::info_span!(
        "request",
        id,
        tenant = %deployed.tenant.name,
        function = %deployed.name
    );
    let _entered = span.enter();
    let response = match admit(deployed, &request) {
        Ok(in_flight) => {
            drop(_entered);
            let response = run(deployed, request, in_flight, id, prefix, peer, local).await;
            response.unwrap_or_else(|failure| {
                tracing::debug!(status = %failure.status, "{}", failure.reason);
                failure_response(&failure, id)
            })
        }
        Err(why) => response_with_id(rejected(deployed, why), id),
    };
    deployed
        .metrics
        .responded(response.status().as_u16(), started.elapsed());
    Ok(response)
}

/// Checks the request against the function's limits before anything runs:
/// its body size, and the tenant's and the function's free slots.
fn admit(deployed: &Arc<Deployed>, request: &Request<Incoming>) -> Result<InFlight, Rejection> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > deployed.plan.limits.max_body) {
        return Err(Rejection::BodySize);
    }
    let tenant = deployed.tenant.slots.clone().try_acquire_owned();
    let function = deployed.slots.clone().try_acquire_owned();
    let (Ok(tenant), Ok(function)) = (tenant, function) else {
        return Err(Rejection::Concurrency);
    };
    deployed.metrics.started();
    Ok(InFlight {
        deployed: deployed.clone(),
        _permits: (tenant, function),
        admitted: tokio::time::Instant::now(),
    })
}

/// The answer to a request turned away before its function ran.
fn rejected(deployed: &Deployed, why: Rejection) -> Response<Body> {
    deployed.metrics.rejected(why);
    match why {
        Rejection::BodySize => too_large(deployed.plan.limits.max_body),
        Rejection::Concurrency => {
            let mut response = plain_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "the function is at its concurrency limit; retry shortly\n",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// A request's hold on its slots and its in-flight count, released when the
/// instance has finished (which, for a streamed response, is after the
/// response head went out), or when the request ends before one started.
struct InFlight {
    deployed: Arc<Deployed>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    /// When the request was admitted: its function's timeout counts from
    /// here.
    admitted: tokio::time::Instant,
}

impl InFlight {
    fn finish(self, outcome: Outcome, id: u64) {
        self.deployed.metrics.finished(&outcome);
        let reason = match &outcome {
            Outcome::Done => return,
            Outcome::Timeout => "the time limit was reached",
            Outcome::BodyTimeout => {
                "the time limit was reached while the request body was still arriving"
            }
            Outcome::Trap(m) | Outcome::Memory(m) | Outcome::Failed(m) | Outcome::Busy(m) => {
                m.as_str()
            }
        };
        tracing::warn!(
            request = id,
            tenant = self.deployed.tenant.name,
            function = self.deployed.name,
            "request failed: {reason}"
        );
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.deployed.metrics.ended();
    }
}

/// Runs the request's function. Its timeout counts from admission, and so
/// covers receiving the request body: a CGI app gets the body whole before
/// it starts, a proxy reads it as it runs; either way a body that has not
/// arrived when the time is up is answered 408 and frees the slots.
async fn run(
    deployed: &Arc<Deployed>,
    request: Request<Incoming>,
    in_flight: InFlight,
    id: u64,
    prefix: &str,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Response<Body>, Failure> {
    let max_body = deployed.plan.limits.max_body;
    let admitted = in_flight.admitted;
    let done = move |outcome: Outcome| in_flight.finish(outcome, id);
    let mut response = match deployed.function.kind() {
        FunctionKind::Http => {
            let request = request.map(|body| CappedBody {
                inner: body,
                remaining: max_body,
                limit: max_body,
            });
            let deadline = deployed.function.deadline(admitted);
            deployed
                .function
                .handle_http(request, deadline, done)
                .await?
        }
        FunctionKind::Cgi => {
            let deadline = deployed.function.deadline(admitted);
            let (parts, body) = request.into_parts();
            let collect = http_body_util::Limited::new(body, max_body as usize).collect();
            let collected = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, collect).await,
                None => Ok(collect.await),
            };
            let Ok(collected) = collected else {
                let failure = Outcome::BodyTimeout.failure();
                done(Outcome::BodyTimeout);
                return Err(failure);
            };
            let body = match collected {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    if e.is::<http_body_util::LengthLimitError>() {
                        return Ok(response_with_id(
                            rejected(deployed, Rejection::BodySize),
                            id,
                        ));
                    }
                    return Err(Failure {
                        status: StatusCode::BAD_REQUEST,
                        reason: format!("failed to read the request body: {e}"),
                    });
                }
            };
            let path = parts.uri.path();
            let path_info = if prefix == "/" {
                path
            } else {
                &path[prefix.len().min(path.len())..]
            };
            let cgi = CgiRequest {
                method: parts.method.to_string(),
                script_name: if prefix == "/" {
                    String::new()
                } else {
                    prefix.to_owned()
                },
                path_info: path_info.to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                server_name: request_host(&parts.uri, &parts.headers)
                    .map_or_else(|| local.ip().to_string(), str::to_ascii_lowercase),
                headers: parts.headers,
                body,
                remote_addr: peer.ip().to_string(),
                server_port: local.port(),
            };
            deployed.function.handle_cgi(cgi, deadline, done).await?
        }
    };
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    Ok(response)
}

/// The request's host as routes compare it (see [`normalize_host`]): from
/// the URI (HTTP/2, or an absolute-form request) or the Host header.
fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    let authority = match uri.host() {
        Some(host) => host,
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    Some(normalize_host(authority))
}

fn too_large(max: u64) -> Response<Body> {
    plain_body(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body exceeds this function's limit of {max} bytes\n"),
    )
}

fn failure_response(failure: &Failure, id: u64) -> Response<Body> {
    // What went wrong inside the guest (a trap message, a backtrace) stays
    // in the server's log; the client gets the kind of failure and the id to
    // look it up by.
    let text = match failure.status {
        StatusCode::GATEWAY_TIMEOUT => "the function did not answer in time".to_owned(),
        StatusCode::REQUEST_TIMEOUT => {
            "the request body did not arrive within the function's time limit".to_owned()
        }
        StatusCode::BAD_REQUEST => failure.reason.clone(),
        StatusCode::BAD_GATEWAY => "the function's response was invalid".to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => {
            "the server is at its instance limit; retry shortly".to_owned()
        }
        _ => "the function failed".to_owned(),
    };
    let mut response = plain(failure.status, id, &format!("{text} (request {id})\n"));
    if failure.status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn plain(status: StatusCode, id: u64, text: &str) -> Response<Body> {
    response_with_id(plain_body(status, text), id)
}

fn response_with_id(mut response: Response<Body>, id: u64) -> Response<Body> {
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    response
}

fn plain_body(status: StatusCode, text: &str) -> Response<Body> {
    let body = http_body_util::Full::new(Bytes::from(text.to_owned()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A request body that fails once more than `limit` bytes have arrived: the
/// guest's read then reports `HTTP-request-body-size` (a chunked body has no
/// length to check up front).
struct CappedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                let limit = self.limit;
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(limit),
                ))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_shared_between_connections_guests_and_a_reserve() {
        for (nofile, threads, per_worker, guests) in [
            // A common default soft limit: reserve 320, 352 for connections.
            (1024, 2, 176, 352),
            (1024, 1, 352, 352),
            // This machine's limit, and a raised hard limit.
            (20_000, 2, 4623, 9247),
            (1 << 20, 2, 10_000, 491_392),
            (1 << 20, 64, 7678, 491_392),
            // Too few to share: still one connection per worker.
            (256, 4, 1, 0),
            (0, 1, 1, 0),
            (u64::MAX, 8, 10_000, 8_646_911_284_551_352_192),
        ] {
            let plan = fd_plan(nofile, threads);
            assert_eq!(
                plan,
                FdPlan {
                    connections_per_worker: per_worker,
                    guest_budget: guests
                },
                "nofile {nofile}, {threads} threads"
            );
            let reserve = 256 + nofile / 16;
            if nofile > reserve + 2 * threads as u64 {
                let connections = plan.connections_per_worker as u64 * threads as u64;
                assert!(
                    connections + plan.guest_budget + reserve <= nofile,
                    "nofile {nofile}: the plan needs more than there is"
                );
            }
        }
    }
}
