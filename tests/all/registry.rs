//! Test support: a real OCI registry (Debian's `docker-registry`, the CNCF
//! distribution server) started on `127.0.0.1:<ephemeral port>` for one test
//! and stopped when dropped, anonymous or with basic or bearer-token auth
//! (then with its own token server); plus a `skopeo` command finder.
//!
//! Needs `sudo apt-get install -y docker-registry skopeo`. A missing binary is
//! a test failure (a panic saying how to install it), never a silent skip.

// Copied as a support module into test binaries that may not use every helper.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// How long `start*` may take in total (spawn, port line, `/v2/` answering).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many of the registry's most recent log lines are kept for messages.
const LOG_LINES: usize = 200;
/// bcrypt cost of the generated htpasswd entry (4 is the minimum: fast).
const BCRYPT_COST: u32 = 4;
/// What `get` sends as `Accept`, so that manifests come back as stored.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, */*";
/// `auth.token` settings: the token server puts these into every JWT and the
/// registry accepts no other `aud`/`iss`.
const TOKEN_SERVICE: &str = "test-registry";
const TOKEN_ISSUER: &str = "wrun-test";
/// Token lifetime in seconds (`exp - iat`, and `expires_in`).
const TOKEN_TTL: u64 = 300;
/// A token-server client gets this long per request before it is dropped
/// (requests are served one at a time).
const TOKEN_IO_TIMEOUT: Duration = Duration::from_secs(5);

type Log = Arc<Mutex<VecDeque<String>>>;

