//! Crash consistency: `wrun build`, `load`, `pull` and a compile-cache write
//! killed with SIGKILL at every named point of their writes (the test hook
//! `WRUN_TEST_CRASH`, runtime/src/crash_hook.rs, and byte offsets within
//! the blobs), each time over a store that already holds an image. After
//! every death:
//! - every blob in the store hashes to its name, and every named image has
//!   all its blobs (nothing half-written is visible);
//! - `wrun images` lists no invalid image, and the image being written
//!   either runs or is cleanly "not found";
//! - `wrun image prune` leaves no temporary file, no unreferenced blob and
//!   no unpacked tree of an unnamed image;
//! - the same command, run again, succeeds, and the image kept runs.

use crate::registry::Registry;
use crate::support::{P1, Wrun, tempdir, wrun};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wrun_runtime::crash_hook as hook;

/// The image every store holds before and after each crash.
const KEEP: &str = "keep:1";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `$WRUN_HOME` holding the image `keep:1`.
struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Home {
        let home = Home(tempdir());
        home.run(&["build", "-t", KEEP, P1.args_env])
            .assert_success();
        home
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn wrun(&self) -> Wrun {
        wrun().home(self.path())
    }

    fn run(&self, args: &[&str]) -> crate::support::Output {
        self.wrun().args(args).run()
    }

    fn blobs(&self) -> PathBuf {
        self.path().join("images/blobs/sha256")
    }

    fn blob_names(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.blobs())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Runs wrun with the crash hook set to `spec`; true if it died by
    /// SIGKILL, false if it finished (successfully) without reaching it.
    fn crash(&self, args: &[&str], spec: &str) -> bool {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wrun"))
            .args(args)
            .env("WRUN_HOME", self.path())
            .env(hook::ENV, spec)
            .env_remove("WRUN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("`wrun {args:?}` with {spec} did not finish");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stderr = std::fs::read_to_string(log.path()).unwrap();
        match status.signal() {
            Some(9) => true,
            None if status.success() => false,
            _ => panic!("`wrun {args:?}` with {spec}: {status}: {stderr}"),
        }
    }

    /// What `index.json` names, checked: each named image has every blob
    /// it references, at its declared size; every blob in the store hashes
    /// to its name; `wrun images` finds nothing invalid.
    fn check(&self) -> BTreeSet<String> {
        for name in self.blob_names() {
            let bytes = std::fs::read(self.blobs().join(&name)).unwrap();
            assert_eq!(sha256_hex(&bytes), name, "blob {name} is corrupted");
        }
        let (names, _) = self.referenced();
        let images = self.run(&["images", "--format", "json"]);
        images.assert_success();
        for line in images.stdout.lines() {
            assert!(!line.contains("\"invalid\""), "{line}");
        }
        assert!(!images.stderr.contains("image `"), "{images:?}");
        names
    }

    /// The names in `index.json` and every blob they reach (each checked
    /// present at its declared size).
    fn referenced(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let text = std::fs::read(self.path().join("images/index.json")).unwrap();
        let index: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let mut names = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        let mut pending: Vec<serde_json::Value> = index["manifests"].as_array().unwrap().clone();
        for entry in &pending {
            if let Some(name) = entry["annotations"]["org.opencontainers.image.ref.name"].as_str() {
                names.insert(name.to_owned());
            }
        }
        while let Some(descriptor) = pending.pop() {
            let hex = descriptor["digest"].as_str().unwrap()["sha256:".len()..].to_owned();
            let path = self.blobs().join(&hex);
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("an image is named but blob {hex} is missing: {e}"))
                .len();
            assert_eq!(Some(size), descriptor["size"].as_u64(), "blob {hex}");
            blobs.insert(hex);
            let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
            if media_type.contains("manifest") || media_type.contains("index") {
                let doc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                if let Some(children) = doc["manifests"].as_array() {
                    pending.extend(children.iter().cloned());
                } else {
                    pending.push(doc["config"].clone());
                    pending.extend(doc["layers"].as_array().unwrap().iter().cloned());
                }
            }
        }
        (names, blobs)
    }

    /// `wrun image prune`, then: no temporary file anywhere in the store,
    /// exactly the referenced blobs, unpacked trees only of named images.
    fn prune_and_check(&self) {
        self.run(&["image", "prune"]).assert_success();
        let tmp: Vec<_> = std::fs::read_dir(self.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
        for entry in std::fs::read_dir(self.path().join("images")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                ["blobs", "index.json", "oci-layout"].contains(&name.as_str()),
                "left in the layout: {name}"
            );
        }
        let (_, referenced) = self.referenced();
        assert_eq!(self.blob_names(), referenced, "unreferenced blobs kept");
        if let Ok(dir) = std::fs::read_dir(self.path().join("rootfs")) {
            for entry in dir {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(referenced.contains(&name), "rootfs/{name} of no image");
            }
        }
    }

    /// The image `name` runs (printing `expect`) if the index names it, or
    /// is cleanly not found.
    fn runs_or_is_absent(&self, names: &BTreeSet<String>, name: &str, expect: &str) {
        let out = self.run(&["run", "--pull", "never", name]);
        if names.contains(name) {
            out.assert_success().assert_stdout_contains(expect);
        } else {
            out.assert_code(127).assert_stderr_contains("not found");
        }
        assert!(
            !out.stderr.contains("corrupted") && !out.stderr.contains("missing"),
            "{out:?}"
        );
    }
}

