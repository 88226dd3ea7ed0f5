//! `wrun daemon` driven by real Docker clients: the `docker` CLI and
//! docker-py, each against a daemon the test starts on its own socket with
//! its own `$WRUN_HOME` (`DOCKER_HOST` always points there: the machine's
//! own Docker engine, if any, is never touched).

use crate::support::{Output, P1, P2, Running, tempdir, wrun};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon of the test's own (also for other test modules).
pub(crate) struct Daemon {
    pub(crate) home: tempfile::TempDir,
    xdg: tempfile::TempDir,
    /// For `docker`'s config (so the user's contexts and credentials are
    /// never read).
    docker_config: tempfile::TempDir,
    flags: Vec<String>,
    via: Option<(PathBuf, Vec<String>)>,
    process: Option<Running>,
}

impl Daemon {
    pub(crate) fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// A daemon started with `flags`.
    pub(crate) fn start_with(flags: &[&str]) -> Daemon {
        Daemon::start_via(None, flags)
    }

    /// A daemon started through `via` (a program and its arguments, such
    /// as `prlimit --nofile=N --`), with `flags`.
    pub(crate) fn start_via(via: Option<(PathBuf, Vec<String>)>, flags: &[&str]) -> Daemon {
        let mut daemon = Daemon {
            home: tempdir(),
            xdg: tempdir(),
            docker_config: tempdir(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            via,
            process: None,
        };
        daemon.launch();
        daemon
    }

    pub(crate) fn launch(&mut self) {
        let base = match &self.via {
            Some((program, args)) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                crate::support::wrun_via(program, &args)
            }
            None => wrun(),
        };
        let running = base
            .home(self.home.path())
            .env("XDG_RUNTIME_DIR", self.xdg.path())
            .arg("daemon")
            .args(&self.flags)
            .spawn();
        running.wait_for_line("listening on unix://");
        self.process = Some(running);
    }

    /// The daemon's resident memory now, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let pid = self.process.as_ref().expect("running").pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// No container is listed, and none left a directory behind.
    #[track_caller]
    pub(crate) fn assert_no_containers(&self) {
        let listed = self.docker(&["ps", "-aq"]);
        assert!(listed.stdout.trim().is_empty(), "{listed:?}");
        let dirs = self.home.path().join("containers").read_dir().unwrap();
        assert_eq!(dirs.count(), 0, "container directories left");
    }

    /// The descriptors the daemon process holds now.
    pub(crate) fn open_fds(&self) -> usize {
        let pid = self.process.as_ref().expect("running").pid();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the daemon's fds")
            .count()
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.xdg.path().join("wrun/wrun.sock")
    }

    /// `wrun` with the daemon's `$WRUN_HOME` and runtime directory: a
    /// process beside the daemon's containers (on its networks, say).
    pub(crate) fn wrun(&self) -> crate::support::Wrun {
        wrun()
            .home(self.home.path())
            .env("XDG_RUNTIME_DIR", self.xdg.path())
    }

    /// Runs one of `tests/docker_py/` against this daemon, with `env`.
    #[track_caller]
    pub(crate) fn docker_py(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/docker_py")
            .join(script);
        let mut cmd = Command::new(docker_py());
        cmd.arg(script)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()));
        for (key, value) in env {
            cmd.env(key, value);
        }
        run_bounded(cmd)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub(crate) fn crash(&mut self) {
        let running = self.process.take().expect("running");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(running.pid() as i32).expect("pid"),
            rustix::process::Signal::KILL,
        )
        .expect("kill");
        let _ = running.finish();
    }

    /// Stops the daemon as a service manager would (SIGTERM).
    pub(crate) fn terminate(&mut self) -> Output {
        let running = self.process.take().expect("running");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(running.pid() as i32).expect("pid"),
            rustix::process::Signal::TERM,
        )
        .expect("kill");
        running.finish()
    }

    /// `wrun build -t NAME APP` into the daemon's store.
    pub(crate) fn build(&self, name: &str, app: &str) {
        wrun()
            .home(self.home.path())
            .args(["build", "-t", name, app])
            .run()
            .assert_success();
    }

    /// Runs the docker CLI against this daemon.
    #[track_caller]
    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        self.docker_env(args, &[])
    }

    /// Runs the docker CLI with `input` as its stdin.
    #[track_caller]
    pub(crate) fn docker_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_bounded_with_input(self.docker_command(args), Some(input.to_vec()))
    }

    /// The docker CLI with `args`, pointed at this daemon alone.
    fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(docker_cli());
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION");
        cmd
    }

    #[track_caller]
    pub(crate) fn docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.docker_command(args);
        for (key, value) in env {
            cmd.env(key, value);
        }
        run_bounded(cmd)
    }

    /// One HTTP/1.1 request on the socket; returns the status and body.
    pub(crate) fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut stream = UnixStream::connect(self.socket()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        (
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.process.is_some() {
            let _ = self.terminate();
        }
    }
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The docker CLI, or a failure saying how to install it.
pub(crate) fn docker_cli() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("docker"))
            .find(|p| p.is_file())
    });
    found.expect(
        "the daemon tests drive the real docker CLI, which is not on PATH: install it \
         (Debian: `apt-get install docker.io`, or Docker's `docker-ce-cli`)",
    )
}

