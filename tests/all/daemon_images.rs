//! The daemon's image endpoints driven by the real docker CLI and docker-py:
//! pull and push against a real registry (Debian's `docker-registry` on
//! 127.0.0.1), tag, rmi with Docker's conflict rules, save and load between
//! daemons, prune, and bad input, each refused by name with the store
//! unchanged.

use crate::daemon::{Daemon, eventually};
use crate::registry::Registry;
use crate::support::{Output, P2, tempdir};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

/// `REPOSITORY:TAG` of every image the daemon lists, sorted.
fn images(daemon: &Daemon) -> Vec<String> {
    let out = daemon.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    out.assert_success();
    let mut names: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    names.sort();
    names
}

/// The store's `index.json`, to show that a refused request changed
/// nothing.
fn index(daemon: &Daemon) -> String {
    std::fs::read_to_string(daemon.home.path().join("images/index.json")).expect("index.json")
}

/// The image ID (`sha256:...`) the daemon reports for `name`.
fn image_id(daemon: &Daemon, name: &str) -> String {
    let out = daemon.docker(&["image", "inspect", "-f", "{{.Id}}", name]);
    out.assert_success();
    out.stdout.trim().to_owned()
}

/// The raw answer to `request`, sent as is on the daemon's socket.
fn raw(daemon: &Daemon, request: &str) -> Vec<u8> {
    let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response
}

#[track_caller]
fn assert_failed(out: &Output, needle: &str) {
    out.assert_code(1).assert_stderr_contains(needle);
}