/// An image with a tar layer (files baked in) over P1's hello, to build.
fn build_context() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::copy(P1.hello, dir.path().join("app.wasm")).unwrap();
    std::fs::create_dir_all(dir.path().join("static/sub")).unwrap();
    std::fs::write(dir.path().join("static/a.txt"), "a".repeat(3000)).unwrap();
    std::fs::write(dir.path().join("static/sub/b.txt"), "b").unwrap();
    std::fs::write(
        dir.path().join("wrun.toml"),
        "wasm = \"app.wasm\"\n[[files]]\nsource = \"static\"\ntarget = \"/static\"\n",
    )
    .unwrap();
    dir
}

/// Byte offsets into the blobs of one image: the edges and middles of its
/// wasm layer and of what follows it.
fn offsets(total: u64) -> Vec<String> {
    let wasm = std::fs::metadata(P1.hello).unwrap().len();
    let mut at = vec![0, 1, wasm / 2, wasm - 1, wasm, wasm + 1, total - 1];
    at.sort();
    at.dedup();
    at.into_iter()
        .filter(|n| *n < total)
        .map(|n| format!("{}:{n}", hook::BLOB_BYTES))
        .collect()
}

/// Crashes `args` at each of `specs`, checking the store after each, then
/// runs it to the end and removes the image again.
fn crash_at_each(home: &Home, args: &[&str], image: &str, specs: &[String]) {
    let baseline = home.blob_names();
    for spec in specs {
        assert!(
            home.crash(args, spec),
            "`wrun {args:?}` never reached {spec}"
        );
        let names = home.check();
        assert!(names.contains(KEEP), "{spec}: {names:?}");
        home.runs_or_is_absent(&names, image, "Hello from a wrun guest!");
        home.prune_and_check();
        home.run(args).assert_success();
        home.run(&["run", "--pull", "never", image])
            .assert_success()
            .assert_stdout_contains("Hello from a wrun guest!");
        home.run(&["rmi", image]).assert_success();
        assert_eq!(home.blob_names(), baseline, "{spec}");
    }
    home.run(&["run", KEEP, "still"])
        .assert_success()
        .assert_stdout_contains("argv[1]=still");
}

fn spec(point: &str, n: u64) -> String {
    format!("{point}:{n}")
}

/// Bytes of every blob of the image a fresh store holds after `args`.
fn image_bytes(args: &[&str]) -> u64 {
    let home = Home::new();
    let before = home.blob_names();
    home.run(args).assert_success();
    (home.blob_names().difference(&before))
        .map(|b| std::fs::metadata(home.blobs().join(b)).unwrap().len())
        .sum()
}

#[test]
fn builds_killed_anywhere_leave_a_consistent_store() {
    let ctx = build_context();
    let dir = ctx.path().to_str().unwrap();
    let args = ["build", "-t", "new:1", dir];
    let mut specs = offsets(image_bytes(&args));
    // Four blobs: the wasm layer, the tar layer, the config, the manifest.
    for n in [1, 2, 4] {
        specs.push(spec(hook::BLOB_BEFORE_SYNC, n));
        specs.push(spec(hook::BLOB_BEFORE_RENAME, n));
        specs.push(spec(hook::BLOB_AFTER_RENAME, n));
    }
    for point in [
        hook::BUILD_BEFORE_MANIFEST,
        hook::BUILD_BEFORE_TAG,
        hook::LAYOUT_BEFORE_SYNC,
        hook::LAYOUT_BEFORE_RENAME,
        hook::LAYOUT_AFTER_RENAME,
    ] {
        specs.push(spec(point, 1));
    }
    crash_at_each(&Home::new(), &args, "new:1", &specs);
}