/// Runs `cmd` to its end (at most 120 s), collecting its output.
#[track_caller]
pub(crate) fn run_bounded(cmd: Command) -> Output {
    run_bounded_with_input(cmd, None)
}

/// [`run_bounded`], with `input` as its stdin (then closed).
#[track_caller]
pub(crate) fn run_bounded_with_input(mut cmd: Command, input: Option<Vec<u8>>) -> Output {
    cmd.stdin(match input {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    Output {
        code: status.code().unwrap_or(-1),
        stdout_len: stdout.len() as u64,
        stdout,
        stderr: err.join().unwrap_or_default(),
        peak_rss_kib: None,
    }
}

/// Polls `check` (up to 60 s) until it holds.
#[track_caller]
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn docker_run_attaches_and_returns_the_apps_exit_code() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("args", P2.args_env);
    daemon.build("trap", P2.trap);
    daemon.build("hello-p1", P1.hello);
    daemon
        .docker(&["version"])
        .assert_success()
        .assert_stdout_contains("API version:      1.47");
    daemon
        .docker(&["run", "--rm", "hello"])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    daemon
        .docker(&["run", "--rm", "hello-p1"])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    let out = daemon.docker(&["run", "--rm", "-e", "GREETING=hi", "args", "one", "two"]);
    out.assert_success()
        .assert_stdout_contains("argv[1]=one")
        .assert_stdout_contains("argv[2]=two")
        .assert_stdout_contains("env GREETING=hi");
    // A trap: 134, as `wrun run` exits, with the reason on stderr.
    daemon
        .docker(&["run", "--name", "trapped", "trap"])
        .assert_code(134)
        .assert_stderr_contains("trapped: wasm trap");
    let state = daemon.docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "trapped",
    ]);
    assert_eq!(state.stdout.trim(), "exited 134", "{state:?}");
    // `--rm` left nothing behind; the named one is there.
    let all = daemon.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.stdout.trim(), "trapped", "{all:?}");
}

