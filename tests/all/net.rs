//! Virtual sockets: published ports, networks between apps, outbound policy.
//! Real sockets on 127.0.0.1, ports picked by the kernel (port 0) only.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// Sends `data` to 127.0.0.1:`port` and returns what comes back before the
/// server closes.
fn echo_through(port: u16, data: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to the published port");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let data = data.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back).expect("read the echo");
    sender.join().unwrap();
    back
}

/// The echo guest publishing guest port 80 on a host port of the kernel's
/// choosing, with extra echo_server arguments.
fn echo_on_80(extra: &[&str]) -> Running {
    wrun()
        .args(["run", "-p", "127.0.0.1::80", P2.echo_server, "0.0.0.0:80"])
        .args(extra)
        .spawn()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn host_client_reaches_echo_guest_through_publish() {
    let server = wrun()
        .args([
            "run",
            "-p",
            "127.0.0.1::8080",
            P2.echo_server,
            "0.0.0.0:8080",
            "--count",
            "2",
        ])
        .spawn();
    let port = server.published_port("8080/tcp");
    assert_eq!(echo_through(port, b"hello through -p"), b"hello through -p");
    // A large transfer, both ways at once.
    let big = pattern(24 << 20);
    assert!(
        echo_through(port, &big) == big,
        "24 MiB did not round-trip intact"
    );
    let out = server.finish();
    out.assert_success();
    // The guest saw its own port as its local address, and the real client
    // (a host loopback address) as its peer.
    let accepted: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("accepted"))
        .collect();
    assert_eq!(accepted.len(), 2, "{out:#?}");
    for line in accepted {
        assert!(line.starts_with("accepted 127.0.0.1:"), "{line}");
        assert!(line.ends_with(" at 127.0.0.1:8080"), "{line}");
    }
}

#[test]
fn guest_listening_on_loopback_is_published_too() {
    let server = wrun()
        .args([
            "run",
            "-p",
            "127.0.0.1::80",
            P2.echo_server,
            "127.0.0.1:80",
            "--count",
            "1",
        ])
        .spawn();
    let port = server.published_port("80/tcp");
    assert_eq!(
        echo_through(port, b"to 127.0.0.1:80 inside"),
        b"to 127.0.0.1:80 inside"
    );
    server
        .finish()
        .assert_success()
        .assert_stdout_contains("listening on 127.0.0.1:80");
}

#[test]
fn binding_port_zero_returns_the_chosen_port() {
    let out = wrun()
        .args(["run", "--timeout", "1s", P2.echo_server, "0.0.0.0:0"])
        .run();
    let line = out.stdout.lines().next().unwrap_or_default();
    let port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(
        line.starts_with("listening on 0.0.0.0:") && port != 0,
        "{out:#?}"
    );
}

#[test]
fn two_apps_use_the_same_guest_port_at_once() {
    let a = echo_on_80(&["--count", "1"]);
    let b = echo_on_80(&["--count", "1"]);
    let (pa, pb) = (a.published_port("80/tcp"), b.published_port("80/tcp"));
    assert_ne!(pa, pb);
    assert_eq!(echo_through(pa, b"to a"), b"to a");
    assert_eq!(echo_through(pb, b"to b"), b"to b");
    a.finish().assert_success();
    b.finish().assert_success();
}

#[test]
fn clients_arriving_before_the_guest_listens_wait() {
    let server = echo_on_80(&["--count", "1", "--wait-ms", "1500"]);
    let port = server.published_port("80/tcp");
    // Connects while the guest still sleeps; answered once it listens.
    assert_eq!(echo_through(port, b"early bird"), b"early bird");
    server.finish().assert_success();
}

#[test]
fn published_port_is_free_again_when_the_app_exits() {
    let server = echo_on_80(&["--count", "1"]);
    let port = server.published_port("80/tcp");
    assert_eq!(echo_through(port, b"x"), b"x");
    server.finish().assert_success();
    TcpListener::bind(("127.0.0.1", port)).expect("the port can be bound right after wrun exits");
}

#[test]
fn publishing_a_port_in_use_names_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mapping = format!("127.0.0.1:{port}:80");
    let out = wrun().args(["run", "-p", &mapping, P2.echo_server]).run();
    out.assert_code(125);
    out.assert_stderr_contains(&format!("127.0.0.1:{port}/tcp"))
        .assert_stderr_contains("already in use");
    assert_eq!(out.stdout, "", "the app never started");
}

