//! The AOT cache: the second run compiles nothing; a damaged entry is
//! detected and rebuilt, never executed.

use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};

fn entries(home: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(engines) = fs::read_dir(home.join("cache")) else {
        return found;
    };
    for engine in engines {
        let engine = engine.unwrap();
        if engine.file_name() == "digests" {
            continue;
        }
        for entry in fs::read_dir(engine.path()).unwrap() {
            found.push(entry.unwrap().path());
        }
    }
    found
}

fn run_logged(home: &Path, app: &str) -> Output {
    wrun()
        .home(home)
        .env("WRUN_LOG", "debug")
        .args(["run", app])
        .run()
}

fn second_run_compiles_nothing(apps: &Apps) {
    let home = tempdir();
    let first = run_logged(home.path(), apps.hello);
    first.assert_success().assert_stderr_contains("compiled");
    let cached = entries(home.path());
    assert_eq!(cached.len(), 1, "one artifact per app: {cached:?}");
    let name = cached[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.ends_with(".cwasm") && name.len() == 64 + 6,
        "keyed by sha256: {name}"
    );

    let second = run_logged(home.path(), apps.hello);
    second
        .assert_success()
        .assert_stderr_contains("loaded from the cache");
    assert!(!second.stderr.contains("compiled"), "{second:#?}");
    assert_eq!(entries(home.path()), cached);
}

fn corrupted_entries_are_rebuilt(apps: &Apps) {
    let home = tempdir();
    run_logged(home.path(), apps.hello).assert_success();
    let entry = entries(home.path()).pop().unwrap();
    let good = fs::read(&entry).unwrap();

    // One flipped byte in the middle of the machine code, a truncation, and
    // garbage: each is detected, reported, rebuilt, and the app still runs.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("flipped byte", flipped),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("garbage", b"not an artifact".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damages {
        fs::write(&entry, &bytes).unwrap();
        let out = run_logged(home.path(), apps.hello);
        out.assert_success()
            .assert_stdout_contains("Hello from a wrun guest!");
        out.assert_stderr_contains("corrupted")
            .assert_stderr_contains("compiled");
        assert_eq!(
            fs::read(&entry).unwrap(),
            good,
            "entry rebuilt after {what}"
        );
        run_logged(home.path(), apps.hello).assert_stderr_contains("loaded from the cache");
    }
}

fn stale_entries_are_rebuilt(apps: &Apps) {
    // An entry whose digest is right but which is not a usable artifact for
    // this engine (as after an upgrade) is rebuilt too.
    let home = tempdir();
    run_logged(home.path(), apps.hello).assert_success();
    let entry = entries(home.path()).pop().unwrap();
    let good = fs::read(&entry).unwrap();
    // The trailer: magic, kind byte, BLAKE3 of the artifact (see runtime/src/cache.rs).
    let kind = good[good.len() - 33];
    let mut stale = b"\x7fELF from another engine".to_vec();
    stale.extend_from_slice(b"wrun-cwasm-v2\0\0");
    stale.push(kind);
    stale.extend_from_slice(blake3::hash(b"\x7fELF from another engine").as_bytes());
    fs::write(&entry, &stale).unwrap();
    let out = run_logged(home.path(), apps.hello);
    out.assert_success()
        .assert_stderr_contains("unusable")
        .assert_stderr_contains("compiled");
    assert_eq!(fs::read(&entry).unwrap(), good);
}

for_both_targets!(
    second_run_compiles_nothing,
    corrupted_entries_are_rebuilt,
    stale_entries_are_rebuilt
);

#[test]
fn settled_apps_are_not_rehashed_and_changes_are_noticed() {
    let home = tempdir();
    let dir = tempdir();
    let app = copy_app(P2.hello, dir.path(), "hello.wasm");
    // Only files unchanged for a few seconds are remembered by identity.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    run_logged(home.path(), app.to_str().unwrap()).assert_success();
    let out = run_logged(home.path(), app.to_str().unwrap());
    out.assert_success()
        .assert_stderr_contains("digest remembered, file not read");

    // Rewrite the file in place with different bytes of the same size: the
    // change is noticed, the app recompiled, and the new code runs.
    let mut bytes = fs::read(&app).unwrap();
    let at = bytes.windows(5).position(|w| w == b"Hello").unwrap();
    bytes[at] = b'J';
    fs::write(&app, &bytes).unwrap();
    let out = run_logged(home.path(), app.to_str().unwrap());
    out.assert_success().assert_stderr_contains("compiled");
    assert_eq!(out.stdout, "Jello from a wrun guest!\n");
}

#[test]
fn unwritable_cache_does_not_stop_the_app() {
    let home = tempdir();
    // A file where the cache directory should be.
    fs::write(home.path().join("cache"), "in the way").unwrap();
    let out = run_logged(home.path(), P2.hello);
    out.assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    out.assert_stderr_contains("continuing without caching");
}

#[test]
fn no_progress_output_on_a_pipe() {
    let home = tempdir();
    let out = wrun().home(home.path()).args(["run", P2.hello]).run();
    out.assert_success();
    assert_eq!(
        out.stderr, "",
        "a cold start on a pipe prints nothing but the app's output"
    );
}

#[test]
fn compile_progress_on_a_terminal() {
    // A module big enough to take a moment, run under `script` so that
    // stderr is a terminal.
    let dir = tempdir();
    let wat = dir.path().join("big.wat");
    let mut text = String::from("(module\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "(func $f{i} (param i32) (result i32) local.get 0 i32.const {i} i32.add i32.const 3 i32.mul)\n"
        ));
    }
    text.push_str("(func (export \"_start\")))\n");
    fs::write(&wat, text).unwrap();
    let home = tempdir();
    let command = format!("{} run {}", env!("CARGO_BIN_EXE_wrun"), wat.display());
    let output = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("WRUN_HOME", home.path())
        .output()
        .expect("`script` (util-linux) runs the command on a terminal");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("compiling big.wat"),
        "no spinner on a terminal: {text:?}"
    );
}
