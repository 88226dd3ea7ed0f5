//! Volumes: what is granted is reachable, nothing else is, and `:ro` means it.

use crate::support::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// A host layout with a secret next to the volume and links pointing at it:
///
/// ```text
/// root/secret.txt            "top secret"
/// root/vol/data.txt          "data"
/// root/vol/sub/inner.txt     "inner"
/// root/vol/abs_link     ->   root/secret.txt (absolute)
/// root/vol/rel_link     ->   ../secret.txt
/// root/vol/up_dir       ->   ..
/// root/vol/abs_dir      ->   root (absolute)
/// ```
struct Layout {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempdir();
        let root = dir.path().canonicalize().unwrap();
        let vol = root.join("vol");
        fs::create_dir_all(vol.join("sub")).unwrap();
        fs::write(root.join("secret.txt"), "top secret").unwrap();
        fs::write(vol.join("data.txt"), "data").unwrap();
        fs::write(vol.join("sub/inner.txt"), "inner").unwrap();
        std::os::unix::fs::symlink(root.join("secret.txt"), vol.join("abs_link")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", vol.join("rel_link")).unwrap();
        std::os::unix::fs::symlink("..", vol.join("up_dir")).unwrap();
        std::os::unix::fs::symlink(&root, vol.join("abs_dir")).unwrap();
        Layout { _dir: dir, root }
    }

    fn vol(&self) -> std::path::PathBuf {
        self.root.join("vol")
    }

    fn volume(&self, guest: &str, mode: &str) -> String {
        format!("{}:{guest}{mode}", self.vol().display())
    }

    /// Every file under root with its contents (symlinks as `-> target`).
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        snapshot_into(&self.root, &self.root, &mut map);
        map
    }
}

