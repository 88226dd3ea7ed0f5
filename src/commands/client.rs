//! How wrun's own container verbs reach the daemon: a Docker API client
//! (bollard) on the daemon's socket.

use anyhow::Context as _;
use std::path::PathBuf;

/// The daemon's socket: `--host`-less `wrun daemon`'s default, or
/// `$WRUN_DAEMON` (`unix://PATH`) when set.
pub fn socket() -> anyhow::Result<PathBuf> {
    if let Some(host) = std::env::var_os("WRUN_DAEMON").filter(|h| !h.is_empty()) {
        let host = host.to_string_lossy().into_owned();
        return match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => anyhow::bail!("invalid WRUN_DAEMON `{host}`: expected unix://PATH"),
        };
    }
    let home = crate::common::wrun_home()
        .context("no home directory and no WRUN_HOME: cannot find the daemon")?;
    Ok(super::daemon::default_socket(&home))
}

/// A client of the daemon at [`socket`], speaking the daemon's API version.
pub fn connect() -> anyhow::Result<bollard::Docker> {
    let socket = socket()?;
    let path = socket
        .to_str()
        .context("the daemon's socket path is not UTF-8")?;
    bollard::Docker::connect_with_unix(
        path,
        120,
        &bollard::ClientVersion {
            major_version: 1,
            minor_version: 47,
        },
    )
    .with_context(|| format!("failed to connect to the wrun daemon at `{path}`"))
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
