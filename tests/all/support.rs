//! Running the real `wrun` binary and collecting what a user would see.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use wrun_test_artifacts::{p1, p2};

/// No single wrun invocation in the tests should take longer; a hang fails
/// the test instead of the whole run.
const DEADLINE: Duration = Duration::from_secs(120);

/// The guest apps of one target, so a test can run against both.
pub struct Apps {
    pub target: &'static str,
    pub hello: &'static str,
    pub args_env: &'static str,
    pub filetool: &'static str,
    pub memhog: &'static str,
    pub spin: &'static str,
    pub trap: &'static str,
    pub flood: &'static str,
    pub echo_server: &'static str,
    pub tcp_client: &'static str,
    pub udp_echo: &'static str,
    pub cgi: &'static str,
}

pub const P1: Apps = Apps {
    target: "wasm32-wasip1",
    hello: p1::HELLO,
    args_env: p1::ARGS_ENV,
    filetool: p1::FILETOOL,
    memhog: p1::MEMHOG,
    spin: p1::SPIN,
    trap: p1::TRAP,
    flood: p1::FLOOD,
    echo_server: p1::ECHO_SERVER,
    tcp_client: p1::TCP_CLIENT,
    udp_echo: p1::UDP_ECHO,
    cgi: p1::CGI,
};

pub const P2: Apps = Apps {
    target: "wasm32-wasip2",
    hello: p2::HELLO,
    args_env: p2::ARGS_ENV,
    filetool: p2::FILETOOL,
    memhog: p2::MEMHOG,
    spin: p2::SPIN,
    trap: p2::TRAP,
    flood: p2::FLOOD,
    echo_server: p2::ECHO_SERVER,
    tcp_client: p2::TCP_CLIENT,
    udp_echo: p2::UDP_ECHO,
    cgi: p2::CGI,
};

