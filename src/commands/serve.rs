//! `wrun serve`: serve HTTP functions for one or many tenants.

use crate::common::{new_runtime, parse_duration, parse_memory, parse_outbound, shutdown_signal};
use crate::serve::config::{self, ConfigFile, FunctionConfig, LimitsConfig, TenantConfig};
use crate::serve::{admin, from_config, server};
use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wrun_host_api::net::OutboundRule;
use wrun_runtime::Pooling;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Serve HTTP functions: wasi:http proxy components, or WASI commands spoken
/// to in CGI style.
///
/// `wrun serve APP` serves one function at `/`, like `wasmtime serve`.
/// `wrun serve --config serve.toml` serves the tenants and functions the
/// file declares (see the README for its format). Every request gets a
/// fresh instance unless a function opts into reuse; a trap, a timeout or a
/// memory limit ends that request with 500/504, a function at its concurrency
/// limit answers 503 with Retry-After, a body over the limit 413. The
/// timeout counts from the moment a request is admitted, so it also bounds
/// receiving the body: a body still arriving when it runs out gets 408.
/// A CGI app's response streams once its header block (at most 64 KiB) is
/// written; a failure after that cuts the body short.
///
/// Per-request defaults: memory 128m, timeout 30s, body 10m, 256 host
/// descriptors per instance, 100 instances at once per tenant. All guests
/// together hold at most the other half of what the reserve leaves (see
/// below); a guest past it gets ENFILE. Connections: closed after --idle-timeout without a
/// request; at most as many open as the open-file limit allows (half of what
/// a reserve of 256 + limit/16 leaves, spread over the workers, at most
/// 10,000 each). SIGTERM or SIGINT stop accepting and let running requests
/// finish (see --drain-timeout).
#[derive(clap::Args)]
pub struct ServeCommand {
    /// A single function to serve at `/` (a wasi:http component or a WASI
    /// command for CGI). Conflicts with --config.
    #[arg(
        value_name = "APP",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    app: Option<PathBuf>,

    /// A serve config (TOML) declaring tenants and functions.
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address for the functions' HTTP/1.1 and HTTP/2 (h2c) listener; port 0
    /// picks a free port (printed). [default: the config's, else 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address for the admin API (deploy, list, remove, /metrics,
    /// /openapi.json). [default: the config's, else no admin API]
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,

    /// A file whose first line is the admin API's bearer token (at least 16
    /// characters). [env: WRUN_ADMIN_TOKEN for the token itself]
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,

    /// Worker threads, each with its own listening socket. [default: one
    /// per CPU]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Instances alive at once across all functions (the instance pool).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: u32,

    /// Close a connection that has had no request in flight and no bytes
    /// moving for this long: from accept (a client that never sends a byte)
    /// and between the requests of a keep-alive or HTTP/2 connection. A
    /// request that takes long (a slow function, a streamed response) is
    /// never cut by it. [default: the config's `server.idle_timeout`, else
    /// 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,

    /// How long SIGTERM waits for running requests before stopping them.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// APP: set an environment variable KEY=VALUE. Repeatable.
    #[arg(
        short = 'e',
        long = "env",
        value_name = "KEY=VALUE",
        conflicts_with = "config"
    )]
    env: Vec<String>,

    /// APP: map a host directory, HOST:GUEST[:rw]; read-only unless `:rw`.
    /// Repeatable.
    #[arg(
        short = 'v',
        long = "volume",
        value_name = "HOST:GUEST[:rw]",
        conflicts_with = "config"
    )]
    volumes: Vec<String>,

    /// APP: memory per instance, e.g. `64m`. [default: 128m]
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse_memory, conflicts_with = "config")]
    memory: Option<u64>,

    /// APP: time per request, e.g. `5s`. [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "config")]
    timeout: Option<Duration>,

    /// APP: largest request body, e.g. `1m`. [default: 10m]
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, conflicts_with = "config")]
    max_body: Option<u64>,

    /// APP: requests served at once; more get 503. [default: 100]
    #[arg(long, value_name = "N", conflicts_with = "config")]
    max_concurrency: Option<u32>,

    /// APP: host descriptors one instance may hold at once (files, sockets,
    /// outgoing connections); past it the guest gets EMFILE (or its WASI 0.2
    /// equivalent). [default: 256]
    #[arg(long, value_name = "N", conflicts_with = "config", value_parser = clap::value_parser!(u32).range(1..))]
    max_fds: Option<u32>,

    /// APP: let outgoing HTTP requests reach this host: an IP, CIDR or DNS
    /// name with an optional port. Repeatable. [default: none]
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]", value_parser = parse_outbound, conflicts_with = "config")]
    allow_outbound: Vec<OutboundRule>,

    /// APP: requests one instance may serve before a fresh one is made.
    /// Above 1, state left in memory by one request is seen by the next:
    /// weaker isolation, for speed. [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "config")]
    max_instance_reuse: Option<u32>,
}

