//! `--cpu-shares` in the daemon: busy containers share its guest threads by
//! weight and none starves; `docker inspect` shows the weight; a negative
//! one is refused with Docker's error. Only "each progressed" facts are
//! asserted here (this may be a loaded machine): how much each gets is
//! measured by bench/cpu.sh.

use crate::daemon::{Daemon, eventually};
use crate::support::{P2, wrun};

/// The CPU time a container's current run has used, in nanoseconds.
fn cpu_nanos(daemon: &Daemon, name: &str) -> u64 {
    let (status, body) = daemon.http(
        "GET",
        &format!("/v1.47/containers/{name}/stats?stream=0&one-shot=1"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    stats["cpu_stats"]["cpu_usage"]["total_usage"]
        .as_u64()
        .expect("total_usage")
}

#[test]
fn busy_containers_of_different_shares_all_progress() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    // Shares matter once more containers are busy than the daemon has guest
    // threads (one per CPU): one more than that (up to a few) are started.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut containers = vec![("heavy".to_owned(), "1024"), ("light".to_owned(), "512")];
    for i in 0..threads.min(4).saturating_sub(1) {
        // 0: Docker's default weight.
        containers.push((format!("other{i}"), "0"));
    }
    for (name, shares) in &containers {
        daemon
            .docker(&["run", "-d", "--name", name, "--cpu-shares", shares, "spin"])
            .assert_success();
    }
    // `wrun run -d` passes the flag on too.
    wrun()
        .home(daemon.home.path())
        .env(
            "WRUN_DAEMON",
            format!("unix://{}", daemon.socket().display()),
        )
        .args(["run", "-d", "--name", "tiny", "--cpu-shares", "2", P2.spin])
        .run()
        .assert_success();
    containers.push(("tiny".to_owned(), "2"));
    for (name, shares) in &containers {
        let shown = daemon.docker(&["inspect", "-f", "{{.HostConfig.CpuShares}}", name]);
        assert_eq!(shown.stdout.trim(), *shares, "{shown:?}");
    }
    // Every one gets CPU, and keeps getting it: none is starved, whatever
    // its weight.
    let mut seen = Vec::new();
    for (name, _) in &containers {
        eventually(&format!("CPU time for `{name}`"), || {
            cpu_nanos(&daemon, name) > 0
        });
        seen.push(cpu_nanos(&daemon, name));
    }
    for ((name, _), before) in containers.iter().zip(seen) {
        eventually(&format!("`{name}` still progressing"), || {
            cpu_nanos(&daemon, name) > before
        });
    }
    let mut rm = vec!["rm", "-f"];
    rm.extend(containers.iter().map(|(name, _)| name.as_str()));
    daemon.docker(&rm).assert_success();
    daemon.assert_no_containers();
}

#[test]
fn negative_shares_are_refused_as_docker_refuses_them() {
    let daemon = Daemon::start();
    daemon.build("spin", P2.spin);
    daemon
        .docker(&["run", "-d", "--cpu-shares=-1", "spin"])
        .assert_code(125)
        .assert_stderr_contains("Error response from daemon: shares: invalid argument");
    let created = daemon.docker(&["create", "--cpu-shares=-2", "spin"]);
    assert_ne!(created.code, 0, "{created:?}");
    created.assert_stderr_contains("shares: invalid argument");
    // Refused at create: no container that could never start is left.
    daemon.assert_no_containers();
}