fn snapshot_into(root: &Path, dir: &Path, map: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let key = path.strip_prefix(root).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_symlink() {
            map.insert(
                key,
                format!("-> {}", fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            map.insert(key.clone(), "<dir>".into());
            snapshot_into(root, &path, map);
        } else {
            let mtime = meta.modified().unwrap();
            let contents = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
            map.insert(key, format!("{contents} @{mtime:?}"));
        }
    }
}

fn filetool(apps: &Apps, volume: &str, args: &[&str]) -> Output {
    wrun()
        .args(["run", "-v", volume, apps.filetool])
        .args(args)
        .run()
}

/// A refused guest operation: the guest saw an error (exit 1), wrun did not fail.
#[track_caller]
fn assert_refused(out: &Output) {
    out.assert_code(1).assert_stderr_contains("error: ");
    assert!(
        !out.stdout.contains("top secret"),
        "the secret leaked: {out:#?}"
    );
}

fn no_volume_means_no_files(apps: &Apps) {
    let out = wrun().args(["run", apps.filetool, "ls", "/"]).run();
    assert_refused(&out);
    let out = wrun()
        .args(["run", apps.filetool, "cat", "/etc/passwd"])
        .run();
    assert_refused(&out);
}

fn read_and_write_through_a_volume(apps: &Apps) {
    let layout = Layout::new();
    let vol = layout.volume("/data", "");
    filetool(apps, &vol, &["cat", "/data/data.txt"])
        .assert_success()
        .assert_stdout_contains("data");
    filetool(
        apps,
        &vol,
        &["write", "/data/new.txt", "written by the guest"],
    )
    .assert_success();
    assert_eq!(
        fs::read_to_string(layout.vol().join("new.txt")).unwrap(),
        "written by the guest"
    );
    filetool(apps, &vol, &["append", "/data/new.txt", "!"]).assert_success();
    filetool(apps, &vol, &["mkdir", "/data/made"]).assert_success();
    filetool(
        apps,
        &vol,
        &["rename", "/data/new.txt", "/data/made/moved.txt"],
    )
    .assert_success();
    assert_eq!(
        fs::read_to_string(layout.vol().join("made/moved.txt")).unwrap(),
        "written by the guest!"
    );
    // Links inside the volume work.
    filetool(apps, &vol, &["symlink", "data.txt", "/data/alias"]).assert_success();
    filetool(apps, &vol, &["cat", "/data/alias"])
        .assert_success()
        .assert_stdout_contains("data");
    filetool(apps, &vol, &["rm", "/data/made/moved.txt"]).assert_success();
    filetool(apps, &vol, &["rmdir", "/data/made"]).assert_success();
    assert!(!layout.vol().join("made").exists());
    let out = filetool(apps, &vol, &["ls", "/data"]);
    out.assert_success();
    assert_eq!(
        out.stdout,
        "abs_dir\nabs_link\nalias\ndata.txt\nrel_link\nsub\nup_dir\n"
    );
}

fn read_only_volume_refuses_every_write(apps: &Apps) {
    let layout = Layout::new();
    let vol = layout.volume("/data", ":ro");
    let before = layout.snapshot();
    filetool(apps, &vol, &["cat", "/data/data.txt"])
        .assert_success()
        .assert_stdout_contains("data");
    filetool(apps, &vol, &["ls", "/data/sub"])
        .assert_success()
        .assert_stdout_contains("inner.txt");
    let writes: &[&[&str]] = &[
        &["write", "/data/new.txt", "x"],
        &["write", "/data/data.txt", "overwritten"],
        &["append", "/data/data.txt", "appended"],
        &["truncate", "/data/data.txt", "0"],
        &["touch", "/data/data.txt"],
        &["rm", "/data/data.txt"],
        &["mkdir", "/data/newdir"],
        &["rmdir", "/data/sub"],
        &["rename", "/data/data.txt", "/data/renamed.txt"],
        &["rename", "/data/sub", "/data/sub2"],
        &["symlink", "data.txt", "/data/link"],
        &["hardlink", "/data/data.txt", "/data/hard"],
    ];
    for write in writes {
        let out = filetool(apps, &vol, write);
        out.assert_code(1);
        assert_eq!(
            layout.snapshot(),
            before,
            "`{}` changed a read-only volume",
            write.join(" ")
        );
    }
}

fn escapes_are_refused(apps: &Apps) {
    let layout = Layout::new();
    let vol = layout.volume("/data", "");
    let before = layout.snapshot();
    let secret = layout.root.join("secret.txt").display().to_string();
    let attempts: Vec<Vec<String>> = [
        // `..` above the mount point, literally and after a subdirectory.
        vec!["cat", "/data/../secret.txt"],
        vec!["cat", "/data/sub/../../secret.txt"],
        vec!["ls", "/data/.."],
        // Absolute paths outside every volume, including the host's own path.
        vec!["cat", "/etc/passwd"],
        vec!["cat", &secret],
        // Symlinks placed by the host: absolute, relative, to directories.
        vec!["cat", "/data/abs_link"],
        vec!["cat", "/data/rel_link"],
        vec!["cat", "/data/up_dir/secret.txt"],
        vec!["cat", "/data/abs_dir/secret.txt"],
        vec!["ls", "/data/abs_dir"],
        // Writes through them.
        vec!["write", "/data/rel_link", "overwritten"],
        vec!["write", "/data/abs_link", "overwritten"],
        vec!["write", "/data/up_dir/escaped.txt", "x"],
        vec!["write", "/data/../escaped.txt", "x"],
        vec!["mkdir", "/data/../escaped-dir"],
        vec!["rename", "/data/data.txt", "/data/../moved.txt"],
        vec!["hardlink", "/data/../secret.txt", "/data/hard"],
    ]
    .into_iter()
    .map(|a| a.into_iter().map(str::to_owned).collect())
    .collect();
    for attempt in &attempts {
        let args: Vec<&str> = attempt.iter().map(String::as_str).collect();
        let out = filetool(apps, &vol, &args);
        assert_refused(&out);
        assert_eq!(
            layout.snapshot(),
            before,
            "`{}` changed the host",
            args.join(" ")
        );
    }
    // A hard link to a symlink links the symlink itself (it stays inside the
    // volume) and cannot be followed out either.
    let _ = filetool(apps, &vol, &["hardlink", "/data/rel_link", "/data/hard"]);
    assert_refused(&filetool(apps, &vol, &["cat", "/data/hard"]));
    assert_eq!(
        fs::read_to_string(layout.root.join("secret.txt")).unwrap(),
        "top secret"
    );
}

fn guest_created_symlinks_cannot_escape(apps: &Apps) {
    let layout = Layout::new();
    let vol = layout.volume("/data", "");
    let secret = layout.root.join("secret.txt").display().to_string();
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    // Creating an absolute symlink is refused outright; a relative one that
    // climbs out may be created but is never followed out. Writing to the
    // link's path then at most creates a file inside the volume.
    for (target, link) in [
        (secret.as_str(), "/data/g_abs"),
        ("/etc/passwd", "/data/g_etc"),
        ("../secret.txt", "/data/g_rel"),
        ("../../../../../../secret.txt", "/data/g_deep"),
        ("sub/../../secret.txt", "/data/g_mixed"),
    ] {
        let _ = filetool(apps, &vol, &["symlink", target, link]);
        assert_refused(&filetool(apps, &vol, &["cat", link]));
        let _ = filetool(apps, &vol, &["write", link, "overwritten"]);
        assert_eq!(
            fs::read_to_string(layout.root.join("secret.txt")).unwrap(),
            "top secret"
        );
        let entries: Vec<_> = fs::read_dir(&layout.root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            entries.len(),
            2,
            "nothing appeared beside the volume: {entries:?}"
        );
        assert_eq!(fs::read("/etc/passwd").unwrap_or_default(), passwd);
    }
    // A loop is an error, not a hang.
    let _ = filetool(apps, &vol, &["symlink", "loop_b", "/data/loop_a"]);
    let _ = filetool(apps, &vol, &["symlink", "loop_a", "/data/loop_b"]);
    filetool(apps, &vol, &["cat", "/data/loop_a"]).assert_code(1);
}

fn workdir_makes_relative_paths_resolve_inside(apps: &Apps) {
    let layout = Layout::new();
    let vol = layout.volume("/data", "");
    let run = |args: &[&str]| {
        wrun()
            .args(["run", "-v", &vol, "-w", "/data/sub", apps.filetool])
            .args(args)
            .run()
    };
    run(&["cat", "inner.txt"])
        .assert_success()
        .assert_stdout_contains("inner");
    run(&["write", "made-here.txt", "x"]).assert_success();
    assert!(layout.vol().join("sub/made-here.txt").is_file());
    // Relative paths cannot climb out of the working directory's volume.
    assert_refused(&run(&["cat", "../../secret.txt"]));
    // The guest is told where it is: `initial-cwd` for components, `PWD` for all.
    let out = wrun()
        .args(["run", "-v", &vol, "-w", "/data/sub", apps.args_env])
        .run();
    out.assert_success()
        .assert_stdout_contains("env PWD=/data/sub\n");
    // A working directory that leads out of its volume is refused.
    let out = wrun()
        .args(["run", "-v", &vol, "-w", "/data/abs_dir", apps.hello])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("leads outside the volume");
    let out = wrun()
        .args(["run", "-v", &vol, "-w", "/data/up_dir", apps.hello])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("leads outside the volume");
}

fn workdir_in_a_read_only_volume_is_read_only(apps: &Apps) {
    let layout = Layout::new();
    let vol = layout.volume("/data", ":ro");
    let out = wrun()
        .args([
            "run",
            "-v",
            &vol,
            "-w",
            "/data",
            apps.filetool,
            "write",
            "x.txt",
            "x",
        ])
        .run();
    out.assert_code(1);
    assert!(!layout.vol().join("x.txt").exists());
}

fn volume_at_root_and_nested_volumes(apps: &Apps) {
    let layout = Layout::new();
    let other = tempdir();
    fs::write(other.path().join("ro.txt"), "read only").unwrap();
    let root_vol = layout.volume("/", "");
    let nested = format!("{}:/sub/ro:ro", other.path().display());
    let run = |args: &[&str]| {
        wrun()
            .args(["run", "-v", &root_vol, "-v", &nested, apps.filetool])
            .args(args)
            .run()
    };
    run(&["cat", "/data.txt"])
        .assert_success()
        .assert_stdout_contains("data");
    run(&["cat", "/sub/ro/ro.txt"])
        .assert_success()
        .assert_stdout_contains("read only");
    run(&["write", "/sub/ro/new.txt", "x"]).assert_code(1);
    assert!(!other.path().join("new.txt").exists());
    assert_refused(&run(&["cat", "/../secret.txt"]));
}

fn relative_host_paths(apps: &Apps) {
    let layout = Layout::new();
    let out = wrun()
        .current_dir(&layout.root)
        .args([
            apps.filetool,
            "-v",
            "./vol:/data",
            "--",
            "cat",
            "/data/data.txt",
        ])
        .run();
    out.assert_success().assert_stdout_contains("data");
}

for_both_targets!(
    no_volume_means_no_files,
    read_and_write_through_a_volume,
    read_only_volume_refuses_every_write,
    escapes_are_refused,
    guest_created_symlinks_cannot_escape,
    workdir_makes_relative_paths_resolve_inside,
    workdir_in_a_read_only_volume_is_read_only,
    volume_at_root_and_nested_volumes,
    relative_host_paths,
);

mod nested {
    use super::*;

    for_both_targets!(
        nested_read_only_volume_wins_for_every_spelling,
        nested_writable_volume_in_a_read_only_one,
        nested_mount_point_is_created_in_a_writable_volume,
    );
}

/// A rw volume with a read-only one nested in it, as `-v ./app:/app -v
/// ./app/config:/app/config:ro` (the inner's host directory inside the
/// outer's), or with the inner's host directory elsewhere:
///
/// ```text
/// app/a.txt                   "outer"
/// app/sub/                    (empty)
/// app/link          ->        config
/// app/link_file     ->        config/settings.txt
/// app/config/settings.txt     "shadowed" (only when the inner is elsewhere)
/// inner/settings.txt          "setting"  (the inner volume, when elsewhere)
/// ```
struct Nested {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    inner_elsewhere: bool,
}

impl Nested {
    fn new(inner_elsewhere: bool) -> Nested {
        let dir = tempdir();
        let root = dir.path().canonicalize().unwrap();
        let app = root.join("app");
        fs::create_dir_all(app.join("sub")).unwrap();
        fs::create_dir_all(app.join("config")).unwrap();
        fs::write(app.join("a.txt"), "outer").unwrap();
        std::os::unix::fs::symlink("config", app.join("link")).unwrap();
        std::os::unix::fs::symlink("config/settings.txt", app.join("link_file")).unwrap();
        if inner_elsewhere {
            fs::create_dir(root.join("inner")).unwrap();
            fs::write(root.join("inner/settings.txt"), "setting").unwrap();
            fs::write(app.join("config/settings.txt"), "shadowed").unwrap();
        } else {
            fs::write(app.join("config/settings.txt"), "setting").unwrap();
        }
        Nested {
            _dir: dir,
            root,
            inner_elsewhere,
        }
    }

    fn inner_host(&self) -> std::path::PathBuf {
        match self.inner_elsewhere {
            true => self.root.join("inner"),
            false => self.root.join("app/config"),
        }
    }

    fn run(&self, apps: &Apps, extra: &[&str], args: &[&str]) -> Output {
        let outer = format!("{}:/app", self.root.join("app").display());
        let inner = format!("{}:/app/config:ro", self.inner_host().display());
        wrun()
            .args(["run", "-v", &outer, "-v", &inner])
            .args(extra)
            .arg(apps.filetool)
            .args(args)
            .run()
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        snapshot_into(&self.root, &self.root, &mut map);
        map
    }
}

fn nested_read_only_volume_wins_for_every_spelling(apps: &Apps) {
    for inner_elsewhere in [false, true] {
        let n = Nested::new(inner_elsewhere);
        // Every spelling reads the inner volume's file, not what it shadows.
        for path in [
            "/app/config/settings.txt",
            "/app/./config/settings.txt",
            "/app//config/settings.txt",
            "/app/sub/../config/settings.txt",
            "/app/link/settings.txt",
            "/app/link_file",
        ] {
            let out = n.run(apps, &[], &["cat", path]);
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (0, "setting"),
                "`cat {path}` (inner elsewhere: {inner_elsewhere}): {out:?}"
            );
        }
        let before = n.snapshot();
        let writes: &[&[&str]] = &[
            &["write", "/app/config/new.txt", "x"],
            &["write", "/app/./config/new.txt", "x"],
            &["write", "/app//config/new.txt", "x"],
            &["write", "/app/sub/../config/new.txt", "x"],
            &["write", "/app/link/new.txt", "x"],
            &["write", "/app/link_file", "overwritten"],
            &["write", "/app/./config/settings.txt", "overwritten"],
            &["append", "/app/./config/settings.txt", "appended"],
            &["truncate", "/app/./config/settings.txt", "0"],
            &["touch", "/app/./config/settings.txt"],
            &["touch", "/app/link_file"],
            &["rm", "/app/./config/settings.txt"],
            &["rm", "/app/link/settings.txt"],
            &["mkdir", "/app/./config/d"],
            &["mkdir", "/app/link/d"],
            &["symlink", "x", "/app/./config/l"],
            &["rename", "/app/./config/settings.txt", "/app/stolen.txt"],
            &["rename", "/app/a.txt", "/app/./config/a.txt"],
            &["rename", "/app/a.txt", "/app/link/a.txt"],
            &["hardlink", "/app/a.txt", "/app/./config/h"],
            &["hardlink", "/app/./config/settings.txt", "/app/h"],
            // The mount point itself cannot be removed or moved away.
            &["rmdir", "/app/./config"],
            &["rename", "/app/./config", "/app/moved"],
            &["rename", "/app/sub", "/app/./config"],
            &["rm", "/app/./config"],
        ];
        for write in writes {
            let out = n.run(apps, &[], write);
            out.assert_code(1);
            assert_eq!(
                n.snapshot(),
                before,
                "`{}` changed the read-only volume (inner elsewhere: {inner_elsewhere})",
                write.join(" ")
            );
        }
        // A symlink the guest makes in the outer volume leads into the inner
        // one too, and so does a working directory above the mount point.
        n.run(apps, &[], &["symlink", "config", "/app/mine"])
            .assert_success();
        n.run(apps, &[], &["write", "/app/mine/new.txt", "x"])
            .assert_code(1);
        n.run(apps, &["-w", "/app"], &["write", "config/new.txt", "x"])
            .assert_code(1);
        n.run(
            apps,
            &["-w", "/app"],
            &["write", "./sub/../config/new.txt", "x"],
        )
        .assert_code(1);
        n.run(
            apps,
            &["-w", "/app/sub"],
            &["cat", "../config/settings.txt"],
        )
        .assert_code(1);
        let out = n.run(apps, &["-w", "/app"], &["cat", "link/settings.txt"]);
        out.assert_success();
        assert_eq!(out.stdout, "setting");
        assert!(!n.inner_host().join("new.txt").exists());
        assert!(!n.root.join("app/config/new.txt").exists());
        // Opening it again and again walks the same way (the benchmark's loop).
        n.run(apps, &[], &["openloop", "/app/./config/settings.txt", "50"])
            .assert_success()
            .assert_stdout_contains("opened 50");
        // The outer volume stays writable.
        n.run(apps, &[], &["write", "/app/./sub/ok.txt", "ok"])
            .assert_success();
        assert_eq!(
            fs::read_to_string(n.root.join("app/sub/ok.txt")).unwrap(),
            "ok"
        );
    }
}