#[test]
fn bad_publish_forms_are_refused() {
    for (spec, needle) in [
        ("80:", "not a port number"),
        ("x:80", "`x` is not a port number"),
        ("8080:80/sctp", "unknown protocol `sctp`"),
        ("300.1.1.1:8080:80", "`300.1.1.1` is not an IP address"),
        ("8000-8001:80", "2 ports but the guest range has 1"),
        ("0", "0 is not a port"),
        ("1:2:3:4", "too many `:`"),
    ] {
        let out = wrun().args(["run", "-p", spec, P2.echo_server]).run();
        out.assert_code(125)
            .assert_stderr_contains(spec)
            .assert_stderr_contains(needle);
    }
}

#[test]
fn core_modules_cannot_publish() {
    let out = wrun()
        .args(["run", "-p", "127.0.0.1::80", P1.echo_server])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("core module")
        .assert_stderr_contains("wasm32-wasip2");
}

fn network(home: &Path, name: &str) {
    wrun()
        .home(home)
        .args(["network", "create", name])
        .run()
        .assert_success();
}

/// The echo guest named `db` on `network`, listening on guest `addr` and
/// serving `count` connections; returns once it listens.
fn db_on(home: &Path, network: &str, addr: &str, count: &str) -> Running {
    let db = wrun()
        .home(home)
        .args([
            "run",
            "--network",
            network,
            "--name",
            "db",
            P2.echo_server,
            addr,
        ])
        .args(["--count", count])
        .spawn();
    db.wait_for_line("listening on");
    db
}

#[test]
fn apps_reach_each_other_by_name_across_processes() {
    let home = tempdir();
    network(home.path(), "shop");
    let db = db_on(home.path(), "shop", "0.0.0.0:5432", "2");
    let out = wrun()
        .home(home.path())
        .args([
            "run",
            "--network",
            "shop",
            P2.tcp_client,
            "db:5432",
            "hello db",
        ])
        .run();
    out.assert_success()
        .assert_stdout_contains("reply: hello db");
    // Both ends see virtual addresses on the network's subnet.
    let connected = out
        .stdout
        .lines()
        .find(|l| l.starts_with("connected"))
        .unwrap();
    let words: Vec<&str> = connected.split_whitespace().collect();
    assert!(
        words[1].starts_with("10.89.")
            && words[3].starts_with("10.89.")
            && words[3].ends_with(":5432"),
        "{connected}"
    );
    // By address too.
    let db_ip = words[3].to_owned();
    wrun()
        .home(home.path())
        .args([
            "run",
            "--network",
            "shop",
            P2.tcp_client,
            &db_ip,
            "by address",
        ])
        .run()
        .assert_success()
        .assert_stdout_contains("reply: by address");
    let out = db.finish();
    out.assert_success();
    assert!(out.stdout.contains(&format!("at {db_ip}")), "{out:#?}");
}

/// `db` on `shop` and a client reaching it by name, with wrun's environment
/// adjusted by `env` (the runtime directory's variables).
fn client_reaches_db(home: &Path, env: &[(&str, Option<&Path>)]) -> Output {
    let with_env = |mut w: Wrun| {
        for (key, value) in env {
            w = match value {
                Some(value) => w.env(key, value),
                None => w.env_remove(key),
            };
        }
        w.home(home)
    };
    with_env(wrun())
        .args(["network", "create", "shop"])
        .run()
        .assert_success();
    let db = with_env(wrun())
        .args(["run", "--network", "shop", "--name", "db", P2.echo_server])
        .args(["0.0.0.0:5432", "--count", "1"])
        .spawn();
    db.wait_for_line("listening on");
    let out = with_env(wrun())
        .args(["run", "--network", "shop", P2.tcp_client, "db:5432", "hi"])
        .run();
    db.finish().assert_success();
    out
}

/// Without XDG_RUNTIME_DIR, the sockets go under $WRUN_HOME/run, which no
/// other user can create first: a squatter's `wrun-<uid>` in the temp dir
/// (here a dangling symlink, which once made mkdir fail with "File exists")
/// changes nothing.
#[test]
fn without_xdg_runtime_dir_networks_use_a_private_dir_under_wrun_home() {
    let scratch = tempdir();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let uid = std::fs::metadata(scratch.path()).unwrap().uid();
    std::os::unix::fs::symlink("/nonexistent", tmp.join(format!("wrun-{uid}"))).unwrap();
    let home = scratch.path().join("home");
    let out = client_reaches_db(
        &home,
        &[("XDG_RUNTIME_DIR", None), ("TMPDIR", Some(tmp.as_path()))],
    );
    out.assert_success().assert_stdout_contains("reply: hi");
    let run = std::fs::metadata(home.join("run")).unwrap();
    assert!(run.is_dir() && run.mode() & 0o777 == 0o700, "{run:?}");
}