#[test]
fn detached_containers_live_through_ps_logs_pause_stop_and_rm() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    let id = daemon.docker(&["run", "-d", "--name", "busy", "spin"]);
    id.assert_success();
    assert_eq!(id.stdout.trim().len(), 64, "{id:?}");
    let ps = daemon.docker(&["ps"]);
    ps.assert_success();
    let header = ps.stdout.lines().next().unwrap_or_default();
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = ps.stdout.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(&id.stdout[..12]), "{row}");
    assert!(
        row.contains("Up ") && row.contains("busy") && row.contains("\"spin\""),
        "{row}"
    );
    eventually("the first log line", || {
        daemon.docker(&["logs", "busy"]).stdout.contains("spinning")
    });
    daemon.docker(&["pause", "busy"]).assert_success();
    let status = daemon.docker(&["ps", "--format", "{{.Status}}"]);
    assert!(status.stdout.contains("(Paused)"), "{status:?}");
    // A paused guest is never polled: its CPU time stands still.
    let cpu = || {
        let (status, body) = daemon.http(
            "GET",
            "/v1.47/containers/busy/stats?stream=0&one-shot=1",
            "",
        );
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
        stats["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .expect("total_usage")
    };
    let paused = cpu();
    assert!(paused > 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu(), paused, "a paused container ran");
    let stats = daemon.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        "busy",
    ]);
    assert!(
        stats.stdout.starts_with("busy ") && stats.stdout.contains("/ 4GiB"),
        "{stats:?}"
    );
    // Stopping twice: the second is Docker's 304, which the CLI takes as done.
    daemon.docker(&["unpause", "busy"]).assert_success();
    eventually("the unpaused container running again", || cpu() > paused);
    daemon
        .docker(&["stop", "busy"])
        .assert_success()
        .assert_stdout_contains("busy");
    daemon.docker(&["stop", "busy"]).assert_success();
    let state = daemon.docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "busy",
    ]);
    assert_eq!(state.stdout.trim(), "exited 143", "{state:?}");
    assert!(daemon.docker(&["ps", "-q"]).stdout.trim().is_empty());
    let listed = daemon.docker(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(listed.stdout.starts_with("busy Exited (143)"), "{listed:?}");
    // The log outlives the run, with timestamps on request.
    let logs = daemon.docker(&["logs", "-t", "--tail", "1", "busy"]);
    logs.assert_success();
    assert_eq!(logs.stdout.lines().count(), 1, "{logs:?}");
    assert!(
        logs.stdout.starts_with("20") && logs.stdout.contains("Z "),
        "{logs:?}"
    );
    // Started again, renamed, killed, removed.
    daemon.docker(&["start", "busy"]).assert_success();
    daemon
        .docker(&["rename", "busy", "spinner"])
        .assert_success();
    daemon
        .docker(&["rm", "spinner"])
        .assert_code(1)
        .assert_stderr_contains("container is running");
    daemon.docker(&["kill", "spinner"]).assert_success();
    let code = daemon.docker(&["wait", "spinner"]);
    assert_eq!(code.stdout.trim(), "137", "{code:?}");
    daemon
        .docker(&["kill", "spinner"])
        .assert_code(1)
        .assert_stderr_contains("is not running");
    daemon.docker(&["rm", "spinner"]).assert_success();
    daemon
        .docker(&["rm", "spinner"])
        .assert_code(1)
        .assert_stderr_contains("No such container: spinner");
    daemon.docker(&["rm", "-f", "spinner"]).assert_success();
    daemon.assert_no_containers();
}

#[test]
fn a_published_port_reaches_the_container() {
    let daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon
        .docker(&["run", "-d", "--name", "echo", "-p", "127.0.0.1::80", "echo"])
        .assert_success();
    let port = daemon.docker(&["port", "echo", "80"]);
    let port: u16 = port
        .stdout
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port: {port:?}"));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(b"through the daemon\n").unwrap();
    let mut echoed = [0u8; 19];
    conn.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"through the daemon\n");
    // The port is the container's: a second container cannot take it.
    let taken = format!("127.0.0.1:{port}:80");
    daemon
        .docker(&["run", "-d", "--name", "second", "-p", &taken, "echo"])
        .assert_code(125);
    let state = daemon.docker(&["inspect", "-f", "{{.State.Status}}", "second"]);
    assert_eq!(state.stdout.trim(), "exited", "{state:?}");
    // Stopping it frees the port.
    daemon.docker(&["rm", "-f", "echo"]).assert_success();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn restart_policies_and_a_crashed_daemon_keep_true_states() {
    let mut daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon.build("trap", P2.trap);
    daemon.build("hello", P2.hello);
    daemon
        .docker(&[
            "run",
            "-d",
            "--name",
            "always",
            "--restart",
            "always",
            "echo",
        ])
        .assert_success();
    daemon
        .docker(&[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "trap",
        ])
        .assert_success();
    daemon
        .docker(&["run", "--name", "done", "hello"])
        .assert_success();
    eventually("two restarts of the failing container", || {
        let out = daemon.docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.RestartCount}}",
            "flaky",
        ]);
        out.stdout.trim() == "exited 2"
    });
    daemon.crash();
    daemon.launch();
    let inspect = |daemon: &Daemon, name: &str| {
        daemon
            .docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                name,
            ])
            .stdout
            .trim()
            .to_owned()
    };
    // Found running by a dead daemon: recorded as exited, then `always`
    // brings it back; the others keep the states they had.
    eventually("the `always` container back", || {
        inspect(&daemon, "always") == "running 0"
    });
    assert_eq!(inspect(&daemon, "flaky"), "exited 134");
    assert_eq!(inspect(&daemon, "done"), "exited 0");
    // A user's stop holds across a restart of the daemon for
    // `unless-stopped`; `always` comes back.
    daemon
        .docker(&[
            "run",
            "-d",
            "--name",
            "unless",
            "--restart",
            "unless-stopped",
            "echo",
        ])
        .assert_success();
    daemon
        .docker(&["stop", "unless", "always"])
        .assert_success();
    daemon.terminate().assert_success();
    daemon.launch();
    eventually("`always` back after a clean restart", || {
        inspect(&daemon, "always") == "running 0"
    });
    assert_eq!(inspect(&daemon, "unless"), "exited 143");
    // No state file was left torn.
    for entry in daemon.home.path().join("containers").read_dir().unwrap() {
        let dir = entry.unwrap().path();
        for file in ["config.json", "state.json"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    }
}

