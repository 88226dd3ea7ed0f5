//! `wrun daemon`: keeps containers and serves the Docker Engine API on a
//! Unix socket (and TCP ports over mutual TLS), so that `docker` (with
//! `DOCKER_HOST=unix://...`), docker-py and compose manage wasm apps as
//! containers.

use crate::common::{image_store, runtime, shutdown_signal, wrun_home};
use crate::daemon::listener::Endpoint;
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
/// By default it listens on a Unix socket, mode 0600 (its process id in
/// `wrun.pid` beside it), in a directory this user owns and others cannot
/// enter (it refuses to start otherwise, naming the path). Point Docker
/// clients at it with `DOCKER_HOST=unix://$XDG_RUNTIME_DIR/wrun/wrun.sock`.
///
/// For remote clients, `--host tcp://HOST:PORT` (repeatable, beside Unix
/// sockets) serves the same API over TCP, always with mutual TLS as
/// dockerd's `--tlsverify`: it needs `--tlsverify --tlscacert --tlscert
/// --tlskey`, and refuses clients whose certificate is not signed by the
/// CA. Clients use `docker --tlsverify --tlscacert ca.pem --tlscert
/// cert.pem --tlskey key.pem -H tcp://HOST:PORT`, or `DOCKER_HOST`,
/// `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH`. Port 0 picks a free port;
/// the daemon prints every address it listens on.
///
/// Containers run inside the daemon, each isolated as `wrun run` is, on a
/// pool of threads as large as the machine's CPU count. State and logs live
/// in $WRUN_HOME/containers/<id>/. On SIGTERM or SIGINT it stops accepting,
/// stops every container (`always` and `unless-stopped` ones start again
/// with the next daemon) and exits 0.
#[derive(clap::Args)]
pub struct DaemonCommand {
    /// Where to listen: unix://PATH or tcp://HOST:PORT; repeat for several.
    /// A tcp:// host needs all four TLS flags below; plain TCP is never
    /// served. [default: unix://$XDG_RUNTIME_DIR/wrun/wrun.sock, or
    /// unix://$WRUN_HOME/run/wrun.sock when XDG_RUNTIME_DIR is unset]
    #[arg(short = 'H', long = "host", value_name = "URL")]
    pub hosts: Vec<String>,

    /// Require TLS client certificates signed by --tlscacert on tcp://
    /// hosts (the only way wrun serves TCP, so a tcp:// host needs it).
    #[arg(long)]
    pub tlsverify: bool,

    /// The CA certificates (PEM) that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,

    /// The daemon's own certificate chain (PEM), for tcp:// hosts.
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,

    /// The private key (PEM) of --tlscert.
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,

    /// The most client connections served at once, over all hosts; further
    /// clients wait until one closes (a `logs -f`, `attach` or `events`
    /// holds one for as long as it follows; a TLS handshake, at most 10 s).
    #[arg(long, value_name = "N", default_value_t = daemon::listener::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
}

/// A `--host`.
enum Host {
    Unix(PathBuf),
    Tcp(String),
}

impl Host {
    fn parse(host: &str) -> anyhow::Result<Host> {
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                bail!("invalid --host `{host}`: expected unix://PATH");
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            // HOST:PORT, HOST a name, an IPv4 address or a bracketed IPv6 one.
            let port = addr.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            match port {
                Some((h, Ok(_))) if !h.is_empty() && !addr.contains('/') => {
                    return Ok(Host::Tcp(addr.to_owned()));
                }
                _ => bail!("invalid --host `{host}`: expected tcp://HOST:PORT"),
            }
        }
        bail!("invalid --host `{host}`: expected unix://PATH or tcp://HOST:PORT")
    }
}

/// The socket the daemon listens on by default, and clients find it at.
pub fn default_socket(home: &Path) -> PathBuf {
    default_runtime_dir(home).join("wrun.sock")
}

