//! wrun's own container verbs (`wrun ps`, `logs`, `stop`, ...) against a
//! `wrun daemon`, which they reach only through its Docker API: what they
//! print is checked against what a Docker user expects, and against the
//! docker CLI's own output where both show the same thing.

use crate::daemon::{Daemon, eventually};
use crate::support::{Output, P2, Running, tempdir, wrun};
use std::path::Path;

/// `wrun ARGS` as a client of `daemon`.
#[track_caller]
fn wrun_on(daemon: &Daemon, args: &[&str]) -> Output {
    wrun_at(daemon, &daemon.socket(), args)
}

#[track_caller]
fn wrun_at(daemon: &Daemon, socket: &Path, args: &[&str]) -> Output {
    wrun()
        .home(daemon.home.path())
        .env("WRUN_DAEMON", format!("unix://{}", socket.display()))
        .args(args)
        .run()
}

fn spawn_on(daemon: &Daemon, args: &[&str]) -> Running {
    wrun()
        .home(daemon.home.path())
        .env(
            "WRUN_DAEMON",
            format!("unix://{}", daemon.socket().display()),
        )
        .args(args)
        .spawn()
}

/// `{{.State.Status}} {{.State.ExitCode}}` of a container, as docker sees it.
fn state(daemon: &Daemon, name: &str) -> String {
    let out = daemon.docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        name,
    ]);
    out.stdout.trim().to_owned()
}

#[test]
fn ps_lists_containers_as_docker_ps_does() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    daemon.build("echo", P2.echo_server);
    daemon.build("hello", P2.hello);
    daemon
        .docker(&["run", "--name", "done", "hello"])
        .assert_success();
    let busy = daemon.docker(&["run", "-d", "--name", "busy", "spin", "sleep"]);
    busy.assert_success();
    let busy = busy.stdout.trim().to_owned();
    daemon
        .docker(&[
            "run",
            "-d",
            "--name",
            "echo",
            "--label",
            "tier=web",
            "-p",
            "127.0.0.1::80",
            "echo",
        ])
        .assert_success();

    let ps = wrun_on(&daemon, &["ps"]);
    ps.assert_success();
    let mut lines = ps.stdout.lines();
    let header = lines.next().unwrap_or_default();
    // Docker's columns, each at least 10 wide and 3 apart.
    assert!(
        header.starts_with("CONTAINER ID   IMAGE     COMMAND"),
        "{ps:?}"
    );
    let columns: Vec<&str> = header
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ],
        "{ps:?}"
    );
    // Newest first; the exited one only with -a.
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{ps:?}");
    assert!(rows[0].ends_with("echo"), "{ps:?}");
    let row = rows[1];
    assert!(row.starts_with(&busy[..12]), "{row}");
    for part in ["spin", "\"spin sleep\"", " ago", "Up ", "busy"] {
        assert!(row.contains(part), "{part} in {row}");
    }
    let port = daemon.docker(&["port", "echo", "80"]);
    let published = format!("{}->80/tcp", port.stdout.trim());
    assert!(rows[0].contains(&published), "{published} in {ps:?}");
    // The same table as docker's, column for column (once both read the
    // same second).
    eventually("`wrun ps -a` printing what `docker ps -a` does", || {
        wrun_on(&daemon, &["ps", "-a"]).stdout == daemon.docker(&["ps", "-a"]).stdout
    });
    eventually("`wrun ps --no-trunc` as docker's", || {
        wrun_on(&daemon, &["ps", "--no-trunc"]).stdout
            == daemon.docker(&["ps", "--no-trunc"]).stdout
    });

    let quiet = wrun_on(&daemon, &["ps", "-q"]);
    assert_eq!(quiet.stdout, daemon.docker(&["ps", "-q"]).stdout);
    assert_eq!(quiet.stdout.lines().count(), 2, "{quiet:?}");
    assert!(quiet.stdout.lines().all(|id| id.len() == 12), "{quiet:?}");
    let all = wrun_on(&daemon, &["ps", "-aq", "--no-trunc"]);
    assert_eq!(all.stdout.lines().count(), 3, "{all:?}");
    assert!(all.stdout.contains(&busy), "{all:?}");
    let exited = wrun_on(
        &daemon,
        &[
            "ps",
            "--filter",
            "status=exited",
            "--format",
            "{{.Names}} {{.Status}}",
        ],
    );
    assert!(exited.stdout.starts_with("done Exited (0) "), "{exited:?}");
    assert_eq!(exited.stdout.lines().count(), 1, "{exited:?}");
    let labelled = wrun_on(
        &daemon,
        &[
            "ps",
            "-a",
            "-f",
            "label=tier=web",
            "-f",
            "name=ech",
            "--format",
            "{{.Names}}",
        ],
    );
    assert_eq!(labelled.stdout, "echo\n", "{labelled:?}");
    // -n and -l count stopped ones too.
    let last = wrun_on(&daemon, &["ps", "-n", "3", "--format", "{{.Names}}"]);
    assert_eq!(last.stdout, "echo\nbusy\ndone\n", "{last:?}");
    let latest = wrun_on(&daemon, &["ps", "-l", "--format", "{{.Names}}"]);
    assert_eq!(latest.stdout, "echo\n", "{latest:?}");

    eventually("`wrun ps -a --format json` as docker's", || {
        wrun_on(&daemon, &["ps", "-a", "--format", "json"]).stdout
            == daemon.docker(&["ps", "-a", "--format", "json"]).stdout
    });
    let json = wrun_on(&daemon, &["ps", "--format", "json"]);
    json.assert_success();
    let objects: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object a line"))
        .collect();
    assert_eq!(objects.len(), 2, "{json:?}");
    assert_eq!(objects[1]["Names"], "busy");
    assert_eq!(objects[1]["State"], "running");
    assert_eq!(objects[1]["ID"], &busy[..12]);
    assert_eq!(objects[0]["Labels"], "tier=web");
    let table = wrun_on(
        &daemon,
        &[
            "ps",
            "--format",
            "table {{.Names}}\\t{{.Label \"tier\"}}\\t{{.State}}",
        ],
    );
    assert_eq!(
        table.stdout,
        "NAMES     LABEL     STATE\necho      web       running\nbusy                running\n",
        "{table:?}"
    );

    wrun_on(&daemon, &["ps", "--format", "{{.Nmes}}"])
        .assert_code(125)
        .assert_stderr_contains("no field `Nmes`");
    wrun_on(&daemon, &["ps", "--filter", "status"])
        .assert_code(125)
        .assert_stderr_contains("invalid filter `status`: expected KEY=VALUE");
    wrun_on(&daemon, &["ps", "--filter", "status=asleep"])
        .assert_code(1)
        .assert_stderr_contains("Error response from daemon: invalid filter 'status=asleep'");
}

