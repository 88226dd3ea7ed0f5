//! `wrun serve`: HTTP functions for many tenants, driven by a real HTTP
//! client (ureq, or raw bytes where a header must be exact) over 127.0.0.1
//! with ports picked by the kernel.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use wrun_test_artifacts::http;

const ADMIN_TOKEN: &str = "admin-token-0123456789";
const TOKEN_A: &str = "tenant-a-token-0123456789";
const TOKEN_B: &str = "tenant-b-token-0123456789";

/// A running `wrun serve` and where it listens.
struct Server {
    process: Running,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

impl Server {
    /// `wrun serve ARGS --listen 127.0.0.1:0`, once it listens.
    fn start(args: &[&str]) -> Server {
        Server::start_with(
            wrun().args(["serve", "--listen", "127.0.0.1:0"]).args(args),
            false,
        )
    }

    fn start_with(wrun: Wrun, with_admin: bool) -> Server {
        let process = wrun.spawn();
        let addr = addr_after(&process.wait_for_line("listening on http://"), "http://");
        let admin = with_admin
            .then(|| addr_after(&process.wait_for_line("admin API on http://"), "http://"));
        Server {
            process,
            addr,
            admin,
            agent: agent(),
        }
    }

    /// A config file in `dir`, served with the admin API on a free port.
    fn config(dir: &Path, toml: &str) -> Server {
        let path = dir.join("serve.toml");
        std::fs::write(&path, toml).unwrap();
        Server::config_file(&path, &[])
    }

    /// `wrun serve --config PATH EXTRA...` with the admin API on a free
    /// port, and the test tokens in the environment (`TOKEN_A` also as
    /// `ACME_TOKEN`, for the example config).
    fn config_file(path: &Path, extra: &[&str]) -> Server {
        Server::config_file_with(wrun(), path, extra)
    }

    /// As [`Server::config_file`], with `wrun` started as `base` says (e.g.
    /// through `prlimit`).
    fn config_file_with(base: Wrun, path: &Path, extra: &[&str]) -> Server {
        let wrun = base
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--config")
            .arg(path)
            .env("WRUN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TOKEN_A", TOKEN_A)
            .env("TOKEN_B", TOKEN_B)
            .env("ACME_TOKEN", TOKEN_A);
        Server::start_with(wrun, true)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("admin API"))
    }

