//! `wrun daemon`: keeps containers and serves the Docker Engine API on a
//! Unix socket, so that `docker` (with `DOCKER_HOST=unix://...`),
//! docker-py and compose manage wasm apps as containers.

use crate::common::{image_store, runtime, shutdown_signal, wrun_home};
use crate::daemon::{self, Daemon};
use anyhow::{Context as _, bail};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use wrun_host_api::net::{NetworkStore, default_runtime_dir, prepare_runtime_dir};
use wrun_runtime::container::{Containers, Services, Volumes};

/// Run the daemon: containers with a lifecycle (run -d, ps, logs, stop,
/// restart policies), managed through the Docker Engine API (1.24-1.47).
///
/// It listens on a Unix socket, mode 0600 (its process id in `wrun.pid`
/// beside it), in a directory this user owns
/// and others cannot enter (it refuses to start otherwise, naming the
/// path). Point Docker clients at it with
/// `DOCKER_HOST=unix://$XDG_RUNTIME_DIR/wrun/wrun.sock`.
///
/// Containers run inside the daemon, each isolated as `wrun run` is, on a
/// pool of threads as large as the machine's CPU count. State and logs live
/// in $WRUN_HOME/containers/<id>/. On SIGTERM or SIGINT it stops accepting,
/// stops every container (`always` and `unless-stopped` ones start again
/// with the next daemon) and exits 0.
#[derive(clap::Args)]
pub struct DaemonCommand {
    /// Where to listen: unix://PATH. [default:
    /// unix://$XDG_RUNTIME_DIR/wrun/wrun.sock, or unix://$WRUN_HOME/run/wrun.sock
    /// when XDG_RUNTIME_DIR is unset]
    #[arg(short = 'H', long = "host", value_name = "unix://PATH")]
    pub host: Option<String>,

    /// The most client connections served at once; further clients wait
    /// until one closes (a `logs -f`, `attach` or `events` holds one for
    /// as long as it follows).
    #[arg(long, value_name = "N", default_value_t = daemon::listener::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
}

/// The socket the daemon listens on by default, and clients find it at.
pub fn default_socket(home: &Path) -> PathBuf {
    default_runtime_dir(home).join("wrun.sock")
}

impl DaemonCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let home =
            wrun_home().context("no home directory and no WRUN_HOME: cannot keep containers")?;
        let socket = match &self.host {
            None => default_socket(&home),
            Some(host) => match host.strip_prefix("unix://") {
                Some(path) if !path.is_empty() => PathBuf::from(path),
                _ if host.starts_with("tcp://") => bail!(
                    "--host `{host}`: TCP is not supported yet (it will require mutual TLS); \
                     listen on unix://PATH"
                ),
                _ => bail!("invalid --host `{host}`: expected unix://PATH"),
            },
        };
        let parent = socket
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The socket is the daemon's whole authority: its directory must be
        // this user's alone, as the networks' runtime directory is.
        let parent = prepare_runtime_dir(parent)?;
        let socket = parent.join(
            socket
                .file_name()
                .context("the socket path has no file name")?,
        );

        let images = image_store()?;
        let runtime = Arc::new(runtime()?);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let guests = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("wrun-guest")
            .enable_all()
            .build()
            .context("failed to start the guests' threads")?;
        let runtime_dir = default_runtime_dir(&home);
        let services = Services {
            runtime,
            images: images.clone(),
            volumes: Volumes::new(&home),
            networks: NetworkStore::new(&home, &runtime_dir),
            runtime_dir: match std::fs::metadata(&runtime_dir) {
                Ok(_) => prepare_runtime_dir(&runtime_dir)?,
                Err(_) => runtime_dir,
            },
            guests: guests.handle().clone(),
        };
        let api = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        api.block_on(async {
            let listener = bind(&socket)?;
            // Beside the socket, as dockerd's docker.pid: for whoever must
            // signal the daemon (a service manager, a test).
            let pid_file = socket.with_extension("pid");
            crate::common::write_private(
                &pid_file,
                format!("{}\n", std::process::id()).as_bytes(),
            )?;
            let containers = {
                let _guard = guests.enter();
                Containers::open(&home, services)?
            };
            let state = Arc::new(Daemon {
                containers: containers.clone(),
                images,
                home: home.clone(),
                started: SystemTime::now(),
            });
            eprintln!("wrun daemon: listening on unix://{}", socket.display());
            let router = daemon::router(state);
            let max_connections = self.max_connections;
            let (stop, stopped) = tokio::sync::oneshot::channel::<&'static str>();
            let server = tokio::spawn(async move {
                let listener = daemon::listener::Bounded::new(listener, max_connections as usize);
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
            });
            let signal = shutdown_signal().await;
            eprintln!("wrun daemon: {signal}: stopping containers");
            let _ = stop.send(signal);
            containers.shutdown().await;
            // Streams still open (logs -f, attach) end with their containers.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(&pid_file);
            anyhow::Ok(())
        })?;
        guests.shutdown_timeout(std::time::Duration::from_secs(5));
        eprintln!("wrun daemon: stopped");
        Ok(0)
    }
}

/// Listens on `socket`, mode 0600. A socket left by a daemon that died is
/// replaced; one a daemon still listens on is not.
fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if std::fs::symlink_metadata(socket).is_ok() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!("another daemon listens on `{}`", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("failed to remove the stale socket `{}`", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("failed to listen on `{}`", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("failed to make `{}` private", socket.display()))?;
    Ok(listener)
}