#[test]
fn pull_tag_and_push_between_daemons_through_a_registry() {
    let registry = Registry::start();
    let host = registry.host().to_owned();
    let a = Daemon::start();
    a.build("hello", P2.hello);
    let id = image_id(&a, "hello");

    // `docker tag` sends `repo` fully qualified; the list shows Docker's
    // short form, both names on one image.
    a.docker(&["tag", "hello", "myrepo/bb:v1"]).assert_success();
    let remote = format!("{host}/team/hello:1");
    a.docker(&["tag", "hello", &remote]).assert_success();
    let mut expected = vec![
        format!("{host}/team/hello:1"),
        "hello:latest".to_owned(),
        "myrepo/bb:v1".to_owned(),
    ];
    expected.sort();
    assert_eq!(images(&a), expected);
    let tags = a.docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .RepoTags}}",
        "myrepo/bb:v1",
    ]);
    assert!(tags.stdout.contains("\"hello:latest\""), "{tags:?}");
    assert_eq!(image_id(&a, "myrepo/bb:v1"), id);

    let push = a.docker(&["push", &remote]);
    push.assert_success()
        .assert_stdout_contains(&format!(
            "The push refers to repository [{host}/team/hello]"
        ))
        .assert_stdout_contains(&format!("1: digest: {id} size: "));
    // The registry holds exactly the manifest the store has.
    let (status, _) = registry.get(&format!("/v2/team/hello/manifests/{id}"), None);
    assert_eq!(status, 200, "{}", registry.log());
    // Again: every blob is there already.
    a.docker(&["push", &remote]).assert_success();

    // Another daemon pulls it, runs it, and pulls again for nothing.
    let b = Daemon::start();
    let pull = b.docker(&["pull", &remote]);
    pull.assert_success()
        .assert_stdout_contains(&format!("Digest: {id}"))
        .assert_stdout_contains(&format!("Status: Downloaded newer image for {remote}"));
    assert_eq!(
        pull.stdout.lines().last(),
        Some(remote.as_str()),
        "{pull:?}"
    );
    assert_eq!(image_id(&b, &remote), id);
    b.docker(&["run", "--rm", &remote])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    b.docker(&["pull", &remote])
        .assert_success()
        .assert_stdout_contains("Image is up to date");
    // By digest, as `docker pull NAME@DIGEST` sends it (`tag=sha256:..`).
    b.docker(&["rmi", &remote]).assert_success();
    b.docker(&["pull", &format!("{host}/team/hello@{id}")])
        .assert_success();
    // `docker run` of an image it lacks pulls it on the 404, then runs.
    let c = Daemon::start();
    c.docker(&["run", "--rm", &remote])
        .assert_success()
        .assert_stderr_contains("Unable to find image")
        .assert_stdout_contains("Hello from a wrun guest!");

    // A registry that loses the layer after the pull began: the error
    // comes in the stream, as moby's, and names no image.
    let layer = c.docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .RootFS.Layers 0}}",
        &remote,
    ]);
    let layer = layer.stdout.trim().trim_start_matches("sha256:").to_owned();
    assert_eq!(layer.len(), 64, "{layer:?}");
    let data = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let hidden = data.with_extension("hidden");
    std::fs::rename(&data, &hidden).unwrap();
    let d = Daemon::start();
    let broken = d.docker(&["pull", &remote]);
    assert_failed(&broken, "blob unknown to registry");
    broken.assert_stdout_contains("Pulling fs layer");
    let (status, body) = d.http(
        "POST",
        &format!("/v1.47/images/create?fromImage={host}/team/hello&tag=1"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""errorDetail":{"message":"registry "#),
        "{body}"
    );
    assert!(images(&d).is_empty());
    std::fs::rename(&hidden, &data).unwrap();

    // What the registry does not have is a 404, and the store stays as
    // it was; so is a registry that is not there.
    let before = index(&c);
    let missing = c.docker(&["pull", &format!("{host}/team/nothere:1")]);
    assert_failed(
        &missing,
        &format!("manifest for {host}/team/nothere:1 not found"),
    );
    let (status, body) = c.http(
        "POST",
        &format!("/v1.47/images/create?fromImage={host}/team/nothere&tag=1"),
        "",
    );
    assert_eq!(status, 404, "{body}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = c.docker(&["pull", &format!("127.0.0.1:{port}/x:1")]);
    assert_failed(&unreachable, &format!("127.0.0.1:{port}"));
    // Pushing what is not there names it.
    assert_failed(
        &c.docker(&["push", &format!("{host}/team/ghost:1")]),
        &format!("An image does not exist locally with the tag: {host}/team/ghost"),
    );
    assert_eq!(index(&c), before);
}

#[test]
fn rmi_untags_deletes_and_refuses_as_docker_does() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("spin", P2.spin);
    daemon.build("args", P2.args_env);
    let hello = image_id(&daemon, "hello");
    daemon.docker(&["tag", "hello", "other:1"]).assert_success();

    // A name of several goes alone.
    let out = daemon.docker(&["rmi", "other:1"]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "Untagged: other:1", "{out:?}");
    assert_eq!(image_id(&daemon, "hello"), hello);

    // By ID, an image of several names needs force; then all go.
    daemon.docker(&["tag", "args", "args2:x"]).assert_success();
    let args = image_id(&daemon, "args");
    let short = &args["sha256:".len()..][..12];
    let before = index(&daemon);
    assert_failed(
        &daemon.docker(&["rmi", short]),
        &format!(
            "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
        ),
    );
    assert_eq!(index(&daemon), before);
    let out = daemon.docker(&["rmi", "-f", short]);
    out.assert_success()
        .assert_stdout_contains("Untagged: args:latest")
        .assert_stdout_contains("Untagged: args2:x")
        .assert_stdout_contains(&format!("Deleted: {args}"));
    assert!(
        !daemon
            .home
            .path()
            .join("images/blobs/sha256")
            .join(&args[7..])
            .exists()
    );

    // A stopped container holds its image: 409 unless forced, by name or ID.
    let created = daemon.docker(&["create", "--name", "idle", "hello"]);
    created.assert_success();
    let container = &created.stdout.trim()[..12];
    let before = index(&daemon);
    assert_failed(
        &daemon.docker(&["rmi", "hello"]),
        &format!(
            "conflict: unable to remove repository reference \"hello\" (must force) - container {container} is using its referenced image {}",
            &hello[7..19]
        ),
    );
    assert_failed(
        &daemon.docker(&["rmi", &hello]),
        &format!("image is being used by stopped container {container}"),
    );
    assert_eq!(index(&daemon), before);

    // A running one even against force, by ID; a forced untag leaves the
    // image unnamed while it runs.
    let running = daemon.docker(&["run", "-d", "--name", "busy", "spin"]);
    running.assert_success();
    let spin = image_id(&daemon, "spin");
    assert_failed(
        &daemon.docker(&["rmi", "-f", &spin]),
        &format!(
            "unable to delete {} (cannot be forced) - image is being used by running container {}",
            &spin[7..19],
            &running.stdout.trim()[..12]
        ),
    );
    let out = daemon.docker(&["rmi", "-f", "spin"]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "Untagged: spin:latest", "{out:?}");
    let ids = daemon.docker(&["images", "-q", "--no-trunc"]);
    assert!(ids.stdout.contains(&spin), "{ids:?}");
    assert!(images(&daemon).contains(&"<none>:<none>".to_owned()));

    // Forced by name: the stopped container stays, the image goes.
    let out = daemon.docker(&["rmi", "-f", "hello"]);
    out.assert_success()
        .assert_stdout_contains("Untagged: hello:latest")
        .assert_stdout_contains(&format!("Deleted: {hello}"));
    let ps = daemon.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(ps.stdout.contains("idle"), "{ps:?}");

    // Unknown names, by the CLI and docker-py's spelling alike.
    assert_failed(&daemon.docker(&["rmi", "ghost"]), "No such image: ghost");
    let (status, body) = daemon.http(
        "DELETE",
        "/v1.47/images/ghost:1?force=False&noprune=False",
        "",
    );
    assert_eq!(
        (status, body.contains("No such image: ghost:1")),
        (404, true),
        "{body}"
    );

    // Prune: the unnamed image once its container is gone.
    daemon
        .docker(&["rm", "-f", "busy", "idle"])
        .assert_success();
    eventually("the unnamed image pruned", || {
        let out = daemon.docker(&["image", "prune", "-f"]);
        out.assert_success();
        !daemon
            .docker(&["images", "-q", "--no-trunc"])
            .stdout
            .contains(&spin)
    });
    assert!(images(&daemon).is_empty(), "{:?}", images(&daemon));
}

