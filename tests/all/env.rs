//! The guest's environment: only what is given, never the host's.

use crate::support::*;
use std::path::Path;

fn env_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env "))
        .collect()
}

fn host_env_never_leaks(apps: &Apps) {
    let out = wrun()
        .env("WRUN_TEST_CANARY", "secret-value")
        .args(["run", apps.args_env])
        .run();
    out.assert_success();
    assert_eq!(
        env_lines(&out.stdout),
        Vec::<&str>::new(),
        "no -e, no environment: {out:#?}"
    );
}

fn env_flags_set_copy_and_skip(apps: &Apps) {
    let out = wrun()
        .env("WRUN_TEST_CANARY", "from-host")
        .env("WRUN_TEST_OTHER", "not-asked-for")
        .args([
            "run",
            "-e",
            "A=1",
            "-e",
            "EMPTY=",
            "-e",
            "EQ=x=y",
            "-e",
            "WRUN_TEST_CANARY",
        ])
        .args(["-e", "WRUN_TEST_UNSET", apps.args_env])
        .run();
    out.assert_success();
    assert_eq!(
        env_lines(&out.stdout),
        ["A=1", "EMPTY=", "EQ=x=y", "WRUN_TEST_CANARY=from-host"],
        "{out:#?}"
    );
}

fn env_file_in_docker_format(apps: &Apps) {
    let dir = tempdir();
    let file = dir.path().join("app.env");
    std::fs::write(
        &file,
        "# database settings\n\nDB_HOST=db\n  DB_PORT=5432\nQUOTED=\"kept as is\"\nWRUN_TEST_CANARY\nOVERRIDDEN=file\n",
    )
    .unwrap();
    let out = wrun()
        .env("WRUN_TEST_CANARY", "copied")
        .args(["run", "--env-file"])
        .arg(&file)
        .args(["-e", "OVERRIDDEN=flag", apps.args_env])
        .run();
    out.assert_success();
    assert_eq!(
        env_lines(&out.stdout),
        [
            "DB_HOST=db",
            "DB_PORT=5432",
            "OVERRIDDEN=flag",
            "QUOTED=\"kept as is\"",
            "WRUN_TEST_CANARY=copied",
        ],
        "{out:#?}"
    );

    std::fs::write(&file, "GOOD=1\nBAD NAME=2\n").unwrap();
    let out = wrun()
        .args(["run", "--env-file"])
        .arg(&file)
        .arg(apps.args_env)
        .run();
    out.assert_code(125)
        .assert_stderr_contains("`BAD NAME=2`")
        .assert_stderr_contains("line 2");
}

/// Many variables, each given twice (in two files, each under the cap) and
/// one more time by -e: one each, the last value winning. The old
/// deduplication was quadratic and took minutes here; the time itself is in
/// bench/RESULTS.md, not asserted.
fn many_variables_are_merged_linearly(apps: &Apps) {
    let dir = tempdir();
    let n = 200_000;
    let write = |name: &str, value: &dyn Fn(usize) -> String| {
        let text: String = (0..n).map(|i| format!("V{i:06}={}\n", value(i))).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let first = write("first.env", &|_| "1".to_owned());
    let second = write("second.env", &|i| format!("2-{i}"));
    let out = wrun()
        .args(["run", "--env-file"])
        .arg(&first)
        .arg("--env-file")
        .arg(&second)
        .args(["-e", "V000007=flag", apps.args_env])
        .run();
    out.assert_success();
    let lines = env_lines(&out.stdout);
    assert_eq!(lines.len(), n, "one variable per name");
    assert_eq!(lines[0], "V000000=2-0");
    assert_eq!(lines[7], "V000007=flag");
    assert_eq!(lines[n - 1], format!("V{:06}=2-{}", n - 1, n - 1));
}

for_both_targets!(
    host_env_never_leaks,
    env_flags_set_copy_and_skip,
    env_file_in_docker_format,
    many_variables_are_merged_linearly
);

/// Env files are read up to a cap: an endless stream, a huge file and a
/// FIFO that never ends all stop there, with the file and the cap named.
#[test]
fn env_files_are_capped() {
    let dir = tempdir();
    let sparse = dir.path().join("sparse.env");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let fifo = dir.path().join("fifo.env");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A writer that would never stop: wrun must stop reading at the cap
    // (the writer then fails with EPIPE and ends).
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let chunk = vec![b'A'; 1 << 16];
            while f.write_all(&chunk).is_ok() {}
        });
    }
    for file in [Path::new("/dev/zero"), &sparse, &fifo] {
        let out = wrun()
            .args(["run", "--env-file"])
            .arg(file)
            .arg(P1.args_env)
            .run();
        out.assert_code(125).assert_stderr_contains(&format!(
            "env file `{}` is larger than the limit of 4 MiB",
            file.display()
        ));
        assert!(out.stderr.len() < 300, "{out:#?}");
    }
}

/// An invalid line is quoted in part, however long it is.
#[test]
fn long_invalid_env_lines_are_cut_short_in_messages() {
    let dir = tempdir();
    let file = dir.path().join("bad.env");
    let line = format!("BAD NAME={}", "x".repeat(3 << 20));
    std::fs::write(&file, format!("OK=1\n{line}\n")).unwrap();
    let out = wrun()
        .args(["run", "--env-file"])
        .arg(&file)
        .arg(P1.args_env)
        .run();
    out.assert_code(125)
        .assert_stderr_contains("`BAD NAME=xxx")
        .assert_stderr_contains(&format!("… ({} bytes)", line.len()))
        .assert_stderr_contains("line 2): the name contains whitespace");
    assert!(out.stderr.len() < 300, "{} bytes", out.stderr.len());
}
