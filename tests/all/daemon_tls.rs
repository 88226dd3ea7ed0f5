//! `wrun daemon --host tcp://...` with mutual TLS, driven by the real
//! docker CLI: certificates made by the real `openssl` CLI, a daemon on
//! 127.0.0.1 port 0 (it prints the port it got), and clients that must be
//! refused at the handshake while the daemon goes on serving the others.
//! `DOCKER_CONFIG` is always a temp dir and the host always given, so the
//! machine's own Docker engine and settings are never touched.

use crate::daemon::{docker_cli, run_bounded};
use crate::support::{Output, P2, Running, tempdir, wrun};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A CA and certificates it signed, in one temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA (`ca.pem`) with a server certificate for 127.0.0.1
    /// (`server-cert.pem`, `server-key.pem`) and a client one (`cert.pem`,
    /// `key.pem`: the names the docker CLI looks for in DOCKER_CERT_PATH).
    fn new(name: &str) -> Pki {
        let pki = Pki { dir: tempdir() };
        std::fs::write(
            pki.path("ca.cnf"),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
                 [dn]\nCN = {name}\n\
                 [v3_ca]\nbasicConstraints = critical,CA:true\n\
                 keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
            ),
        )
        .unwrap();
        pki.openssl(&[
            "req",
            "-x509",
            "-config",
            "ca.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
        ]);
        pki.leaf(
            "server",
            "server-cert.pem",
            "server-key.pem",
            "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
            1,
        );
        pki.leaf(
            "client",
            "cert.pem",
            "key.pem",
            "extendedKeyUsage = clientAuth\n",
            2,
        );
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn arg(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// A key and a certificate signed by the CA with `extensions`.
    fn leaf(&self, cn: &str, cert: &str, key: &str, extensions: &str, serial: u32) {
        let ext = format!("{cn}.ext");
        std::fs::write(
            self.path(&ext),
            format!(
                "basicConstraints = critical,CA:false\nkeyUsage = critical,digitalSignature\n\
                 {extensions}"
            ),
        )
        .unwrap();
        std::fs::write(
            self.path("leaf.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = leaf\n",
        )
        .unwrap();
        let csr = format!("{cn}.csr");
        self.openssl(&[
            "req",
            "-new",
            "-config",
            "leaf.cnf",
            "-subj",
            &format!("/CN={cn}"),
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            cert,
        ]);
    }

    #[track_caller]
    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests make certificates with the openssl CLI ({e}): \
                     `apt-get install openssl`"
                )
            });
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    /// The daemon's flags for this CA and its server certificate.
    fn daemon_flags(&self) -> Vec<String> {
        vec![
            "--tlsverify".into(),
            "--tlscacert".into(),
            self.arg("ca.pem"),
            "--tlscert".into(),
            self.arg("server-cert.pem"),
            "--tlskey".into(),
            self.arg("server-key.pem"),
        ]
    }

    /// The docker CLI's flags to present this CA's client certificate and
    /// verify the daemon against this CA.
    fn client_flags(&self) -> Vec<String> {
        vec![
            "--tlsverify".into(),
            "--tlscacert".into(),
            self.arg("ca.pem"),
            "--tlscert".into(),
            self.arg("cert.pem"),
            "--tlskey".into(),
            self.arg("key.pem"),
        ]
    }
}

/// A daemon of the test's own, on the hosts given.
struct TlsDaemon {
    home: tempfile::TempDir,
    xdg: tempfile::TempDir,
    docker_config: tempfile::TempDir,
    process: Running,
    /// `tcp://127.0.0.1:PORT`, as the daemon printed it.
    tcp: String,
}

impl TlsDaemon {
    /// `wrun daemon --host tcp://127.0.0.1:0` with `pki`'s flags, and
    /// also on `unix://$XDG_RUNTIME_DIR/wrun/wrun.sock` when `unix`.
    fn start(pki: &Pki, unix: bool) -> TlsDaemon {
        let home = tempdir();
        let xdg = tempdir();
        let mut args = vec![
            "daemon".to_owned(),
            "--host".into(),
            "tcp://127.0.0.1:0".into(),
        ];
        if unix {
            args.push("--host".into());
            args.push(format!(
                "unix://{}",
                xdg.path().join("wrun/wrun.sock").display()
            ));
        }
        args.extend(pki.daemon_flags());
        let process = wrun()
            .home(home.path())
            .env("XDG_RUNTIME_DIR", xdg.path())
            .args(&args)
            .spawn();
        let line = process.wait_for_line("listening on tcp://");
        let tcp = line
            .split_whitespace()
            .find(|w| w.starts_with("tcp://"))
            .expect("the address")
            .to_owned();
        if unix {
            process.wait_for_line("listening on unix://");
        }
        TlsDaemon {
            home,
            xdg,
            docker_config: tempdir(),
            process,
            tcp,
        }
    }

