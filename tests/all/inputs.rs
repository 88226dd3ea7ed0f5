//! Every file wrun reads on a user's behalf is read up to a cap, and a file
//! over it is refused with its name and the cap, before it can fill wrun's
//! memory (env files: see env.rs).

use crate::support::*;
use std::path::Path;

/// A sparse file of `len` bytes (nothing is written to disk).
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[track_caller]
fn assert_refused(out: &Output, what: &str, path: &Path, limit: &str) {
    out.assert_code(125).assert_stderr_contains(&format!(
        "{what} `{}` is larger than the limit of {limit}",
        path.display()
    ));
    assert!(out.stderr.len() < 300, "{out:#?}");
}

#[test]
fn build_manifests_are_capped() {
    let dir = tempdir();
    let manifest = dir.path().join("wrun.toml");
    for make in [
        |p: &Path| sparse(p, 2 << 20),
        |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
    ] {
        let _ = std::fs::remove_file(&manifest);
        make(&manifest);
        let home = tempdir();
        let out = wrun()
            .home(home.path())
            .args(["build", "-t", "x:1"])
            .arg(dir.path())
            .run();
        assert_refused(&out, "build manifest", &manifest, "1 MiB");
    }
}

#[test]
fn long_lines_in_a_build_manifest_are_cut_short() {
    let dir = tempdir();
    let key = "k".repeat(512 << 10);
    std::fs::write(
        dir.path().join("wrun.toml"),
        format!("wasm = \"a.wasm\"\n{key} = 1\n"),
    )
    .unwrap();
    let home = tempdir();
    let out = wrun()
        .home(home.path())
        .args(["build", "-t", "x:1"])
        .arg(dir.path())
        .run();
    out.assert_code(125)
        .assert_stderr_contains("line 2, column 1: unknown field `kkk");
    assert!(out.stderr.len() < 600, "{} bytes", out.stderr.len());
}

#[test]
fn serve_configs_and_token_files_are_capped() {
    let dir = tempdir();
    let config = dir.path().join("serve.toml");
    sparse(&config, 5 << 20);
    let out = wrun()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .run();
    assert_refused(&out, "serve config", &config, "4 MiB");

    std::fs::write(
        &config,
        "version = 1\n[tenants.t]\ntoken_file = \"/dev/zero\"\n",
    )
    .unwrap();
    let out = wrun()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .run();
    assert_refused(&out, "token file", Path::new("/dev/zero"), "64 KiB");

    let out = wrun()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-token-file", "/dev/zero", P2.hello])
        .run();
    assert_refused(&out, "token file", Path::new("/dev/zero"), "64 KiB");
}

#[test]
fn credentials_files_and_passwords_are_capped() {
    let home = tempdir();
    let auth = home.path().join("auth.json");
    sparse(&auth, 2 << 20);
    let out = wrun()
        .home(home.path())
        .args(["logout", "127.0.0.1:5000"])
        .run();
    assert_refused(&out, "credentials file", &auth, "1 MiB");

    // A password on stdin is read up to its cap, before any registry is
    // contacted (nothing listens on port 9 here).
    let out = wrun()
        .home(home.path())
        .args(["login", "-u", "me", "--password-stdin", "127.0.0.1:9"])
        .stdin(&vec![b'p'; 100 << 10])
        .run();
    assert_refused(&out, "password", Path::new("-"), "64 KiB");
}

#[test]
fn app_files_are_capped() {
    let dir = tempdir();
    let app = dir.path().join("huge.wasm");
    sparse(&app, (1 << 30) + 1);
    let out = wrun().args(["run"]).arg(&app).run();
    out.assert_code(126).assert_stderr_contains(&format!(
        "app `{}` is larger than the limit of 1 GiB",
        app.display()
    ));
}
