//! Clients that try to exhaust or get around `wrun daemon`: too many
//! connections, an oversized body, followers that never read, another
//! local user. Each attempt fails cleanly and the daemon goes on serving.

use crate::daemon::{Daemon, eventually};
use crate::support::P2;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn connections_beyond_the_bound_wait_for_a_free_slot() {
    let daemon = Daemon::start_with(&["--max-connections", "4"]);
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(daemon.socket()).expect("connect"))
        .collect();
    // A fifth client is held in the backlog, not served and not refused...
    let (done, answered) = mpsc::channel();
    let pinger = {
        let socket = daemon.socket();
        std::thread::spawn(move || {
            let mut stream = UnixStream::connect(socket).expect("connect");
            stream
                .write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            let _ = done.send(reply);
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        answered.try_recv().is_err(),
        "served beyond the bound of 4 connections"
    );
    // ...until a slot frees.
    drop(idle);
    let reply = answered
        .recv_timeout(Duration::from_secs(60))
        .expect("an answer once a slot is free");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("OK"), "{reply}");
    pinger.join().unwrap();
    daemon.docker(&["ps"]).assert_success();
    daemon
        .wrun()
        .args(["daemon", "--max-connections", "0"])
        .run()
        .assert_code(125)
        .assert_stderr_contains("--max-connections");
}

#[test]
fn an_oversized_body_is_refused_and_creates_nothing() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    let padding = "x".repeat(2 << 20);
    let body = format!(r#"{{"Image":"hello","Env":["PAD={padding}"]}}"#);
    let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
    let head = format!(
        "POST /v1.47/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    // The daemon may answer and close before it has read it all.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("at most 1048576 bytes"), "{reply}");
    daemon.assert_no_containers();
    daemon.docker(&["run", "--rm", "hello"]).assert_success();
}

#[test]
fn followers_that_never_read_hold_no_more_than_their_backlog() {
    let daemon = Daemon::start();
    daemon.build("flood", P2.flood);
    daemon.build("hello", P2.hello);
    // Warm: both apps compiled, the pools of the engine filled.
    daemon
        .docker(&["run", "--rm", "flood", "1"])
        .assert_success();
    daemon.docker(&["run", "--rm", "hello"]).assert_success();
    daemon
        .docker(&["create", "--name", "flood", "flood", "32"])
        .assert_success();
    // A `logs -f` and an `events` client that never read a byte.
    let stalled: Vec<UnixStream> = [
        "GET /v1.47/containers/flood/logs?follow=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1.47/events HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .iter()
    .map(|request| {
        let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
        stream.write_all(request.as_bytes()).expect("write");
        stream
    })
    .collect();
    let before = daemon.rss_kib();
    // 32 MiB of output while they stall; many events while they stall.
    daemon.docker(&["start", "-a", "flood"]).assert_success();
    for _ in 0..20 {
        daemon.docker(&["run", "--rm", "hello"]).assert_success();
    }
    // Everyone else is still served, and the daemon held neither the log
    // nor the events for the stalled clients.
    daemon.docker(&["ps", "-a"]).assert_success();
    // Well under the 32 MiB the stalled follower did not read.
    let grown = daemon.rss_kib().saturating_sub(before);
    assert!(grown < 16 << 10, "the daemon grew by {grown} KiB");
    drop(stalled);
    daemon.docker(&["rm", "flood"]).assert_success();
    eventually("the followers' connections closed", || {
        daemon.docker(&["ps", "-aq"]).stdout.is_empty()
    });
}

#[test]
fn another_local_user_cannot_reach_the_socket() {
    let daemon = Daemon::start();
    // `nobody` tries to connect; root bypasses permissions, so the attempt
    // is made as another user.
    let probe = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n    \
         print('connected')\nexcept OSError as e:\n    print('refused', e)\n",
        daemon.socket().display().to_string()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &probe,
        ])
        .output()
        .expect("setpriv (util-linux) and python3, which Debian installs by default");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("refused"), "{stdout} {:?}", out);
    assert!(stdout.contains("Permission denied"), "{stdout}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir = std::fs::metadata(daemon.socket().parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o077, 0, "{dir:?}");
}

#[test]
fn starts_beyond_the_processs_limits_are_refused_and_the_others_run_on() {
    // 1,024 open files: the daemon runs at most 1024 * 3/4 / 4 = 192
    // containers at once (3 descriptors each, a quarter kept for itself).
    let prlimit = crate::registry::find_program("prlimit", "sudo apt-get install -y util-linux");
    let via = (
        prlimit,
        vec!["--nofile=1024:1024".to_owned(), "--".to_owned()],
    );
    let daemon = Daemon::start_via(Some(via), &[]);
    daemon.build("filetool", P2.filetool);
    // Each waits on its open stdin forever, holding no socket.
    let start = |name: &str| {
        let (status, reply) = daemon.http(
            "POST",
            &format!("/v1.47/containers/create?name={name}"),
            r#"{"Image":"filetool","Cmd":["stdin"],"OpenStdin":true}"#,
        );
        assert_eq!(status, 201, "{reply}");
        daemon.http("POST", &format!("/v1.47/containers/{name}/start"), "")
    };
    for i in 0..192 {
        let (status, reply) = start(&format!("c{i}"));
        assert_eq!(status, 204, "container {i}: {reply}");
    }
    let (status, reply) = start("one-too-many");
    assert_eq!(status, 500, "{reply}");
    assert!(reply.contains("192 containers are running"), "{reply}");
    assert!(reply.contains("RLIMIT_NOFILE"), "{reply}");
    // The others run on, and the refused one starts once a place frees.
    let running = daemon.docker(&["ps", "-q"]);
    assert_eq!(running.stdout.lines().count(), 192, "{running:?}");
    daemon.docker(&["rm", "-f", "c0"]).assert_success();
    daemon.docker(&["start", "one-too-many"]).assert_success();
    let running = daemon.docker(&["ps", "-q"]);
    assert_eq!(running.stdout.lines().count(), 192, "{running:?}");
}