#[test]
fn bad_requests_get_dockers_errors_and_change_nothing() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon
        .docker(&["create", "--name", "web", "hello"])
        .assert_success();
    daemon
        .docker(&["create", "--name", "web", "hello"])
        .assert_code(1)
        .assert_stderr_contains("The container name \"/web\" is already in use");
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/containers/create",
        r#"{"Image":"nothing-here"}"#,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such image: nothing-here"), "{body}");
    let (status, body) = daemon.http("POST", "/v1.47/containers/create", r#"{"Image": 7}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/containers/create",
        r#"{"Image":"hello","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sometimes"), "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/containers/create",
        r#"{"Image":"hello","HostConfig":{"Binds":["/srv:relative"]}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`/srv:relative`"), "{body}");
    let (status, body) = daemon.http("POST", "/v1.47/containers/web/wait?condition=soon", "");
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.http("POST", "/v1.47/containers/web/kill?signal=NOPE", "");
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.http("GET", "/v1.47/no/such/path", "");
    assert_eq!(
        (status, body.contains("page not found")),
        (404, true),
        "{body}"
    );
    let (status, body) = daemon.http("GET", "/v1.99/version", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("client version 1.99 is too new. Maximum supported API version is 1.47"));
    let (status, _) = daemon.http("GET", "/v1.12/version", "");
    assert_eq!(status, 400);
    let (status, body) = daemon.http("POST", "/v1.47/containers/web/exec", "{}");
    assert_eq!(status, 501, "{body}");
    // A bad volume is refused at create, by name, and `--rm` leaves
    // nothing behind (the CLI waits for the removal).
    daemon
        .docker(&["run", "--rm", "-v", "_x:/data", "hello"])
        .assert_code(125)
        .assert_stderr_contains("invalid volume name `_x`");
    daemon
        .docker(&["run", "--rm", "-v", "anonymous-1:/data", "hello"])
        .assert_code(125)
        .assert_stderr_contains("not starting with `anonymous-`");
    // A start that fails (the app file is gone) under --rm: exit 125 and
    // the container removed, not a hung client.
    let gone = tempdir();
    let app = crate::support::copy_app(P2.hello, gone.path(), "hello.wasm");
    let body = format!(
        r#"{{"Image":"{}","HostConfig":{{"AutoRemove":true}}}}"#,
        app.display()
    );
    let (status, created) = daemon.http("POST", "/v1.47/containers/create?name=vanishing", &body);
    assert_eq!(status, 201, "{created}");
    drop(gone);
    let (status, body) = daemon.http("POST", "/v1.47/containers/vanishing/start", "");
    assert_eq!(status, 500, "{body}");
    let (status, _) = daemon.http("GET", "/v1.47/containers/vanishing/json", "");
    assert_eq!(status, 404);
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/containers/create",
        r#"{"Image":"/no/app.wasm"}"#,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such image: /no/app.wasm"), "{body}");
    // Ignored, and said so: the CLI prints the warnings.
    let created = daemon.docker(&["create", "--privileged", "--cap-add", "NET_ADMIN", "hello"]);
    created
        .assert_success()
        .assert_stderr_contains("--privileged has no meaning for a wasm app");
    // Only the two good creates made containers.
    assert_eq!(daemon.docker(&["ps", "-aq"]).stdout.lines().count(), 2);
    // The unversioned path and the docker-py style filter both work.
    let (status, body) = daemon.http(
        "GET",
        "/containers/json?all=True&filters=%7B%22name%22%3A%5B%22web%22%5D%7D",
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Names\":[\"/web\"]"), "{body}");
}

