//! What wrun keeps on disk: the compile cache's bound and eviction, temporary
//! files of killed writers cleared on start, and `wrun system df` / `prune`.

use crate::support::*;
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The compile cache entry of the app file at `app`, whatever the engine.
fn artifact(home: &Path, app: &Path) -> Option<PathBuf> {
    let name = format!("{:x}.cwasm", Sha256::digest(std::fs::read(app).unwrap()));
    let engines = std::fs::read_dir(home.join("cache")).ok()?;
    engines
        .flatten()
        .map(|e| e.path().join(&name))
        .find(|p| p.exists())
}

/// Sets `path`'s mtime `age` into the past.
fn age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// Copies of the hello module that differ in a custom section, so that each
/// has its own digest and its own, equally large, cache entry.
fn variants(dir: &Path, n: usize) -> Vec<PathBuf> {
    let bytes = std::fs::read(P1.hello).unwrap();
    (0..n)
        .map(|i| {
            let mut copy = bytes.clone();
            // Custom section (id 0): size, name length, name, payload.
            let name = format!("variant-{i}");
            copy.extend([0, name.len() as u8 + 1, name.len() as u8]);
            copy.extend(name.as_bytes());
            let path = dir.join(format!("hello-{i}.wasm"));
            std::fs::write(&path, copy).unwrap();
            path
        })
        .collect()
}

fn run_logged(home: &Path, app: &Path, cache_size: Option<&str>) -> Output {
    let mut w = wrun().home(home).env("WRUN_LOG", "debug");
    if let Some(size) = cache_size {
        w = w.env("WRUN_CACHE_SIZE", size);
    }
    w.arg("run").arg(app).run()
}

#[test]
fn eviction_keeps_the_most_recently_used_under_the_bound() {
    let home = tempdir();
    let dir = tempdir();
    let apps = variants(dir.path(), 3);
    run_logged(home.path(), &apps[0], None).assert_success();
    let first = artifact(home.path(), &apps[0]).expect("cached");
    let size = std::fs::metadata(&first).unwrap().blocks() * 512;
    // Room for two entries and a half.
    let bound = (size * 5 / 2).to_string();
    run_logged(home.path(), &apps[1], Some(&bound)).assert_success();
    let second = artifact(home.path(), &apps[1]).expect("cached");
    // Both used a while ago, the second more recently; then the first runs
    // again, which makes it the most recently used.
    age(&first, Duration::from_secs(7200));
    age(&second, Duration::from_secs(3600));
    run_logged(home.path(), &apps[0], Some(&bound))
        .assert_success()
        .assert_stderr_contains("loaded from the cache");
    // A third app does not fit with the two: the least recently used goes.
    run_logged(home.path(), &apps[2], Some(&bound))
        .assert_success()
        .assert_stderr_contains("compiled");
    assert!(first.exists(), "the most recently used is kept");
    assert!(!second.exists(), "the least recently used is evicted");
    assert!(artifact(home.path(), &apps[2]).is_some());
    // The evicted app compiles again and runs.
    run_logged(home.path(), &apps[1], Some(&bound))
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!")
        .assert_stderr_contains("compiled");
    let total: u64 = walk(&home.path().join("cache"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().blocks() * 512)
        .sum();
    assert!(total <= size * 5 / 2, "{total} bytes in the cache");
}

/// Every file under `dir` but wrun's own markers.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_bad_cache_size_is_refused() {
    let out = wrun()
        .env("WRUN_CACHE_SIZE", "lots")
        .args(["run", P1.hello])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("invalid WRUN_CACHE_SIZE `lots`");
}

