//! How wrun's own container verbs reach the daemon: a Docker API client
//! (bollard) on the daemon's socket, or on its TCP port over mutual TLS.

use anyhow::Context as _;
use std::path::PathBuf;

/// Where the daemon is, from `$WRUN_DAEMON`.
enum Address {
    Unix(PathBuf),
    /// `HOST:PORT`, reached over mutual TLS.
    Tcp(String),
}

/// `$WRUN_DAEMON`, when set: `unix://PATH` or `tcp://HOST:PORT`.
fn address() -> anyhow::Result<Option<Address>> {
    let Some(host) = std::env::var_os("WRUN_DAEMON").filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let host = host.to_string_lossy().into_owned();
    if let Some(path) = host.strip_prefix("unix://").filter(|p| !p.is_empty()) {
        return Ok(Some(Address::Unix(PathBuf::from(path))));
    }
    match host.strip_prefix("tcp://") {
        Some(addr)
            if addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
        {
            Ok(Some(Address::Tcp(addr.to_owned())))
        }
        _ => anyhow::bail!("invalid WRUN_DAEMON `{host}`: expected unix://PATH or tcp://HOST:PORT"),
    }
}

/// The daemon's socket: `--host`-less `wrun daemon`'s default, or
/// `$WRUN_DAEMON` (`unix://PATH`) when set. For a daemon at
/// `WRUN_DAEMON=tcp://HOST:PORT`, that address, as messages name it.
pub fn socket() -> anyhow::Result<PathBuf> {
    match address()? {
        Some(Address::Unix(path)) => Ok(path),
        Some(Address::Tcp(addr)) => Ok(PathBuf::from(format!("tcp://{addr}"))),
        None => {
            let home = crate::common::wrun_home()
                .context("no home directory and no WRUN_HOME: cannot find the daemon")?;
            Ok(super::daemon::default_socket(&home))
        }
    }
}

/// The daemon's API version, which the client speaks.
const API_VERSION: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 47,
};

/// A client of the daemon at [`socket`], speaking the daemon's API version.
/// A tcp:// daemon is reached as the docker CLI reaches one: mutual TLS
/// when `DOCKER_TLS_VERIFY` is set, with `ca.pem`, `cert.pem` and `key.pem`
/// from `DOCKER_CERT_PATH` (default: `$DOCKER_CONFIG`, or `~/.docker`).
pub fn connect() -> anyhow::Result<bollard::Docker> {
    if let Some(Address::Tcp(addr)) = address()? {
        return connect_tls(&addr);
    }
    let socket = socket()?;
    let path = socket
        .to_str()
        .context("the daemon's socket path is not UTF-8")?;
    bollard::Docker::connect_with_unix(path, 120, &API_VERSION)
        .with_context(|| format!("failed to connect to the wrun daemon at `{path}`"))
}

fn connect_tls(addr: &str) -> anyhow::Result<bollard::Docker> {
    // A wrun daemon serves TCP only over mutual TLS (see `wrun daemon --help`).
    anyhow::ensure!(
        std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()),
        "WRUN_DAEMON `tcp://{addr}`: a wrun daemon speaks TCP only over mutual TLS; set \
         DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a directory with ca.pem, cert.pem and key.pem"
    );
    let dir = match std::env::var_os("DOCKER_CERT_PATH").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => dirs::home_dir()
                .context("no DOCKER_CERT_PATH and no home directory: cannot find ca.pem")?
                .join(".docker"),
        },
    };
    let [ca, cert, key] = ["ca.pem", "cert.pem", "key.pem"].map(|f| dir.join(f));
    // bollard reads the client's pair only at the handshake, where a
    // missing file would show as the daemon's refusal.
    for file in [&ca, &cert, &key] {
        std::fs::File::open(file)
            .with_context(|| format!("failed to open the TLS file `{}`", file.display()))?;
    }
    bollard::Docker::connect_with_ssl(addr, &key, &cert, &ca, 120, &API_VERSION)
        .with_context(|| format!("failed to connect to the wrun daemon at `tcp://{addr}`"))
}

/// The daemon's answer to a failed request, as the docker CLI words it
/// (`Error response from daemon: No such container: web`), or the
/// transport's error.
pub fn daemon_error(error: bollard::errors::Error) -> anyhow::Error {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            anyhow::anyhow!("Error response from daemon: {message}")
        }
        other => anyhow::Error::new(other).context("the wrun daemon could not be reached"),
    }
}

/// A client of the daemon, starting one first when none listens on the
/// default socket (in the background, its output in
/// `$WRUN_HOME/daemon.log`), saying so once.
pub async fn connect_or_start() -> anyhow::Result<bollard::Docker> {
    // A daemon elsewhere is not this command's to start.
    if let Some(Address::Tcp(_)) = address()? {
        return connect();
    }
    let socket = socket()?;
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return connect();
    }
    if std::env::var_os("WRUN_DAEMON").is_some_and(|h| !h.is_empty()) {
        anyhow::bail!(
            "no wrun daemon listens on `{}` (WRUN_DAEMON): start one with `wrun daemon --host \
             unix://{}`",
            socket.display(),
            socket.display()
        );
    }
    let home = crate::common::wrun_home()
        .context("no home directory and no WRUN_HOME: cannot start a daemon")?;
    std::fs::create_dir_all(&home)
        .with_context(|| format!("failed to create `{}`", home.display()))?;
    let log_path = home.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("failed to open `{}`", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the wrun binary to start a daemon")?;
    use std::os::unix::process::CommandExt as _;
    let mut child = std::process::Command::new(exe)
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .context("failed to share the daemon's log")?,
        )
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this command must not
        // stop the daemon and its containers.
        .process_group(0)
        .spawn()
        .context("failed to start a wrun daemon")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = child.try_wait().context("failed to watch the daemon")? {
            anyhow::bail!(
                "the wrun daemon it started exited ({status}); see `{}`",
                log_path.display()
            );
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the wrun daemon it started does not answer on `{}` within 30 s; see `{}`",
            socket.display(),
            log_path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    eprintln!(
        "wrun: started a wrun daemon on unix://{} (log: {})",
        socket.display(),
        log_path.display()
    );
    connect()
}