#[test]
fn loads_killed_anywhere_leave_a_consistent_store() {
    let ctx = build_context();
    let source = Home::new();
    source
        .run(&["build", "-t", "new:1", ctx.path().to_str().unwrap()])
        .assert_success();
    let archive = ctx.path().join("new.tar");
    let archive = archive.to_str().unwrap();
    source
        .run(&["save", "-o", archive, "new:1"])
        .assert_success();
    let args = ["load", "-i", archive];
    // Blobs arrive in the archive's (digest) order, so only the edges are
    // known: the first, the middle and the last byte.
    let total = image_bytes(&args);
    let mut specs: Vec<String> = [0, 1, total / 2, total - 1]
        .map(|n| spec(hook::BLOB_BYTES, n))
        .to_vec();
    for n in [1, 4] {
        specs.push(spec(hook::BLOB_BEFORE_RENAME, n));
        specs.push(spec(hook::BLOB_AFTER_RENAME, n));
    }
    for point in [
        hook::ROOTFS_AFTER_LAYER,
        hook::ROOTFS_BEFORE_RENAME,
        hook::LOAD_BEFORE_TAG,
        hook::LAYOUT_BEFORE_RENAME,
        hook::LAYOUT_AFTER_RENAME,
    ] {
        specs.push(spec(point, 1));
    }
    crash_at_each(&Home::new(), &args, "new:1", &specs);
}

#[test]
fn pulls_killed_anywhere_leave_a_consistent_store() {
    let registry = Registry::start();
    let ctx = build_context();
    let remote = format!("{}/crash/new:1", registry.host());
    let source = Home::new();
    source
        .run(&["build", "-t", &remote, ctx.path().to_str().unwrap()])
        .assert_success();
    source
        .run(&["push", "--insecure", &remote])
        .assert_success();
    let args = ["pull", "--insecure", remote.as_str()];
    // The config comes first, then the layers in order: the offsets fall
    // elsewhere than in a build, which is as good.
    let mut specs = offsets(image_bytes(&args));
    for n in [1, 3] {
        specs.push(spec(hook::BLOB_BEFORE_RENAME, n));
        specs.push(spec(hook::BLOB_AFTER_RENAME, n));
    }
    for point in [
        hook::PULL_BEFORE_MANIFEST,
        hook::ROOTFS_BEFORE_RENAME,
        hook::PULL_BEFORE_TAG,
        hook::LAYOUT_BEFORE_RENAME,
        hook::LAYOUT_AFTER_RENAME,
    ] {
        specs.push(spec(point, 1));
    }
    crash_at_each(&Home::new(), &args, &remote, &specs);
}

#[test]
fn cache_writes_killed_anywhere_are_never_used_half_written() {
    let home = Home::new();
    let digest = sha256_hex(&std::fs::read(P1.hello).unwrap());
    let cache = home.path().join("cache");
    // Compiled once, to learn where the entry goes.
    home.run(&[P1.hello]).assert_success();
    let entries = |cache: &Path| -> Vec<PathBuf> {
        let mut found = Vec::new();
        for engine in std::fs::read_dir(cache).into_iter().flatten() {
            let engine = engine.unwrap().path();
            let entry = engine.join(format!("{digest}.cwasm"));
            if entry.exists() {
                found.push(entry);
            }
        }
        found
    };
    assert_eq!(entries(&cache).len(), 1);
    for (point, written) in [
        (hook::CACHE_BEFORE_WRITE, false),
        (hook::CACHE_BEFORE_TRAILER, false),
        (hook::CACHE_BEFORE_SYNC, false),
        (hook::CACHE_BEFORE_RENAME, false),
        (hook::CACHE_AFTER_RENAME, true),
    ] {
        for entry in entries(&cache) {
            std::fs::remove_file(entry).unwrap();
        }
        assert!(home.crash(&[P1.hello], &spec(point, 1)), "{point}");
        assert_eq!(entries(&cache).len(), usize::from(written), "{point}");
        // The next runs use or rebuild the entry, never a broken one.
        for _ in 0..2 {
            let out = home.run(&[P1.hello]);
            out.assert_success()
                .assert_stdout_contains("Hello from a wrun guest!");
            assert!(out.stderr.is_empty(), "{point}: {out:?}");
        }
        assert_eq!(entries(&cache).len(), 1, "{point}");
    }
}

#[test]
fn every_crash_point_is_exercised() {
    // A point added to the hook but to no test above would go untested.
    let source = include_str!("crash.rs");
    for point in hook::POINTS {
        let constant = point.to_ascii_uppercase().replace('-', "_");
        assert!(
            source.contains(&format!("hook::{constant}")),
            "no test crashes at `{point}`"
        );
    }
}