    /// GET `path`: the status and the body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut response = self.agent.get(self.url(path)).call().expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        let mut response = self.agent.post(self.url(path)).send(body).expect("POST");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// An admin API call with `token`: the status and the body.
    fn admin(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let url = self.admin_url(path);
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = self
            .agent
            .run(request.body(()).unwrap())
            .expect("admin call");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// Deploys `wasm` as `tenant/name` with `config` (a function table).
    fn deploy(
        &self,
        token: &str,
        tenant: &str,
        name: &str,
        config: &str,
        wasm: &[u8],
    ) -> (u16, String) {
        let boundary = "wrun-test-boundary-7d3f";
        let mut body = Vec::new();
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{config}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"wasm\"; filename=\"app.wasm\"\r\n\
             Content-Type: application/wasm\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(wasm);
        write!(body, "\r\n--{boundary}--\r\n").unwrap();
        let mut response = self
            .agent
            .put(self.admin_url(&format!("/v1/tenants/{tenant}/functions/{name}")))
            .header("authorization", &format!("Bearer {token}"))
            .content_type(&format!("multipart/form-data; boundary={boundary}"))
            .send(&body[..])
            .expect("deploy");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }
}

/// A raw HTTP/1.0 request (so the body comes unchunked) with an exact Host
/// header; the status and body.
fn raw_get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn toml_path(path: &str) -> String {
    format!("{path:?}")
}

#[test]
fn serves_one_component_like_wasmtime_serve() {
    let server = Server::start(&[http::HELLO]);
    for _ in 0..3 {
        // The same agent keeps the connection alive between requests.
        assert_eq!(server.get("/"), (200, "Hello, world!\n".to_owned()));
    }
    assert_eq!(server.get("/any/path?x=1").0, 200);
}

#[test]
fn fresh_instance_per_request_unless_reuse_is_asked() {
    let server = Server::start(&[http::FN]);
    for _ in 0..3 {
        assert_eq!(server.get("/counter"), (200, "1\n".to_owned()));
    }
    let reused = Server::start(&["--max-instance-reuse", "100", http::FN]);
    let counts: Vec<String> = (0..3).map(|_| reused.get("/counter").1).collect();
    assert!(
        counts.iter().any(|c| c != "1\n"),
        "an instance was reused: {counts:?}"
    );
}

#[test]
fn routes_by_path_and_host() {
    let dir = tempdir();
    // Within one tenant routes may overlap: a host wins over a path, then
    // the longest prefix.
    let config = format!(
        r#"
version = 1
[tenants.a.functions.api]
wasm = {fn_}
routes = ["/env", "/hello"]
env = {{ WHO = "api" }}
[tenants.a.functions.site]
wasm = {fn_}
routes = ["site.test"]
env = {{ WHO = "site" }}
[tenants.b.functions.cgi]
wasm = {cgi}
routes = ["cgi.test/cgi"]
[tenants.b.functions.deeper]
wasm = {cgi}
routes = ["cgi.test/cgi/status"]
"#,
        fn_ = toml_path(http::FN),
        cgi = toml_path(P1.cgi),
    );
    let server = Server::config(dir.path(), &config);
    assert_eq!(
        raw_get(server.addr, "a.test", "/env?name=WHO"),
        (200, "api".to_owned())
    );
    // The request's host, however it is spelled.
    for host in ["site.test", "SITE.TEST:80", "Site.Test.", "site.test.:8080"] {
        assert_eq!(
            raw_get(server.addr, host, "/env?name=WHO"),
            (200, "site".to_owned()),
            "{host}"
        );
    }
    assert_eq!(server.get("/hello").0, 200);
    // Segment-wise prefixes: `/hello` does not take `/helloworld`.
    assert_eq!(server.get("/helloworld").0, 404);
    for host in ["cgi.test", "CGI.test.:1"] {
        assert_eq!(
            raw_get(server.addr, host, "/cgi/hello"),
            (200, "hello from cgi\n".to_owned()),
            "{host}"
        );
    }
    // The longer prefix takes the request: `deeper` sees an empty
    // PATH_INFO, where `cgi` would have answered 418.
    assert_eq!(
        raw_get(server.addr, "cgi.test", "/cgi/status?code=418"),
        (404, "not found\n".to_owned())
    );
    assert_eq!(server.get("/cgi/hello").0, 404);
    assert_eq!(server.get("/nothing").0, 404);
}

fn cgi_function(apps: &Apps) {
    let dir = tempdir();
    let config = format!(
        "version = 1\n[tenants.t.functions.cgi]\nwasm = {}\nroutes = [\"/cgi\"]\n",
        toml_path(apps.cgi)
    );
    let server = Server::config(dir.path(), &config);
    assert_eq!(
        server.get("/cgi/hello"),
        (200, "hello from cgi\n".to_owned())
    );
    let mut response = server
        .agent
        .post(server.url("/cgi/echo?q=1"))
        .header("x-foo", "bar")
        .send(&b"posted body"[..])
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-method"], "POST");
    assert_eq!(response.headers()["x-query"], "q=1");
    assert_eq!(response.headers()["x-header-foo"], "bar");
    assert_eq!(response.body_mut().read_to_string().unwrap(), "posted body");
    assert_eq!(
        server.get("/cgi/status?code=418"),
        (418, "status 418\n".to_owned())
    );
    // Each request is a fresh process: the counter never carries over.
    assert_eq!(server.get("/cgi/counter").1, "1\n");
    assert_eq!(server.get("/cgi/counter").1, "1\n");
    // A broken CGI response or a failing app is the gateway's error, and the
    // server goes on.
    assert_eq!(server.get("/cgi/nohead").0, 502);
    assert_eq!(server.get("/cgi/exit?code=3").0, 502);
    // A header block is held up to 64 KiB, and must end within it.
    let (status, body) = server.get("/cgi/bighead?kib=100");
    assert_eq!(status, 502, "{body}");
    assert_eq!(server.get("/cgi/bighead?kib=10").0, 502);
    // Once the head is out, a failure can only cut the body short: the
    // chunked body never gets its last chunk, and the log names the request.
    let complete = raw_http11(server.addr, "/cgi/hello");
    assert!(complete.ends_with("0\r\n\r\n"), "{complete:?}");
    let cut = raw_http11(server.addr, "/cgi/partial?code=7");
    assert!(cut.starts_with("HTTP/1.1 200 "), "{cut:?}");
    assert!(
        cut.contains("partial body") && !cut.ends_with("0\r\n\r\n"),
        "{cut:?}"
    );
    let id = header_of(&cut, "x-request-id");
    // (A component's exit code is only success or failure: 1.)
    let line = server.process.wait_for_line(&format!("request={id} "));
    assert!(line.contains("the CGI app exited with code"), "{line}");
    assert_eq!(server.get("/cgi/hello").0, 200);
}

/// A CGI app's body streams: it may be far larger than the app's memory
/// limit (and than the 64 MiB that used to be buffered).
fn cgi_output_streams_past_the_memory_limit(apps: &Apps) {
    let dir = tempdir();
    let config = format!(
        "version = 1\n[tenants.t]\nlimits = {{ memory = \"16m\", timeout = \"5m\" }}\n\
         [tenants.t.functions.cgi]\nwasm = {}\nroutes = [\"/cgi\"]\n",
        toml_path(apps.cgi)
    );
    let server = Server::config(dir.path(), &config);
    let mut conn = raw_request(
        server.addr,
        "GET /cgi/bytes?mib=128 HTTP/1.0\r\nHost: x\r\n\r\n",
    );
    let head = read_head(&mut conn);
    assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
    assert_eq!(header_of(&head, "x-bytes"), (128u64 << 20).to_string());
    assert_eq!(
        std::io::copy(&mut conn, &mut std::io::sink()).unwrap(),
        128 << 20
    );
}

for_both_targets!(cgi_function, cgi_output_streams_past_the_memory_limit);

/// Clients that ask for an endless CGI response and vanish after its head
/// do not keep the guest writing until its timeout: the guest stops, its
/// slot is free for the next client (the tenant has one), and nobody's
/// departure counts as the function's failure.
#[test]
fn clients_that_vanish_free_the_cgi_guests_slot() {
    let dir = tempdir();
    let config = format!(
        "version = 1\n[tenants.t]\nlimits = {{ max_concurrency = 1, memory = \"16m\", \
         timeout = \"10m\" }}\n[tenants.t.functions.f]\nwasm = {}\nroutes = [\"/cgi\"]\n",
        toml_path(P1.cgi)
    );
    let server = Server::config(dir.path(), &config);
    let in_flight = "wrun_instances_in_flight{tenant=\"t\",function=\"f\"}";
    for _ in 0..5 {
        // 1 TiB: at 1 GiB/s, far past the test's run if the guest went on.
        let mut conn = raw_request(
            server.addr,
            "GET /cgi/bytes?mib=1048576 HTTP/1.0\r\nHost: x\r\n\r\n",
        );
        let head = read_head(&mut conn);
        assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
        drop(conn);
        wait_until(|| metric(&server, in_flight) == 0);
    }
    assert_eq!(server.get("/cgi/hello").0, 200);
    let failures = "wrun_function_failures_total{tenant=\"t\",function=\"f\"}";
    assert_eq!(metric(&server, failures), 0);
    assert_eq!(
        metric(&server, "wrun_traps_total{tenant=\"t\",function=\"f\"}"),
        0
    );
}

/// Several large CGI responses at once, read slowly: the server holds a
/// bounded buffer per response, not the responses.
#[test]
fn concurrent_cgi_streams_stay_out_of_the_servers_memory() {
    const STREAMS: usize = 4;
    const MIB: u64 = 256;
    let dir = tempdir();
    let config = format!(
        "version = 1\n[tenants.t]\nlimits = {{ memory = \"16m\", timeout = \"5m\" }}\n\
         [tenants.t.functions.cgi]\nwasm = {}\nroutes = [\"/cgi\"]\n",
        toml_path(P1.cgi)
    );
    let server = Server::config(dir.path(), &config);
    let pid = server.process.pid();
    let paused = Arc::new(Barrier::new(STREAMS + 1));
    let clients: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (addr, paused) = (server.addr, paused.clone());
            std::thread::spawn(move || {
                let request = format!("GET /cgi/bytes?mib={MIB} HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut conn = raw_request(addr, &request);
                let head = read_head(&mut conn);
                assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
                let mut first = vec![0; 1 << 20];
                conn.read_exact(&mut first).unwrap();
                // Every guest now writes into a client that does not read.
                paused.wait();
                paused.wait();
                let rest = std::io::copy(&mut conn, &mut std::io::sink()).unwrap();
                first.len() as u64 + rest
            })
        })
        .collect();
    paused.wait();
    std::thread::sleep(Duration::from_millis(500));
    let paused_rss = proc_status_kib(pid, "VmRSS");
    paused.wait();
    for client in clients {
        assert_eq!(client.join().unwrap(), MIB << 20);
    }
    let peak = proc_status_kib(pid, "VmHWM");
    let bodies_kib = STREAMS as u64 * (MIB << 10);
    for (what, kib) in [("VmRSS while paused", paused_rss), ("VmHWM", peak)] {
        assert!(
            kib < bodies_kib / 4,
            "{what} of the server is {kib} KiB, for {bodies_kib} KiB of bodies"
        );
    }
}

