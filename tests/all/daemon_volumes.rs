//! `docker volume` and `docker run -v NAME:/path` against `wrun daemon`:
//! named volumes as the docker CLI and docker-py see them, their data on
//! disk under the daemon's `$WRUN_HOME/volumes`.

use crate::daemon::Daemon;
use crate::support::P2;

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).collect()
}

#[test]
fn docker_volume_creates_lists_inspects_removes_and_prunes() {
    let daemon = Daemon::start();
    daemon
        .docker(&["volume", "create", "--label", "tier=db", "data"])
        .assert_success()
        .assert_stdout_contains("data");
    let anonymous = daemon.docker(&["volume", "create"]);
    anonymous.assert_success();
    let anonymous = anonymous.stdout.trim().to_owned();
    assert!(
        anonymous.len() == 64 && anonymous.bytes().all(|b| b.is_ascii_hexdigit()),
        "{anonymous}"
    );

    let ls = daemon.docker(&["volume", "ls"]);
    ls.assert_success();
    let table = lines(&ls.stdout);
    let header: Vec<&str> = table[0].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["DRIVER", "VOLUME NAME"], "{ls:?}");
    let rows: Vec<Vec<&str>> = table[1..]
        .iter()
        .map(|row| row.split_whitespace().collect())
        .collect();
    let mut want = vec![vec!["local", anonymous.as_str()], vec!["local", "data"]];
    want.sort();
    let mut rows = rows;
    rows.sort();
    assert_eq!(rows, want, "{ls:?}");
    let quiet = |filter: &[&str]| {
        let mut args = vec!["volume", "ls", "-q"];
        args.extend_from_slice(filter);
        let out = daemon.docker(&args);
        out.assert_success();
        let mut names: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    assert_eq!(quiet(&["--filter", "label=tier=db"]), ["data"]);
    assert_eq!(quiet(&["--filter", "name=dat"]), ["data"]);
    assert_eq!(quiet(&["--filter", "dangling=true"]).len(), 2);
    assert!(quiet(&["--filter", "dangling=false"]).is_empty());
    daemon
        .docker(&["volume", "ls", "--filter", "dangling=maybe"])
        .assert_code(1)
        .assert_stderr_contains("dangling=maybe");

    let inspect = daemon.docker(&["volume", "inspect", "data"]);
    inspect.assert_success();
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("inspect JSON");
    let volume = &json[0];
    let mountpoint = daemon.home.path().join("volumes/data/_data");
    assert_eq!(volume["Name"], "data");
    assert_eq!(volume["Driver"], "local");
    assert_eq!(volume["Scope"], "local");
    assert_eq!(volume["Labels"], serde_json::json!({"tier": "db"}));
    assert_eq!(volume["Options"], serde_json::json!({}));
    assert_eq!(volume["Mountpoint"], mountpoint.display().to_string());
    assert!(volume["CreatedAt"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(mountpoint.is_dir(), "{}", mountpoint.display());
    let format = daemon.docker(&["volume", "inspect", "-f", "{{.Driver}} {{.Labels}}", "data"]);
    assert_eq!(format.stdout.trim(), "local map[tier:db]", "{format:?}");
    daemon
        .docker(&["volume", "inspect", "ghost"])
        .assert_code(1)
        .assert_stderr_contains("get ghost: no such volume");

    // Without --all only the anonymous volume goes (Docker since API 1.42).
    std::fs::write(
        daemon
            .home
            .path()
            .join(format!("volumes/{anonymous}/_data/f")),
        "0123456789",
    )
    .expect("write into the volume");
    let prune = daemon.docker(&["volume", "prune", "-f"]);
    prune
        .assert_success()
        .assert_stdout_contains(&anonymous)
        .assert_stdout_contains("Total reclaimed space: 10B");
    assert_eq!(quiet(&[]), ["data"]);
    let prune = daemon.docker(&["volume", "prune", "-f", "--all"]);
    prune.assert_success().assert_stdout_contains("data");
    assert!(quiet(&[]).is_empty());
    assert!(!mountpoint.exists());

    daemon
        .docker(&["volume", "rm", "ghost"])
        .assert_code(1)
        .assert_stderr_contains("get ghost: no such volume");
    daemon
        .docker(&["volume", "rm", "-f", "ghost"])
        .assert_success();
}

#[test]
fn bad_volume_names_drivers_and_options_are_refused_by_name() {
    let daemon = Daemon::start();
    for bad in ["bad/name", "-dash", ".hidden"] {
        daemon
            .docker(&["volume", "create", "--", bad])
            .assert_code(1)
            .assert_stderr_contains(&format!("invalid volume name `{bad}`"));
    }
    daemon
        .docker(&["volume", "create", "--driver", "nfs", "v"])
        .assert_code(1)
        .assert_stderr_contains("volume driver `nfs` is not supported");
    daemon
        .docker(&["volume", "create", "-o", "type=tmpfs", "v"])
        .assert_code(1)
        .assert_stderr_contains("volume options `type` are not supported")
        .assert_stderr_contains("take no options");
    // `run -v` names the volume the same way, and none is made. (Not with
    // `--rm`: a container whose start fails is not removed, so `docker run
    // --rm` would wait for a removal that never comes.)
    daemon.build("filetool", P2.filetool);
    daemon
        .docker(&["run", "-v", "_x:/data", "filetool", "ls", "/data"])
        .assert_code(125)
        .assert_stderr_contains("invalid volume name `_x`");
    let all = daemon.docker(&["volume", "ls", "-q"]);
    assert_eq!(all.stdout, "", "{all:?}");
    assert_eq!(
        std::fs::read_dir(daemon.home.path().join("volumes"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn docker_run_shares_a_named_volume_that_stays_while_a_container_uses_it() {
    let daemon = Daemon::start();
    daemon.build("filetool", P2.filetool);
    // The first use creates it.
    daemon
        .docker(&[
            "run",
            "--name",
            "writer",
            "-v",
            "data:/data",
            "filetool",
            "write",
            "/data/f",
            "hello",
        ])
        .assert_success();
    let ls = daemon.docker(&["volume", "ls", "-q"]);
    assert_eq!(ls.stdout.trim(), "data", "{ls:?}");
    let on_disk = daemon.home.path().join("volumes/data/_data/f");
    assert_eq!(
        std::fs::read_to_string(&on_disk).expect("the file"),
        "hello"
    );
    // A second container reads it back through the same volume.
    daemon
        .docker(&[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "filetool",
            "cat",
            "/data/f",
        ])
        .assert_success()
        .assert_stdout_contains("hello");

    // The writer has exited, and still holds it.
    let id = daemon.docker(&["inspect", "-f", "{{.Id}}", "writer"]);
    let id = id.stdout.trim();
    assert_eq!(id.len(), 64);
    daemon
        .docker(&["volume", "rm", "data"])
        .assert_code(1)
        .assert_stderr_contains(&format!("remove data: volume is in use - [{id}]"));
    daemon
        .docker(&["volume", "rm", "-f", "data"])
        .assert_code(1)
        .assert_stderr_contains("volume is in use");
    daemon
        .docker(&["volume", "prune", "-f", "--all"])
        .assert_success();
    assert_eq!(std::fs::read_to_string(&on_disk).expect("kept"), "hello");
    let dangling = daemon.docker(&["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.stdout, "", "{dangling:?}");

    daemon.docker(&["rm", "writer"]).assert_success();
    daemon
        .docker(&["volume", "rm", "data"])
        .assert_success()
        .assert_stdout_contains("data");
    assert!(!daemon.home.path().join("volumes/data").exists());
    let ls = daemon.docker(&["volume", "ls", "-q"]);
    assert_eq!(ls.stdout, "", "{ls:?}");
}

#[test]
fn docker_py_manages_volumes() {
    let daemon = Daemon::start();
    daemon.build("filetool", P2.filetool);
    daemon
        .docker_py("volumes.py", &[])
        .assert_success()
        .assert_stdout_contains("docker-py volumes: all passed");
}

#[test]
fn anonymous_volumes_live_with_their_container_and_go_with_rm_v() {
    let daemon = Daemon::start();
    daemon.build("filetool", P2.filetool);
    let volumes = || {
        let ls = daemon.docker(&["volume", "ls", "-q"]);
        ls.assert_success();
        ls.stdout.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    daemon
        .docker(&[
            "run",
            "--name",
            "anon",
            "-v",
            "/scratch",
            "filetool",
            "write",
            "/scratch/f",
            "kept",
        ])
        .assert_success();
    let made = volumes();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].len(), 64, "{made:?}");
    let mounts = daemon.docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}",
        "anon",
    ]);
    assert_eq!(
        mounts.stdout.trim(),
        format!("volume {} /scratch", made[0]),
        "{mounts:?}"
    );
    // The data outlives the run, in the volume, and another start of the
    // container uses the same volume.
    let file = daemon
        .home
        .path()
        .join("volumes")
        .join(&made[0])
        .join("_data/f");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
    daemon.docker(&["start", "-a", "anon"]).assert_success();
    assert_eq!(volumes(), made);
    // In use: neither removed nor pruned.
    daemon.docker(&["volume", "rm", &made[0]]).assert_code(1);
    daemon.docker(&["volume", "prune", "-f"]).assert_success();
    assert_eq!(volumes(), made);
    // `rm` keeps it (as Docker's), `rm -v` of another takes its own only.
    daemon.docker(&["rm", "anon"]).assert_success();
    assert_eq!(volumes(), made);
    daemon
        .docker(&[
            "create",
            "--name",
            "both",
            "-v",
            "/tmp2",
            "-v",
            "named:/data",
            "filetool",
            "ls",
            "/",
        ])
        .assert_success();
    assert_eq!(volumes().len(), 3);
    daemon.docker(&["rm", "-v", "both"]).assert_success();
    let left = volumes();
    assert!(
        left.contains(&"named".to_owned()) && left.contains(&made[0]),
        "{left:?}"
    );
    assert_eq!(left.len(), 2, "{left:?}");
    // `--rm` takes its anonymous volumes with it.
    daemon
        .docker(&[
            "run", "--rm", "-v", "/tmp3", "filetool", "write", "/tmp3/x", "gone",
        ])
        .assert_success();
    assert_eq!(volumes().len(), 2);
    // A relative path is refused by name, and makes nothing.
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/containers/create",
        r#"{"Image":"filetool","Volumes":{"rel/x":{}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("rel/x"), "{body}");
    assert_eq!(volumes().len(), 2);
}