/// Leftovers of killed writes are cleared on start: the compile cache's
/// once an hour old (a fresh one may belong to a writer at work), the image
/// store's when no writer holds the store's lock.
#[test]
fn leftover_temporary_files_are_cleared_on_start() {
    let home = tempdir();
    let engine = home.path().join("cache/some-engine");
    std::fs::create_dir_all(&engine).unwrap();
    let stale = engine.join(".tmp-killed.cwasm");
    let fresh = engine.join(".tmp-writing.cwasm");
    std::fs::write(&stale, vec![0; 4096]).unwrap();
    std::fs::write(&fresh, vec![0; 4096]).unwrap();
    age(&stale, Duration::from_secs(2 * 3600));
    wrun()
        .home(home.path())
        .args(["run", P1.hello])
        .run()
        .assert_success();
    assert!(!stale.exists(), "a stale temporary file is removed");
    assert!(fresh.exists(), "one a writer may still be writing is kept");

    // The image store: a writer (here `flock`, as a pull holds it) is at
    // work, so its temporary file stays; once it is gone, the next start
    // clears it.
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let blob = tmp.join("blob-partial");
    std::fs::write(&blob, b"half a layer").unwrap();
    let lock = home.path().join("images.gc.lock");
    // `-o`: flock itself holds the lock, not the `sleep` it starts.
    let mut writer = std::process::Command::new("flock")
        .args(["-s", "-o"])
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock (util-linux)");
    while !lock.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Wait until it holds the lock: an exclusive try fails then.
    while std::process::Command::new("flock")
        .args(["-n", "-x"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    wrun()
        .home(home.path())
        .arg("images")
        .run()
        .assert_success();
    assert!(blob.exists(), "a writer is at work");
    writer.kill().unwrap();
    writer.wait().unwrap();
    wrun()
        .home(home.path())
        .arg("images")
        .run()
        .assert_success();
    assert!(!blob.exists(), "cleared once no writer holds the lock");
}

/// An image of `app` with `args`, a baked-in directory (so an unpacked
/// tree) and a volume point (so an anonymous volume per run).
fn image(home: &Path, name: &str, app: &str, args: &str) -> tempfile::TempDir {
    let context = tempdir();
    std::fs::copy(app, context.path().join("app.wasm")).unwrap();
    std::fs::create_dir(context.path().join("static")).unwrap();
    std::fs::write(context.path().join("static/page.txt"), name).unwrap();
    std::fs::write(
        context.path().join("wrun.toml"),
        format!(
            "wasm = \"app.wasm\"\nargs = {args}\nvolumes = [\"/data\"]\n\
             [[files]]\nsource = \"static\"\ntarget = \"/static\"\n"
        ),
    )
    .unwrap();
    wrun()
        .home(home)
        .args(["build", "-t", name])
        .arg(context.path())
        .run()
        .assert_success();
    context
}

/// `wrun system df`'s rows: type, then [total, active, size, reclaimable].
fn df(home: &Path) -> Vec<(String, Vec<String>)> {
    let out = wrun().home(home).args(["system", "df"]).run();
    out.assert_success();
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("TYPE              TOTAL     ACTIVE    SIZE      RECLAIMABLE"),
        "{out:#?}"
    );
    lines
        .map(|line| {
            let (kind, rest) = line.split_at(18);
            let cells = rest.split_whitespace().map(str::to_owned).collect();
            (kind.trim().to_owned(), cells)
        })
        .collect()
}

#[track_caller]
fn assert_row(rows: &[(String, Vec<String>)], kind: &str, expected: &[&str]) {
    let cells = &rows
        .iter()
        .find(|(k, _)| k == kind)
        .unwrap_or_else(|| panic!("no {kind} row: {rows:?}"))
        .1;
    assert_eq!(&cells[..expected.len()], expected, "{kind}: {rows:?}");
}

fn echo(port: u16, text: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(text.as_bytes()).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = String::new();
    conn.read_to_string(&mut back).unwrap();
    back
}

#[test]
fn df_and_prune_keep_what_a_running_app_uses() {
    let home = tempdir();
    let h = home.path();
    let _server = image(h, "server:1", P2.echo_server, r#"["0.0.0.0:80"]"#);
    let _idle = image(h, "idle:1", P2.filetool, r#"["cat", "/static/page.txt"]"#);
    // One run of idle:1 (its tree stays, its volume goes with the run); one
    // of the server that stops at once (a bad address), so that the one
    // that keeps running maps its artifact from the cache.
    wrun()
        .home(h)
        .args(["run", "idle:1"])
        .run()
        .assert_success()
        .assert_stdout_contains("idle:1");
    wrun()
        .home(h)
        .args(["run", "server:1", "no-such-host:1"])
        .run()
        .assert_code(1);
    let server = wrun()
        .home(h)
        .args(["run", "-p", "127.0.0.1::80", "server:1"])
        .spawn();
    let port = server.published_port("80/tcp");
    server.wait_for_line("listening on");

    let rows = df(h);
    assert_row(&rows, "Images", &["2", "1"]);
    assert_row(&rows, "Unpacked Images", &["2", "1"]);
    assert_row(&rows, "Local Volumes", &["1", "1"]);
    // Its compiled artifact is mapped by the running server.
    assert_row(&rows, "Compile Cache", &["2", "1"]);
    let images = &rows[0].1;
    assert!(images[4].ends_with("%)") && images[2] != "0B", "{rows:?}");

    // Without -f, Docker's question: anything but y leaves everything.
    let out = wrun()
        .home(h)
        .args(["system", "prune", "-a"])
        .stdin(b"n\n")
        .run();
    out.assert_success()
        .assert_stdout_contains(
            "WARNING! This will remove:\n  - all images not used by a running app\n",
        )
        .assert_stdout_contains("\nAre you sure you want to continue? [y/N] ");
    assert!(!out.stdout.contains("Total reclaimed space"), "{out:#?}");
    assert_row(&df(h), "Images", &["2", "1"]);

    // -a: every image no running app uses goes, with its tree, and the whole
    // compile cache; the server, its tree and its volume stay, and it keeps
    // serving from its mapped artifact.
    let out = wrun()
        .home(h)
        .args(["system", "prune", "-a"])
        .stdin(b"y\n")
        .run();
    out.assert_success()
        .assert_stdout_contains("Deleted Images:\nuntagged: idle:1\ndeleted: sha256:")
        .assert_stdout_contains("Deleted Unpacked Images:\nsha256:")
        .assert_stdout_contains("Deleted Compile Cache:\n")
        .assert_stdout_contains("Total reclaimed space: ");
    assert!(!out.stdout.contains("server:1"), "{out:#?}");
    let rows = df(h);
    assert_row(&rows, "Images", &["1", "1"]);
    assert_row(&rows, "Unpacked Images", &["1", "1"]);
    assert_row(&rows, "Local Volumes", &["1", "1"]);
    assert_row(&rows, "Compile Cache", &["0", "0", "0B", "0B"]);
    assert_eq!(echo(port, "still here"), "still here");

    // Killed, the run leaves its anonymous volume behind: prune removes it;
    // the image, which has a name, stays without -a.
    drop(server);
    let rows = df(h);
    assert_row(&rows, "Local Volumes", &["1", "0"]);
    assert_row(&rows, "Images", &["1", "0"]);
    let out = wrun().home(h).args(["system", "prune", "-f"]).run();
    out.assert_success()
        .assert_stdout_contains("Deleted Volumes:\nanonymous-");
    assert!(!out.stdout.contains("untagged"), "{out:#?}");
    let rows = df(h);
    assert_row(&rows, "Local Volumes", &["0"]);
    assert_row(&rows, "Images", &["1", "0"]);
    let out = wrun().home(h).args(["system", "prune", "-af"]).run();
    out.assert_success()
        .assert_stdout_contains("untagged: server:1");
    for (kind, cells) in df(h) {
        assert_eq!(cells, ["0", "0", "0B", "0B"], "{kind}");
    }
    // Nothing left to reclaim.
    wrun()
        .home(h)
        .args(["system", "prune", "-f"])
        .run()
        .assert_success()
        .assert_stdout_contains("Total reclaimed space: 0B");
}