/// A running `docker-registry serve` on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    /// "127.0.0.1:PORT"; empty until the listening line was seen.
    host: String,
    log: Log,
    drains: Vec<JoinHandle<()>>,
    agent: ureq::Agent,
    storage: PathBuf,
    /// Set for `start_with_token_auth`; stopped when dropped (after the child).
    token: Option<TokenServer>,
    /// Last field: removed after `Drop::drop` has killed the child.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Anonymous registry.
    pub fn start() -> Registry {
        Self::start_inner(Auth::Anonymous)
    }

    /// Registry that requires HTTP basic auth for user/password (htpasswd
    /// with a bcrypt hash).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Auth::Basic(user, password))
    }

    /// A registry that requires bearer tokens (the Docker token flow), issued
    /// by a token server this function also starts on 127.0.0.1:0, which
    /// hands a token to a client presenting HTTP basic credentials
    /// `user`/`password` for the scope it asks for (any scope, even none).
    /// The registry's challenge is
    /// `Bearer realm="http://127.0.0.1:PORT/token",service="test-registry"`.
    pub fn start_with_token_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Auth::Token(user, password))
    }

    /// How many tokens the token server issued (to prove the bearer flow was
    /// used); 0 for a registry without token auth.
    pub fn tokens_issued(&self) -> usize {
        self.token
            .as_ref()
            .map_or(0, |t| t.issued.load(Ordering::SeqCst))
    }

    /// "127.0.0.1:PORT", the host part of image references, e.g.
    /// `format!("{}/hello:1", reg.host())`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Raw GET of a path like "/v2/_catalog" with optional basic credentials:
    /// (status, body). Non-2xx statuses are returned, not panicked on;
    /// redirects are not followed. `Accept` lists the OCI and Docker v2
    /// manifest/index types plus `*/*`, so a manifest comes back as stored.
    /// On a token-auth registry the credentials go to the token server, as a
    /// client would send them (anonymous GET, token for the challenged scope,
    /// GET with the token); a refused token request is what is returned.
    /// Panics (with the registry log) only when no HTTP answer comes at all.
    pub fn get(&self, path: &str, basic: Option<(&str, &str)>) -> (u16, Vec<u8>) {
        let url = self.url(path);
        let answer = match (&self.token, basic) {
            (Some(_), Some(creds)) => self.get_with_token(&url, creds),
            _ => http_get(&self.agent, &url, basic.map(basic_auth).as_deref()),
        };
        match answer {
            Ok(answer) => (answer.status, answer.body),
            Err(e) => self.fail(&format!("GET {url} failed: {e}")),
        }
    }

    /// Anonymous GET of `path`: (status, `WWW-Authenticate` header), to
    /// check what an auth registry asks clients for.
    pub fn challenge(&self, path: &str) -> (u16, Option<String>) {
        let url = self.url(path);
        match http_get(&self.agent, &url, None) {
            Ok(answer) => (answer.status, answer.challenge),
            Err(e) => self.fail(&format!("GET {url} failed: {e}")),
        }
    }

    /// The registry's storage root (`filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Every file under the storage root, relative to it, sorted (e.g.
    /// "docker/registry/v2/blobs/sha256/ab/ab…/data"). For asserting that
    /// nothing partial is stored (no `_uploads/` leftovers, no stray blobs).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.storage.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // The root appears only once something was stored.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("reading registry storage dir {}: {e}", dir.display()),
            };
            for entry in entries {
                let entry = entry.unwrap_or_else(|e| {
                    panic!("reading registry storage dir {}: {e}", dir.display())
                });
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
                if kind.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(&self.storage)
                        .expect("storage walk stays under the storage root");
                    out.push(rel.to_path_buf());
                }
            }
        }
        out.sort();
        out
    }

    /// The registry's most recent log lines (stderr and stdout, at most
    /// ~200), for failure messages of tests that use it.
    pub fn log(&self) -> String {
        render_log(&self.log)
    }

    fn url(&self, path: &str) -> String {
        assert!(
            path.starts_with('/'),
            "Registry: path must start with '/', got {path:?}"
        );
        format!("http://{}{}", self.host, path)
    }

    /// The bearer flow of a client, against this registry's token server.
    fn get_with_token(&self, url: &str, (user, password): (&str, &str)) -> Result<Answer, String> {
        let first = http_get(&self.agent, url, None)?;
        let Some(params) = first
            .challenge
            .as_deref()
            .and_then(|c| c.strip_prefix("Bearer "))
        else {
            return Ok(first);
        };
        let realm = challenge_param(params, "realm")
            .ok_or_else(|| format!("no realm in the challenge {params:?}"))?;
        let service = challenge_param(params, "service").unwrap_or_default();
        let mut token_url = format!("{realm}?service={}", percent_encode(service));
        // Several scopes are space-separated in one challenge parameter.
        for scope in challenge_param(params, "scope")
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
        {
            token_url.push_str(&format!("&scope={}", percent_encode(scope)));
        }
        let answer = http_get(&self.agent, &token_url, Some(&basic_auth((user, password))))?;
        if answer.status != 200 {
            return Ok(answer);
        }
        let token = json_str_field(&answer.body, "token").ok_or_else(|| {
            format!(
                "no \"token\" in the token server's answer: {}",
                String::from_utf8_lossy(&answer.body)
            )
        })?;
        http_get(&self.agent, url, Some(&format!("Bearer {token}")))
    }

    fn start_inner(auth: Auth<'_>) -> Registry {
        let bin = find_program("docker-registry", "sudo apt-get install -y docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("wrun-registry-")
            .tempdir()
            .expect("creating a temp dir for the test registry");
        let storage = dir.path().join("storage");
        // Created before the token server, which logs into it too.
        let log: Log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));

        if let Auth::Basic(user, _) | Auth::Token(user, _) = auth {
            // Basic credentials are "user:password", split at the first ':'.
            assert!(
                !user.is_empty() && !user.contains([':', '\n', '\r']),
                "auth user name must be non-empty without ':' or newlines: {user:?}"
            );
        }
        let mut token = None;
        let mut auth_yaml = String::new();
        if let Auth::Basic(user, password) = auth {
            // bcrypt::hash gives "$2b$04$…"; distribution (Go's x/crypto/bcrypt)
            // accepts $2a$, $2b$ and $2y$ alike.
            let hash =
                bcrypt::hash(password, BCRYPT_COST).expect("bcrypt-hashing the test password");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))
                .unwrap_or_else(|e| panic!("writing {}: {e}", htpasswd.display()));
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                yaml_str("wrun-test-registry"),
                yaml_str(&htpasswd.to_string_lossy()),
            );
        }
        if let Auth::Token(user, password) = auth {
            let (server, cert_der) = TokenServer::start(user, password, Arc::clone(&log));
            // distribution trusts token signers whose certificate chains up
            // to this bundle; the signer's self-signed cert is its own root.
            let bundle = dir.path().join("token-signer.pem");
            std::fs::write(&bundle, pem_certificate(&cert_der))
                .unwrap_or_else(|e| panic!("writing {}: {e}", bundle.display()));
            auth_yaml = format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_str(&format!("http://{}/token", server.addr)),
                yaml_str(TOKEN_SERVICE),
                yaml_str(TOKEN_ISSUER),
                yaml_str(&bundle.to_string_lossy()),
            );
            token = Some(server);
        }

        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:0\n  secret: wrun-test-registry-secret\n\
             {auth_yaml}",
            storage = yaml_str(&storage.to_string_lossy()),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, &config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));

        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // REGISTRY_* variables override the config file (e.g. the address).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} serve {}: {e}",
                bin.display(),
                config_path.display()
            )
        });

        let (port_tx, port_rx) = mpsc::channel();
        let mut drains = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            drains.push(drain(stderr, Arc::clone(&log), port_tx.clone()));
        }
        if let Some(stdout) = child.stdout.take() {
            drains.push(drain(stdout, Arc::clone(&log), port_tx.clone()));
        }
        // Only the drain threads hold senders now: when both reach EOF the
        // channel disconnects and the wait below ends.
        drop(port_tx);

        // From here on the child is owned by a Registry, so a panic kills it.
        let mut reg = Registry {
            child,
            host: String::new(),
            log,
            drains,
            agent: agent(Duration::from_secs(60)),
            storage,
            token,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let port = reg.wait_for_port(&port_rx, deadline);
        reg.host = format!("127.0.0.1:{port}");
        reg.wait_until_up(!matches!(auth, Auth::Anonymous), deadline);
        reg
    }

    fn wait_for_port(&mut self, port_rx: &mpsc::Receiver<u16>, deadline: Instant) -> u16 {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match port_rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(port) => return port,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.exit_status_within(Duration::from_secs(2));
                    self.fail(&format!(
                        "docker-registry closed its output without a \"listening on 127.0.0.1:PORT\" line (exit: {})",
                        describe(status)
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.try_wait() {
                        // Give the drains a moment to collect the last lines.
                        if let Ok(port) = port_rx.recv_timeout(Duration::from_millis(500)) {
                            return port;
                        }
                        self.fail(&format!(
                            "docker-registry exited before listening (exit: {status})"
                        ));
                    }
                    if Instant::now() >= deadline {
                        self.fail(&format!(
                            "no \"listening on 127.0.0.1:PORT\" line within {START_TIMEOUT:?}"
                        ));
                    }
                }
            }
        }
    }

    fn wait_until_up(&mut self, auth: bool, deadline: Instant) {
        let url = format!("http://{}/v2/", self.host);
        let poll = agent(Duration::from_secs(2));
        // 401 is how an auth registry answers an anonymous /v2/.
        let up = |status: u16| status == 200 || (auth && status == 401);
        let mut last: String;
        loop {
            match http_get(&poll, &url, None) {
                Ok(answer) if up(answer.status) => return,
                Ok(answer) => {
                    last = format!(
                        "HTTP {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    );
                }
                Err(e) => last = e,
            }
            if let Some(status) = self.try_wait() {
                self.fail(&format!(
                    "docker-registry exited while starting (exit: {status}); last GET {url}: {last}"
                ));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "GET {url} did not answer within {START_TIMEOUT:?}; last attempt: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for docker-registry: {e}"))
    }

    fn exit_status_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let host = if self.host.is_empty() {
            "127.0.0.1:?"
        } else {
            &self.host
        };
        panic!(
            "test registry {host} (pid {}): {what}\n--- docker-registry log (last {LOG_LINES} lines) ---\n{}--- end of log ---",
            self.child.id(),
            self.log()
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Never panic here: this may run while a test is already panicking.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for handle in self.drains.drain(..) {
            let _ = handle.join();
        }
        // `_dir` (the TempDir) is removed when the fields drop, after this.
    }
}