/// A $WRUN_HOME too long for a socket address (108 bytes with the socket's
/// name) still works: the sockets are reached through /proc/self/fd.
#[test]
fn networks_work_under_a_long_wrun_home() {
    let scratch = tempdir();
    let home = scratch.path().join("h".repeat(100));
    let out = client_reaches_db(&home, &[("XDG_RUNTIME_DIR", None)]);
    out.assert_success().assert_stdout_contains("reply: hi");
}

/// An unusable runtime directory is refused, saying what is wrong and whose
/// it is: a dangling symlink, another user's directory (made as root and
/// given away, or `/` for any other user), one open to others.
#[test]
fn unusable_runtime_dirs_are_refused_saying_whose_they_are() {
    let scratch = tempdir();
    let home = scratch.path().join("home");
    network(&home, "shop");
    let me = std::fs::metadata(scratch.path()).unwrap().uid();
    let xdg = scratch.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    let theirs = if me == 0 {
        let dir = scratch.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        (dir, 65534)
    } else {
        (std::path::PathBuf::from("/"), 0)
    };
    let open = scratch.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cases: [(&Path, String); 3] = [
        (
            Path::new("/nonexistent/wrun"),
            "is a symlink to `/nonexistent/wrun`, which does not exist, made by uid".to_owned(),
        ),
        (&theirs.0, format!("is owned by uid {}", theirs.1)),
        (&open, "has mode 0755, which lets other users in".to_owned()),
    ];
    for (target, needle) in cases {
        let link = xdg.join("wrun");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
        let out = wrun()
            .home(&home)
            .env("XDG_RUNTIME_DIR", &xdg)
            .args(["run", "--network", "shop", P2.hello])
            .run();
        out.assert_code(125)
            .assert_stderr_contains(&format!(
                "cannot use `{}` as the runtime directory",
                link.display()
            ))
            .assert_stderr_contains(&needle);
    }
}

#[test]
fn apps_on_other_networks_cannot_reach_each_other() {
    let home = tempdir();
    network(home.path(), "front");
    network(home.path(), "back");
    let db = db_on(home.path(), "back", "0.0.0.0:5432", "1");
    let db_ip = "10.89.1.2:5432";
    for (target, needle) in [("db:5432", "error:"), (db_ip, "error: PermissionDenied")] {
        let out = wrun()
            .home(home.path())
            .args(["run", "--network", "front", P2.tcp_client, target, "x"])
            .run();
        out.assert_code(1).assert_stdout_contains(needle);
    }
    // Without any network, neither.
    let out = wrun()
        .home(home.path())
        .args(["run", P2.tcp_client, db_ip, "x"])
        .run();
    out.assert_code(1)
        .assert_stdout_contains("error: PermissionDenied");
    // The db is still there for its own network.
    wrun()
        .home(home.path())
        .args([
            "run",
            "--network",
            "back",
            P2.tcp_client,
            "db:5432",
            "member",
        ])
        .run()
        .assert_success()
        .assert_stdout_contains("reply: member");
    db.finish().assert_success();
}

#[test]
fn names_are_unique_per_network_and_networks_must_exist() {
    let home = tempdir();
    network(home.path(), "shop");
    let db = db_on(home.path(), "shop", "0.0.0.0:1", "1");
    let out = wrun()
        .home(home.path())
        .args(["run", "--network", "shop", "--name", "db", P2.hello])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("the name `db` is already taken on network `shop`");
    let out = wrun()
        .home(home.path())
        .args(["run", "--network", "nope", P2.hello])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("no such network `nope`");
    // A network in use cannot be removed.
    let out = wrun()
        .home(home.path())
        .args(["network", "rm", "shop"])
        .run();
    out.assert_code(125).assert_stderr_contains("in use");
    drop(db);
    std::thread::sleep(Duration::from_millis(200));
    wrun()
        .home(home.path())
        .args(["network", "rm", "shop"])
        .run()
        .assert_success();
}

