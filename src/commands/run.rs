//! `wrun run`: run a WASI app isolated, with volumes, environment and limits.

use crate::common::{PullPolicy, RunOptions, guest_argv, image_store, runtime};
use anyhow::{Context as _, bail};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use wrun_host_api::fds::FdBudget;
use wrun_host_api::net::Namespace;
use wrun_runtime::container::{ContainerSpec, Control, RestartPolicy};
use wrun_runtime::image::{Image, ImageEntry, ImageError, ImageRef, ImageStore, LockGuard};
use wrun_runtime::{App, Lookup, Runtime, SourceKind};

/// Run a WASI app (core module, component or .wat) or an image in an
/// isolated instance.
///
/// APP is a file if one exists there (or it looks like a path: `./x`, `/x`,
/// `x.wasm`), else an image: NAME[:TAG], NAME@DIGEST or an image ID. An
/// image's run defaults apply under the flags: ARGS replace its arguments,
/// -e overrides its variables by name, -v and -w win; the directories its
/// layers hold are read-only at their paths (`/static`, `/app`), and each
/// volume point it declares that no -v covers is an empty directory for the
/// run. An app's kind is told from its bytes, never its name.
///
/// The app sees only what the options grant: no host directory, environment
/// variable or stdin unless given. ARGS are passed to the app; its argv[0] is
/// APP's base name (an image's: its entrypoint, or its repository's last
/// path segment).
#[derive(clap::Args)]
#[command(after_help = crate::exit::TABLE)]
pub struct RunCommand {
    #[command(flatten)]
    pub options: RunOptions,

    /// The app: a .wasm module or component, a .wat text file, or an image.
    #[arg(value_name = "APP")]
    pub app: PathBuf,

    /// Arguments passed to the app.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<OsString>,

    /// Run the app as a container of the wrun daemon, in the background,
    /// and print its ID; manage it with `wrun ps`, `wrun logs`, `wrun stop`
    /// (or any Docker client). When no daemon listens on the default
    /// socket, one is started (its log: $WRUN_HOME/daemon.log).
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// With -d: remove the container when it exits. (A run in the
    /// foreground leaves nothing behind anyway.)
    #[arg(long)]
    pub rm: bool,

    /// With -d: when the daemon starts the app again after it exits: `no`,
    /// `on-failure[:N]` (a non-zero exit, at most N times in a row),
    /// `always`, `unless-stopped`; Docker's back-off. [default: no]
    #[arg(long, value_name = "POLICY", value_parser = RestartPolicy::parse)]
    pub restart: Option<RestartPolicy>,

    /// With -d: the container's CPU weight against the daemon's other busy
    /// containers, as Docker's --cpu-shares (cgroups' cpu.shares): when
    /// more containers want CPU than the daemon has guest threads (one per
    /// CPU), they get it in proportion; an idle one takes nothing, and one
    /// alone gets all it can use. --cpus still caps it; 0 means 1024.
    /// (A run in the foreground has its thread to itself: the weight
    /// changes nothing there.) [default: 1024]
    #[arg(long = "cpu-shares", value_name = "SHARES")]
    pub cpu_shares: Option<u64>,

    /// Spelled `wrun APP`: APP is a file or a local image, pulled only with
    /// `--pull always` (a mistyped subcommand must not go to a registry).
    #[arg(skip)]
    pub shorthand: bool,
}

/// `wrun APP [OPTIONS] [-- ARGS...]`: `wrun run` with options after APP.
#[derive(clap::Parser)]
#[command(
    name = "wrun",
    version,
    override_usage = "wrun APP [OPTIONS] [-- ARGS...]\n       wrun <COMMAND>  (see `wrun help`)",
    after_help = crate::exit::TABLE
)]
pub struct ShorthandCommand {
    /// The app: a .wasm module or component, or a .wat text file.
    #[arg(value_name = "APP")]
    app: PathBuf,

    #[command(flatten)]
    options: RunOptions,

    /// Arguments passed to the app, after `--`.
    #[arg(value_name = "ARGS", last = true)]
    args: Vec<OsString>,
}

impl From<ShorthandCommand> for RunCommand {
    fn from(s: ShorthandCommand) -> RunCommand {
        RunCommand {
            options: s.options,
            app: s.app,
            args: s.args,
            detach: false,
            rm: false,
            restart: None,
            cpu_shares: None,
            shorthand: true,
        }
    }
}