/// A field of /proc/PID/status, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A connection to `addr` with `request` written on it.
fn raw_request(addr: SocketAddr, request: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    conn
}

/// Reads a response head (up to and with its blank line), byte by byte so
/// that nothing of the body is consumed.
fn read_head(conn: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the response head ended early ({other:?}): {head:?}"),
        }
    }
    String::from_utf8(head).unwrap()
}

/// The value of header `name` in a response's text.
fn header_of(response: &str, name: &str) -> String {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no header {name} in {head:?}"))
}

/// A GET of `path` over HTTP/1.1 with `Connection: close`: everything the
/// server sent, until it closed the connection.
fn raw_http11(addr: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut conn = raw_request(addr, &request);
    let mut bytes = Vec::new();
    // A cut response may end in a reset rather than a clean close.
    let _ = conn.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn limits_end_only_the_request_that_hits_them() {
    let dir = tempdir();
    let config = format!(
        r#"
version = 1
[tenants.t.limits]
memory = "32m"
timeout = "1s"
max_body = "1k"
[tenants.t.functions.f]
wasm = {fn_}
routes = ["/"]
[tenants.t.functions.cgi]
wasm = {cgi}
routes = ["/cgi"]
"#,
        fn_ = toml_path(http::FN),
        cgi = toml_path(P2.cgi),
    );
    let server = Server::config(dir.path(), &config);
    // Memory: 64 MiB in a 32 MiB instance fails that request only.
    let (status, body) = server.get("/alloc?mib=64");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("request "), "{body}");
    assert_eq!(server.get("/alloc?mib=4").0, 200);
    // Time: a request over its limit gets 504.
    assert_eq!(server.get("/sleep?ms=5000").0, 504);
    assert_eq!(server.get("/spin").0, 504);
    assert_eq!(server.get("/cgi/spin").0, 504);
    // A trap is a 500, and the server goes on.
    assert_eq!(server.get("/trap").0, 500);
    // Body size, declared up front or only as it streams in (CGI).
    assert_eq!(server.post("/echo", &[b'x'; 2048]).0, 413);
    assert_eq!(server.post("/echo", &[b'x'; 512]), (200, "x".repeat(512)));
    let chunked = server
        .agent
        .post(server.url("/cgi/echo"))
        .send(ureq::SendBody::from_reader(&mut &[b'y'; 4096][..]))
        .unwrap();
    assert_eq!(chunked.status(), 413);
    assert_eq!(server.get("/hello").0, 200);
    let metrics = server.admin("GET", "/metrics", Some(ADMIN_TOKEN)).1;
    for line in [
        "wrun_memory_limit_total{tenant=\"t\",function=\"f\"} 1",
        "wrun_timeouts_total{tenant=\"t\",function=\"f\"} 2",
        "wrun_timeouts_total{tenant=\"t\",function=\"cgi\"} 1",
        "wrun_traps_total{tenant=\"t\",function=\"f\"} 1",
        "wrun_rejections_total{tenant=\"t\",function=\"f\",reason=\"body_size\"} 1",
        "wrun_rejections_total{tenant=\"t\",function=\"cgi\",reason=\"body_size\"} 1",
        "wrun_instances_in_flight{tenant=\"t\",function=\"f\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
}

#[test]
fn a_tenant_at_its_concurrency_limit_gets_503() {
    let dir = tempdir();
    let config = format!(
        "version = 1\n[tenants.t]\nlimits = {{ max_concurrency = 1 }}\n\
         [tenants.t.functions.f]\nwasm = {}\nroutes = [\"/\"]\n",
        toml_path(http::FN)
    );
    let server = Arc::new(Server::config(dir.path(), &config));
    assert_busy_while_one_request_runs(&server);
}

/// While one slow request of `t/f` runs, the next gets 503 with
/// Retry-After; once it is done, requests succeed again.
fn assert_busy_while_one_request_runs(server: &Arc<Server>) {
    let slow = {
        let server = server.clone();
        std::thread::spawn(move || server.get("/sleep?ms=1500"))
    };
    wait_until(|| {
        metric(
            server,
            "wrun_instances_in_flight{tenant=\"t\",function=\"f\"}",
        ) == 1
    });
    let response = server.agent.get(server.url("/hello")).call().unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(slow.join().unwrap().0, 200);
    assert_eq!(server.get("/hello").0, 200);
}

fn metric(server: &Server, series: &str) -> u64 {
    let text = server.admin("GET", "/metrics", Some(ADMIN_TOKEN)).1;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[track_caller]
fn wait_until(mut ready: impl FnMut() -> bool) {
    for _ in 0..600 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("condition not reached within 30s");
}

#[test]
fn a_spinning_tenant_does_not_stop_another() {
    let dir = tempdir();
    let config = format!(
        r#"
version = 1
[tenants.noisy]
limits = {{ timeout = "3s" }}
[tenants.noisy.functions.spin]
wasm = {fn_}
routes = ["/spin"]
[tenants.quiet.functions.hello]
wasm = {fn_}
routes = ["/hello"]
"#,
        fn_ = toml_path(http::FN)
    );
    let server = Arc::new(Server::config(dir.path(), &config));
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || server.get("/spin").0)
        })
        .collect();
    wait_until(|| {
        metric(
            &server,
            "wrun_instances_in_flight{tenant=\"noisy\",function=\"spin\"}",
        ) == 4
    });
    for _ in 0..20 {
        assert_eq!(
            server.get("/hello"),
            (200, "hello from http-fn\n".to_owned())
        );
    }
    for spinner in spinners {
        assert_eq!(spinner.join().unwrap(), 504);
    }
}