#[test]
fn network_commands() {
    let home = tempdir();
    let run = |args: &[&str]| wrun().home(home.path()).arg("network").args(args).run();
    run(&["create", "shop"]).assert_success();
    run(&["create", "lab", "--subnet", "10.42.7.0/24"]).assert_success();
    run(&["create", "shop"])
        .assert_code(125)
        .assert_stderr_contains("already exists");
    run(&["create", "host"])
        .assert_code(125)
        .assert_stderr_contains("reserved");
    run(&["create", "x", "--subnet", "10.42.7.0/24"])
        .assert_code(125)
        .assert_stderr_contains("already used");
    let out = run(&["ls"]);
    out.assert_success()
        .assert_stdout_contains("10.42.7.0/24")
        .assert_stdout_contains("shop");
    assert_eq!(run(&["ls", "-q"]).stdout, "lab\nshop\n");
    run(&["rm", "lab", "shop"]).assert_success();
    assert_eq!(run(&["ls", "-q"]).stdout, "");
    run(&["rm", "shop"])
        .assert_code(125)
        .assert_stderr_contains("no such network `shop`");
}

/// A one-shot echo server on the host: what an allowed outbound connection reaches.
fn host_echo_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut data = Vec::new();
        conn.read_to_end(&mut data).unwrap();
        conn.write_all(&data).unwrap();
    });
    (port, handle)
}

#[test]
fn outbound_is_denied_by_default_and_allowed_by_flag() {
    let (port, server) = host_echo_server();
    let target = format!("127.0.0.1:{port}");
    // The guest's 127.0.0.1 is its own loopback, where nothing listens.
    let out = wrun().args(["run", P2.tcp_client, &target, "x"]).run();
    out.assert_code(1)
        .assert_stdout_contains("error: ConnectionRefused");
    let out = wrun()
        .args([
            "run",
            "--allow-outbound",
            "127.0.0.1:1",
            P2.tcp_client,
            &target,
            "x",
        ])
        .run();
    out.assert_code(1)
        .assert_stdout_contains("error: ConnectionRefused");
    let out = wrun()
        .args([
            "run",
            "--allow-outbound",
            &target,
            P2.tcp_client,
            &target,
            "to the host",
        ])
        .run();
    out.assert_success()
        .assert_stdout_contains("reply: to the host");
    server.join().unwrap();
}

#[test]
fn sockets_per_app_are_bounded() {
    // The default descriptor limit, then one given with --ulimit.
    let out = wrun().args(["run", P2.tcp_client, "--open", "5000"]).run();
    out.assert_success().assert_stdout_contains("opened 1024");
    assert!(out.stdout.contains("stopped:"), "{out:#?}");
    let out = wrun()
        .args([
            "run",
            "--ulimit",
            "nofile=100",
            P2.tcp_client,
            "--open",
            "5000",
        ])
        .run();
    out.assert_success().assert_stdout_contains("opened 100");
}

#[test]
fn host_network_reaches_the_hosts_loopback() {
    let (port, server) = host_echo_server();
    let target = format!("127.0.0.1:{port}");
    let out = wrun()
        .args([
            "run",
            "--network",
            "host",
            P2.tcp_client,
            &target,
            "via host",
        ])
        .run();
    out.assert_success()
        .assert_stdout_contains("reply: via host");
    server.join().unwrap();
}

#[test]
fn bad_outbound_rules_and_network_combinations_are_refused() {
    let out = wrun()
        .args(["run", "--allow-outbound", "10.0.0.0/40", P2.hello])
        .run();
    out.assert_code(125).assert_stderr_contains("`10.0.0.0/40`");
    let out = wrun()
        .args(["run", "--network", "host", "-p", "8080:80", P2.hello])
        .run();
    out.assert_code(125)
        .assert_stderr_contains("no effect with --network host");
}

#[test]
fn udp_through_publish_and_between_apps() {
    let home = tempdir();
    network(home.path(), "shop");
    let server = wrun()
        .home(home.path())
        .args([
            "run",
            "-p",
            "127.0.0.1::53/udp",
            "--network",
            "shop",
            "--name",
            "dns",
        ])
        .args([P2.udp_echo, "serve", "0.0.0.0:53", "--count", "2"])
        .spawn();
    let port = server.published_port("53/udp");
    server.wait_for_line("udp listening on");
    // From the host through the published port.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .send_to(b"ping from the host", ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping from the host");
    assert_eq!(from.port(), port, "the reply comes from the published port");
    // From another app by name.
    let out = wrun()
        .home(home.path())
        .args([
            "run",
            "--network",
            "shop",
            P2.udp_echo,
            "send",
            "dns:53",
            "ping from an app",
        ])
        .run();
    out.assert_success()
        .assert_stdout_contains("reply from 10.89.0.2:53: ping from an app");
    server.finish().assert_success();
}
