//! `wrun run`: run a WASI app isolated, with volumes, environment and limits.

use crate::common::{RunOptions, guest_argv, runtime};
use anyhow::Context as _;
use std::ffi::OsString;
use std::path::PathBuf;
use wrun_host_api::net::Namespace;

/// Run a WASI app (core module, component or .wat) in an isolated instance.
///
/// APP's kind is told from its bytes, never its name. The app sees only what
/// the options grant: no host directory, environment variable or stdin unless
/// given. ARGS are passed to the app; its argv[0] is APP's base name.
#[derive(clap::Args)]
#[command(after_help = crate::exit::TABLE)]
pub struct RunCommand {
    #[command(flatten)]
    pub options: RunOptions,

    /// The app: a .wasm module or component, or a .wat text file.
    #[arg(value_name = "APP")]
    pub app: PathBuf,

    /// Arguments passed to the app.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<OsString>,
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
        }
    }
}

impl RunCommand {
    /// Runs the app; returns the process exit code (the guest's own, when it
    /// ran to an exit).
    pub fn execute(self) -> anyhow::Result<i32> {
        let argv = guest_argv(&self.app, &self.args)?;
        let mut spec = self.options.wasi_spec(argv)?;
        // Bad volumes or workdirs are reported before a long compilation.
        spec.validate()?;
        let (network, net_spec) = self.options.net_spec()?;
        spec.network = network;
        let limits = self.options.limits();
        let runtime = runtime()?;
        // One thread: the guest never migrates, so CPU-time accounting is
        // exact, and a single-app process needs no more.
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        tokio.block_on(async {
            // Published ports are bound first: a taken port is reported at
            // once, and clients that connect during compilation just wait.
            let net = Namespace::start(&net_spec).await?;
            let mut app = super::load_app(&runtime, &self.app, self.options.allow_precompiled)?;
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
            Ok(runtime.run(&app, &spec, net, &limits).await?)
        })
    }
}
