//! Running the real `wrun` binary and collecting what a user would see.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrun"));
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