/// A tiny HTTP server on 127.0.0.1 answering `upstream ok` to `count`
/// requests, as the destination of outgoing requests.
fn upstream(count: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\nupstream ok",
            );
        }
    });
    (addr, thread)
}

#[test]
fn outgoing_requests_only_reach_allowed_hosts() {
    let (up, thread) = upstream(1);
    let dir = tempdir();
    let config = format!(
        r#"
version = 1
[tenants.t.functions.allowed]
wasm = {fn_}
routes = ["/fetch"]
allow_outbound = ["127.0.0.1:{port}"]
[tenants.t.functions.denied]
wasm = {fn_}
routes = ["denied.test"]
allow_outbound = ["127.0.0.1:1"]
"#,
        fn_ = toml_path(http::FN),
        port = up.port()
    );
    let server = Server::config(dir.path(), &config);
    // A wasi:http function sees the whole path, so the host picks the
    // function that is denied.
    let path = format!("/fetch?url=http://127.0.0.1:{}/x", up.port());
    let (status, body) = server.get(&path);
    assert_eq!((status, body.as_str()), (200, "status 200\nupstream ok"));
    let (status, body) = raw_get(server.addr, "denied.test", &path);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    thread.join().unwrap();
}

#[test]
fn volumes_are_read_only_unless_rw_and_cannot_be_escaped() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(data.join("x.txt"), "from the host").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), data.join("link")).unwrap();
    let config = format!(
        r#"
version = 1
[tenants.t.functions.f]
wasm = {fn_}
routes = ["/"]
volumes = ["./data:/data", "./out:/out:rw"]
"#,
        fn_ = toml_path(http::FN)
    );
    let server = Server::config(dir.path(), &config);
    assert_eq!(
        server.get("/file?path=/data/x.txt"),
        (200, "from the host".to_owned())
    );
    assert_eq!(server.post("/write?path=/data/new.txt", b"no").0, 500);
    assert!(!data.join("new.txt").exists());
    assert_eq!(server.post("/write?path=/out/new.txt", b"yes").0, 200);
    assert_eq!(std::fs::read_to_string(out.join("new.txt")).unwrap(), "yes");
    for escape in [
        "/data/../secret.txt",
        "/data/link",
        "/secret.txt",
        "/etc/passwd",
    ] {
        let (status, body) = server.get(&format!("/file?path={escape}"));
        assert_eq!(status, 500, "{escape} was readable: {body}");
        assert!(!body.contains("secret"), "{escape}: {body}");
    }
}