#[test]
fn a_hundred_concurrent_containers_leave_nothing_behind() {
    let daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon.build("hello", P2.hello);
    // One round first, so that the app is compiled and the pools are warm.
    daemon.docker(&["run", "--rm", "hello"]).assert_success();
    let fds = daemon.open_fds();
    std::thread::scope(|scope| {
        for worker in 0..10 {
            let daemon = &daemon;
            scope.spawn(move || {
                for i in 0..10 {
                    let name = format!("c{worker}x{i}");
                    let body = r#"{"Image":"echo","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]}}}"#;
                    let (status, reply) =
                        daemon.http("POST", &format!("/v1.47/containers/create?name={name}"), body);
                    assert_eq!(status, 201, "{reply}");
                    let (status, reply) =
                        daemon.http("POST", &format!("/v1.47/containers/{name}/start"), "");
                    assert_eq!(status, 204, "{reply}");
                    let (status, reply) =
                        daemon.http("DELETE", &format!("/v1.47/containers/{name}?force=1"), "");
                    assert_eq!(status, 204, "{reply}");
                }
            });
        }
    });
    daemon.assert_no_containers();
    // Every listener, log and socket of the 100 is closed again (a few
    // may linger as the last connections wind down).
    eventually("the daemon's descriptors back to where they were", || {
        daemon.open_fds() <= fds + 2
    });
}

#[test]
fn a_wait_or_remove_right_after_start_sees_the_exit() {
    let daemon = Daemon::start();
    daemon.build("trap", P2.trap);
    daemon.docker(&["run", "--rm", "trap"]).assert_code(134);
    // The raw API's order (start, then wait), which gives the exit the
    // chance to land between the two requests or inside the wait.
    for i in 0..30 {
        let name = format!("t{i}");
        let (status, reply) = daemon.http(
            "POST",
            &format!("/v1.47/containers/create?name={name}"),
            r#"{"Image":"trap"}"#,
        );
        assert_eq!(status, 201, "{reply}");
        let (status, reply) = daemon.http("POST", &format!("/v1.47/containers/{name}/start"), "");
        assert_eq!(status, 204, "{reply}");
        let (status, reply) = daemon.http(
            "POST",
            &format!("/v1.47/containers/{name}/wait?condition=not-running"),
            "",
        );
        assert_eq!(status, 200, "{reply}");
        assert!(reply.contains("\"StatusCode\":134"), "run {i}: {reply}");
        // And a removal racing the exit's last write of its state.
        let (status, reply) = daemon.http("POST", &format!("/v1.47/containers/{name}/start"), "");
        assert_eq!(status, 204, "{reply}");
        let (status, reply) =
            daemon.http("DELETE", &format!("/v1.47/containers/{name}?force=1"), "");
        assert_eq!(status, 204, "run {i}: {reply}");
    }
    daemon.assert_no_containers();
}