#[test]
fn logs_keep_stdout_and_stderr_apart_and_follow_a_running_container() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("trap", P2.trap);
    daemon.build("spin", P2.spin);
    daemon
        .docker(&["run", "--name", "hi", "hello"])
        .assert_success();
    daemon
        .docker(&["run", "--name", "trapped", "trap"])
        .assert_code(134);
    daemon
        .docker(&["run", "--name", "panicked", "trap", "panic"])
        .assert_code(134);

    let hi = wrun_on(&daemon, &["logs", "hi"]);
    hi.assert_success();
    assert_eq!(hi.stdout, "Hello from a wrun guest!\n", "{hi:?}");
    assert_eq!(hi.stderr, "", "{hi:?}");
    // wrun's reason for the trap is in the log's stderr.
    let trapped = wrun_on(&daemon, &["logs", "trapped"]);
    trapped.assert_success().assert_stderr_contains("wasm trap");
    assert_eq!(trapped.stdout, "", "{trapped:?}");
    // What the app itself wrote to stderr.
    let panicked = wrun_on(&daemon, &["logs", "panicked"]);
    panicked.assert_stderr_contains("the guest panicked on purpose");
    assert!(!panicked.stdout.contains("panicked"), "{panicked:?}");

    let stamped = wrun_on(&daemon, &["logs", "-t", "--tail", "1", "hi"]);
    let line = stamped.stdout.trim_end();
    assert!(
        line.starts_with("20") && line.ends_with("Z Hello from a wrun guest!"),
        "{stamped:?}"
    );
    let tail0 = wrun_on(&daemon, &["logs", "--tail", "0", "hi"]);
    assert_eq!(tail0.stdout, "", "{tail0:?}");
    let since = wrun_on(&daemon, &["logs", "--since", "1h", "hi"]);
    assert_eq!(since.stdout, "Hello from a wrun guest!\n", "{since:?}");
    let future = wrun_on(&daemon, &["logs", "--since", "2999-01-01T00:00:00Z", "hi"]);
    assert_eq!(future.stdout, "", "{future:?}");
    let past = wrun_on(&daemon, &["logs", "--until", "2000-01-01", "hi"]);
    assert_eq!(past.stdout, "", "{past:?}");
    wrun_on(&daemon, &["logs", "--since", "yesterday", "hi"])
        .assert_code(125)
        .assert_stderr_contains("`yesterday` is not a duration");
    wrun_on(&daemon, &["logs", "nothing"])
        .assert_code(1)
        .assert_stderr_contains("Error response from daemon: No such container: nothing");

    // -f prints as the app writes, and ends when the container stops.
    daemon
        .docker(&["run", "-d", "--name", "busy", "spin", "sleep"])
        .assert_success();
    let follow = spawn_on(&daemon, &["logs", "-f", "busy"]);
    follow.wait_for_line("spinning: sleep");
    daemon.docker(&["stop", "busy"]).assert_success();
    let followed = follow.finish();
    followed.assert_success();
    assert_eq!(followed.stdout, "spinning: sleep\n", "{followed:?}");
}

