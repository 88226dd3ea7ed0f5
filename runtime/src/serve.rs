//! Functions: apps that answer HTTP requests (`wrun serve`).
//!
//! A function is either a `wasi:http/proxy` component (it exports
//! `wasi:http/incoming-handler`, and runs unchanged under wasmtime serve and
//! Spin) or a command (a WASI p1 module or p2 component) spoken to in CGI
//! style: the request in environment variables and on stdin, the response on
//! stdout. Every request gets a fresh instance, with its own Store, unless
//! the function opts into reusing instances; then an instance serves up to
//! [`FunctionSpec::max_instance_reuse`] requests one after another, and what
//! one request leaves in its memory the next one sees.
//!
//! A request's instance runs as its own tokio task, under the function's
//! limits: a trap, a timeout or an exhausted memory limit ends that request
//! (and its instance) and nothing else.

use crate::limits::{LimitExceeded, Limits, MemoryLimiter};
use crate::load::{App, AppCode};
use crate::run::{HasLimiter, RunError, classify};
use crate::{Runtime, RuntimeError};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use wrun_host_api::WasiSpec;
use wrun_host_api::fds::FdBudget;
use wrun_host_api::fs::{FsView, GuestFs};
use wrun_host_api::http::OutboundHttp;
use wrun_host_api::net::{Namespace, NetSpec};

mod cgi_output;
#[doc(hidden)]
pub mod fuzzing;

pub use cgi_output::{CGI_BODY_BUFFER, MAX_CGI_HEAD};

/// A response body: streamed from a proxy component, or from a CGI app's
/// stdout.
pub type Body = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// Idle instances kept per function when instances are reused.
const MAX_IDLE: usize = 64;

/// How a function is deployed: its view of the host, and its limits.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Environment and volumes; `args[0]` is the app's name for CGI apps.
    pub wasi: WasiSpec,
    /// Where its outgoing HTTP requests may go.
    pub outbound: OutboundHttp,
    /// Memory per instance, and time per request (`timeout`).
    pub limits: Limits,
    /// Requests one instance may serve; 1 (the default) means a fresh
    /// instance for every request.
    pub max_instance_reuse: u32,
    /// The budget each instance's descriptors ([`Limits::max_fds`]) are
    /// taken from in turn, e.g. its tenant's share; `None`: the process's.
    pub fd_parent: Option<Arc<FdBudget>>,
}

/// The two ways a function speaks HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// A `wasi:http/proxy` component.
    Http,
    /// A command spoken to in CGI style.
    Cgi,
}

impl std::fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FunctionKind::Http => "wasi-http",
            FunctionKind::Cgi => "cgi",
        })
    }
}

/// How one request's instance ended, for logs and metrics.
#[derive(Debug)]
pub enum Outcome {
    /// It answered (or, for CGI, exited with 0), or the client went away
    /// before the response was complete.
    Done,
    Trap(String),
    Timeout,
    /// The time limit was reached while the request body was still
    /// arriving: the client, not the function, was too slow (408).
    BodyTimeout,
    Memory(String),
    /// It broke the protocol: no response, a malformed CGI header, a
    /// non-zero exit.
    Failed(String),
    /// No instance could be made: every slot of the pool is in use.
    Busy(String),
}

/// A request the function could not answer, as the HTTP status to send and
/// the reason (for the log, and for the body in plain words).
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub reason: String,
}

impl Outcome {
    pub fn failure(&self) -> Failure {
        let (status, reason) = match self {
            Outcome::Done => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the function ended without a response".to_owned(),
            ),
            Outcome::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "the function did not answer in time".to_owned(),
            ),
            Outcome::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within the function's time limit".to_owned(),
            ),
            Outcome::Trap(m) | Outcome::Memory(m) => (StatusCode::INTERNAL_SERVER_ERROR, m.clone()),
            Outcome::Failed(m) => (StatusCode::BAD_GATEWAY, m.clone()),
            Outcome::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
        };
        Failure { status, reason }
    }

    fn from_error(error: RunError) -> Outcome {
        match error {
            RunError::LimitExceeded {
                limit: LimitExceeded::Timeout(_),
                ..
            } => Outcome::Timeout,
            e @ RunError::LimitExceeded { .. } => Outcome::Memory(e.to_string()),
            e @ RunError::Busy { .. } => Outcome::Busy(e.to_string()),
            e => Outcome::Trap(e.to_string()),
        }
    }
}