fn tenants_config(extra: &str) -> String {
    format!(
        r#"
version = 1
[tenants.a]
token_env = "TOKEN_A"
[tenants.a.functions.hello]
wasm = {hello}
routes = ["/a"]
[tenants.b]
token_env = "TOKEN_B"
[tenants.b.functions.hello]
wasm = {hello}
routes = ["/b"]
{extra}"#,
        hello = toml_path(http::HELLO)
    )
}

#[test]
fn every_cross_tenant_admin_call_is_refused() {
    let dir = tempdir();
    let server = Server::config(dir.path(), &tenants_config(""));
    let wasm = std::fs::read(http::HELLO).unwrap();
    // Tenant a acting on tenant b: refused, and nothing changes.
    for (method, path) in [
        ("GET", "/v1/tenants/b/functions"),
        ("GET", "/v1/tenants/b/functions/hello"),
        ("DELETE", "/v1/tenants/b/functions/hello"),
    ] {
        let (status, body) = server.admin(method, path, Some(TOKEN_A));
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("tenant `a`"), "{body}");
    }
    let (status, _) = server.deploy(TOKEN_A, "b", "hello", "routes = [\"/b2\"]", &wasm);
    assert_eq!(status, 403);
    // Admin-only calls.
    for path in ["/v1/functions", "/metrics"] {
        assert_eq!(server.admin("GET", path, Some(TOKEN_A)).0, 403, "{path}");
    }
    // No token, a wrong token.
    assert_eq!(server.admin("GET", "/v1/tenants/a/functions", None).0, 401);
    assert_eq!(
        server
            .admin("GET", "/v1/tenants/a/functions", Some("not-a-token-at-all"))
            .0,
        401
    );
    // Tenants may not grant themselves host directories or destinations,
    // raise their limits, or take another tenant's route.
    for (config, refused, reason) in [
        (
            "volumes = [\"/:/host\"]",
            403,
            "only the admin token may grant volumes",
        ),
        (
            "allow_outbound = [\"10.0.0.0/8\"]",
            403,
            "not in tenant `a`'s allow_outbound",
        ),
        (
            "limits = { memory = \"4g\" }",
            400,
            "exceeds the tenant's limit of `128 MiB`",
        ),
        (
            "routes = [\"/b\"]",
            409,
            "route `/b` of `a/x` is already taken by `b/hello`",
        ),
    ] {
        let config = if config.starts_with("routes") {
            config.to_owned()
        } else {
            format!("routes = [\"/ax\"]\n{config}")
        };
        let (status, body) = server.deploy(TOKEN_A, "a", "x", &config, &wasm);
        assert_eq!(status, refused, "{config}: {body}");
        assert!(body.contains(reason), "{config}: {body}");
    }
    // b is untouched; a's own calls work.
    assert_eq!(server.get("/b"), (200, "Hello, world!\n".to_owned()));
    let (status, body) = server.admin("GET", "/v1/tenants/a/functions", Some(TOKEN_A));
    assert_eq!(status, 200);
    assert!(
        body.contains("\"name\":\"hello\"") && !body.contains("\"tenant\":\"b\""),
        "{body}"
    );
    assert_eq!(
        server.admin("GET", "/v1/functions", Some(ADMIN_TOKEN)).0,
        200
    );
}

#[test]
fn deploy_replace_and_remove_at_run_time() {
    let dir = tempdir();
    let server = Arc::new(Server::config(dir.path(), &tenants_config("")));
    let fn_wasm = std::fs::read(http::FN).unwrap();
    let v1 = "routes = [\"/env\"]\nenv = { V = \"one\" }";
    let (status, body) = server.deploy(TOKEN_A, "a", "env", v1, &fn_wasm);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"kind\":\"wasi-http\""), "{body}");
    assert_eq!(server.get("/env?name=V"), (200, "one".to_owned()));

    // Replace while requests run: none fails, and the new version answers.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(3));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (server, stop, failures, start) = (
                server.clone(),
                stop.clone(),
                failures.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = server.get("/env?name=V");
                    if status != 200 || !(body == "one" || body == "two") {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    start.wait();
    let v2 = "routes = [\"/env\"]\nenv = { V = \"two\" }";
    let (status, body) = server.deploy(ADMIN_TOKEN, "a", "env", v2, &fn_wasm);
    assert_eq!(status, 200, "{body}");
    wait_until(|| server.get("/env?name=V").1 == "two");
    stop.store(true, Ordering::Relaxed);
    let requests: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(requests > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the replacement"
    );

    // Bad uploads are refused with the reason and change nothing.
    let (status, body) = server.deploy(TOKEN_A, "a", "env", v1, b"not wasm at all");
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.deploy(
        TOKEN_A,
        "a",
        "env",
        "routes = [\"/env\"]\nlimitz = {}",
        &fn_wasm,
    );
    assert_eq!(status, 400);
    assert!(body.contains("limitz"), "{body}");
    let (status, body) = server.deploy(TOKEN_A, "a", "env", v1, b"(component)");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("wasi:http proxy"), "{body}");
    let (status, body) = server.deploy(TOKEN_A, "a", "bad.name", v1, &fn_wasm);
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.get("/env?name=V"), (200, "two".to_owned()));

    // Remove.
    assert_eq!(
        server
            .admin("DELETE", "/v1/tenants/a/functions/env", Some(TOKEN_A))
            .0,
        204
    );
    assert_eq!(server.get("/env?name=V").0, 404);
    assert_eq!(
        server
            .admin("DELETE", "/v1/tenants/a/functions/env", Some(TOKEN_A))
            .0,
        404
    );
    // The API describes itself.
    let (status, doc) = server.admin("GET", "/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc.contains("\"/v1/tenants/{tenant}/functions/{name}\""));
}