impl DaemonCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let home =
            wrun_home().context("no home directory and no WRUN_HOME: cannot keep containers")?;
        let hosts = if self.hosts.is_empty() {
            vec![Host::Unix(default_socket(&home))]
        } else {
            self.hosts
                .iter()
                .map(|h| Host::parse(h))
                .collect::<anyhow::Result<_>>()?
        };
        let tls = match hosts.iter().find_map(|h| match h {
            Host::Tcp(addr) => Some(addr),
            Host::Unix(_) => None,
        }) {
            Some(addr) => Some(self.tls(addr)?),
            None => None,
        };
        let mut sockets = Vec::new();
        for host in &hosts {
            if let Host::Unix(socket) = host {
                sockets.push(private_socket(socket)?);
            }
        }

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
        let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        // Linux's default when /proc does not say.
        let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(65_530);
        let max_running = wrun_runtime::container::running_bound(open_files, max_map_count);
        eprintln!(
            "wrun daemon: runs at most {max_running} containers at once (open files \
             {open_files}, vm.max_map_count {max_map_count})"
        );
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
            max_running,
        };
        let api = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        api.block_on(async {
            let mut endpoints = Vec::new();
            let mut listening = Vec::new();
            for socket in &sockets {
                endpoints.push(Endpoint::Unix(bind(socket)?));
                listening.push(format!("unix://{}", socket.display()));
            }
            for host in &hosts {
                if let (Host::Tcp(addr), Some(tls)) = (host, &tls) {
                    let listener = tokio::net::TcpListener::bind(addr.as_str())
                        .await
                        .with_context(|| format!("failed to listen on `tcp://{addr}`"))?;
                    let local = listener
                        .local_addr()
                        .with_context(|| format!("failed to listen on `tcp://{addr}`"))?;
                    endpoints.push(Endpoint::Tls(listener, tls.clone()));
                    listening.push(format!("tcp://{local}"));
                }
            }
            // Beside each socket, as dockerd's docker.pid: for whoever must
            // signal the daemon (a service manager, a test).
            let pid_files: Vec<PathBuf> = sockets.iter().map(|s| s.with_extension("pid")).collect();
            for pid_file in &pid_files {
                crate::common::write_private(
                    pid_file,
                    format!("{}\n", std::process::id()).as_bytes(),
                )?;
            }
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
            for address in &listening {
                eprintln!("wrun daemon: listening on {address}");
            }
            let router = daemon::router(state);
            let max_connections = self.max_connections;
            let (stop, stopped) = tokio::sync::oneshot::channel::<&'static str>();
            let server = tokio::spawn(async move {
                let listener = daemon::listener::Bounded::new(endpoints, max_connections as usize);
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
            for path in sockets.iter().chain(&pid_files) {
                let _ = std::fs::remove_file(path);
            }
            anyhow::Ok(())
        })?;
        guests.shutdown_timeout(std::time::Duration::from_secs(5));
        eprintln!("wrun daemon: stopped");
        Ok(0)
    }
}

impl DaemonCommand {
    /// The TLS acceptor of the tcp:// hosts (`addr` is one, for the error):
    /// all four flags, their files readable and consistent.
    fn tls(&self, addr: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let missing: Vec<&str> = [
            ("--tlsverify", self.tlsverify),
            ("--tlscacert", self.tlscacert.is_some()),
            ("--tlscert", self.tlscert.is_some()),
            ("--tlskey", self.tlskey.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| (!given).then_some(flag))
        .collect();
        let missing = match missing.as_slice() {
            [one] => format!("{one} is"),
            more => format!("{} are", more.join(", ")),
        };
        let (Some(ca), Some(cert), Some(key), true) =
            (&self.tlscacert, &self.tlscert, &self.tlskey, self.tlsverify)
        else {
            bail!(
                "--host `tcp://{addr}` needs mutual TLS, but {missing} not given: the daemon serves \
                 TCP only with --tlsverify --tlscacert FILE --tlscert FILE --tlskey FILE"
            );
        };
        let config = daemon::tls::server_config(ca, cert, key)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// `socket` in a directory that is this user's alone, as the networks'
/// runtime directory is: the socket is the daemon's whole authority.
fn private_socket(socket: &Path) -> anyhow::Result<PathBuf> {
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = prepare_runtime_dir(parent)?;
    Ok(parent.join(
        socket
            .file_name()
            .with_context(|| format!("the socket path `{}` has no file name", socket.display()))?,
    ))
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
