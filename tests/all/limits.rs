//! Each limit, exceeded, ends only the app, with 137 and a message naming it.

use crate::support::*;

fn memory_limit_stops_a_hog(apps: &Apps) {
    let out = wrun()
        .args(["run", "--memory", "16m", apps.memhog, "64"])
        .run();
    out.assert_code(137);
    out.assert_stderr_contains("app `memhog.wasm` stopped: memory limit of 16 MiB exceeded");
    assert!(!out.stdout.contains("allocated"));
}

fn memory_within_limit_is_fine(apps: &Apps) {
    let out = wrun().args(["run", "-m", "64m", apps.memhog, "32"]).run();
    out.assert_success()
        .assert_stdout_contains("allocated 32 MiB");
}

fn memory_refusal_is_visible_to_a_careful_guest(apps: &Apps) {
    // A guest that handles allocation failure keeps running and exits on its own.
    let out = wrun()
        .args(["run", "-m", "16m", apps.memhog, "64", "graceful"])
        .run();
    out.assert_stdout_contains("allocation failed after");
    out.assert_code(if apps.target == "wasm32-wasip1" { 3 } else { 1 });
}

fn memory_too_small_to_start(apps: &Apps) {
    let out = wrun().args(["run", "--memory", "64k", apps.hello]).run();
    out.assert_code(137)
        .assert_stderr_contains("memory limit of 64 KiB exceeded");
}

fn timeout_stops_a_spinning_guest(apps: &Apps) {
    let out = wrun()
        .args(["run", "--timeout", "300ms", apps.spin, "busy"])
        .run();
    out.assert_code(137)
        .assert_stderr_contains("app `spin.wasm` stopped: timeout of 300ms exceeded");
}

fn timeout_stops_a_guest_blocked_in_a_call(apps: &Apps) {
    let out = wrun()
        .args(["run", "--timeout", "300ms", apps.spin, "sleep"])
        .run();
    out.assert_code(137)
        .assert_stderr_contains("timeout of 300ms exceeded");
}

fn timeout_stops_a_guest_waiting_for_stdin(apps: &Apps) {
    let out = wrun()
        .args(["run", "-i", "--timeout", "300ms", apps.spin, "stdin"])
        .stdin_held_open()
        .run();
    out.assert_code(137)
        .assert_stderr_contains("timeout of 300ms exceeded");
}

fn cpu_time_stops_a_busy_guest(apps: &Apps) {
    let out = wrun()
        .args(["run", "--cpu-time", "200ms", apps.spin, "busy"])
        .run();
    out.assert_code(137)
        .assert_stderr_contains("CPU time limit of 200ms exceeded");
}

fn sleeping_does_not_spend_cpu_time(apps: &Apps) {
    // Only the wall-clock limit can stop a sleeper.
    let out = wrun()
        .args([
            "run",
            "--cpu-time",
            "100ms",
            "--timeout",
            "700ms",
            apps.spin,
            "sleep",
        ])
        .run();
    out.assert_code(137)
        .assert_stderr_contains("timeout of 700ms exceeded");
}

for_both_targets!(
    memory_limit_stops_a_hog,
    memory_within_limit_is_fine,
    memory_refusal_is_visible_to_a_careful_guest,
    memory_too_small_to_start,
    timeout_stops_a_spinning_guest,
    timeout_stops_a_guest_blocked_in_a_call,
    timeout_stops_a_guest_waiting_for_stdin,
    cpu_time_stops_a_busy_guest,
    sleeping_does_not_spend_cpu_time,
    open_files_are_bounded,
    the_process_keeps_a_reserve,
);

/// Files a guest holds open count against its descriptor limit: it gets an
/// error at the limit, and can open again once it closed some.
fn open_files_are_bounded(apps: &Apps) {
    let dir = tempdir();
    let vol = format!("{}:/d", dir.path().display());
    let out = wrun()
        .args(["run", "--ulimit", "nofile=50", "-v", &vol, apps.filetool])
        .args(["openmany", "/d", "500"])
        .run();
    out.assert_success();
    // The volume's own directory is one of the 50.
    assert!(out.stdout.starts_with("opened 49\nstopped: "), "{out:#?}");
    assert!(out.stdout.contains("reopened after closing"), "{out:#?}");
    // Without a flag the default limit applies.
    let out = wrun()
        .args(["run", "-v", &vol, apps.filetool, "openmany", "/d", "5000"])
        .run();
    out.assert_success().assert_stdout_contains("opened 1023\n");
}

/// Whatever one app's own limit, the apps of a wrun process together stay
/// below the process's RLIMIT_NOFILE, leaving wrun its reserve: the guest
/// sees an error, wrun keeps working (its output, its exit code).
fn the_process_keeps_a_reserve(apps: &Apps) {
    let dir = tempdir();
    let vol = format!("{}:/d", dir.path().display());
    let prlimit = crate::registry::find_program("prlimit", "sudo apt-get install -y util-linux");
    let out = wrun_via(&prlimit, &["--nofile=400:400", "--"])
        .args([
            "run",
            "--ulimit",
            "nofile=100000",
            "-v",
            &vol,
            apps.filetool,
        ])
        .args(["openmany", "/d", "5000"])
        .run();
    out.assert_success();
    // 400 - (256 + 400/16) kept for wrun, one of them the volume's directory.
    assert!(out.stdout.starts_with("opened 118\nstopped: "), "{out:#?}");
    assert!(out.stdout.contains("reopened after closing"), "{out:#?}");
}