#[test]
fn sigterm_drains_accepted_requests() {
    let server = Arc::new(Server::start(&[http::FN]));
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || server.get("/sleep?ms=1500"))
        })
        .collect();
    // Let all four arrive before the signal.
    std::thread::sleep(Duration::from_millis(700));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.process.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for request in requests {
        assert_eq!(request.join().unwrap().0, 200);
    }
    server.process.wait_for_line("wrun serve: stopped");
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "still accepting after SIGTERM"
    );
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let dir = tempdir();
    let cases = [
        ("version = 1\n[tenants.t]\nlimitz = {}\n", "limitz"),
        ("version = 7\n", "version `7`"),
        (
            "version = 1\n[tenants.t.functions.f]\nwasm = \"missing.wasm\"\nroutes = [\"/\"]\n",
            "missing.wasm",
        ),
        (
            "version = 1\n[tenants.t.functions.f]\nwasm = \"x.wasm\"\nroutes = [\"/a?b\"]\n",
            "invalid route `/a?b`",
        ),
        (
            "version = 1\n[tenants.t]\nlimits = { memory = \"lots\" }\n",
            "`lots`",
        ),
        (
            "version = 1\n[server]\nidle_timeout = \"soon\"\n",
            "invalid `server.idle_timeout` `soon`",
        ),
        (
            "version = 1\n[server]\nidle_timeout = \"0s\"\n",
            "greater than zero",
        ),
        (
            "version = 1\n[tenants.a]\ntoken_env = \"TOKEN_A\"\n[tenants.b]\ntoken_env = \"TOKEN_A\"\n",
            "tenant `b` has the same token as tenant `a`",
        ),
    ];
    for (text, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let output = wrun()
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("TOKEN_A", TOKEN_A)
            .run();
        assert_ne!(output.code, 0, "{text}");
        output.assert_stderr_contains(needle);
    }
    // Two functions on one route.
    let text = format!(
        "version = 1\n[tenants.a.functions.f]\nwasm = {h}\nroutes = [\"/x\"]\n\
         [tenants.b.functions.g]\nwasm = {h}\nroutes = [\"/x/\"]\n",
        h = toml_path(http::HELLO)
    );
    std::fs::write(dir.path().join("dup.toml"), text).unwrap();
    wrun()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("dup.toml"))
        .run()
        .assert_code(125)
        .assert_stderr_contains("route `/x` of `b/g` is already taken by `a/f`");
    // Neither a proxy nor a command.
    std::fs::write(dir.path().join("empty.wat"), "(component)").unwrap();
    wrun()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(dir.path().join("empty.wat"))
        .run()
        .assert_code(126)
        .assert_stderr_contains("a function must be a wasi:http proxy component");
}

#[test]
fn the_example_config_serves() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/serve/serve.toml");
    let server = Server::config_file(&config, &[]);
    assert_eq!(server.get("/hello"), (200, "Hello, world!\n".to_owned()));
    assert_eq!(
        raw_get(server.addr, "acme.localhost", "/"),
        (200, "Hello, world!\n".to_owned())
    );
    assert_eq!(
        raw_get(server.addr, "legacy.localhost", "/cgi/hello"),
        (200, "hello from cgi\n".to_owned())
    );
    let (status, list) = server.admin("GET", "/v1/tenants/acme/functions", Some(TOKEN_A));
    assert_eq!(status, 200, "{list}");
}

#[test]
fn a_full_instance_pool_answers_503() {
    let dir = tempdir();
    let config = format!(
        "version = 1\n[tenants.t.functions.f]\nwasm = {}\nroutes = [\"/\"]\n",
        toml_path(http::FN)
    );
    let path = dir.path().join("serve.toml");
    std::fs::write(&path, config).unwrap();
    let server = Arc::new(Server::config_file(&path, &["--max-instances", "1"]));
    // The second request is admitted (no limit of its own is reached), but
    // no instance can be made while the only pool slot is taken.
    assert_busy_while_one_request_runs(&server);
}

