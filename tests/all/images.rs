//! Images end to end: build, run, list, save/load, push/pull against a real
//! registry (Debian's `docker-registry`), interop with skopeo, Docker+Wasm
//! images, integrity, and hostile layers.

use crate::registry::{Registry, skopeo};
use crate::support::{Output, P1, P2, Wrun, tempdir, wrun};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// A `$WRUN_HOME` of a test's own.
struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Home {
        Home(tempdir())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn wrun(&self) -> Wrun {
        wrun().home(self.path())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.wrun().args(args).run()
    }

    fn images(&self) -> PathBuf {
        self.path().join("images")
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.images()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// `wrun login --insecure -u USER --password-stdin HOST`.
    fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.wrun()
            .args(["login", "--insecure", "-u", user, "--password-stdin", host])
            .stdin(format!("{password}\n").as_bytes())
            .run()
    }

    /// `wrun build -t NAME APP`, returning the manifest digest.
    fn build(&self, name: &str, app: &str) -> String {
        let out = self.run(&["build", "-t", name, app]);
        out.assert_success();
        out.stdout.trim().to_owned()
    }

    fn index(&self) -> serde_json::Value {
        let text = std::fs::read(self.images().join("index.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let index = self.index();
        let mut names: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// Files left in `$WRUN_HOME/tmp` (an interrupted or failed write).
    fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path().join("tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `skopeo copy SOURCE DEST`, byte for byte (`--preserve-digests`), plain
/// HTTP to the test registries.
fn skopeo_copy(source: &str, dest: &str) {
    let status = skopeo()
        .args(["--insecure-policy", "copy", "--preserve-digests", "--quiet"])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .args([source, dest])
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy {source} {dest}");
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"))
}

#[test]
fn build_list_inspect_and_run() {
    let home = Home::new();
    let digest = home.build("hello:1", P2.hello);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    home.build("hello-p1", P1.hello);

    let table = home.run(&["images"]);
    table.assert_success().assert_stdout_contains("REPOSITORY");
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap();
    assert!(
        line.contains(" 1 ") && line.contains(&digest[7..19]) && line.contains("wasip2"),
        "{line}"
    );
    assert!(table.stdout.contains("hello-p1") && table.stdout.contains("wasip1"));
    let lines = home.run(&["images", "--format", "json"]);
    let rows: Vec<serde_json::Value> = lines
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .any(|r| r["Repository"] == "hello" && r["Tag"] == "1" && r["Digest"] == digest)
    );
    assert_eq!(
        home.run(&["images", "-q", "hello"]).stdout.trim(),
        &digest[7..19]
    );

    // The CNCF wasm artifact: wasm config, exactly one application/wasm layer.
    let inspect = json(home.run(&["image", "inspect", "hello:1"]).assert_success());
    let image = &inspect[0];
    assert_eq!(image["Id"], digest);
    assert_eq!(
        image["Manifest"]["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = image["Manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(
        layers[0]["digest"],
        sha256(&std::fs::read(P2.hello).unwrap())
    );
    assert_eq!(image["Config"]["architecture"], "wasm");
    assert_eq!(image["Config"]["os"], "wasip2");
    assert_eq!(image["Config"]["layerDigests"][0], layers[0]["digest"]);
    let exports = image["Config"]["component"]["exports"].as_array().unwrap();
    assert!(
        exports
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:cli/run@")),
        "{exports:?}"
    );
    let p1 = json(&home.run(&["image", "inspect", "hello-p1"]));
    assert_eq!(p1[0]["Config"]["os"], "wasip1");
    assert!(p1[0]["Config"].get("component").is_none());

    // The first run compiles; the second finds the artifact by the layer's
    // digest and compiles nothing.
    let run_logged = || {
        let out = home
            .wrun()
            .env("WRUN_LOG", "info")
            .args(["run", "hello:1"])
            .run();
        out.assert_success()
            .assert_stdout_contains("Hello from a wrun guest!");
        out
    };
    let first = run_logged();
    assert!(first.stderr.contains("compiled"), "{first:#?}");
    let second = run_logged();
    assert!(!second.stderr.contains("compiled"), "{second:#?}");
    // By digest, by ID, and through the shorthand.
    home.run(&["run", &format!("hello@{digest}")])
        .assert_success();
    home.run(&["run", &digest[7..19]]).assert_success();
    home.run(&["hello-p1"])
        .assert_success()
        .assert_stdout_contains("Hello");

    // tag, rmi: blobs another name uses stay.
    home.run(&["tag", "hello:1", "again:2"]).assert_success();
    let rmi = home.run(&["rmi", "hello:1"]);
    rmi.assert_success()
        .assert_stdout_contains("Untagged: hello:1");
    assert!(!rmi.stdout.contains("Deleted"), "{rmi:#?}");
    home.run(&["run", "again:2"]).assert_success();
    let rmi = home.run(&["rmi", "again:2"]);
    rmi.assert_stdout_contains(&format!("Deleted: {digest}"));
    assert!(!home.blob(&digest).exists());
    home.run(&["run", "--pull", "never", "again:2"])
        .assert_code(127)
        .assert_stderr_contains("image `again:2` not found locally");
    home.run(&["rmi", "again:2"]).assert_code(127);
}

#[test]
fn builds_and_saves_are_reproducible() {
    let context = tempdir();
    std::fs::copy(P2.args_env, context.path().join("app.wasm")).unwrap();
    std::fs::create_dir_all(context.path().join("static/sub")).unwrap();
    std::fs::write(context.path().join("static/b.txt"), "b").unwrap();
    std::fs::write(context.path().join("static/sub/a.txt"), "a").unwrap();
    std::fs::write(
        context.path().join("wrun.toml"),
        "wasm = \"app.wasm\"\nargs = [\"x\"]\n[[files]]\nsource = \"static\"\ntarget = \"/static\"\n",
    )
    .unwrap();
    let (a, b) = (Home::new(), Home::new());
    let dir = context.path().to_str().unwrap();
    let first = a.build("app:1", dir);
    // Other times and another order of creation change nothing.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::remove_file(context.path().join("static/b.txt")).unwrap();
    std::fs::write(context.path().join("static/b.txt"), "b").unwrap();
    assert_eq!(b.build("app:1", dir), first);
    // A different input gives a different digest.
    std::fs::write(context.path().join("static/b.txt"), "B").unwrap();
    assert_ne!(b.build("app:2", dir), first);
    // SOURCE_DATE_EPOCH sets the time, and with it the digest.
    let stamped = a
        .wrun()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "-t", "app:3", dir])
        .run();
    assert_ne!(stamped.stdout.trim(), first);

    let out = tempdir();
    let (x, y) = (out.path().join("x.tar"), out.path().join("y.tar"));
    a.run(&["save", "-o", x.to_str().unwrap(), "app:1"])
        .assert_success();
    b.run(&["save", "-o", y.to_str().unwrap(), "app:1"])
        .assert_success();
    assert_eq!(std::fs::read(&x).unwrap(), std::fs::read(&y).unwrap());
}

/// An image whose manifest gives run defaults, and the flags over them.
fn defaults_image(home: &Home) -> tempfile::TempDir {
    let context = tempdir();
    std::fs::copy(P2.filetool, context.path().join("filetool.wasm")).unwrap();
    std::fs::create_dir(context.path().join("static")).unwrap();
    std::fs::write(context.path().join("static/page.txt"), "baked in").unwrap();
    std::fs::write(
        context.path().join("wrun.toml"),
        r#"
wasm = "filetool.wasm"
args = ["cat", "/static/page.txt"]
env = { GREETING = "hello", MODE = "image" }
expose = ["8080"]
volumes = ["/data"]
workdir = "/data"

[[files]]
source = "static"
target = "/static"
"#,
    )
    .unwrap();
    home.build("defaults:1", context.path().to_str().unwrap());
    context
}

#[test]
fn image_defaults_merge_with_flags() {
    let home = Home::new();
    let _context = defaults_image(&home);
    // The image's own arguments read a baked-in file.
    home.run(&["run", "defaults:1"])
        .assert_success()
        .assert_stdout_contains("baked in");
    // Baked-in files are read-only.
    home.run(&["run", "defaults:1", "write", "/static/page.txt", "x"])
        .assert_code(1);
    // The volume point is a writable empty directory, the working directory,
    // and gone after the run.
    home.run(&["run", "defaults:1", "write", "note.txt", "scratch"])
        .assert_success();
    home.run(&["run", "defaults:1", "ls", "/data"])
        .assert_success();
    let volumes = home.path().join("volumes");
    assert_eq!(std::fs::read_dir(&volumes).unwrap().count(), 0);
    // -v wins over the volume point.
    let data = tempdir();
    let mount = format!("{}:/data", data.path().display());
    home.run(&[
        "run",
        "-v",
        &mount,
        "defaults:1",
        "write",
        "note.txt",
        "kept",
    ])
    .assert_success();
    assert_eq!(
        std::fs::read_to_string(data.path().join("note.txt")).unwrap(),
        "kept"
    );

    // args_env shows argv, environment and cwd.
    let context = tempdir();
    std::fs::copy(P2.args_env, context.path().join("a.wasm")).unwrap();
    std::fs::write(
        context.path().join("wrun.toml"),
        "wasm = \"a.wasm\"\nargs = [\"one\", \"two\"]\nenv = { GREETING = \"hello\", MODE = \"image\" }\n",
    )
    .unwrap();
    home.build("argsenv", context.path().to_str().unwrap());
    let out = home.run(&["run", "argsenv"]);
    out.assert_success()
        .assert_stdout_contains("argv[0]=argsenv\nargv[1]=one\nargv[2]=two\n")
        .assert_stdout_contains("env GREETING=hello\nenv MODE=image\n");
    let out = home.run(&[
        "run",
        "-e",
        "MODE=flag",
        "-e",
        "EXTRA=1",
        "argsenv",
        "three",
    ]);
    out.assert_success()
        .assert_stdout_contains("argv[1]=three\n")
        .assert_stdout_contains("env EXTRA=1\nenv GREETING=hello\nenv MODE=flag\n");
    assert!(!out.stdout.contains("argv[2]"), "{out:#?}");
    // -P on a file is an error naming the file.
    home.run(&["run", "-P", P2.hello])
        .assert_code(125)
        .assert_stderr_contains("is a file");
}

#[test]
fn save_load_round_trip_and_bad_archives() {
    let (a, b) = (Home::new(), Home::new());
    let digest = a.build("hello:1", P2.hello);
    a.run(&["tag", "hello:1", "other:2"]).assert_success();
    let dir = tempdir();
    let archive = dir.path().join("images.tar");
    let archive_str = archive.to_str().unwrap();
    a.run(&["save", "-o", archive_str, "hello:1", "other:2"])
        .assert_success();
    let load = b.run(&["load", "-i", archive_str]);
    load.assert_success()
        .assert_stdout_contains("Loaded image: hello:1")
        .assert_stdout_contains("Loaded image: other:2");
    assert_eq!(b.names(), vec!["hello:1", "other:2"]);
    b.run(&["run", "other:2"])
        .assert_success()
        .assert_stdout_contains("Hello");
    // stdin and stdout work too.
    let bytes = std::fs::read(&archive).unwrap();
    let c = Home::new();
    c.wrun().args(["load"]).stdin(&bytes).run().assert_success();
    assert_eq!(c.names(), vec!["hello:1", "other:2"]);

    // A flipped byte in a blob: refused by digest, nothing named.
    let layer = sha256(&std::fs::read(P2.hello).unwrap());
    let mut corrupt = bytes.clone();
    let at = find(&corrupt, &std::fs::read(P2.hello).unwrap()[..64]).unwrap() + 40;
    corrupt[at] ^= 0xff;
    let d = Home::new();
    d.wrun()
        .args(["load"])
        .stdin(&corrupt)
        .run()
        .assert_code(126)
        .assert_stderr_contains(&format!("blob `{layer}` is corrupted"));
    assert!(d.names().is_empty());
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());

    // Entries an OCI archive does not have are refused by name.
    for (name, kind) in [
        ("../escape", b'0'),
        ("/etc/x", b'0'),
        ("blobs/sha256/../../../x", b'0'),
        ("blobs/sha256/notadigest", b'0'),
        ("blobs/link", b'2'),
    ] {
        let tar = raw_tar(&[RawEntry::new(name, kind, b"x")]);
        let e = Home::new();
        let out = e.wrun().args(["load"]).stdin(&tar).run();
        assert_ne!(out.code, 0, "{name}: {out:#?}");
        assert!(
            out.stderr.contains(&format!("`{name}`")),
            "{name}: {out:#?}"
        );
        assert!(!e.path().join("x").exists() && !e.path().join("escape").exists());
    }
    let _ = digest;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn corrupted_blobs_never_run() {
    let home = Home::new();
    home.build("hello:1", P2.hello);
    let layer = sha256(&std::fs::read(P2.hello).unwrap());
    let path = home.blob(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    home.run(&["run", "hello:1"])
        .assert_code(126)
        .assert_stderr_contains(&format!("blob `{layer}` is corrupted"));
    // A missing blob is named too.
    std::fs::remove_file(&path).unwrap();
    home.run(&["run", "hello:1"])
        .assert_code(126)
        .assert_stderr_contains(&format!("blob `{layer}` is missing"));
    // A corrupted manifest as well.
    let index = home.index();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    std::fs::write(home.blob(&manifest), b"{}").unwrap();
    home.run(&["run", "hello:1"])
        .assert_code(126)
        .assert_stderr_contains(&format!("blob `{manifest}` is corrupted"));
}

#[test]
fn push_pull_and_skopeo_interop() {
    let registry = Registry::start();
    let host = registry.host().to_owned();
    let (a, b) = (Home::new(), Home::new());
    let digest = a.build("hello:1", P2.hello);
    let remote = format!("{host}/team/hello:1");
    a.run(&["tag", "hello:1", &remote]).assert_success();
    // HTTPS by default: a plain-HTTP registry needs --insecure, and says so.
    a.run(&["push", &remote])
        .assert_code(125)
        .assert_stderr_contains("--insecure");
    let push = a.run(&["push", "--insecure", &remote]);
    push.assert_success()
        .assert_stdout_contains(&format!("1: digest: {digest} size: "));

    // skopeo reads what wrun pushed, byte for byte.
    let raw = skopeo()
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{remote}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    assert_eq!(sha256(&raw.stdout), digest);
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    let copy = tempdir();
    skopeo_copy(
        &format!("docker://{remote}"),
        &format!("oci:{}:copy", copy.path().display()),
    );

    // wrun pulls it back and runs it; a second pull transfers nothing.
    let pull = b.run(&["pull", "--insecure", &remote]);
    pull.assert_success()
        .assert_stdout_contains(&format!("Digest: {digest}"))
        .assert_stdout_contains("Downloaded newer image");
    b.run(&["run", &remote])
        .assert_success()
        .assert_stdout_contains("Hello");
    b.run(&["pull", "--insecure", &remote])
        .assert_success()
        .assert_stdout_contains("Image is up to date");
    // `wrun run` pulls an image it does not have (Docker's --pull missing).
    let d = Home::new();
    d.run(&["run", "--insecure", &remote])
        .assert_success()
        .assert_stdout_contains("Hello")
        .assert_stderr_contains("pulling it");
    d.run(&["run", "--pull", "always", "--insecure", &remote])
        .assert_success();
    // Pushing again skips every blob, and a digest reference pulls too.
    a.run(&["push", "--insecure", &remote]).assert_success();
    let by_digest = format!("{host}/team/hello@{digest}");
    Home::new()
        .run(&["pull", "--insecure", &by_digest])
        .assert_success();

    // What skopeo copies in from an archive wrun saved, wrun pulls and runs.
    let archive = copy.path().join("hello.tar");
    a.run(&["save", "-o", archive.to_str().unwrap(), "hello:1"])
        .assert_success();
    let other = format!("{host}/via/skopeo:2");
    skopeo_copy(
        &format!("oci-archive:{}:hello:1", archive.display()),
        &format!("docker://{other}"),
    );
    let c = Home::new();
    c.run(&["pull", "--insecure", &other]).assert_success();
    c.run(&["run", &other])
        .assert_success()
        .assert_stdout_contains("Hello");
    // skopeo reads the local store as an OCI layout, and copies into it.
    skopeo_copy(
        &format!("oci:{}:{other}", c.images().display()),
        &format!("oci:{}:copied:3", c.images().display()),
    );
    c.run(&["run", "copied:3"])
        .assert_success()
        .assert_stdout_contains("Hello");

    // Missing images and unknown registries fail cleanly.
    b.run(&["pull", "--insecure", &format!("{host}/team/nothere:1")])
        .assert_code(125)
        .assert_stderr_contains("nothere");
    b.run(&["pull", "--insecure", "example.com/x:1"])
        .assert_code(125)
        .assert_stderr_contains("only allowed for registries on this machine");
}

#[test]
fn basic_auth_login_push_pull() {
    let registry = Registry::start_with_basic_auth("alice", "s3cret pass");
    let remote = format!("{}/private/hello:1", registry.host());
    let home = Home::new();
    home.build(&remote, P2.hello);
    home.run(&["push", "--insecure", &remote])
        .assert_code(125)
        .assert_stderr_contains("failed to push");
    let login = |password: &str| home.login(registry.host(), "alice", password);
    login("wrong")
        .assert_code(125)
        .assert_stderr_contains("incorrect username or password");
    assert!(!home.path().join("auth.json").exists());
    login("s3cret pass")
        .assert_success()
        .assert_stdout_contains("Login Succeeded");
    let auth = home.path().join("auth.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!std::fs::read_to_string(&auth).unwrap().contains("s3cret"));
    home.run(&["push", "--insecure", &remote]).assert_success();
    home.run(&["rmi", &remote]).assert_success();
    home.run(&["pull", "--insecure", &remote]).assert_success();
    home.run(&["run", &remote])
        .assert_success()
        .assert_stdout_contains("Hello");
    // Another user's store has no credentials.
    Home::new()
        .run(&["pull", "--insecure", &remote])
        .assert_code(125);
    home.run(&["logout", registry.host()])
        .assert_success()
        .assert_stdout_contains("Removing login credentials");
    home.run(&["rmi", &remote]).assert_success();
    home.run(&["pull", "--insecure", &remote]).assert_code(125);
}

#[test]
fn interrupted_pulls_leave_no_image_and_concurrent_pulls_are_safe() {
    let registry = Registry::start();
    let home = Home::new();
    let remote = format!("{}/x/hello:1", registry.host());
    home.build(&remote, P2.args_env);
    home.run(&["push", "--insecure", &remote]).assert_success();

    // Two pulls of the same image at once into one store.
    let target = Home::new();
    let pulls: Vec<_> = (0..2)
        .map(|_| target.wrun().args(["pull", "--insecure", &remote]).spawn())
        .collect();
    for pull in pulls {
        pull.finish().assert_success();
    }
    assert_eq!(target.names(), vec![remote.clone()]);
    target
        .run(&["run", &remote, "ok"])
        .assert_success()
        .assert_stdout_contains("argv[1]=ok");
    assert!(target.leftovers().is_empty(), "{:?}", target.leftovers());

    // A pull that fails part way (the registry lost the layer) names nothing.
    let layer = sha256(&std::fs::read(P2.args_env).unwrap());
    let data = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..])
        .join("data");
    std::fs::remove_file(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let fresh = Home::new();
    fresh.run(&["pull", "--insecure", &remote]).assert_code(125);
    assert!(fresh.names().is_empty());
    fresh
        .run(&["run", "--pull", "never", &remote])
        .assert_code(127);
    let prune = fresh.run(&["image", "prune"]);
    prune
        .assert_success()
        .assert_stdout_contains("Total reclaimed space");
    let blobs = std::fs::read_dir(fresh.images().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

/// A tar entry written byte by byte, so that tests can make the hostile ones
/// a tar library would refuse to write.
struct RawEntry<'a> {
    name: &'a str,
    kind: u8,
    data: &'a [u8],
    link: &'a str,
    size: Option<u64>,
}

impl<'a> RawEntry<'a> {
    fn new(name: &'a str, kind: u8, data: &'a [u8]) -> RawEntry<'a> {
        RawEntry {
            name,
            kind,
            data,
            link: "",
            size: None,
        }
    }

    fn link(name: &'a str, kind: u8, target: &'a str) -> RawEntry<'a> {
        RawEntry {
            link: target,
            ..RawEntry::new(name, kind, b"")
        }
    }
}

fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0width$o}\0", width = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o644);
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, e.size.unwrap_or(e.data.len() as u64));
        octal(&mut h, 136, 12, 0);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// An OCI archive of a Docker+Wasm image (standard image config, platform
/// wasm, the app in a gzip tar layer), optionally wrapped in an index that
/// also lists a linux/amd64 manifest.
fn docker_wasm_archive(
    name: &str,
    layer_tar: &[u8],
    config: serde_json::Value,
    with_index: bool,
) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(layer_tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let mut blobs = vec![layer, config, manifest.clone()];
    let mut top = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    });
    if with_index {
        let missing = format!("sha256:{}", "0".repeat(64));
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": missing, "size": 10,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest),
                 "size": manifest.len(), "platform": {"architecture": "wasm", "os": "wasi"}},
            ],
        }))
        .unwrap();
        top = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256(&index), "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        });
        blobs.push(index);
    }
    let index_json =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]})).unwrap();
    let names: Vec<String> = blobs
        .iter()
        .map(|b| format!("blobs/sha256/{}", &sha256(b)[7..]))
        .collect();
    let mut entries = vec![
        RawEntry::new("oci-layout", b'0', br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::new("index.json", b'0', &index_json),
    ];
    for (name, blob) in names.iter().zip(&blobs) {
        entries.push(RawEntry::new(name, b'0', blob));
    }
    raw_tar(&entries)
}