/// Defines `mod p1 { #[test] fn name() }` and `mod p2 { ... }` calling
/// `name(&P1)` and `name(&P2)`, for tests that must hold for modules and
/// components alike.
macro_rules! for_both_targets {
    ($($name:ident),* $(,)?) => {
        mod p1 {
            $(#[test] fn $name() { super::$name(&$crate::support::P1) })*
        }
        mod p2 {
            $(#[test] fn $name() { super::$name(&$crate::support::P2) })*
        }
    };
}

/// A `$WRUN_HOME` shared by the tests that do not care about the cache, so
/// that each app is compiled once per test run.
pub fn shared_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

pub fn wrun() -> Wrun {
    wrun_command(Command::new(env!("CARGO_BIN_EXE_wrun")))
}

/// `wrun` started through `program` (e.g. `prlimit --nofile=400 --`), which
/// is given `args` and then wrun's path.
pub fn wrun_via(program: &Path, args: &[&str]) -> Wrun {
    let mut cmd = Command::new(program);
    cmd.args(args).arg(env!("CARGO_BIN_EXE_wrun"));
    wrun_command(cmd)
}

fn wrun_command(mut cmd: Command) -> Wrun {
    cmd.env("WRUN_HOME", shared_home()).env_remove("WRUN_LOG");
    Wrun {
        cmd,
        stdin: None,
        hold_stdin: false,
        watch_rss: false,
    }
}

pub struct Wrun {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    hold_stdin: bool,
    watch_rss: bool,
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Bytes written to stdout (also when not kept, see `discard_stdout`).
    pub stdout_len: u64,
    /// The highest resident set size seen while wrun ran, in KiB, if watched.
    pub peak_rss_kib: Option<u64>,
}

impl Wrun {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn home(mut self, home: &Path) -> Self {
        self.cmd.env("WRUN_HOME", home);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Bytes written to wrun's stdin, which is then closed.
    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Gives wrun a stdin pipe that stays open, with nothing written, until
    /// wrun exits.
    pub fn stdin_held_open(mut self) -> Self {
        self.hold_stdin = true;
        self
    }

    /// Samples wrun's resident set size while it runs.
    pub fn watch_rss(mut self) -> Self {
        self.watch_rss = true;
        self
    }

    pub fn run(self) -> Output {
        self.run_inner(true)
    }

    /// Starts wrun in the background; its output is collected as it comes.
    pub fn spawn(mut self) -> Running {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn wrun");
        let output = Arc::new((Mutex::new((String::new(), String::new())), Condvar::new()));
        let mut readers = Vec::new();
        for (index, pipe) in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ]
        .into_iter()
        .enumerate()
        {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            let (lock, cvar) = &*output;
                            let mut both = lock.lock().unwrap();
                            if index == 0 {
                                both.0.push_str(&text)
                            } else {
                                both.1.push_str(&text)
                            }
                            cvar.notify_all();
                        }
                    }
                }
            }));
        }
        Running {
            child: Some(child),
            output,
            readers,
        }
    }

    /// Runs, counting stdout bytes without keeping them (for floods).
    pub fn run_discarding_stdout(self) -> Output {
        self.run_inner(false)
    }

    fn run_inner(mut self, keep_stdout: bool) -> Output {
        self.cmd
            .stdin(if self.stdin.is_some() || self.hold_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn wrun");
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let _held_stdin = if self.hold_stdin {
            child.stdin.take()
        } else {
            None
        };
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut len = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        len += n as u64;
                        if keep_stdout {
                            kept.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
            (kept, len)
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = err.read_to_end(&mut kept);
            kept
        });
        let started = Instant::now();
        let mut peak_rss = None;
        let status = loop {
            if self.watch_rss
                && let Some(rss) = rss_kib(child.id())
            {
                peak_rss = Some(peak_rss.unwrap_or(0).max(rss));
            }
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("wrun did not finish within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (stdout, stdout_len) = stdout.join().expect("stdout reader");
        let stderr = stderr.join().expect("stderr reader");
        let output = Output {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_len,
            peak_rss_kib: peak_rss,
        };
        // A Rust panic exits with 101; wrun never uses that code, and a guest's
        // own panic is a trap (134).
        assert_ne!(output.code, 101, "wrun panicked: {output:#?}");
        output
    }
}

/// A wrun process running in the background; killed if dropped unfinished.
pub struct Running {
    child: Option<std::process::Child>,
    output: Arc<(Mutex<(String, String)>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The process id, e.g. to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (up to 60 s) until stdout or stderr has a line containing
    /// `needle`, and returns that line.
    #[track_caller]
    pub fn wait_for_line(&self, needle: &str) -> String {
        let (lock, cvar) = &*self.output;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut both = lock.lock().unwrap();
        loop {
            // Only whole lines: a line may arrive in several reads.
            if let Some(line) = both
                .0
                .split_inclusive('\n')
                .chain(both.1.split_inclusive('\n'))
                .find(|l| l.ends_with('\n') && l.contains(needle))
            {
                return line.trim_end().to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no line with {needle:?} within 60s; so far: {:?}",
                *both
            );
            both = cvar
                .wait_timeout(both, left.min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    /// The host port wrun printed for a published guest port.
    #[track_caller]
    pub fn published_port(&self, guest: &str) -> u16 {
        let line = self.wait_for_line(&format!("-> {guest}"));
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .expect("host address");
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("host port")
    }

    /// Waits (up to 60 s) for wrun to exit on its own.
    #[track_caller]
    pub fn finish(mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "wrun did not exit within 60s: {:?}",
                    self.output.0.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let (stdout, stderr) = self.output.0.lock().unwrap().clone();
        let output = Output {
            code: status.code().unwrap_or(-1),
            stdout_len: stdout.len() as u64,
            stdout,
            stderr,
            peak_rss_kib: None,
        };
        assert_ne!(output.code, 101, "wrun panicked: {output:#?}");
        output
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Output {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}: {self:#?}"
        );
        self
    }
}

/// A scratch directory for a test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Copies a guest app to `dir/name` (to test names, extensions and paths).
pub fn copy_app(app: &str, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(app, &path).expect("copy app");
    path
}