fn nested_writable_volume_in_a_read_only_one(apps: &Apps) {
    let dir = tempdir();
    let root = dir.path().canonicalize().unwrap();
    fs::create_dir_all(root.join("app/data")).unwrap();
    fs::create_dir(root.join("data")).unwrap();
    std::os::unix::fs::symlink("data", root.join("app/current")).unwrap();
    let outer = format!("{}:/app:ro", root.join("app").display());
    let inner = format!("{}:/app/data", root.join("data").display());
    let run = |args: &[&str]| {
        wrun()
            .args(["run", "-v", &outer, "-v", &inner, apps.filetool])
            .args(args)
            .run()
    };
    for (i, path) in ["/app/data/x", "/app/./data/y", "/app/current/z"]
        .iter()
        .enumerate()
    {
        run(&["write", path, &i.to_string()]).assert_success();
    }
    assert_eq!(fs::read_to_string(root.join("data/x")).unwrap(), "0");
    assert_eq!(fs::read_to_string(root.join("data/y")).unwrap(), "1");
    assert_eq!(fs::read_to_string(root.join("data/z")).unwrap(), "2");
    assert_eq!(fs::read_dir(root.join("app/data")).unwrap().count(), 0);
    run(&["write", "/app/new.txt", "x"]).assert_code(1);
}

fn nested_mount_point_is_created_in_a_writable_volume(apps: &Apps) {
    let dir = tempdir();
    let root = dir.path().canonicalize().unwrap();
    fs::create_dir(root.join("app")).unwrap();
    fs::create_dir(root.join("cfg")).unwrap();
    fs::write(root.join("cfg/c.txt"), "c").unwrap();
    let outer = format!("{}:/app", root.join("app").display());
    let inner = format!("{}:/app/etc/conf:ro", root.join("cfg").display());
    let out = wrun()
        .args([
            "run",
            "-v",
            &outer,
            "-v",
            &inner,
            apps.filetool,
            "cat",
            "/app/./etc/conf/c.txt",
        ])
        .run();
    out.assert_success();
    assert_eq!(out.stdout, "c");
    // As Docker creates a bind mount's target in the volume under it.
    assert!(root.join("app/etc/conf").is_dir());
}