fn docker_config(entrypoint: &[&str], cmd: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["FROM_IMAGE=yes"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
}

#[test]
fn docker_wasm_images_run_from_archives_and_registries() {
    let wasm = std::fs::read(P1.filetool).unwrap();
    let layer = raw_tar(&[
        RawEntry::new("app/", b'5', b""),
        RawEntry::new("app/filetool.wasm", b'0', &wasm),
        RawEntry::new("app/data/", b'5', b""),
        RawEntry::new("app/data/greeting.txt", b'0', b"hi from a layer"),
        RawEntry::link("app/data/link.txt", b'2', "greeting.txt"),
    ]);
    let config = docker_config(&["/app/filetool.wasm"], &["cat", "data/greeting.txt"]);
    let home = Home::new();
    for (name, with_index) in [("dockerwasm:1", false), ("multiarch:1", true)] {
        let archive = docker_wasm_archive(name, &layer, config.clone(), with_index);
        home.wrun()
            .args(["load"])
            .stdin(&archive)
            .run()
            .assert_success();
        home.run(&["run", name])
            .assert_success()
            .assert_stdout_contains("hi from a layer");
    }
    // The layer's files are read-only; symlinks inside work.
    home.run(&["run", "dockerwasm:1", "cat", "/app/data/link.txt"])
        .assert_success()
        .assert_stdout_contains("hi from a layer");
    home.run(&["run", "dockerwasm:1", "write", "/app/data/new.txt", "x"])
        .assert_code(1);
    let inspect = json(&home.run(&["image", "inspect", "dockerwasm:1"]));
    assert_eq!(inspect[0]["Kind"], "docker-wasm");
    assert_eq!(inspect[0]["RunDefaults"]["env"][0], "FROM_IMAGE=yes");

    // Through a registry, as pushed by skopeo from an OCI layout.
    let registry = Registry::start();
    let remote = format!("{}/docker/wasm:1", registry.host());
    let dir = tempdir();
    let archive = dir.path().join("dw.tar");
    std::fs::write(
        &archive,
        docker_wasm_archive("dw", &layer, config.clone(), false),
    )
    .unwrap();
    skopeo_copy(
        &format!("oci-archive:{}:dw", archive.display()),
        &format!("docker://{remote}"),
    );
    let other = Home::new();
    other.run(&["pull", "--insecure", &remote]).assert_success();
    other
        .run(&["run", &remote])
        .assert_success()
        .assert_stdout_contains("hi from a layer");

    // A linux image is refused before it runs, naming its platform.
    let linux = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": []}});
    let archive = docker_wasm_archive("linux:1", &layer, linux, false);
    let out = Home::new().wrun().args(["load"]).stdin(&archive).run();
    out.assert_code(126).assert_stderr_contains("linux/amd64");
}

#[test]
fn hostile_layers_are_refused_by_entry() {
    let wasm = std::fs::read(P1.hello).unwrap();
    let config = docker_config(&["/hello.wasm"], &[]);
    let outside = tempdir();
    let target = outside.path().join("pwned");
    let target_str = target.to_str().unwrap();
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        (
            "../../escape",
            vec![RawEntry::new("../../escape", b'0', b"x")],
        ),
        (
            "/etc/escape",
            vec![RawEntry::new("/etc/escape", b'0', b"x")],
        ),
        (
            "out",
            vec![RawEntry::link(
                "out",
                b'2',
                outside.path().to_str().unwrap(),
            )],
        ),
        (
            "up",
            vec![RawEntry::link("up", b'2', "../../../../../../tmp")],
        ),
        ("hard", vec![RawEntry::link("hard", b'1', target_str)]),
        (
            "hard2",
            vec![RawEntry::link("hard2", b'1', "../../etc/passwd")],
        ),
        ("dev", vec![RawEntry::new("dev", b'3', b"")]),
        ("fifo", vec![RawEntry::new("fifo", b'6', b"")]),
        // A size no disk has, declared without the bytes.
        (
            "huge",
            vec![RawEntry {
                size: Some((8 << 30) - 1),
                ..RawEntry::new("huge", b'0', b"")
            }],
        ),
    ];
    for (bad, hostile) in cases {
        let mut entries = vec![RawEntry::new("hello.wasm", b'0', &wasm)];
        entries.extend(hostile);
        let archive = docker_wasm_archive("hostile:1", &raw_tar(&entries), config.clone(), false);
        let home = Home::new();
        let out = home.wrun().args(["load"]).stdin(&archive).run();
        assert_eq!(out.code, 126, "{bad}: {out:#?}");
        assert!(
            out.stderr.contains(&format!("`{bad}`"))
                || (bad == "huge" && out.stderr.contains("more than")),
            "{bad}: {out:#?}"
        );
        assert!(home.names().is_empty(), "{bad}: named anyway");
        assert!(!target.exists() && std::fs::read_dir(outside.path()).unwrap().count() == 0);
        assert!(!home.path().join("escape").exists() && !Path::new("/etc/escape").exists());
        assert!(home.leftovers().is_empty(), "{bad}: {:?}", home.leftovers());
    }

    // The same through a registry: the pull fails and names nothing.
    let registry = Registry::start();
    let remote = format!("{}/hostile/x:1", registry.host());
    let dir = tempdir();
    let archive = dir.path().join("h.tar");
    let entries = [
        RawEntry::new("hello.wasm", b'0', &wasm),
        RawEntry::new("../x", b'0', b"x"),
    ];
    std::fs::write(
        &archive,
        docker_wasm_archive("h", &raw_tar(&entries), config, false),
    )
    .unwrap();
    skopeo_copy(
        &format!("oci-archive:{}:h", archive.display()),
        &format!("docker://{remote}"),
    );
    let home = Home::new();
    home.run(&["pull", "--insecure", &remote])
        .assert_code(126)
        .assert_stderr_contains("`../x`");
    assert!(home.names().is_empty());
}