/// Tenant `evil`, with its own token, tries every way of covering tenant
/// `victim`'s routes: each is refused with 409 naming both functions, and
/// victim's requests still reach victim.
#[test]
fn a_tenant_cannot_take_another_tenants_requests() {
    let dir = tempdir();
    let config = format!(
        r#"
version = 1
[tenants.victim]
token_env = "TOKEN_B"
[tenants.victim.functions.site]
wasm = {cgi}
routes = ["/victim", "victim.example/app"]
[tenants.evil]
token_env = "TOKEN_A"
"#,
        cgi = toml_path(P1.cgi)
    );
    let server = Server::config(dir.path(), &config);
    let hello = std::fs::read(http::HELLO).unwrap();
    for (token, route) in [
        (TOKEN_A, "/victim/x"),
        (TOKEN_A, "/victim/x/y/"),
        (TOKEN_A, "/victim"),
        (TOKEN_A, "/victim/"),
        (TOKEN_A, "/"),
        (TOKEN_A, "victim.example"),
        (TOKEN_A, "VICTIM.Example."),
        (TOKEN_A, "victim.example/app"),
        (TOKEN_A, "Victim.Example./app/x"),
        (TOKEN_A, "victim.example/victim"),
        (TOKEN_A, "evil.example/victim/x"),
        (TOKEN_A, "evil.example"),
        (TOKEN_A, "/app"),
        (TOKEN_A, "/app/x"),
        // The admin token is held to the same rule.
        (ADMIN_TOKEN, "/victim/admin"),
    ] {
        let config = format!("routes = [\"/evil\", {route:?}]");
        let (status, body) = server.deploy(token, "evil", "f", &config, &hello);
        assert_eq!(status, 409, "{route}: {body}");
        assert!(
            body.contains("`evil/f`") && body.contains("`victim/site`"),
            "{route}: {body}"
        );
    }
    // Nothing of evil's was deployed.
    assert_eq!(server.get("/evil").0, 404);
    let (_, list) = server.admin("GET", "/v1/tenants/evil/functions", Some(TOKEN_A));
    assert_eq!(list, "{\"functions\":[]}");
    // Victim's requests, however the host is spelled, reach victim (whose
    // CGI app answers `/x/hello` with 404 where evil's would say hello).
    for (host, path, expected) in [
        ("any.example", "/victim/hello", (200, "hello from cgi\n")),
        ("victim.example", "/victim/x/hello", (404, "not found\n")),
        ("victim.example", "/app/hello", (200, "hello from cgi\n")),
        ("Victim.Example.:8080", "/app/x/hello", (404, "not found\n")),
    ] {
        let (status, body) = raw_get(server.addr, host, path);
        assert_eq!((status, body.as_str()), expected, "{host}{path}");
    }
    // Routes no request shares with victim's are evil's to take.
    let config = "routes = [\"/evil\", \"/victimx\", \"other.example/app\"]";
    let (status, body) = server.deploy(TOKEN_A, "evil", "f", config, &hello);
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.get("/victimx"), (200, "Hello, world!\n".to_owned()));
    assert_eq!(
        raw_get(server.addr, "other.example", "/app"),
        (200, "Hello, world!\n".to_owned())
    );
    assert_eq!(
        raw_get(server.addr, "victim.example", "/app/hello"),
        (200, "hello from cgi\n".to_owned())
    );
    // And the rule holds the other way round.
    let cgi = std::fs::read(P1.cgi).unwrap();
    let (status, body) = server.deploy(TOKEN_B, "victim", "g", "routes = [\"/evil/x\"]", &cgi);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("`victim/g`") && body.contains("`evil/f`"),
        "{body}"
    );
}

/// Routes of two tenants that some request would match both make a config
/// fail to load, naming both functions.
#[test]
fn a_config_with_overlapping_tenant_routes_is_refused() {
    let dir = tempdir();
    for (a, b) in [
        ("/x", "/x/y"),
        ("/", "/y"),
        ("h.example", "/y"),
        ("h.example/y", "/y/z"),
        ("/y", "H.Example./y"),
        ("h.example/y", "h.example"),
    ] {
        let text = format!(
            "version = 1\n[tenants.a.functions.f]\nwasm = {h}\nroutes = [{a:?}]\n\
             [tenants.b.functions.g]\nwasm = {h}\nroutes = [{b:?}]\n",
            h = toml_path(http::HELLO)
        );
        std::fs::write(dir.path().join("overlap.toml"), text).unwrap();
        let output = wrun()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir.path().join("overlap.toml"))
            .run();
        assert_eq!(output.code, 125, "{a} and {b}: {}", output.stderr);
        assert!(
            output.stderr.contains("`a/f`")
                && output.stderr.contains("`b/g`")
                && output.stderr.contains("overlaps"),
            "{a} and {b}: {}",
            output.stderr
        );
    }
}

/// Waits until the server closes `conn`, reading (and dropping) whatever it
/// sends before that.
#[track_caller]
fn assert_closed_by_server(mut conn: TcpStream, what: &str) {
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: not closed by the server: {e}"),
        }
    }
}

/// Reads one HTTP/1.1 response, with a Content-Length or chunked: its
/// status and body.
fn read_response(conn: &mut TcpStream) -> (u16, String) {
    let head = read_head(conn);
    let status = head[9..12].parse().unwrap();
    let mut body = Vec::new();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        loop {
            let size_line = read_line(conn);
            let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let len: usize = header_of(&head, "content-length").parse().unwrap();
        body.resize(len, 0);
        conn.read_exact(&mut body).unwrap();
    }
    (status, String::from_utf8(body).unwrap())
}