    fn port(&self) -> u16 {
        self.tcp
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// `wrun build -t NAME APP` into the daemon's store.
    fn build(&self, name: &str, app: &str) {
        wrun()
            .home(self.home.path())
            .args(["build", "-t", name, app])
            .run()
            .assert_success();
    }

    /// The docker CLI with `flags` before `args`, on the TCP host.
    #[track_caller]
    fn docker(&self, flags: &[String], args: &[&str]) -> Output {
        let mut cmd = self.docker_command();
        cmd.args(flags).args(["-H", &self.tcp]).args(args);
        run_bounded(cmd)
    }

    /// The docker CLI on the daemon's Unix socket.
    #[track_caller]
    fn docker_unix(&self, args: &[&str]) -> Output {
        let socket = self.xdg.path().join("wrun/wrun.sock");
        let mut cmd = self.docker_command();
        cmd.args(["-H", &format!("unix://{}", socket.display())])
            .args(args);
        run_bounded(cmd)
    }

    fn docker_command(&self) -> Command {
        let mut cmd = Command::new(docker_cli());
        cmd.env("DOCKER_CONFIG", self.docker_config.path());
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_API_VERSION",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "DOCKER_TLS",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// SIGTERM, and the daemon's output once it exited.
    fn stop(self) -> Output {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.process.pid() as i32).expect("pid"),
            rustix::process::Signal::TERM,
        )
        .expect("kill");
        self.process.finish()
    }
}

/// `docker version` over mutual TLS, and a container run through it.
#[test]
fn docker_cli_over_mutual_tls() {
    let pki = Pki::new("wrun test CA");
    let daemon = TlsDaemon::start(&pki, false);
    assert!(daemon.tcp.starts_with("tcp://127.0.0.1:"), "{}", daemon.tcp);
    assert_ne!(daemon.port(), 0);
    daemon
        .docker(&pki.client_flags(), &["version"])
        .assert_success()
        .assert_stdout_contains("API version:      1.47");
    daemon.build("hello", P2.hello);
    daemon
        .docker(&pki.client_flags(), &["run", "--rm", "hello"])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    // The docker CLI's environment variables, as a user sets them.
    let mut cmd = daemon.docker_command();
    cmd.env("DOCKER_HOST", &daemon.tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", pki.dir.path())
        .arg("info");
    run_bounded(cmd).assert_success();
    let out = daemon.stop();
    assert_eq!(out.code, 0, "{out:?}");
}

/// wrun's own container verbs reach a tcp:// daemon as the docker CLI
/// does: `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`.
#[test]
fn wrun_client_over_mutual_tls() {
    let pki = Pki::new("wrun test CA");
    let daemon = TlsDaemon::start(&pki, false);
    daemon.build("hello", P2.hello);
    daemon
        .docker(&pki.client_flags(), &["run", "--name", "greeter", "hello"])
        .assert_success();
    let client = |args: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let mut cmd = wrun()
            .env("WRUN_DAEMON", &daemon.tcp)
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env("DOCKER_CONFIG", daemon.docker_config.path());
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        cmd.args(args).run()
    };
    let tls = [
        ("DOCKER_TLS_VERIFY", "1".as_ref()),
        ("DOCKER_CERT_PATH", pki.dir.path().as_os_str()),
    ];
    client(&["ps", "-a"], &tls)
        .assert_success()
        .assert_stdout_contains("greeter");
    client(&["logs", "greeter"], &tls)
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    client(&["rm", "greeter"], &tls).assert_success();
    // Without TLS settings: said so, not tried in plain text.
    client(&["ps"], &[])
        .assert_code(125)
        .assert_stderr_contains("set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH");
    // A certificate directory without the client's pair: the file named.
    let empty = tempdir();
    std::fs::copy(pki.path("ca.pem"), empty.path().join("ca.pem")).unwrap();
    client(
        &["ps"],
        &[
            ("DOCKER_TLS_VERIFY", "1".as_ref()),
            ("DOCKER_CERT_PATH", empty.path().as_os_str()),
        ],
    )
    .assert_code(125)
    .assert_stderr_contains(&format!(
        "failed to open the TLS file `{}`",
        empty.path().join("cert.pem").display()
    ));
    // A client certificate from another CA: refused by the daemon.
    let other = Pki::new("another CA");
    let foreign = tempdir();
    std::fs::copy(pki.path("ca.pem"), foreign.path().join("ca.pem")).unwrap();
    for file in ["cert.pem", "key.pem"] {
        std::fs::copy(other.path(file), foreign.path().join(file)).unwrap();
    }
    let out = client(
        &["ps"],
        &[
            ("DOCKER_TLS_VERIFY", "1".as_ref()),
            ("DOCKER_CERT_PATH", foreign.path().as_os_str()),
        ],
    );
    assert_eq!(out.code, 125, "{out:?}");
    daemon.stop().assert_success();
}