#[test]
fn bad_build_input_is_named() {
    let home = Home::new();
    let dir = tempdir();
    home.run(&["build", "-t", "x", "/nonexistent/app.wasm"])
        .assert_code(125)
        .assert_stderr_contains("/nonexistent/app.wasm");
    let text = dir.path().join("notwasm.wasm");
    std::fs::write(&text, "hello").unwrap();
    home.run(&["build", "-t", "x", text.to_str().unwrap()])
        .assert_code(125)
        .assert_stderr_contains("is not a wasm binary");
    std::fs::copy(P2.hello, dir.path().join("app.wasm")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
    for (manifest, needle) in [
        ("wasm = \"app.wasm\"\nexpose = [\"http\"]\n", "`http`"),
        (
            "wasm = \"app.wasm\"\nports = [1]\n",
            "unknown field `ports`",
        ),
        (
            "wasm = \"app.wasm\"\n[[files]]\nsource = \"out\"\ntarget = \"/x\"\n",
            "outside the tree",
        ),
        (
            "wasm = \"app.wasm\"\n[[files]]\nsource = \"missing\"\ntarget = \"/x\"\n",
            "missing",
        ),
    ] {
        std::fs::write(dir.path().join("wrun.toml"), manifest).unwrap();
        home.run(&["build", "-t", "x", dir.path().to_str().unwrap()])
            .assert_code(125)
            .assert_stderr_contains(needle);
    }
    home.run(&["build", "-t", "Bad:Name", P2.hello])
        .assert_code(125)
        .assert_stderr_contains("`Bad:Name`");
    home.run(&["tag", "missing:1", "x:1"]).assert_code(127);
    assert!(home.names().is_empty());
}

#[test]
fn bearer_token_login_push_pull() {
    let registry = Registry::start_with_token_auth("bob", "t0ken pass");
    let remote = format!("{}/tokens/hello:1", registry.host());
    let home = Home::new();
    home.build(&remote, P2.hello);
    home.run(&["push", "--insecure", &remote]).assert_code(125);
    let login = |password: &str| home.login(registry.host(), "bob", password);
    login("nope")
        .assert_code(125)
        .assert_stderr_contains("incorrect username or password");
    let before = registry.tokens_issued();
    login("t0ken pass").assert_success();
    home.run(&["push", "--insecure", &remote]).assert_success();
    let other = Home::new();
    std::fs::copy(
        home.path().join("auth.json"),
        other.path().join("auth.json"),
    )
    .unwrap();
    other.run(&["pull", "--insecure", &remote]).assert_success();
    other
        .run(&["run", &remote])
        .assert_success()
        .assert_stdout_contains("Hello");
    // The registry accepted only tokens from its token server.
    assert!(
        registry.tokens_issued() > before + 1,
        "{}",
        registry.tokens_issued()
    );
}