#[test]
fn prune_removes_dangling_then_every_unused_image() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("args", P2.args_env);
    daemon.build("trap", P2.trap);
    daemon
        .docker(&["create", "--name", "keeper", "hello"])
        .assert_success();

    // Nothing dangling: nothing goes.
    let out = daemon.docker(&["image", "prune", "-f"]);
    out.assert_success()
        .assert_stdout_contains("Total reclaimed space: 0B");
    assert_eq!(images(&daemon).len(), 3);

    // -a: every image no container uses, with the space it freed.
    let args = image_id(&daemon, "args");
    let out = daemon.docker(&["image", "prune", "-a", "-f"]);
    out.assert_success()
        .assert_stdout_contains("untagged: args:latest")
        .assert_stdout_contains("untagged: trap:latest")
        .assert_stdout_contains(&format!("deleted: {args}"));
    assert!(!out.stdout.contains("Total reclaimed space: 0B"), "{out:?}");
    assert_eq!(images(&daemon), ["hello:latest"]);
    daemon
        .docker(&["start", "-a", "keeper"])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");

    // docker-py's filter encoding, and filters wrun does not know.
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/images/prune?filters=%7B%22dangling%22%3A%5B%22false%22%5D%7D",
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ImagesDeleted\":[]"), "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/images/prune?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D",
        "",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("dangling=maybe"), "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.47/images/prune?filters=%7B%22until%22%3A%5B%2224h%22%5D%7D",
        "",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid filter 'until'"), "{body}");
    assert_eq!(images(&daemon), ["hello:latest"]);
}