/// Whether `word`, standing where a subcommand goes, can only be a mistyped
/// one (`wrun ps`): a bare name (no `:`, `/` or `@`, which image references
/// have), no file there, and no local image of that name. The shorthand
/// would otherwise take it for an image to pull.
pub fn is_mistyped_subcommand(word: &OsString) -> bool {
    let path = Path::new(word);
    path.to_str()
        .is_some_and(|text| !text.starts_with('-') && !text.contains([':', '/', '@']))
        && Target::unknown_image(path)
}

impl RunCommand {
    /// Runs the app; returns the process exit code (the guest's own, when it
    /// ran to an exit).
    pub fn execute(self) -> anyhow::Result<i32> {
        if self.detach {
            return self.run_detached();
        }
        if let Some(policy) = self.restart {
            bail!("--restart {policy} applies to containers of the daemon: add -d");
        }
        match Target::of(&self.app, &self.options, self.shorthand)? {
            Target::File => self.run_file(),
            // The mark keeps prune from removing the image while it runs.
            Target::Image(store, image, _in_use) => self.run_image(&store, &image),
        }
    }

    fn run_file(self) -> anyhow::Result<i32> {
        if self.options.publish_all {
            bail!(
                "-P publishes the ports an image exposes; `{}` is a file",
                self.app.display()
            );
        }
        let mut argv = guest_argv(&self.app, &self.args)?.into_iter();
        let argv0 = argv.next().unwrap_or_default();
        let spec = ContainerSpec::from_file(argv0, self.options.overrides(Some(argv.collect()))?);
        let runtime = runtime()?;
        let app_path = self.app.clone();
        self.run(
            spec,
            |runtime| {
                super::load_app(runtime, &app_path, self.options.allow_precompiled)
                    .map_err(anyhow::Error::from)
            },
            &runtime,
        )
    }

    /// Runs an image: its defaults first, the flags over them (see
    /// [`ContainerSpec::from_image`]).
    fn run_image(self, store: &ImageStore, image: &Image) -> anyhow::Result<i32> {
        let args = if self.args.is_empty() {
            None
        } else {
            Some(guest_argv(&self.app, &self.args)?.split_off(1))
        };
        let spec = ContainerSpec::from_image(image, store, self.options.overrides(args)?)?;
        let rootfs = spec.rootfs.clone();
        let runtime = runtime()?;
        self.run(spec, |runtime| {
            let source = match runtime.lookup_image(image, store, rootfs.as_deref())? {
                Lookup::Cached(app) => return Ok(app),
                Lookup::Source(source) => source,
            };
            if source.kind() == SourceKind::Precompiled {
                // Machine code from someone else: never, whatever the flags.
                bail!(
                    "image `{}` carries a precompiled artifact, not wasm; images must carry wasm",
                    image.name
                );
            }
            Ok(super::compile(runtime, &source)?)
        }, &runtime)
    }

    /// Runs `container` (its anonymous volumes are removed when it ends).
    fn run(
        &self,
        mut container: ContainerSpec,
        load: impl FnOnce(&Runtime) -> anyhow::Result<App>,
        runtime: &Runtime,
    ) -> anyhow::Result<i32> {
        // Bad volumes or workdirs are reported before a long compilation.
        container.wasi.validate()?;
        let (network, mut net_spec) = self.options.net_spec()?;
        net_spec.publish.append(&mut container.publish);
        container.wasi.network = network;
        let spec = &container.wasi;
        let limits = self.options.limits();
        // One thread: the guest never migrates, so CPU-time accounting is
        // exact, and a single-app process needs no more.
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        tokio.block_on(async {
            // Published ports are bound first: a taken port is reported at
            // once, and clients that connect during compilation just wait.
            let net = Namespace::start(&net_spec, FdBudget::instance(limits.max_fds)).await?;
            let mut app = load(runtime)?;
            if let Some(name) = &self.options.name {
                app = app.renamed(name.clone());
            }
            for port in net.published().iter().filter(|p| p.mapping.host_port == 0) {
                eprintln!(
                    "wrun: {}: published {} -> {}/{}",
                    app.name(),
                    port.host,
                    port.mapping.guest_port,
                    port.mapping.protocol
                );
            }
            Ok(match self.options.cpus {
                Some(cpus) => {
                    let control = Control::new(Some(cpus));
                    runtime
                        .run_controlled(&app, spec, net, &limits, &control)
                        .await?
                }
                None => runtime.run(&app, spec, net, &limits).await?,
            })
        })
    }
}