impl ServeCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let (config, base) = match &self.config {
            Some(path) => {
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (config::read(path)?, base)
            }
            None => (self.single_app_config()?, std::env::current_dir()?),
        };
        let listen = address(self.listen, &config.server.listen, "listen")?
            .unwrap_or(DEFAULT_LISTEN.parse()?);
        let admin_listen = address(
            self.admin_listen,
            &config.server.admin_listen,
            "admin_listen",
        )?;
        let admin_token = match (&self.admin_token_file, std::env::var("WRUN_ADMIN_TOKEN")) {
            (Some(file), _) => config::read_token(Some(file), None, Path::new(""))?,
            (None, Ok(_)) => config::read_token(None, Some("WRUN_ADMIN_TOKEN"), &base)?,
            (None, Err(_)) => config::read_token(
                config.server.admin_token_file.as_deref(),
                config.server.admin_token_env.as_deref(),
                &base,
            )?,
        };
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            bail!("invalid --threads `0`: at least one worker is needed");
        }
        let idle_timeout = match (self.idle_timeout, &config.server.idle_timeout) {
            (Some(flag), _) => flag,
            (None, Some(text)) => parse_duration(text)
                .map_err(|e| anyhow::anyhow!("invalid `server.idle_timeout` `{text}`: {e}"))?,
            (None, None) => server::DEFAULT_IDLE_TIMEOUT,
        };
        // Read after main raised the soft limit as far as it goes.
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let fds = server::fd_plan(nofile, threads);
        tracing::info!(
            nofile,
            connections_per_worker = fds.connections_per_worker,
            guest_budget = fds.guest_budget,
            "file descriptors shared out"
        );
        // Every guest descriptor counts against this, so that connections
        // and the host's own files always have theirs.
        let guest_budget = usize::try_from(fds.guest_budget).unwrap_or(usize::MAX);
        if !wrun_host_api::fds::set_process_limit(guest_budget) {
            tracing::warn!("the guests' descriptor budget was fixed before serve could set it");
        }
        if fds.connections_per_worker < 64 {
            eprintln!(
                "wrun serve: warning: the open-file limit (RLIMIT_NOFILE) of {nofile} leaves \
                 {} connection(s) per worker; raise it (e.g. `ulimit -n 65536`)",
                fds.connections_per_worker
            );
        }

        let runtime = Arc::new(new_runtime(Some(Pooling {
            max_instances: self.max_instances,
            ..Pooling::default()
        }))?);
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let platform =
            Arc::new(main.block_on(from_config(runtime, &config, &base, admin_token))?);
        if admin_listen.is_some()
            && platform.admin_token.is_none()
            && platform.tenants.values().all(|t| t.token.is_none())
        {
            bail!(
                "the admin API needs a token: pass --admin-token-file, set WRUN_ADMIN_TOKEN, or give \
                 tenants a token_file or token_env"
            );
        }

        let listeners = server::bind(listen, threads)?;
        let public = listeners[0].local_addr()?;
        let admin = match admin_listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .with_context(|| format!("failed to listen on `{addr}` (admin API)"))?,
            ),
            None => None,
        };
        eprintln!("wrun serve: listening on http://{public}");
        if let Some(admin) = &admin {
            eprintln!("wrun serve: admin API on http://{}", admin.local_addr()?);
        }

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let options = server::ServeOptions {
            drain: self.drain_timeout,
            idle_timeout,
            max_connections: fds.connections_per_worker,
        };
        let drain = self.drain_timeout;
        let workers: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (platform, stopped) = (platform.clone(), stopped.clone());
                std::thread::Builder::new()
                    .name(format!("wrun-serve-{i}"))
                    .spawn(move || -> anyhow::Result<()> {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?
                            .block_on(server::serve(platform, listener, stopped, options))
                    })
            })
            .collect::<Result<_, _>>()?;

        main.block_on(async {
            let admin_task = admin.map(|listener| {
                let router = admin::router(platform.clone());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        })
                        .await
                })
            });
            let signal = shutdown_signal().await;
            eprintln!("wrun serve: {signal}: draining running requests");
            let _ = stop.send(true);
            if let Some(task) = admin_task {
                let _ = tokio::time::timeout(drain, task).await;
            }
            anyhow::Ok(())
        })?;
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(_) => bail!("a serve worker panicked"),
            }
        }
        eprintln!("wrun serve: stopped");
        Ok(0)
    }

    /// The config `wrun serve APP` stands for: one tenant, one function at `/`.
    fn single_app_config(&self) -> anyhow::Result<ConfigFile> {
        let app = self.app.as_ref().context("no APP and no --config")?;
        let mut env = BTreeMap::new();
        for pair in &self.env {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("invalid -e `{pair}`: expected KEY=VALUE"))?;
            env.insert(k.to_owned(), v.to_owned());
        }
        let limits = LimitsConfig {
            memory: self.memory.map(|m| m.to_string()),
            timeout: self
                .timeout
                .map(|t| humantime::format_duration(t).to_string()),
            max_concurrency: self.max_concurrency,
            max_body: self.max_body.map(|b| b.to_string()),
            max_fds: self.max_fds,
        };
        let function = FunctionConfig {
            wasm: Some(std::path::absolute(app)?),
            routes: vec!["/".to_owned()],
            env,
            volumes: self.volumes.clone(),
            allow_outbound: self
                .allow_outbound
                .iter()
                .map(ToString::to_string)
                .collect(),
            limits: LimitsConfig::default(),
            max_instance_reuse: self.max_instance_reuse,
        };
        let name = app
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"))
            .filter(|s| config::is_valid_name(s))
            .unwrap_or_else(|| "app".to_owned());
        let tenant = TenantConfig {
            limits,
            functions: BTreeMap::from([(name, function)]),
            ..TenantConfig::default()
        };
        Ok(ConfigFile {
            version: config::VERSION,
            server: Default::default(),
            tenants: BTreeMap::from([("default".to_owned(), tenant)]),
        })
    }
}

/// An address from its flag, else from the config's `server.FIELD`.
fn address(
    flag: Option<SocketAddr>,
    config: &Option<String>,
    field: &str,
) -> anyhow::Result<Option<SocketAddr>> {
    match (flag, config) {
        (Some(addr), _) => Ok(Some(addr)),
        (None, Some(text)) => text
            .parse()
            .map(Some)
            .with_context(|| format!("invalid `server.{field}` address `{text}`")),
        (None, None) => Ok(None),
    }
}