#[test]
fn lifecycle_verbs_answer_with_dockers_names_codes_and_errors() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    daemon
        .docker(&["run", "-d", "--name", "busy", "spin", "sleep"])
        .assert_success();

    let stop = wrun_on(&daemon, &["stop", "busy"]);
    stop.assert_success();
    assert_eq!(stop.stdout, "busy\n", "{stop:?}");
    assert_eq!(state(&daemon, "busy"), "exited 143");
    // Stopping a stopped one is no failure (Docker's 304).
    wrun_on(&daemon, &["stop", "-t", "1", "busy"])
        .assert_success()
        .assert_stdout_contains("busy");
    let wait = wrun_on(&daemon, &["wait", "busy"]);
    assert_eq!(wait.stdout, "143\n", "{wait:?}");

    let start = wrun_on(&daemon, &["start", "busy"]);
    assert_eq!(start.stdout, "busy\n", "{start:?}");
    assert_eq!(state(&daemon, "busy"), "running 0");
    let restart = wrun_on(&daemon, &["restart", "-t", "2", "busy"]);
    assert_eq!(restart.stdout, "busy\n", "{restart:?}");
    assert_eq!(state(&daemon, "busy"), "running 0");

    let kill = wrun_on(&daemon, &["kill", "busy"]);
    assert_eq!(kill.stdout, "busy\n", "{kill:?}");
    assert_eq!(wrun_on(&daemon, &["wait", "busy"]).stdout, "137\n");
    wrun_on(&daemon, &["kill", "busy"])
        .assert_code(1)
        .assert_stderr_contains("Error response from daemon: ")
        .assert_stderr_contains("is not running");
    // A signal of the user's choice: 128 + its number.
    wrun_on(&daemon, &["start", "busy"]).assert_success();
    wrun_on(&daemon, &["kill", "-s", "HUP", "busy"]).assert_success();
    assert_eq!(state(&daemon, "busy"), "exited 129");
    wrun_on(&daemon, &["start", "busy"]).assert_success();
    wrun_on(&daemon, &["stop", "-s", "SIGINT", "busy"])
        .assert_success()
        .assert_stdout_contains("busy");
    assert_eq!(state(&daemon, "busy"), "exited 130");
    wrun_on(&daemon, &["kill", "-s", "NOPE", "busy"])
        .assert_code(1)
        .assert_stderr_contains("Invalid signal: NOPE");

    // Paused: still listed, as paused; then running again.
    wrun_on(&daemon, &["start", "busy"]).assert_success();
    let pause = wrun_on(&daemon, &["pause", "busy"]);
    assert_eq!(pause.stdout, "busy\n", "{pause:?}");
    let status = wrun_on(
        &daemon,
        &["ps", "--format", "{{.Names}} {{.State}} {{.Status}}"],
    );
    assert!(
        status.stdout.starts_with("busy paused Up ") && status.stdout.contains("(Paused)"),
        "{status:?}"
    );
    let unpause = wrun_on(&daemon, &["unpause", "busy"]);
    assert_eq!(unpause.stdout, "busy\n", "{unpause:?}");
    assert_eq!(state(&daemon, "busy"), "running 0");

    // Renamed: the new name works, the old one is gone.
    let rename = wrun_on(&daemon, &["rename", "busy", "spinner"]);
    rename.assert_success();
    assert_eq!(rename.stdout, "", "{rename:?}");
    assert_eq!(state(&daemon, "spinner"), "running 0");
    wrun_on(&daemon, &["rename", "busy", "again"])
        .assert_code(1)
        .assert_stderr_contains("No such container: busy");

    // rm refuses a running container; -f kills it first.
    wrun_on(&daemon, &["rm", "spinner"])
        .assert_code(1)
        .assert_stderr_contains("container is running");
    daemon
        .docker(&["run", "-d", "--name", "other", "spin", "sleep"])
        .assert_success();
    let forced = wrun_on(&daemon, &["rm", "-f", "spinner"]);
    forced.assert_success();
    assert_eq!(forced.stdout, "spinner\n", "{forced:?}");
    // A missing one: reported, and (with -f only) no failure, as docker.
    let missing = wrun_on(&daemon, &["rm", "-f", "ghost"]);
    missing
        .assert_success()
        .assert_stderr_contains("Error response from daemon: No such container: ghost");
    assert_eq!(missing.stdout, "", "{missing:?}");
    let names = daemon.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(names.stdout, "other\n", "{names:?}");
}

