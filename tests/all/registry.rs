//! Test support: a real OCI registry (Debian's `docker-registry`, the CNCF
//! distribution server) started on `127.0.0.1:<ephemeral port>` for one test
//! and stopped when dropped; plus a `skopeo` command finder.
//!
//! Needs `sudo apt-get install -y docker-registry skopeo`. A missing binary is
//! a test failure (a panic saying how to install it), never a silent skip.

// Copied as a support module into test binaries that may not use every helper.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Last field: removed after `Drop::drop` has killed the child.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Anonymous registry.
    pub fn start() -> Registry {
        Self::start_inner(None)
    }

    /// Registry that requires HTTP basic auth for user/password (htpasswd
    /// with a bcrypt hash).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user, password)))
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
    /// Panics (with the registry log) only when no HTTP answer comes at all.
    pub fn get(&self, path: &str, basic: Option<(&str, &str)>) -> (u16, Vec<u8>) {
        assert!(
            path.starts_with('/'),
            "Registry::get: path must start with '/', got {path:?}"
        );
        let url = format!("http://{}{}", self.host, path);
        match http_get(&self.agent, &url, basic) {
            Ok(answer) => answer,
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

    fn start_inner(auth: Option<(&str, &str)>) -> Registry {
        let bin = find_program("docker-registry", "sudo apt-get install -y docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("wrun-registry-")
            .tempdir()
            .expect("creating a temp dir for the test registry");
        let storage = dir.path().join("storage");

        let mut auth_yaml = String::new();
        if let Some((user, password)) = auth {
            assert!(
                !user.is_empty() && !user.contains([':', '\n', '\r']),
                "htpasswd user name must be non-empty without ':' or newlines: {user:?}"
            );
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

        let log: Log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
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
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let port = reg.wait_for_port(&port_rx, deadline);
        reg.host = format!("127.0.0.1:{port}");
        reg.wait_until_up(auth.is_some(), deadline);
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
        // 401 is how the basic-auth registry answers an anonymous /v2/.
        let up = |status: u16| status == 200 || (auth && status == 401);
        let mut last: String;
        loop {
            match http_get(&poll, &url, None) {
                Ok((status, _)) if up(status) => return,
                Ok((status, body)) => {
                    last = format!("HTTP {status}: {}", String::from_utf8_lossy(&body));
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
fn find_program(name: &str, install: &str) -> PathBuf {
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

fn http_get(
    agent: &ureq::Agent,
    url: &str,
    basic: Option<(&str, &str)>,
) -> Result<(u16, Vec<u8>), String> {
    let mut request = agent.get(url).header("Accept", ACCEPT);
    if let Some((user, password)) = basic {
        let token = base64(format!("{user}:{password}").as_bytes());
        request = request.header("Authorization", format!("Basic {token}"));
    }
    let response = request.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("reading the body of HTTP {status}: {e}"))?;
    Ok((status, body))
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
            let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    })
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
    fn yaml_str_escapes() {
        assert_eq!(yaml_str(r#"/tmp/a"b\c"#), r#""/tmp/a\"b\\c""#);
    }
}