#[test]
fn save_then_load_into_another_daemon_and_run() {
    let a = Daemon::start();
    a.build("hello:1", P2.hello);
    a.build("args", P2.args_env);
    let dir = tempdir();
    let archive = dir.path().join("images.tar");
    let archive_str = archive.to_str().unwrap();
    a.docker(&["save", "-o", archive_str, "hello:1", "args"])
        .assert_success();
    // An OCI archive, which `wrun load` reads too.
    let listing = Command::new("tar")
        .arg("tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("index.json") && listing.contains("oci-layout"),
        "{listing}"
    );

    let b = Daemon::start();
    let load = b.docker(&["load", "-i", archive_str]);
    load.assert_success()
        .assert_stdout_contains("Loaded image: hello:1")
        .assert_stdout_contains("Loaded image: args:latest");
    assert_eq!(images(&b), ["args:latest", "hello:1"]);
    assert_eq!(image_id(&b, "hello:1"), image_id(&a, "hello:1"));
    b.docker(&["run", "--rm", "hello:1"])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    b.docker(&["run", "--rm", "args", "x"])
        .assert_success()
        .assert_stdout_contains("argv[1]=x");
    // One image by its path, as docker-py's `image.save()` asks.
    let head = raw(
        &a,
        "GET /v1.47/images/hello:1/get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let head = String::from_utf8_lossy(&head[..200.min(head.len())]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/x-tar"), "{head}");
    // Quiet; loading the same again changes nothing.
    let before = index(&b);
    let out = b.docker(&["load", "-q", "-i", archive_str]);
    out.assert_success()
        .assert_stdout_contains("Loaded image: hello:1");
    assert_eq!(index(&b), before);

    // Saving what is not there is a 404 before any byte.
    let missing = dir.path().join("missing.tar");
    assert_failed(
        &a.docker(&["save", "-o", missing.to_str().unwrap(), "hello:1", "ghost"]),
        "No such image: ghost",
    );
    assert!(!missing.exists());
    let (status, body) = a.http("GET", "/v1.47/images/get", "");
    assert_eq!(
        (status, body.contains("no image to save")),
        (400, true),
        "{body}"
    );
}

/// A tar entry written byte by byte, as a tar library would refuse to
/// write the hostile ones.
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8], link: &str) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// `docker load` of hostile or broken archives: each refused by name, no
/// image changed, nothing written outside the store.
#[test]
fn load_refuses_bad_archives_and_oversized_bodies() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    let dir = tempdir();
    let before = index(&daemon);
    let blobs = || {
        let dir = daemon.home.path().join("images/blobs/sha256");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let blobs_before = blobs();
    let hex = "a".repeat(64);
    let link_blob = format!("blobs/sha256/{hex}");
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "garbage",
            b"this is not a tar archive at all; ".repeat(40),
            "failed to load the archive".to_owned(),
        ),
        ("empty", Vec::new(), "no `index.json`".to_owned()),
        (
            "dotdot",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "../escape", b'0', b"owned", "");
                t
            },
            "`../escape`".to_owned(),
        ),
        (
            "deep",
            {
                let mut t = Vec::new();
                raw_entry(
                    &mut t,
                    "blobs/sha256/../../../../escape",
                    b'0',
                    b"owned",
                    "",
                );
                t
            },
            "`blobs/sha256/../../../../escape`".to_owned(),
        ),
        (
            "symlink",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, &link_blob, b'2', b"", "/etc/passwd");
                t
            },
            format!("`{link_blob}` (Symlink)"),
        ),
        (
            "hardlink",
            {
                let mut t = Vec::new();
                raw_entry(&mut t, "index.json", b'1', b"", "../../etc/passwd");
                t
            },
            "`index.json` (Link)".to_owned(),
        ),
    ];
    for (what, mut tar, needle) in cases {
        if !tar.is_empty() && what != "garbage" {
            tar.resize(tar.len() + 1024, 0);
        }
        let path = dir.path().join(format!("{what}.tar"));
        std::fs::write(&path, &tar).unwrap();
        let out = daemon.docker(&["load", "-i", path.to_str().unwrap()]);
        out.assert_code(1);
        assert!(out.stderr.contains(&needle), "{what}: {out:?}");
        assert_eq!(index(&daemon), before, "{what}");
        assert_eq!(blobs(), blobs_before, "{what}");
    }
    for outside in [
        daemon.home.path().join("escape"),
        daemon.home.path().join("images/escape"),
        daemon.home.path().parent().unwrap().join("escape"),
        dir.path().join("escape"),
    ] {
        assert!(!outside.exists(), "{}", outside.display());
    }

    // A body declared past the bound is refused before it is read.
    let response = raw(
        &daemon,
        "POST /v1.47/images/load HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-tar\r\nContent-Length: 3221225472\r\n\r\n0123456789",
    );
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("the archive is larger than the 2 GiB the daemon loads"),
        "{response}"
    );
    assert_eq!(index(&daemon), before);
    assert_eq!(images(&daemon), ["hello:latest"]);
}