/// A request to a CGI function, as the front end parsed it (RFC 3875).
#[derive(Debug, Clone)]
pub struct CgiRequest {
    pub method: String,
    /// The route prefix the function is mounted at (`SCRIPT_NAME`).
    pub script_name: String,
    /// The rest of the path (`PATH_INFO`).
    pub path_info: String,
    pub query: String,
    pub headers: HeaderMap,
    /// The whole body, received within the function's time limit (see
    /// [`Function::deadline`]).
    pub body: Bytes,
    pub remote_addr: String,
    pub server_name: String,
    pub server_port: u16,
}

/// Store data of a proxy instance.
pub(crate) struct ServeHost {
    ctx: WasiCtx,
    table: ResourceTable,
    fs: GuestFs,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    limiter: MemoryLimiter,
}

impl WasiView for ServeHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ServeHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl HasLimiter for ServeHost {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

pub(crate) fn proxy_linker(
    engine: &wasmtime::Engine,
) -> wasmtime::Result<wasmtime::component::Linker<ServeHost>> {
    let mut linker = wasmtime::component::Linker::new(engine);
    // All of WASI 0.2 rather than just the proxy world's interfaces: Rust's
    // std (and others) import `wasi:cli/environment` and friends even in a
    // proxy. Sockets are linked but deny everything (no network is granted).
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wrun_host_api::fs::add_to_linker(&mut linker, |h: &mut ServeHost| FsView {
        fs: &mut h.fs,
        ctx: &mut h.ctx,
        table: &mut h.table,
    })?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// An instance kept for its next request.
struct Idle {
    store: Store<ServeHost>,
    proxy: Proxy,
    served: u32,
}

enum Handler {
    Http(ProxyPre<ServeHost>),
    Cgi,
}

/// A deployed function: its compiled app, ready to instantiate per request.
pub struct Function {
    runtime: Arc<Runtime>,
    app: App,
    spec: FunctionSpec,
    handler: Handler,
    idle: Mutex<Vec<Idle>>,
}

impl Runtime {
    /// Prepares `app` to serve requests: tells a proxy from a command, checks
    /// that everything it imports is provided and that its volumes exist.
    /// Nothing runs yet.
    pub fn function(self: &Arc<Self>, app: App, spec: FunctionSpec) -> Result<Function, RunError> {
        spec.wasi.validate()?;
        let handler = match &app.code {
            AppCode::Component(component) => {
                let engine = self.engine();
                let exports_handler = component
                    .component_type()
                    .exports(engine)
                    .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"));
                if exports_handler {
                    let linker = self.proxy_linker()?;
                    let pre = linker
                        .instantiate_pre(component)
                        .map_err(|e| self.component_link_error(&app, linker, component, e))?;
                    let pre = ProxyPre::new(pre).map_err(|e| RunError::Link {
                        app: app.name.clone(),
                        reason: format!("{e:#}"),
                    })?;
                    Handler::Http(pre)
                } else {
                    self.check_command(&app)?;
                    Handler::Cgi
                }
            }
            AppCode::Module(_) => {
                self.check_command(&app)?;
                Handler::Cgi
            }
        };
        if spec.limits.timeout.is_some() || spec.limits.cpu_time.is_some() {
            self.start_ticker();
        }
        Ok(Function {
            runtime: self.clone(),
            app,
            spec,
            handler,
            idle: Mutex::default(),
        })
    }

    fn proxy_linker(&self) -> Result<&wasmtime::component::Linker<ServeHost>, RuntimeError> {
        if let Some(linker) = self.proxy_linker.get() {
            return Ok(linker);
        }
        let linker = proxy_linker(&self.engine).map_err(RuntimeError::Linker)?;
        Ok(self.proxy_linker.get_or_init(|| linker))
    }
}

impl Function {
    pub fn kind(&self) -> FunctionKind {
        match self.handler {
            Handler::Http(_) => FunctionKind::Http,
            Handler::Cgi => FunctionKind::Cgi,
        }
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// When a request admitted at `admitted` runs out of time: the
    /// function's timeout counts from admission, so that it also bounds
    /// receiving the request's body.
    pub fn deadline(&self, admitted: Instant) -> Option<Instant> {
        self.spec.limits.timeout.map(|timeout| admitted + timeout)
    }

    /// Instances kept for reuse right now.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    /// Answers one request with a proxy function. The instance runs as its own
    /// task; `done` is called with its outcome once it has finished, which
    /// for a streamed body is after the response has been returned here.
    /// The instance is stopped at `deadline` (from [`Function::deadline`]).
    /// The guest reads the request body itself, under that deadline: running
    /// out of time while it waits for body bytes that have not arrived is
    /// the client's doing ([`Outcome::BodyTimeout`], 408).
    pub async fn handle_http<B>(
        self: &Arc<Self>,
        request: http::Request<B>,
        deadline: Option<Instant>,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<Response<Body>, Failure>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Handler::Http(pre) = &self.handler else {
            return Err(internal("not a wasi:http function"));
        };
        let (mut store, proxy, served) = match self.take_idle() {
            Some(idle) => (idle.store, Some(idle.proxy), idle.served),
            None => (self.new_store().map_err(|e| internal(&e))?, None, 0),
        };
        let (response_tx, response_rx) = tokio::sync::oneshot::channel();
        let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
        let body_state = Arc::new(AtomicU8::new(BODY_IDLE));
        let request = request.map(|inner| WatchedBody {
            inner,
            state: body_state.clone(),
        });
        let mut http = store.data_mut().http();
        let request = http
            .new_incoming_request(
                wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
                request,
            )
            .map_err(|e| Failure {
                status: StatusCode::BAD_REQUEST,
                reason: format!("{e:#}"),
            })?;
        let out = http
            .new_response_outparam(response_tx)
            .map_err(|e| internal(&e))?;
        let pre = pre.clone();
        let function = self.clone();
        tokio::spawn(async move {
            let run = async {
                let proxy = match proxy {
                    Some(proxy) => proxy,
                    None => pre.instantiate_async(&mut store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await?;
                wasmtime::Result::Ok(proxy)
            };
            let result = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, run).await,
                None => Ok(run.await),
            };
            let outcome = match result {
                Ok(Ok(proxy)) => {
                    function.keep_idle(store, proxy, served + 1);
                    Outcome::Done
                }
                Ok(Err(error)) => {
                    let refused = store.data().limiter.refused;
                    let limits = &function.spec.limits;
                    match classify(&function.app, Ok(Err(error)), refused, limits) {
                        Ok(_) => Outcome::Done,
                        Err(e) => Outcome::from_error(e),
                    }
                }
                Err(_elapsed) if body_state.load(Ordering::Relaxed) == BODY_WAITING => {
                    Outcome::BodyTimeout
                }
                Err(_elapsed) => Outcome::Timeout,
            };
            // A failure goes out before the store (and with it the response
            // sender) is dropped, so a request still waiting learns why. A
            // success sends nothing: the response went out already, or the
            // guest returned without one, which the closed channel tells.
            if !matches!(outcome, Outcome::Done) {
                let _ = outcome_tx.send(outcome.failure());
            }
            done(outcome);
        });
        match response_rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: format!("the function answered with an error: {code:?}"),
            }),
            Err(_) => Err(outcome_rx.await.unwrap_or_else(|_| Outcome::Done.failure())),
        }
    }

