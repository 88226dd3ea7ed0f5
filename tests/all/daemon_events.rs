//! `docker events` against `wrun daemon`: what happened to containers,
//! networks and volumes, from the recorded history and live.

use crate::daemon::{Daemon, docker_cli, eventually};
use crate::support::P2;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn docker_events_shows_the_lifecycle_from_history_and_live() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("spin", P2.spin);
    // Live: a follower started before anything happens.
    let mut follower = Command::new(docker_cli())
        .args([
            "events",
            "--filter",
            "container=busy",
            "--format",
            r#"{{.Action}} {{index .Actor.Attributes "exitCode"}}{{index .Actor.Attributes "signal"}}"#,
        ])
        .env("DOCKER_HOST", format!("unix://{}", daemon.socket().display()))
        .env("DOCKER_CONFIG", daemon.home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker events");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = follower.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line.trim().to_owned());
            }
        })
    };
    let since = now();
    daemon
        .docker(&["run", "--name", "once", "--label", "suite=ev", "hello"])
        .assert_success();
    daemon.docker(&["rm", "once"]).assert_success();
    daemon
        .docker(&["network", "create", "evnet"])
        .assert_success();
    daemon.docker(&["network", "rm", "evnet"]).assert_success();
    daemon
        .docker(&["volume", "create", "evvol"])
        .assert_success();
    daemon.docker(&["volume", "rm", "evvol"]).assert_success();
    daemon
        .docker(&["run", "-d", "--name", "busy", "spin"])
        .assert_success();
    daemon.docker(&["pause", "busy"]).assert_success();
    daemon.docker(&["unpause", "busy"]).assert_success();
    daemon.docker(&["stop", "-t", "1", "busy"]).assert_success();
    daemon.docker(&["rm", "busy"]).assert_success();

    // The follower saw busy's life, and nothing of the others'.
    let want = [
        "create", "start", "pause", "unpause", "kill 15", "die 143", "stop", "destroy",
    ];
    eventually("the follower to see busy destroyed", || {
        lines.lock().unwrap().len() >= want.len()
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let _ = reader.join();
    assert_eq!(*lines.lock().unwrap(), want);

    // The history, bounded by --since and --until.
    let until = (now() + 1).to_string();
    let history = daemon.docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        "label=suite=ev",
        "--format",
        r#"{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes "exitCode"}}"#,
    ]);
    history.assert_success();
    let got: Vec<&str> = history.stdout.lines().map(str::trim).collect();
    assert_eq!(
        got,
        [
            "container create once",
            "container start once",
            "container die once 0",
            "container destroy once"
        ],
        "{history:?}"
    );
    let objects = daemon.docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        "type=network",
        "--filter",
        "type=volume",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let got: Vec<&str> = objects.stdout.lines().map(str::trim).collect();
    assert_eq!(
        got,
        [
            "network create evnet",
            "network destroy evnet",
            "volume create evvol",
            "volume destroy evvol"
        ],
        "{objects:?}"
    );
    // The wire form, with the fields older clients read (compose 1.29
    // skips an event without `status`).
    let (status, body) = daemon.http(
        "GET",
        &format!(
            "/v1.41/events?since={since}&until={until}&filters=%7B%22event%22%3A%5B%22die%22%5D%7D"
        ),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let first: serde_json::Value =
        serde_json::from_str(body.lines().next().expect("an event")).expect("JSON");
    assert_eq!(first["status"], "die", "{first}");
    assert_eq!(first["Type"], "container", "{first}");
    assert_eq!(first["from"], "hello", "{first}");
    assert_eq!(first["Actor"]["ID"], first["id"], "{first}");
    assert!(first["timeNano"].as_i64().unwrap() / 1_000_000_000 == first["time"].as_i64().unwrap());
    // A filter no event can have is an error naming it.
    daemon
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            "1",
            "--filter",
            "type=bogus",
        ])
        .assert_code(1)
        .assert_stderr_contains("type=bogus");
}
