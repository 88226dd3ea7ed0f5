//! stdin is empty unless -i; stdout streams through without being held.

use crate::support::*;

fn stdin_is_empty_without_interactive(apps: &Apps) {
    let out = wrun()
        .args(["run", apps.filetool, "stdin"])
        .stdin(b"should not be seen")
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "");
}

fn interactive_attaches_stdin(apps: &Apps) {
    let out = wrun()
        .args(["run", "-i", apps.filetool, "stdin"])
        .stdin(b"line one\nline two\n")
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "line one\nline two\n");
}

fn stdout_flood_streams_through(apps: &Apps) {
    // 100 MiB through stdout: all of it arrives, and wrun never holds it.
    let out = wrun()
        .args(["run", apps.flood, "100"])
        .watch_rss()
        .run_discarding_stdout();
    out.assert_success();
    assert_eq!(out.stdout_len, 100 << 20);
    let peak = out.peak_rss_kib.expect("RSS sampled");
    assert!(
        peak < 64 << 10,
        "wrun's RSS reached {peak} KiB while streaming 100 MiB"
    );
}

for_both_targets!(
    stdin_is_empty_without_interactive,
    interactive_attaches_stdin,
    stdout_flood_streams_through
);