/// A `Command` for skopeo (`/usr/bin/skopeo`, else `skopeo` on PATH).
/// Panics saying how to install it when it is missing.
///
/// Against a `Registry` use `--insecure-policy` (a global flag: before the
/// subcommand) and `--dest-tls-verify=false` / `--tls-verify=false` (plain
/// HTTP), plus `--dest-creds`/`--creds USER:PASS` for basic auth.
pub fn skopeo() -> Command {
    Command::new(find_program("skopeo", "sudo apt-get install -y skopeo"))
}

/// `/usr/bin/NAME`, else NAME found on PATH; panics with `install` otherwise.
pub fn find_program(name: &str, install: &str) -> PathBuf {
    let usr_bin = Path::new("/usr/bin").join(name);
    if usr_bin.is_file() {
        return usr_bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` is needed by this test but was not found in /usr/bin or on PATH; install it with: {install}"
    )
}

/// An agent for plain HTTP to 127.0.0.1: statuses are not errors, no proxy
/// from the environment, no redirects followed.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Which `auth:` section the registry gets.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Anonymous,
    Basic(&'a str, &'a str),
    Token(&'a str, &'a str),
}

/// An HTTP answer; `challenge` is the `WWW-Authenticate` header.
struct Answer {
    status: u16,
    body: Vec<u8>,
    challenge: Option<String>,
}

/// `Authorization` value for basic credentials.
fn basic_auth((user, password): (&str, &str)) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn http_get(agent: &ureq::Agent, url: &str, authorization: Option<&str>) -> Result<Answer, String> {
    let mut request = agent.get(url).header("Accept", ACCEPT);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let response = request.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("WWW-Authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("reading the body of HTTP {status}: {e}"))?;
    Ok(Answer {
        status,
        body,
        challenge,
    })
}

/// The value of `name="value"` in a challenge's parameter list. Values are
/// quoted and may contain ',' (scopes), but distribution never puts '"' in.
fn challenge_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = params;
    while let Some((key, after)) = rest.split_once("=\"") {
        let (value, tail) = after.split_once('"')?;
        if key.trim_start_matches([',', ' ']) == name {
            return Some(value);
        }
        rest = tail;
    }
    None
}

/// A string field of the token server's JSON (JWTs need no unescaping).
fn json_str_field(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let key = format!("\"{name}\":\"");
    let start = body.find(&key)? + key.len();
    let len = body[start..].find('"')?;
    Some(body[start..start + len].to_string())
}

/// Reads `from` line by line into `log` (keeping the last LOG_LINES) until
/// EOF, reporting the port of distribution's "listening on 127.0.0.1:PORT".
fn drain(from: impl Read + Send + 'static, log: Log, port_tx: mpsc::Sender<u16>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if let Some(port) = listening_port(&line) {
                let _ = port_tx.send(port);
            }
            push_log(&log, line);
        }
    })
}

fn push_log(log: &Log, line: String) {
    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if log.len() == LOG_LINES {
        log.pop_front();
    }
    log.push_back(line);
}

/// The port in distribution's start line, e.g.
/// `time="…" level=info msg="listening on 127.0.0.1:40117" go.version=… version=2.8.2+ds1`.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on 127.0.0.1:")? + "listening on 127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

fn render_log(log: &Log) -> String {
    let log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut out = String::new();
    for line in log.iter() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "still running".to_string(), |s| s.to_string())
}

/// A YAML double-quoted scalar (JSON-style escapes).
fn yaml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 with padding (for the basic-auth header).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The token server of a token-auth registry: one thread answering
/// `GET /token` on 127.0.0.1, stopped on drop.
struct TokenServer {
    addr: SocketAddr,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts the server with a fresh P-256 key; returns it and the DER of
    /// the key's self-signed certificate (for the registry's root bundle).
    fn start(user: &str, password: &str, log: Log) -> (TokenServer, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generating the token signing key (P-256)");
        // FIXED: JWS wants ES256 signatures as raw r||s, not ASN.1.
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("loading the token signing key");
        let cert_key = rcgen::KeyPair::try_from(pkcs8.as_ref())
            .expect("loading the token signing key into rcgen");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wrun-test token signer");
        let cert = params
            .self_signed(&cert_key)
            .expect("self-signing the token signer certificate");
        let cert_der = cert.der().to_vec();
        // x5c: distribution verifies this chain against its root bundle,
        // then checks the signature with the leaf's key. (A `kid` holding the
        // libtrust fingerprint of the key was accepted too; x5c needs no
        // fingerprint code.)
        let header = format!(
            r#"{{"typ":"JWT","alg":"ES256","x5c":["{}"]}}"#,
            STANDARD.encode(&cert_der)
        );

        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding the token server to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the token server");
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let issuer = Issuer {
            key,
            rng,
            header: URL_SAFE_NO_PAD.encode(header),
            user: user.to_string(),
            password: password.to_string(),
            issued: Arc::clone(&issued),
            log,
        };
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(mut conn) = conn {
                        issuer.serve(&mut conn);
                    }
                }
            })
        };
        let server = TokenServer {
            addr,
            issued,
            stop,
            thread: Some(thread),
        };
        (server, cert_der)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept(), which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the token server thread owns: the signing key and the one account.
struct Issuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of the JWT header (the same for every token).
    header: String,
    user: String,
    password: String,
    issued: Arc<AtomicUsize>,
    log: Log,
}

impl Issuer {
    /// Answers one request and closes the connection (`Connection: close`,
    /// so clients never wait on a kept-alive socket of this serial server).
    fn serve(&self, conn: &mut TcpStream) {
        let _ = conn.set_read_timeout(Some(TOKEN_IO_TIMEOUT));
        let _ = conn.set_write_timeout(Some(TOKEN_IO_TIMEOUT));
        let Some(head) = read_head(conn) else { return };
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let (status, body) = self.answer(&head);
        push_log(
            &self.log,
            format!("token server: {request_line:?} -> {status}"),
        );
        let challenge = if status.starts_with("401") {
            "WWW-Authenticate: Basic realm=\"wrun-test-token\"\r\n"
        } else {
            ""
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n{challenge}\r\n{body}",
            body.len()
        );
    }

    /// (status line, JSON body) for a request head.
    fn answer(&self, head: &str) -> (&'static str, String) {
        let error = |code: &str, message: &str| {
            format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":null}}]}}"#)
        };
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|line| line.strip_prefix("GET "))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/token" {
            return (
                "404 Not Found",
                error("NOT_FOUND", "only GET /token is served"),
            );
        }
        let authorized = lines
            .filter_map(|line| line.split_once(':'))
            .any(|(name, value)| {
                name.eq_ignore_ascii_case("authorization") && self.accepts(value.trim())
            });
        if !authorized {
            return (
                "401 Unauthorized",
                error("UNAUTHORIZED", "valid basic credentials required"),
            );
        }
        // `scope` may be repeated, absent, or hold several space-separated.
        let scopes: Vec<String> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(name, _)| *name == "scope")
            .flat_map(|(_, value)| {
                percent_decode(value)
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = self.sign(&scopes, now);
        self.issued.fetch_add(1, Ordering::SeqCst);
        let body = format!(
            r#"{{"token":"{token}","access_token":"{token}","expires_in":{TOKEN_TTL},"issued_at":"{}"}}"#,
            rfc3339(now)
        );
        ("200 OK", body)
    }

    /// Whether an `Authorization` value carries this server's credentials.
    fn accepts(&self, authorization: &str) -> bool {
        let Some((scheme, encoded)) = authorization.split_once(' ') else {
            return false;
        };
        let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("basic")
            && String::from_utf8_lossy(&decoded) == format!("{}:{}", self.user, self.password)
    }

    /// A JWT granting exactly `scopes` (`type:name:action,action`).
    fn sign(&self, scopes: &[String], now: u64) -> String {
        let mut nonce = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .expect("random bytes for the token's jti");
        let jti: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let access: Vec<String> = scopes.iter().filter_map(|s| access_entry(s)).collect();
        let claims = format!(
            r#"{{"iss":{},"sub":{},"aud":{},"exp":{},"nbf":{now},"iat":{now},"jti":"{jti}","access":[{}]}}"#,
            json_str(TOKEN_ISSUER),
            json_str(&self.user),
            json_str(TOKEN_SERVICE),
            now + TOKEN_TTL,
            access.join(",")
        );
        let signing_input = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ES256-signing a token");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// The request line and headers (up to the blank line; 16 KiB at most).
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 << 10 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The claim for one scope, e.g. "repository:t/x:pull,push" ->
/// `{"type":"repository","name":"t/x","actions":["pull","push"]}`. The name
/// sits between the first and the last ':' (so it may hold a ':').
fn access_entry(scope: &str) -> Option<String> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<String> = actions
        .split(',')
        .filter(|a| !a.is_empty())
        .map(json_str)
        .collect();
    Some(format!(
        r#"{{"type":{},"name":{},"actions":[{}]}}"#,
        json_str(kind),
        json_str(name),
        actions.join(",")
    ))
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Query-component escaping: everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes a query value: `%XX`, and '+' as space (Go's url.Values
/// encoding, as used by containers/image); a malformed `%` stays as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (the token's `issued_at`).
fn rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm,
    // with eras starting on March 1st so leap days come last).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A PEM `CERTIFICATE` block for a DER certificate.
fn pem_certificate(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pa ss", "dXNlcjpwYSBzcw=="),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "base64({input:?})");
        }
    }

    #[test]
    fn parses_distribution_listening_line() {
        let line = r#"time="2026-11-30T16:44:01.840924989Z" level=info msg="listening on 127.0.0.1:40117" go.version=go1.19.8 instance.id=54a6d343 version=2.8.2+ds1"#;
        assert_eq!(listening_port(line), Some(40117));
        assert_eq!(listening_port(r#"msg="listening on 127.0.0.1:0""#), None);
        assert_eq!(listening_port(r#"msg="listening on [::]:5000""#), None);
        assert_eq!(
            listening_port("level=info msg=\"redis not configured\""),
            None
        );
    }

    #[test]
    #[should_panic(expected = "install it with: sudo apt-get install -y nothing")]
    fn missing_program_says_how_to_install() {
        find_program("wrun-no-such-program", "sudo apt-get install -y nothing");
    }

    #[test]
    fn token_helpers() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_057_041), "2026-11-30T16:44:01Z");
        let scope = "repository:t/x:pull,push";
        assert_eq!(percent_decode(&percent_encode(scope)), scope);
        assert_eq!(
            percent_decode("repository%3At%2Fx%3Apull%2Cpush+x%zz"),
            "repository:t/x:pull,push x%zz"
        );
        assert_eq!(
            access_entry(scope).as_deref(),
            Some(r#"{"type":"repository","name":"t/x","actions":["pull","push"]}"#)
        );
        assert_eq!(access_entry("nonsense"), None);
        assert_eq!(json_str("a\"b\\\n"), r#""a\"b\\\u000a""#);
        let challenge =
            r#"realm="http://127.0.0.1:1/token",service="s",scope="repository:a:pull,push""#;
        assert_eq!(
            challenge_param(challenge, "realm"),
            Some("http://127.0.0.1:1/token")
        );
        assert_eq!(
            challenge_param(challenge, "scope"),
            Some("repository:a:pull,push")
        );
        assert_eq!(challenge_param(challenge, "error"), None);
    }

    #[test]
    fn yaml_str_escapes() {
        assert_eq!(yaml_str(r#"/tmp/a"b\c"#), r#""/tmp/a\"b\\c""#);
    }
}
