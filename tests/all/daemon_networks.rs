//! `docker network` against `wrun daemon`: wrun's virtual networks as
//! Docker's bridge networks, containers on them reaching each other by name
//! and alias, and the requests compose sends (labels, connect and
//! disconnect before start).

use crate::daemon::{Daemon, eventually};
use crate::support::P2;

/// Starts `echo 0.0.0.0:5432` as `name` with `extra` flags, and waits
/// until it listens.
fn start_db(daemon: &Daemon, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["echo", "0.0.0.0:5432"]);
    daemon.docker(&args).assert_success();
    eventually("the server to listen", || {
        daemon
            .docker(&["logs", name])
            .stdout
            .contains("listening on")
    });
}

#[test]
fn containers_on_a_network_reach_each_other_by_name_and_alias() {
    let daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon.build("client", P2.tcp_client);
    let created = daemon.docker(&["network", "create", "shop"]);
    created.assert_success();
    let id = created.stdout.trim().to_owned();
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{created:?}"
    );
    let ls = daemon.docker(&["network", "ls"]);
    ls.assert_success();
    let header: Vec<&str> = ls
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"],
        "{ls:?}"
    );
    for name in ["bridge", "host", "none", "shop"] {
        assert!(
            ls.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name} missing: {ls:?}"
        );
    }
    let subnet = daemon.docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        &id[..6],
    ]);
    assert_eq!(subnet.stdout.trim(), "10.89.0.0/24", "{subnet:?}");

    start_db(
        &daemon,
        "db",
        &["--network", "shop", "--network-alias", "database"],
    );
    for target in ["db:5432", "database:5432"] {
        daemon
            .docker(&["run", "--rm", "--network", "shop", "client", target, "hi"])
            .assert_success()
            .assert_stdout_contains("reply: hi");
    }
    // A `wrun run` process beside the daemon is on the same network.
    daemon
        .wrun()
        .args([
            "run",
            "--network",
            "shop",
            P2.tcp_client,
            "database:5432",
            "hi",
        ])
        .run()
        .assert_success()
        .assert_stdout_contains("reply: hi");
    // And the other way: a container reaches a `wrun run` app by its alias.
    let cache = daemon
        .wrun()
        .args([
            "run",
            "--network",
            "shop",
            "--name",
            "fg",
            "--network-alias",
            "cache",
        ])
        .args([P2.echo_server, "0.0.0.0:6000", "--count", "1"])
        .spawn();
    cache.wait_for_line("listening on");
    daemon
        .docker(&[
            "run",
            "--rm",
            "--network",
            "shop",
            "client",
            "cache:6000",
            "fg",
        ])
        .assert_success()
        .assert_stdout_contains("reply: fg");
    cache.finish().assert_success();
    // Off the network, the name means nothing.
    daemon
        .docker(&["run", "--rm", "client", "db:5432", "hi"])
        .assert_code(1)
        .assert_stdout_contains("error:");

    let members = daemon.docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
        "shop",
    ]);
    assert_eq!(members.stdout.trim(), "db 10.89.0.2/24", "{members:?}");
    let address = daemon.docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.shop.IPAddress}} {{.NetworkSettings.Networks.shop.Aliases}}",
        "db",
    ]);
    assert_eq!(address.stdout.trim(), "10.89.0.2 [database]", "{address:?}");

    // In use while the server runs; then gone, and with it every trace.
    daemon
        .docker(&["network", "rm", "shop"])
        .assert_code(1)
        .assert_stderr_contains("in use");
    daemon.docker(&["rm", "-f", "db"]).assert_success();
    daemon
        .docker(&["network", "rm", "shop"])
        .assert_success()
        .assert_stdout_contains("shop");
    let ls = daemon.docker(&["network", "ls", "-q", "--filter", "type=custom"]);
    assert_eq!(ls.stdout, "", "{ls:?}");
    assert!(!daemon.home.path().join("networks/shop.net").exists());
    daemon
        .docker(&[
            "run",
            "--rm",
            "--network",
            "shop",
            "client",
            "db:5432",
            "hi",
        ])
        .assert_code(125)
        .assert_stderr_contains("network shop not found");
}