#[test]
fn a_trapping_container_ends_alone_and_a_flood_of_logs_stays_bounded() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    daemon.build("trap", P2.trap);
    daemon.build("flood", P2.flood);
    daemon
        .docker(&["run", "-d", "--name", "busy", "spin"])
        .assert_success();
    daemon.docker(&["run", "--rm", "trap"]).assert_code(134);
    let state = daemon.docker(&["inspect", "-f", "{{.State.Status}}", "busy"]);
    assert_eq!(state.stdout.trim(), "running", "{state:?}");
    // 8 MiB of output into a log of at most 2 files of 256 KiB.
    daemon
        .docker(&[
            "run",
            "--name",
            "flood",
            "--log-opt",
            "max-size=256k",
            "--log-opt",
            "max-file=2",
            "flood",
            "8",
        ])
        .assert_success();
    let id = daemon.docker(&["inspect", "-f", "{{.Id}}", "flood"]);
    let dir = daemon.home.path().join("containers").join(id.stdout.trim());
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs.iter().all(|(_, size)| *size <= 256 << 10), "{logs:?}");
    let tail = daemon.docker(&["logs", "--tail", "2", "flood"]);
    assert_eq!(tail.stdout.lines().count(), 2, "{tail:?}");
    // The last line is cut where the app stopped writing (8 MiB is not a
    // whole number of lines); the one before is whole.
    let full = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-+";
    assert_eq!(tail.stdout.lines().next(), Some(full), "{tail:?}");
    assert!(
        full.starts_with(tail.stdout.lines().nth(1).unwrap_or("?")),
        "{tail:?}"
    );
    daemon
        .docker(&["run", "--rm", "--log-opt", "max-size=ten", "flood", "1"])
        .assert_code(125)
        .assert_stderr_contains("max-size=ten");
}

/// Kills a daemon the test did not start itself, should the test fail
/// before it stops it.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Only when failing: a daemon that was stopped may have left its
        // pid to another process.
        if std::thread::panicking()
            && let Some(pid) = rustix::process::Pid::from_raw(self.0)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

#[test]
fn wrun_run_d_starts_a_daemon_once_and_runs_a_container_in_it() {
    let home = tempdir();
    let xdg = tempdir();
    let run_d = |args: &[&str]| {
        wrun()
            .home(home.path())
            .env("XDG_RUNTIME_DIR", xdg.path())
            .args(["run", "-d"])
            .args(args)
            .run()
    };
    let first = run_d(&["--name", "spinner", "--cpus", "0.5", P2.spin]);
    first
        .assert_success()
        .assert_stderr_contains("wrun: started a wrun daemon on unix://");
    assert_eq!(first.stdout.trim().len(), 64, "{first:?}");
    let log = home.path().join("daemon.log");
    let second = run_d(&["--restart", "on-failure:1", P2.hello]);
    second.assert_success();
    assert!(!second.stderr.contains("started"), "{second:?}");
    let socket = xdg.path().join("wrun/wrun.sock");
    let pid_file = xdg.path().join("wrun/wrun.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the daemon's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let _reaper = KillOnDrop(pid);
    // Any Docker client sees what `wrun run -d` made.
    let docker_config = tempdir();
    let ps = |args: &[&str]| {
        let mut cmd = Command::new(docker_cli());
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env("DOCKER_CONFIG", docker_config.path());
        run_bounded(cmd)
    };
    let listed = ps(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert!(listed.stdout.contains("spinner running"), "{listed:?}");
    let cpus = ps(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", "spinner"]);
    assert_eq!(cpus.stdout.trim(), "500000000", "{cpus:?}");
    // Flags the daemon cannot honour yet are refused, not dropped.
    run_d(&["--timeout", "1s", P2.hello])
        .assert_code(125)
        .assert_stderr_contains("--timeout is not supported with -d");
    wrun()
        .home(home.path())
        .args(["run", "--restart", "always", P2.hello])
        .run()
        .assert_code(125)
        .assert_stderr_contains("add -d");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("signal the daemon");
    eventually("the daemon gone", || !socket.exists() && !pid_file.exists());
    // It says so last, after its guests' threads are shut down.
    eventually("the daemon's log to say it stopped", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("wrun daemon: stopped"))
    });
}

/// The venv with docker-py that `.ci/install-packages` makes.
pub(crate) fn docker_py() -> PathBuf {
    let python = match std::env::var_os("WRUN_TEST_DOCKER_PY") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/docker-py/bin/python"),
    };
    assert!(
        python.is_file(),
        "docker-py 7.2 is needed in `{}`: run `.ci/install-packages`, which makes that venv \
         (or set WRUN_TEST_DOCKER_PY to a python with docker==7.2.0)",
        python.display()
    );
    python
}

#[test]
fn docker_py_drives_the_daemon() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("spin", P2.spin);
    daemon.build("trap", P2.trap);
    daemon
        .docker_py("smoke.py", &[])
        .assert_success()
        .assert_stdout_contains("docker-py: all passed");
}