fn read_line(conn: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while !line.ends_with(b"\r\n") {
        conn.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let server = Server::start(&["--idle-timeout", "1s", http::FN]);
    // Connections that never send a byte, and an HTTP/2 one that never
    // opens a stream (the preface and an empty SETTINGS frame).
    let silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let mut h2 = TcpStream::connect(server.addr).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    // A request that runs three times as long as the idle timeout.
    let slow = {
        let addr = server.addr;
        std::thread::spawn(move || raw_get(addr, "x", "/sleep?ms=3000"))
    };
    // While they are open, requests are served; a keep-alive connection
    // serves several, then is closed once idle.
    assert_eq!(
        raw_get(server.addr, "x", "/hello"),
        (200, "hello from http-fn\n".to_owned())
    );
    let mut kept = raw_request(server.addr, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(&mut kept).0, 200);
    kept.write_all(b"GET /counter HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut kept), (200, "1\n".to_owned()));
    for (i, conn) in silent.into_iter().enumerate() {
        assert_closed_by_server(conn, &format!("silent connection {i}"));
    }
    assert_closed_by_server(h2, "HTTP/2 connection");
    assert_closed_by_server(kept, "keep-alive connection");
    assert_eq!(slow.join().unwrap(), (200, "slept 3000 ms\n".to_owned()));
    // The server goes on.
    assert_eq!(server.get("/hello").0, 200);
}

/// Sends a POST's head and part of its body, then stalls: the status and
/// body of the answer, with the connection, still open, to drop later.
fn stalled_post(addr: SocketAddr, path: &str) -> (u16, String, TcpStream) {
    let request = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    let mut conn = raw_request(addr, &request);
    conn.write_all(&[b'x'; 100]).unwrap();
    let (status, body) = read_response(&mut conn);
    (status, body, conn)
}

/// A body that stops arriving holds its function's only slot until the
/// function's timeout, then gets 408; the next request is served.
#[test]
fn a_body_that_never_arrives_gets_408_and_frees_its_slot() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let config = format!(
        r#"
version = 1
[tenants.t]
limits = {{ max_concurrency = 1, timeout = "2s" }}
[tenants.t.functions.cgi]
wasm = {cgi}
routes = ["/cgi"]
[tenants.t.functions.f]
wasm = {fn_}
routes = ["/"]
volumes = ["./out:/out:rw"]
"#,
        cgi = toml_path(P2.cgi),
        fn_ = toml_path(http::FN),
    );
    let server = Server::config(dir.path(), &config);
    // A CGI app gets its body whole before it starts; a proxy (`/write`
    // reads the body before answering) reads it as it runs.
    for (stalled, next, answer) in [
        ("/cgi/echo", "/cgi/echo", "abc"),
        (
            "/write?path=/out/a",
            "/write?path=/out/b",
            "wrote 3 bytes\n",
        ),
    ] {
        let (status, body, _open) = stalled_post(server.addr, stalled);
        assert_eq!(status, 408, "{stalled}: {body}");
        assert!(body.contains("did not arrive"), "{stalled}: {body}");
        assert_eq!(
            server.post(next, b"abc"),
            (200, answer.to_owned()),
            "{next}"
        );
    }
    for function in ["cgi", "f"] {
        let labels = format!("{{tenant=\"t\",function=\"{function}\"}}");
        assert_eq!(
            metric(&server, &format!("wrun_body_timeouts_total{labels}")),
            1
        );
        assert_eq!(metric(&server, &format!("wrun_timeouts_total{labels}")), 0);
        assert_eq!(
            metric(&server, &format!("wrun_instances_in_flight{labels}")),
            0
        );
        let requests =
            format!("wrun_requests_total{{tenant=\"t\",function=\"{function}\",code=\"4xx\"}}");
        assert_eq!(metric(&server, &requests), 1);
    }
}

/// The attack of issue 10: one tenant's CGI function opening loopback
/// connections (two host descriptors each) until it can no more, in many
/// requests at once, under a low open-file limit. Its instances stop at
/// their own and their tenant's share; another tenant is still served, its
/// function still gets the descriptors it needs, and so does the server.
#[test]
fn a_tenant_hoarding_descriptors_leaves_others_theirs() {
    let dir = tempdir();
    let config = format!(
        r#"
version = 1
[tenants.hoarder]
limits = {{ max_concurrency = 8, timeout = "20s" }}
[tenants.hoarder.functions.hoard]
wasm = {cgi}
routes = ["/h"]
[tenants.victim.functions.hello]
wasm = {fn_}
routes = ["/hello"]
[tenants.victim.functions.few]
wasm = {cgi}
routes = ["/few"]
"#,
        cgi = toml_path(P2.cgi),
        fn_ = toml_path(http::FN)
    );
    let path = dir.path().join("serve.toml");
    std::fs::write(&path, config).unwrap();
    let prlimit = crate::registry::find_program("prlimit", "sudo apt-get install -y util-linux");
    // 1200 descriptors: 331 for the host, 434 for connections, 434 for the
    // guests, 217 of them each tenant's.
    let server = Arc::new(Server::config_file_with(
        wrun_via(&prlimit, &["--nofile=1200:1200", "--"]),
        &path,
        &["--threads", "1"],
    ));
    let hoarders: Vec<_> = (0..8)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || server.get("/h/hoard?conns=2000&ms=3000"))
        })
        .collect();
    wait_until(|| {
        metric(
            &server,
            "wrun_instances_in_flight{tenant=\"hoarder\",function=\"hoard\"}",
        ) == 8
    });
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        assert_eq!(
            server.get("/hello"),
            (200, "hello from http-fn\n".to_owned())
        );
        assert_eq!(
            server.get("/few/hoard?conns=20"),
            (200, "held 20\n".to_owned())
        );
    }
    let mut held = 0;
    for hoarder in hoarders {
        let (status, body) = hoarder.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("stopped: "), "{body}");
        held += body
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("held "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
    }
    // Two descriptors a connection, and each instance's listener: the
    // tenant's share bounds them all.
    assert!(held * 2 <= 217, "held {held} connections");
    assert!(held > 0);
}
