//! WASI 0.3 commands: a component whose only entry point is the async
//! `wasi:cli/run@0.3.0` runs, writes through the 0.3 stdout stream, and its
//! `run` result becomes the exit code.

use crate::support::*;
use wrun_test_artifacts::p3;

#[test]
fn command_runs_and_prints() {
    let out = wrun().args(["run", p3::HELLO]).run();
    out.assert_success();
    assert_eq!(out.stdout, "hello from wasi 0.3\n", "{out:#?}");
}

#[test]
fn run_returning_err_exits_1() {
    let out = wrun().args(["run", p3::HELLO, "fail"]).run();
    out.assert_code(1)
        .assert_stdout_contains("hello from wasi 0.3");
}

#[test]
fn nested_volumes_are_refused_naming_both() {
    // WASI 0.3's filesystem does not go through wrun's mount table yet.
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("app/config")).unwrap();
    let outer = format!("{}:/app", dir.path().join("app").display());
    let inner = format!("{}:/app/config:ro", dir.path().join("app/config").display());
    let out = wrun()
        .args(["run", "-v", &outer, "-v", &inner, p3::HELLO])
        .run();
    out.assert_code(126)
        .assert_stderr_contains("is nested in volume")
        .assert_stderr_contains(":/app/config:ro`")
        .assert_stderr_contains(":/app`");
    // Side by side they are fine.
    let out = wrun().args(["run", "-v", &outer, p3::HELLO]).run();
    out.assert_success();
}