#[test]
fn several_containers_at_once_do_what_they_can_and_report_the_rest() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    daemon.build("hello", P2.hello);
    for name in ["one", "two"] {
        daemon
            .docker(&["run", "-d", "--name", name, "spin", "sleep"])
            .assert_success();
    }
    daemon
        .docker(&["run", "--name", "done", "hello"])
        .assert_success();

    let stop = wrun_on(&daemon, &["stop", "one", "ghost", "two"]);
    stop.assert_code(1)
        .assert_stderr_contains("Error response from daemon: No such container: ghost");
    assert_eq!(stop.stdout, "one\ntwo\n", "{stop:?}");
    assert_eq!(state(&daemon, "one"), "exited 143");
    assert_eq!(state(&daemon, "two"), "exited 143");

    let wait = wrun_on(&daemon, &["wait", "done", "ghost", "one"]);
    wait.assert_code(1)
        .assert_stderr_contains("No such container: ghost");
    assert_eq!(wait.stdout, "0\n143\n", "{wait:?}");

    let start = wrun_on(&daemon, &["start", "ghost", "one", "two"]);
    start.assert_code(1);
    assert_eq!(start.stdout, "one\ntwo\n", "{start:?}");
    assert_eq!(state(&daemon, "two"), "running 0");

    let kill = wrun_on(&daemon, &["kill", "one", "done", "two"]);
    kill.assert_code(1).assert_stderr_contains("is not running");
    assert_eq!(kill.stdout, "one\ntwo\n", "{kill:?}");

    let rm = wrun_on(&daemon, &["rm", "one", "ghost", "done"]);
    rm.assert_code(1)
        .assert_stderr_contains("No such container: ghost");
    assert_eq!(rm.stdout, "one\ndone\n", "{rm:?}");
    let names = daemon.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(names.stdout, "two\n", "{names:?}");
    // Each failure on a line of its own.
    let rm = wrun_on(&daemon, &["rm", "ghost", "phantom"]);
    rm.assert_code(1);
    assert_eq!(
        rm.stderr,
        "Error response from daemon: No such container: ghost\n\
         Error response from daemon: No such container: phantom\n",
        "{rm:?}"
    );
}