#[test]
fn bad_image_requests_are_named_and_change_nothing() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    let before = index(&daemon);
    for (method, path, status, needle) in [
        (
            "POST",
            "/v1.47/images/create?fromImage=Not%20A%20Name&tag=1",
            400,
            "invalid image reference `Not A Name:1`",
        ),
        ("POST", "/v1.47/images/create?tag=1", 400, "`fromImage`"),
        (
            "POST",
            "/v1.47/images/create?fromImage=hello",
            501,
            "--all-tags",
        ),
        (
            "POST",
            "/v1.47/images/create?fromSrc=-",
            501,
            "docker import",
        ),
        (
            "POST",
            "/v1.47/images/hello/tag?repo=Bad%20Repo&tag=1",
            400,
            "`Bad Repo:1`",
        ),
        (
            "POST",
            "/v1.47/images/hello/tag?repo=ok&tag=-x",
            400,
            "`ok:-x`",
        ),
        ("POST", "/v1.47/images/hello/tag", 400, "`repo`"),
        (
            "POST",
            "/v1.47/images/ghost/tag?repo=x&tag=1",
            404,
            "No such image: ghost",
        ),
        (
            "GET",
            "/v1.47/images/ghost/json",
            404,
            "No such image: ghost",
        ),
        ("GET", "/v1.47/images/Bad%20Name/json", 400, "`Bad Name`"),
        ("DELETE", "/v1.47/images/ghost", 404, "No such image: ghost"),
        (
            "GET",
            "/v1.47/images/ghost/get",
            404,
            "No such image: ghost",
        ),
        (
            "POST",
            "/v1.47/images/ghost/push?tag=1",
            404,
            "An image does not exist locally with the tag: ghost",
        ),
        ("POST", "/v1.47/images/hello/unknown", 404, "page not found"),
    ] {
        let (got, body) = daemon.http(method, path, "");
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body.contains(needle), "{method} {path}: {body}");
        assert!(body.starts_with("{\"message\":"), "{method} {path}: {body}");
    }
    // The CLI shows them as Docker's.
    assert_failed(
        &daemon.docker(&["tag", "ghost", "x:1"]),
        "No such image: ghost",
    );
    assert_failed(
        &daemon.docker(&["image", "inspect", "ghost"]),
        "No such image: ghost",
    );
    assert_eq!(index(&daemon), before);
    assert_eq!(images(&daemon), ["hello:latest"]);
}

#[test]
fn docker_py_manages_images() {
    let registry = Registry::start();
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.build("spin", P2.spin);
    let host = registry.host();
    daemon
        .docker_py("images.py", &[("REGISTRY", host)])
        .assert_success()
        .assert_stdout_contains("docker-py images: all passed");
}
