//! The guest's environment: only what is given, never the host's.

use crate::support::*;

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

for_both_targets!(
    host_env_never_leaks,
    env_flags_set_copy_and_skip,
    env_file_in_docker_format
);