/// What APP names.
enum Target {
    File,
    Image(ImageStore, Box<Image>, LockGuard),
}

impl Target {
    /// A file if one exists at APP or APP looks like a path (`./x`, `/x`,
    /// `x.wasm`); otherwise an image, from the local store or pulled as
    /// --pull says (for the shorthand, only with `--pull always`).
    fn of(app: &Path, options: &RunOptions, shorthand: bool) -> anyhow::Result<Target> {
        let Some((text, reference)) = Target::image_name(app) else {
            return Ok(Target::File);
        };
        let store = image_store()?;
        if shorthand && options.pull != PullPolicy::Always {
            let entry = match store.find(text) {
                Err(ImageError::NotFound { .. }) => bail!(
                    "`{text}` is neither a file nor a local image (`wrun APP` does not pull; \
                     `wrun run {text}` does)"
                ),
                found => found?,
            };
            return Target::image(store, &entry);
        }
        let local = match options.pull {
            PullPolicy::Always => None,
            PullPolicy::Missing | PullPolicy::Never => match store.find(text) {
                Ok(entry) => Some(entry),
                Err(ImageError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let entry = match local {
            Some(entry) => entry,
            None if options.pull == PullPolicy::Never => {
                return Err(ImageError::NotFound {
                    reference: text.to_owned(),
                }
                .into());
            }
            None => {
                if options.pull == PullPolicy::Missing {
                    eprintln!("wrun: no image `{text}` in the local store; pulling it");
                }
                let flags = super::registry::RegistryFlags {
                    insecure: options.insecure,
                };
                let report =
                    super::registry::pull(&store, &reference, &flags).with_context(|| {
                        format!("`{text}` is neither a file nor an image that could be pulled")
                    })?;
                store.find(&report.name)?
            }
        };
        Target::image(store, &entry)
    }

    /// APP as an image name: `None` when it is a file, looks like a path
    /// (`./x`, `/x`, `x.wasm`), or cannot name an image (then it is reported
    /// as a missing file).
    fn image_name(app: &Path) -> Option<(&str, ImageRef)> {
        if app.symlink_metadata().is_ok() {
            return None;
        }
        let text = app.to_str()?;
        let looks_like_path = text.starts_with(['.', '/'])
            || [".wasm", ".wat", ".cwasm"]
                .iter()
                .any(|ext| text.ends_with(ext));
        if looks_like_path {
            return None;
        }
        Some((text, ImageRef::parse(text).ok()?))
    }

    /// Whether APP is an image name the local store does not hold, with no
    /// file there.
    fn unknown_image(app: &Path) -> bool {
        let Some((text, _)) = Target::image_name(app) else {
            return false;
        };
        matches!(
            image_store().map(|store| store.find(text)),
            Ok(Err(ImageError::NotFound { .. }))
        )
    }

    fn image(store: ImageStore, entry: &ImageEntry) -> anyhow::Result<Target> {
        // The mark keeps prune from removing the image while it runs.
        let in_use = store.mark_in_use(&entry.descriptor.digest)?;
        let image = Image::load(&store, entry)?;
        Ok(Target::Image(store, Box::new(image), in_use))
    }
}

impl RunCommand {
    /// `-d`: the flags as a Docker create request to the daemon (which
    /// decides everything else, as for any Docker client), then start.
    fn run_detached(self) -> anyhow::Result<i32> {
        use bollard::container::{Config, CreateContainerOptions};
        use bollard::models::{HostConfig, PortBinding, ResourcesUlimits, RestartPolicy as Policy};
        let o = &self.options;
        let unsupported = [
            (o.timeout.is_some(), "--timeout"),
            (o.cpu_time.is_some(), "--cpu-time"),
            (!o.allow_outbound.is_empty(), "--allow-outbound"),
            (o.allow_precompiled, "--allow-precompiled"),
        ];
        if let Some((_, flag)) = unsupported.iter().find(|(given, _)| *given) {
            bail!("{flag} is not supported with -d yet: run the app in the foreground");
        }
        if o.networks.len() > 1 || o.networks.iter().any(|n| n == "host") {
            bail!("with -d, give at most one --network, and not `host`");
        }
        if !o.network_aliases.is_empty() && o.networks.iter().all(|n| n == "none") {
            bail!("--network-alias needs a --network to be known on");
        }
        // What the app is: an image the daemon finds by name (pulled here
        // first if the policy says so), or a file it reads by absolute path.
        let image = match Target::of(&self.app, o, self.shorthand)? {
            Target::File => std::path::absolute(&self.app)
                .with_context(|| format!("invalid app path `{}`", self.app.display()))?
                .display()
                .to_string(),
            Target::Image(..) => self.app.display().to_string(),
        };
        let args = match self.args.is_empty() {
            true => None,
            false => Some(guest_argv(&self.app, &self.args)?.split_off(1)),
        };
        let overrides = o.overrides(args)?;
        let mut binds = Vec::new();
        for volume in &overrides.volumes {
            let host = std::path::absolute(&volume.host)
                .with_context(|| format!("invalid volume source `{}`", volume.host.display()))?;
            let mode = match volume.access {
                wrun_host_api::Access::ReadOnly => "ro",
                wrun_host_api::Access::ReadWrite => "rw",
            };
            binds.push(format!("{}:{}:{mode}", host.display(), volume.guest));
        }
        let mut ports: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for mapping in o.publish.iter().flatten() {
            let binding = PortBinding {
                host_ip: Some(mapping.host_ip.to_string()),
                host_port: Some(match mapping.host_port {
                    0 => String::new(),
                    port => port.to_string(),
                }),
            };
            ports
                .entry(format!("{}/{}", mapping.guest_port, mapping.protocol))
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(binding);
        }
        let restart = self.restart.unwrap_or_default();
        let host_config = HostConfig {
            binds: Some(binds),
            port_bindings: Some(ports),
            publish_all_ports: Some(o.publish_all),
            memory: o.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            nano_cpus: o.cpus.map(|c| (c * 1e9) as i64),
            cpu_shares: self
                .cpu_shares
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            ulimits: o.ulimits.last().map(|&n| {
                vec![ResourcesUlimits {
                    name: Some("nofile".to_owned()),
                    soft: Some(n as i64),
                    hard: Some(n as i64),
                }]
            }),
            restart_policy: Some(Policy {
                name: Some(restart_name(restart)),
                maximum_retry_count: Some(i64::from(restart.max_retries())),
            }),
            auto_remove: Some(self.rm),
            network_mode: o.networks.first().cloned(),
            ..HostConfig::default()
        };
        let config = Config {
            image: Some(image),
            cmd: overrides.args,
            env: Some(
                overrides
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            working_dir: overrides.workdir,
            // `-d -i`: stdin kept open for a later `attach`, as Docker's.
            open_stdin: Some(o.interactive),
            host_config: Some(host_config),
            networking_config: o.networks.first().map(|network| {
                let endpoint = bollard::models::EndpointSettings {
                    aliases: Some(o.network_aliases.clone()),
                    ..Default::default()
                };
                bollard::container::NetworkingConfig {
                    endpoints_config: HashMap::from([(network.clone(), endpoint)]),
                }
            }),
            ..Config::default()
        };
        let options = o.name.clone().map(|name| CreateContainerOptions {
            name,
            platform: None,
        });
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        tokio.block_on(async {
            let docker = super::client::connect_or_start().await?;
            let created = docker
                .create_container(options, config)
                .await
                .map_err(super::client::daemon_error)?;
            for warning in &created.warnings {
                eprintln!("wrun: warning: {warning}");
            }
            docker
                .start_container::<String>(&created.id, None)
                .await
                .map_err(super::client::daemon_error)?;
            println!("{}", created.id);
            Ok(0)
        })
    }
}

fn restart_name(policy: RestartPolicy) -> bollard::models::RestartPolicyNameEnum {
    use bollard::models::RestartPolicyNameEnum as Name;
    match policy {
        RestartPolicy::No => Name::NO,
        RestartPolicy::OnFailure { .. } => Name::ON_FAILURE,
        RestartPolicy::Always => Name::ALWAYS,
        RestartPolicy::UnlessStopped => Name::UNLESS_STOPPED,
    }
}