#[test]
fn compose_requests_label_connect_and_disconnect_before_start() {
    let daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon.build("client", P2.tcp_client);
    // What docker-compose sends, as recorded in shared/notes/docker-api.md.
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/networks/create",
        r#"{"Name":"proj_front","CheckDuplicate":true,"Attachable":true,"Labels":{"com.docker.compose.project":"proj","com.docker.compose.network":"front"}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = daemon.http("GET", "/v1.41/networks/proj_front", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""com.docker.compose.project":"proj""#),
        "{body}"
    );
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/containers/create?name=proj_web_1",
        r#"{"Image":"echo","Cmd":["0.0.0.0:80"],"HostConfig":{"NetworkMode":"proj_front"},"NetworkingConfig":{"EndpointsConfig":{"proj_front":{"Aliases":["web"],"IPAMConfig":{}}}}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id: String = body
        .split('"')
        .skip_while(|s| *s != "Id")
        .nth(2)
        .expect("an id")
        .to_owned();
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/networks/proj_front/disconnect",
        &format!(r#"{{"Container":"{id}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/networks/proj_front/connect",
        &format!(
            r#"{{"Container":"{id}","EndpointConfig":{{"Aliases":["{}","web"]}}}}"#,
            &id[..12]
        ),
    );
    assert_eq!(status, 200, "{body}");
    daemon.docker(&["start", "proj_web_1"]).assert_success();
    daemon
        .docker(&[
            "run",
            "--rm",
            "--network",
            "proj_front",
            "client",
            "web:80",
            "compose",
        ])
        .assert_success()
        .assert_stdout_contains("reply: compose");
    let aliases = daemon.docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.proj_front.Aliases}}",
        "proj_web_1",
    ]);
    assert_eq!(
        aliases.stdout.trim(),
        format!("[{} web]", &id[..12]),
        "{aliases:?}"
    );
    // A running container's networks are fixed: said, and nothing changes.
    daemon
        .docker(&["network", "create", "other"])
        .assert_success();
    daemon
        .docker(&["network", "connect", "other", "proj_web_1"])
        .assert_code(1)
        .assert_stderr_contains("it is running");
    daemon
        .docker(&["network", "disconnect", "proj_front", "proj_web_1"])
        .assert_code(1)
        .assert_stderr_contains("it is running");
    let networks = daemon.docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        "proj_web_1",
    ]);
    assert_eq!(networks.stdout.trim(), "proj_front", "{networks:?}");
    // Prune keeps what a container names and removes the rest.
    let pruned = daemon.docker(&["network", "prune", "-f"]);
    pruned.assert_success().assert_stdout_contains("other");
    let ls = daemon.docker(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        "type=custom",
    ]);
    assert_eq!(ls.stdout.trim(), "proj_front", "{ls:?}");
}

#[test]
fn bad_network_requests_get_dockers_errors_and_change_nothing() {
    let daemon = Daemon::start();
    daemon.build("hello", P2.hello);
    daemon.docker(&["network", "create", "n1"]).assert_success();
    daemon
        .docker(&["network", "create", "n1"])
        .assert_code(1)
        .assert_stderr_contains("network with name n1 already exists");
    daemon
        .docker(&["network", "create", "bridge"])
        .assert_code(1)
        .assert_stderr_contains("operation is not permitted on predefined bridge network");
    daemon
        .docker(&["network", "create", "--driver", "overlay", "n2"])
        .assert_code(1)
        .assert_stderr_contains("network driver `overlay` is not supported");
    daemon
        .docker(&["network", "create", "--subnet", "10.77.0.0/16", "n2"])
        .assert_code(1)
        .assert_stderr_contains("invalid subnet `10.77.0.0/16`");
    daemon
        .docker(&["network", "create", "--ipv6", "n2"])
        .assert_code(1)
        .assert_stderr_contains("IPv6");
    daemon
        .docker(&["network", "create", "bad/name"])
        .assert_code(1)
        .assert_stderr_contains("invalid network name `bad/name`");
    daemon
        .docker(&["network", "rm", "bridge"])
        .assert_code(1)
        .assert_stderr_contains("bridge is a pre-defined network and cannot be removed");
    daemon
        .docker(&["network", "inspect", "nope"])
        .assert_code(1)
        .assert_stderr_contains("network nope not found");
    // As in Docker, a network is looked up when the container starts.
    daemon
        .docker(&["create", "--name", "c1", "--network", "nope", "hello"])
        .assert_success();
    daemon
        .docker(&["start", "c1"])
        .assert_code(1)
        .assert_stderr_contains("network nope not found");
    daemon.docker(&["rm", "c1"]).assert_success();
    daemon
        .docker(&[
            "create",
            "--name",
            "c2",
            "--network",
            "n1",
            "--network-alias",
            "../x",
            "hello",
        ])
        .assert_code(1)
        .assert_stderr_contains("invalid network alias `../x`");
    daemon
        .docker(&["create", "--name", "c3", "hello"])
        .assert_success();
    daemon
        .docker(&["network", "connect", "--alias", "a b", "n1", "c3"])
        .assert_code(1)
        .assert_stderr_contains("invalid network alias `a b`");
    daemon
        .docker(&["network", "connect", "n1", "ghost"])
        .assert_code(1)
        .assert_stderr_contains("No such container: ghost");
    daemon
        .docker(&["network", "disconnect", "n1", "c3"])
        .assert_code(1)
        .assert_stderr_contains("is not connected to the network n1");
    let (status, body) = daemon.http("POST", "/v1.47/networks/n1/connect", "{\"Container\":7}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.http("POST", "/v1.47/networks/create", "{\"Name\":\"\"}");
    assert_eq!(status, 400, "{body}");
    // Only what succeeded is there.
    let ls = daemon.docker(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        "type=custom",
    ]);
    assert_eq!(ls.stdout.trim(), "n1", "{ls:?}");
    let listed = daemon.docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(listed.stdout.trim(), "c3", "{listed:?}");
    let networks = daemon.docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "c3"]);
    assert_eq!(networks.stdout.trim(), "bridge", "{networks:?}");
}

#[test]
fn docker_py_manages_networks() {
    let daemon = Daemon::start();
    daemon.build("echo", P2.echo_server);
    daemon.build("client", P2.tcp_client);
    daemon
        .docker_py("networks.py", &[])
        .assert_success()
        .assert_stdout_contains("docker-py networks: all passed");
}