/// Clients without a certificate from the CA, and clients not speaking
/// TLS at all, are refused; the daemon goes on serving the others.
#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let pki = Pki::new("wrun test CA");
    let other = Pki::new("another CA");
    let daemon = TlsDaemon::start(&pki, false);

    // No client certificate (the CLI still verifies the daemon).
    let no_cert = vec![
        "--tlsverify".to_owned(),
        "--tlscacert".into(),
        pki.arg("ca.pem"),
    ];
    let out = daemon.docker(&no_cert, &["version"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("API version:      1.47"), "{out:?}");

    // A certificate from another CA (the daemon's is still trusted).
    let foreign = vec![
        "--tlsverify".to_owned(),
        "--tlscacert".into(),
        pki.arg("ca.pem"),
        "--tlscert".into(),
        other.arg("cert.pem"),
        "--tlskey".into(),
        other.arg("key.pem"),
    ];
    let out = daemon.docker(&foreign, &["version"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("API version:      1.47"), "{out:?}");

    // Plain HTTP: the docker CLI without TLS, and bytes on a socket.
    let out = daemon.docker(&[], &["version"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("API version:      1.47"), "{out:?}");
    let mut plain = TcpStream::connect(("127.0.0.1", daemon.port())).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    plain
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // The daemon closes the connection (perhaps after a TLS alert).
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // And the daemon still serves a client with a good certificate.
    daemon
        .docker(&pki.client_flags(), &["version"])
        .assert_success()
        .assert_stdout_contains("API version:      1.47");
    let out = daemon.stop();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("TLS handshake with 127.0.0.1:"),
        "{out:?}"
    );
}

/// A client that connects and says nothing neither blocks others while it
/// waits nor keeps its slot: with one slot, the daemon drops it at the
/// handshake timeout and then serves the next client.
#[test]
fn a_silent_client_does_not_hold_the_daemon() {
    let pki = Pki::new("wrun test CA");
    let daemon = TlsDaemon::start(&pki, false);
    let mut silent = TcpStream::connect(("127.0.0.1", daemon.port())).expect("connect");
    // Others are accepted while its handshake waits.
    daemon
        .docker(&pki.client_flags(), &["version"])
        .assert_success()
        .assert_stdout_contains("API version:      1.47");
    // The daemon hangs up on it (EOF, or a reset) well before a minute.
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0; 64];
    match silent.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "the daemon sent {:?}", &buf[..n]),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "still open: {e}"),
    }
    daemon.stop().assert_success();

    // One slot: the silent client holds it until the timeout, no longer.
    let home = tempdir();
    let xdg = tempdir();
    let mut args = vec![
        "daemon",
        "--max-connections",
        "1",
        "--host",
        "tcp://127.0.0.1:0",
    ];
    let flags = pki.daemon_flags();
    args.extend(flags.iter().map(String::as_str));
    let process = wrun()
        .home(home.path())
        .env("XDG_RUNTIME_DIR", xdg.path())
        .args(&args)
        .spawn();
    let line = process.wait_for_line("listening on tcp://");
    let tcp = line.split_whitespace().last().expect("address").to_owned();
    let port: u16 = tcp.rsplit(':').next().unwrap().parse().unwrap();
    let _silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut cmd = Command::new(docker_cli());
    let config = tempdir();
    cmd.env("DOCKER_CONFIG", config.path())
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .args(pki.client_flags())
        .args(["-H", &tcp, "version"]);
    run_bounded(cmd)
        .assert_success()
        .assert_stdout_contains("API version:      1.47");
    drop(process);
}