    /// Answers one request with a CGI function. The response head goes out
    /// as soon as the app has written its header block; the body streams
    /// from its stdout while it runs (see [`CGI_BODY_BUFFER`]). The
    /// instance runs as its own task until `deadline` (from
    /// [`Function::deadline`]: the time spent receiving the body is already
    /// spent); `done` gets its outcome when it has ended. A failure before
    /// the head is the returned error; after it, the body ends with an
    /// error, so the client sees a truncated response.
    pub async fn handle_cgi(
        self: &Arc<Self>,
        request: CgiRequest,
        deadline: Option<Instant>,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<Response<Body>, Failure> {
        let (stdout, head, body) = cgi_output::channel();
        let function = self.clone();
        tokio::spawn(async move {
            let outcome = function.run_cgi(request, deadline, stdout.clone()).await;
            let outcome = match outcome {
                // Not the function's failure: nobody reads what it writes.
                Outcome::Failed(_) | Outcome::Trap(_) if stdout.client_gone() => Outcome::Done,
                Outcome::Done if !stdout.head_sent() => Outcome::Failed(
                    "the CGI app's output has no header block (expected header lines, a \
                     blank line, then the body)"
                        .to_owned(),
                ),
                outcome => outcome,
            };
            let failure = (!matches!(outcome, Outcome::Done)).then(|| outcome.failure());
            stdout.finish(failure);
            done(outcome);
        });
        let (status, headers) = head
            .await
            .map_err(|_| internal("the function's task ended without a response"))??;
        let mut response = Response::new(body.boxed_unsync());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    async fn run_cgi(
        &self,
        request: CgiRequest,
        deadline: Option<Instant>,
        stdout: cgi_output::CgiStdout,
    ) -> Outcome {
        let mut spec = self.spec.wasi.clone();
        if spec.args.is_empty() {
            spec.args.push(self.app.name.clone());
        }
        spec.env.extend(cgi_env(&request));
        let stdin = MemoryInputPipe::new(request.body);
        let fds = self.instance_fds();
        let net = match Namespace::start(&NetSpec::default(), fds).await {
            Ok(net) => net,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let mut limits = self.spec.limits;
        if let Some(deadline) = deadline {
            limits.timeout = Some(deadline.saturating_duration_since(Instant::now()));
        }
        let captured = stdout.clone();
        let result = self
            .runtime
            .run_with(&self.app, &spec, net, &limits, |builder| {
                builder.stdin(stdin).stdout(captured);
            })
            .await;
        // A protocol error stops the guest with a trap; the error is the
        // outcome, not the trap.
        if let Some(why) = stdout.protocol_error() {
            return Outcome::Failed(why);
        }
        match result {
            Ok(0) => Outcome::Done,
            Ok(code) => Outcome::Failed(format!("the CGI app exited with code {code}")),
            Err(e) => Outcome::from_error(e),
        }
    }

    fn new_store(&self) -> Result<Store<ServeHost>, String> {
        let builder = &mut self.spec.wasi.builder(false).map_err(|e| e.to_string())?;
        let fds = self.instance_fds();
        let outbound = self.spec.outbound.for_instance(fds.clone());
        let fs = self
            .spec
            .wasi
            .guest_fs(fds, false)
            .map_err(|e| e.to_string())?;
        let host = |limiter| ServeHost {
            ctx: builder.build(),
            table: ResourceTable::new(),
            fs,
            http: WasiHttpCtx::new(),
            outbound,
            limiter,
        };
        Ok(self.runtime.new_store(&self.spec.limits, host))
    }

    /// A new instance's descriptor budget.
    fn instance_fds(&self) -> Arc<FdBudget> {
        match &self.spec.fd_parent {
            Some(parent) => FdBudget::child(parent, self.spec.limits.max_fds),
            None => FdBudget::instance(self.spec.limits.max_fds),
        }
    }

    fn take_idle(&self) -> Option<Idle> {
        if self.spec.max_instance_reuse <= 1 {
            return None;
        }
        self.idle.lock().ok()?.pop()
    }

    fn keep_idle(&self, store: Store<ServeHost>, proxy: Proxy, served: u32) {
        if served >= self.spec.max_instance_reuse {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle {
                store,
                proxy,
                served,
            });
        }
    }
}

impl Runtime {
    /// Refuses an app that has no command entry point (it could only be a
    /// library, or a proxy for another world).
    fn check_command(&self, app: &App) -> Result<(), RunError> {
        let ok = match &app.code {
            AppCode::Module(module) => {
                matches!(
                    module.get_export("_start"),
                    Some(wasmtime::ExternType::Func(_))
                )
            }
            AppCode::Component(component) => component
                .component_type()
                .exports(self.engine())
                .any(|(name, _)| name.starts_with("wasi:cli/run@")),
        };
        if ok {
            return Ok(());
        }
        Err(RunError::NoEntryPoint {
            app: app.name.clone(),
            reason: "a function must be a wasi:http proxy component (exporting \
                     `wasi:http/incoming-handler`) or a command (exporting `_start` or \
                     `wasi:cli/run`) to be served in CGI style"
                .to_owned(),
        })
    }
}

fn internal(reason: &(impl std::fmt::Display + ?Sized)) -> Failure {
    Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: reason.to_string(),
    }
}

/// The CGI/1.1 meta-variables of a request (RFC 3875 section 4.1).
fn cgi_env(request: &CgiRequest) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
        (
            "SERVER_SOFTWARE".to_owned(),
            concat!("wrun/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        ("REQUEST_METHOD".to_owned(), request.method.clone()),
        ("SCRIPT_NAME".to_owned(), request.script_name.clone()),
        ("PATH_INFO".to_owned(), request.path_info.clone()),
        ("QUERY_STRING".to_owned(), request.query.clone()),
        ("REMOTE_ADDR".to_owned(), request.remote_addr.clone()),
        ("SERVER_NAME".to_owned(), request.server_name.clone()),
        ("SERVER_PORT".to_owned(), request.server_port.to_string()),
    ];
    if !request.body.is_empty() {
        env.push(("CONTENT_LENGTH".to_owned(), request.body.len().to_string()));
    }
    for (name, value) in &request.headers {
        let Ok(value) = value.to_str() else { continue };
        let var = match name.as_str() {
            "content-type" => "CONTENT_TYPE".to_owned(),
            // Already given as CONTENT_LENGTH (of the body as received), and
            // credentials are not for the app to see twice.
            "content-length" | "proxy-authorization" => continue,
            other => format!("HTTP_{}", other.to_ascii_uppercase().replace('-', "_")),
        };
        // Two spellings of one header (`X-A` and `X_A`) must not let one
        // replace the other's variable silently: the first one wins.
        if !env.iter().any(|(k, _)| *k == var) {
            env.push((var, value.to_owned()));
        }
    }
    env
}

/// A request body the guest has not finished reading; the guest is not
/// waiting for it.
const BODY_IDLE: u8 = 0;
/// The guest asked for more of the body and the client had not sent it yet.
const BODY_WAITING: u8 = 1;
/// The body has ended.
const BODY_ENDED: u8 = 2;

/// A proxy's request body, watched so that a timeout can tell a client that
/// stopped sending from a function that stopped answering.
struct WatchedBody<B> {
    inner: B,
    state: Arc<AtomicU8>,
}

impl<B: http_body::Body + Unpin> http_body::Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Pending => BODY_WAITING,
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => BODY_ENDED,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => BODY_ENDED,
            Poll::Ready(Some(Ok(_))) => BODY_IDLE,
        };
        self.state.store(state, Ordering::Relaxed);
        polled
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
    use http::HeaderValue;

    #[test]
    fn cgi_environment() {
        let mut headers = HeaderMap::new();
        headers.insert("x-foo", HeaderValue::from_static("bar"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let env = cgi_env(&CgiRequest {
            method: "POST".into(),
            script_name: "/cgi".into(),
            path_info: "/echo".into(),
            query: "a=1".into(),
            headers,
            body: Bytes::from_static(b"hi"),
            remote_addr: "127.0.0.1".into(),
            server_name: "localhost".into(),
            server_port: 8080,
        });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTP_X_FOO"), Some("bar"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("CONTENT_LENGTH"), Some("2"));
        assert_eq!(get("PATH_INFO"), Some("/echo"));
    }
}
