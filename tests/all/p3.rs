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