/// A Unix socket and a TCP port at once: one daemon, the same containers.
#[test]
fn unix_and_tcp_hosts_together() {
    let pki = Pki::new("wrun test CA");
    let daemon = TlsDaemon::start(&pki, true);
    daemon.build("hello", P2.hello);
    daemon
        .docker_unix(&["run", "--name", "via-unix", "hello"])
        .assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    daemon
        .docker(&pki.client_flags(), &["ps", "-a", "--format", "{{.Names}}"])
        .assert_success()
        .assert_stdout_contains("via-unix");
    daemon
        .docker(&pki.client_flags(), &["rm", "via-unix"])
        .assert_success();
    let listed = daemon.docker_unix(&["ps", "-aq"]);
    listed.assert_success();
    assert!(listed.stdout.trim().is_empty(), "{listed:?}");
    let socket = daemon.xdg.path().join("wrun/wrun.sock");
    let out = daemon.stop();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!socket.exists(), "the socket is left behind");
}

/// `wrun daemon` with `args` must refuse to start, saying `needles`.
#[track_caller]
fn refused(args: &[&str], needles: &[&str]) {
    let home = tempdir();
    let xdg = tempdir();
    let out = wrun()
        .home(home.path())
        .env("XDG_RUNTIME_DIR", xdg.path())
        .arg("daemon")
        .args(args)
        .run();
    out.assert_code(125);
    for needle in needles {
        out.assert_stderr_contains(needle);
    }
    assert!(!out.stderr.contains("listening on"), "{out:?}");
}

/// TCP is mutual TLS or nothing, and bad TLS files are named.
#[test]
fn tcp_without_complete_tls_is_refused() {
    let pki = Pki::new("wrun test CA");
    refused(
        &["--host", "tcp://127.0.0.1:0"],
        &[
            "--host `tcp://127.0.0.1:0` needs mutual TLS",
            "--tlsverify, --tlscacert, --tlscert, --tlskey are not given",
        ],
    );
    let ca = pki.arg("ca.pem");
    let cert = pki.arg("server-cert.pem");
    let key = pki.arg("server-key.pem");
    refused(
        &[
            "--host",
            "tcp://127.0.0.1:0",
            "--tlscacert",
            &ca,
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
        ],
        &["--tlsverify is not given"],
    );
    refused(
        &[
            "--host",
            "tcp://127.0.0.1:0",
            "--tlsverify",
            "--tlscacert",
            &ca,
            "--tlscert",
            &cert,
        ],
        &["--tlskey is not given"],
    );
    let with = |ca: &str, cert: &str, key: &str| {
        vec![
            "--host".to_owned(),
            "tcp://127.0.0.1:0".into(),
            "--tlsverify".into(),
            "--tlscacert".into(),
            ca.into(),
            "--tlscert".into(),
            cert.into(),
            "--tlskey".into(),
            key.into(),
        ]
    };
    // A missing file, by flag and path.
    let missing = pki.arg("nowhere.pem");
    refused(
        &strs(&with(&missing, &cert, &key)),
        &[&format!("failed to read --tlscacert `{missing}`")],
    );
    // Not PEM.
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    refused(
        &strs(&with(&ca, &junk, &key)),
        &[&format!("--tlscert `{junk}` holds no PEM certificate")],
    );
    refused(
        &strs(&with(&ca, &cert, &cert)),
        &[&format!("--tlskey `{cert}` holds no PEM private key")],
    );
    // A key that is not the certificate's.
    let client_key = pki.arg("key.pem");
    refused(
        &strs(&with(&ca, &cert, &client_key)),
        &[&format!(
            "--tlskey `{client_key}` does not match the certificate in --tlscert `{cert}`"
        )],
    );
    // Hosts wrun does not speak.
    refused(
        &["--host", "tcp://127.0.0.1"],
        &["invalid --host `tcp://127.0.0.1`: expected tcp://HOST:PORT"],
    );
    refused(
        &["--host", "ssh://me@there"],
        &["invalid --host `ssh://me@there`"],
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
