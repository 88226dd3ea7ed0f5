//! `docker run -i` against `wrun daemon`: the client's stdin reaches the
//! container through the hijacked attach connection, and ends with it.

use crate::daemon::Daemon;
use crate::support::P2;

#[test]
fn docker_run_i_forwards_stdin_and_closes_it_with_the_clients() {
    let daemon = Daemon::start();
    daemon.build("filetool", P2.filetool);
    // More than the pipe holds, so the client is held back while the app
    // reads, and nothing is lost or reordered.
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let out = daemon.docker_input(
        &["run", "-i", "--rm", "filetool", "stdin"],
        input.as_bytes(),
    );
    out.assert_success();
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "stdout differs from stdin");
    // Without -i the app's stdin is empty, as Docker's.
    let out = daemon.docker_input(&["run", "--rm", "filetool", "stdin"], b"not for the app");
    out.assert_success();
    assert_eq!(out.stdout, "");
    // An empty stdin ends at once.
    let out = daemon.docker_input(&["run", "-i", "--rm", "filetool", "stdin"], b"");
    out.assert_success();
    assert_eq!(out.stdout, "");
    // What the client asked for is what inspect shows.
    let inspect = daemon.docker(&["create", "-i", "--name", "keep", "filetool", "stdin"]);
    inspect.assert_success();
    let config = daemon.docker(&[
        "inspect",
        "-f",
        "{{.Config.OpenStdin}} {{.Config.StdinOnce}}",
        "keep",
    ]);
    assert_eq!(config.stdout.trim(), "true true", "{config:?}");
}