#[test]
fn inspect_and_port_show_what_the_daemon_knows() {
    let daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon
        .docker(&["run", "-d", "--name", "echo", "-p", "127.0.0.1::80", "echo"])
        .assert_success();

    let inspect = wrun_on(&daemon, &["inspect", "echo"]);
    inspect.assert_success();
    assert!(inspect.stdout.starts_with("[\n    {\n"), "{inspect:?}");
    let documents: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("JSON");
    let documents = documents.as_array().expect("an array");
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0]["State"]["Status"], "running");
    assert_eq!(documents[0]["Name"], "/echo");
    let id = daemon.docker(&["inspect", "-f", "{{.Id}}", "echo"]);
    assert_eq!(documents[0]["Id"], id.stdout.trim());
    // Several, one missing: the others printed, the failure reported.
    let two = wrun_on(&daemon, &["inspect", "ghost", &id.stdout.trim()[..8]]);
    two.assert_code(1)
        .assert_stderr_contains("Error response from daemon: No such container: ghost");
    let documents: serde_json::Value = serde_json::from_str(&two.stdout).expect("JSON");
    assert_eq!(documents.as_array().map(Vec::len), Some(1), "{two:?}");
    let none = wrun_on(&daemon, &["inspect", "ghost"]);
    none.assert_code(1);
    assert_eq!(none.stdout, "[]\n", "{none:?}");
    let format = wrun_on(
        &daemon,
        &[
            "inspect",
            "-f",
            "{{.State.Status}} {{.Name}} {{json .State.Running}}",
            "echo",
        ],
    );
    assert_eq!(format.stdout, "running /echo true\n", "{format:?}");

    // `port` prints what docker's does.
    let all = wrun_on(&daemon, &["port", "echo"]);
    all.assert_success();
    assert_eq!(all.stdout, daemon.docker(&["port", "echo"]).stdout);
    assert!(all.stdout.starts_with("80/tcp -> 127.0.0.1:"), "{all:?}");
    let one = wrun_on(&daemon, &["port", "echo", "80/tcp"]);
    assert_eq!(one.stdout, daemon.docker(&["port", "echo", "80"]).stdout);
    let port: u16 = one
        .stdout
        .trim()
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port: {one:?}"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    wrun_on(&daemon, &["port", "echo", "81"])
        .assert_code(1)
        .assert_stderr_contains("no public port `81/tcp` published for `echo`");
    wrun_on(&daemon, &["port", "echo", "http"])
        .assert_code(125)
        .assert_stderr_contains("invalid port `http`");
    wrun_on(&daemon, &["port", "ghost"])
        .assert_code(1)
        .assert_stderr_contains("No such container: ghost");
}

#[test]
fn without_a_daemon_the_verbs_say_how_to_start_one() {
    let daemon = Daemon::start();
    let dir = tempdir();
    let expected = |socket: &Path| {
        format!(
            "wrun: no wrun daemon at `{}`: start one with `wrun daemon`",
            socket.display()
        )
    };
    // No socket at all.
    let missing = dir.path().join("nothing.sock");
    for args in [
        &["ps"][..],
        &["logs", "x"],
        &["stop", "x", "y"],
        &["rm", "-f", "x"],
        &["inspect", "x"],
    ] {
        wrun_at(&daemon, &missing, args)
            .assert_code(125)
            .assert_stderr_contains(&expected(&missing));
    }
    // A socket file that nothing listens on (a daemon that died).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    wrun_at(&daemon, &stale, &["ps"])
        .assert_code(125)
        .assert_stderr_contains(&expected(&stale));
    wrun_at(&daemon, &stale, &["wait", "x"])
        .assert_code(125)
        .assert_stderr_contains(&expected(&stale));
    // Without WRUN_DAEMON: the default socket, under $XDG_RUNTIME_DIR.
    let xdg = tempdir();
    let default = wrun()
        .home(daemon.home.path())
        .env_remove("WRUN_DAEMON")
        .env("XDG_RUNTIME_DIR", xdg.path())
        .args(["ps"])
        .run();
    default
        .assert_code(125)
        .assert_stderr_contains(&expected(&xdg.path().join("wrun/wrun.sock")));
    // And with it: the daemon the test started, found at its default
    // place.
    let found = wrun()
        .home(daemon.home.path())
        .env_remove("WRUN_DAEMON")
        .env(
            "XDG_RUNTIME_DIR",
            daemon
                .socket()
                .parent()
                .and_then(Path::parent)
                .expect("xdg"),
        )
        .args(["ps", "-a"])
        .run();
    found
        .assert_success()
        .assert_stdout_contains("CONTAINER ID");
}
