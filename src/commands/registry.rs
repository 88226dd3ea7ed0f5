//! `wrun push`, `wrun pull`, `wrun login`, `wrun logout`.

use crate::common::{image_store, wrun_home};
use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wrun_runtime::image::{
    AuthFile, Credentials, ImageRef, ImageStore, Progress, ProgressFn, PullReport, Registry,
    RegistryOptions, check_login,
};
use wrun_runtime::input;

/// How to reach a registry.
#[derive(clap::Args, Clone, Default)]
pub struct RegistryFlags {
    /// Speak plain HTTP instead of HTTPS. Only allowed for a registry on this
    /// machine (localhost, 127.0.0.0/8, ::1).
    #[arg(long)]
    pub insecure: bool,
}

impl RegistryFlags {
    /// Options for `host`, with the credentials `wrun login` stored for it.
    fn options(&self, host: &str) -> anyhow::Result<RegistryOptions> {
        let credentials = match wrun_home() {
            Some(home) => AuthFile::new(&home).get(host)?,
            None => None,
        };
        Ok(RegistryOptions {
            insecure: self.insecure,
            credentials,
        })
    }
}

/// Pull an image from a registry into the local store. Blobs already
/// present are skipped; every blob is verified against its digest; the image
/// is named only once it is complete, so an interrupted pull leaves nothing
/// half-visible. For a multi-platform index, the `wasm` platform is pulled.
#[derive(clap::Args)]
pub struct PullCommand {
    #[command(flatten)]
    registry: RegistryFlags,
    /// NAME[:TAG] or NAME@DIGEST, e.g. `127.0.0.1:5000/hello:1`.
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl PullCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let reference = ImageRef::parse(&self.image)?;
        let store = image_store()?;
        let report = pull(&store, &reference, &self.registry)?;
        println!("Digest: {}", report.digest);
        if report.transferred == 0 {
            println!("Status: Image is up to date for {}", report.name);
        } else {
            println!("Status: Downloaded newer image for {}", report.name);
        }
        println!("{}", report.name);
        Ok(0)
    }
}

/// Pulls `reference` into `store`, with progress bars on a terminal.
pub fn pull(
    store: &ImageStore,
    reference: &ImageRef,
    flags: &RegistryFlags,
) -> anyhow::Result<PullReport> {
    let options = flags.options(reference.registry())?;
    let registry = Registry::new(reference.registry(), &options)?;
    let bars = Bars::new("pulling");
    let progress = bars.callback();
    let report = tokio_runtime()?
        .block_on(registry.pull(store, reference, &progress))
        .with_context(|| format!("failed to pull `{reference}`"))?;
    bars.finish();
    Ok(report)
}

/// Push an image to the registry its name says (e.g.
/// `127.0.0.1:5000/hello:1`; use `wrun tag` to give it such a name first).
/// Blobs the registry has are skipped; the manifest goes last.
#[derive(clap::Args)]
pub struct PushCommand {
    #[command(flatten)]
    registry: RegistryFlags,
    /// NAME[:TAG].
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl PushCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let reference = ImageRef::parse(&self.image)?;
        let Some(tag) = reference.tag().map(str::to_owned) else {
            bail!("cannot push `{}`: name a tag, not a digest", self.image);
        };
        let store = image_store()?;
        let options = self.registry.options(reference.registry())?;
        let registry = Registry::new(reference.registry(), &options)?;
        let bars = Bars::new("pushing");
        let progress = bars.callback();
        let report = tokio_runtime()?
            .block_on(registry.push(&store, &self.image, &reference, &progress))
            .with_context(|| format!("failed to push `{reference}`"))?;
        bars.finish();
        println!("{tag}: digest: {} size: {}", report.digest, report.size);
        Ok(0)
    }
}

/// Log in to a registry: the credentials are checked against it, then stored
/// in $WRUN_HOME/auth.json (readable by you alone; the format Docker and
/// skopeo's --authfile use) for push and pull.
#[derive(clap::Args)]
pub struct LoginCommand {
    #[command(flatten)]
    registry: RegistryFlags,
    /// The user name.
    #[arg(short, long)]
    username: String,
    /// The password. Visible to other users in the process list: prefer
    /// --password-stdin.
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from stdin (at most 64 KiB).
    #[arg(long)]
    password_stdin: bool,
    /// The registry, e.g. `127.0.0.1:5000` [default: Docker Hub].
    #[arg(value_name = "SERVER")]
    server: Option<String>,
}

impl LoginCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let host = server_host(self.server.as_deref())?;
        let password = match (self.password, self.password_stdin) {
            (Some(p), _) => p,
            (None, true) => {
                let text = input::read_string_from(std::io::stdin().lock(), "-", input::PASSWORD)?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            }
            (None, false) => bail!("give the password with --password-stdin (or -p)"),
        };
        if password.is_empty() {
            bail!("the password is empty");
        }
        if self.username.contains(':') {
            bail!("invalid user name `{}`: it contains `:`", self.username);
        }
        let credentials = Credentials {
            username: self.username,
            password,
        };
        tokio_runtime()?.block_on(check_login(&host, &credentials, self.registry.insecure))?;
        let home =
            wrun_home().context("no home directory and no WRUN_HOME: cannot store credentials")?;
        AuthFile::new(&home).set(&host, &credentials)?;
        println!("Login Succeeded");
        Ok(0)
    }
}

/// Forget the credentials stored for a registry.
#[derive(clap::Args)]
pub struct LogoutCommand {
    /// The registry [default: Docker Hub].
    #[arg(value_name = "SERVER")]
    server: Option<String>,
}

impl LogoutCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let host = server_host(self.server.as_deref())?;
        let home = wrun_home().context("no home directory and no WRUN_HOME")?;
        if AuthFile::new(&home).remove(&host)? {
            println!("Removing login credentials for {host}");
        } else {
            println!("Not logged in to {host}");
        }
        Ok(0)
    }
}

/// The host a registry's credentials are stored under, as image references
/// resolve it (`docker.io` is `index.docker.io`).
fn server_host(server: Option<&str>) -> anyhow::Result<String> {
    let server = server.unwrap_or("docker.io");
    let server = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    Ok(ImageRef::parse(&format!("{server}/x"))
        .with_context(|| format!("invalid registry `{server}`"))?
        .registry()
        .to_owned())
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// One progress bar per blob on stderr, if it is a terminal.
struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
    verb: &'static str,
}

impl Bars {
    fn new(verb: &'static str) -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Arc::default(),
            verb,
        }
    }

    fn callback(&self) -> ProgressFn {
        let multi = self.multi.clone();
        let bars = self.bars.clone();
        let verb = self.verb;
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
        )
        .map(|s| s.progress_chars("=> "));
        Arc::new(move |event| {
            let Ok(mut bars) = bars.lock() else { return };
            match event {
                Progress::Start { digest, size } => {
                    let bar = multi.add(ProgressBar::new(size));
                    if let Ok(style) = &style {
                        bar.set_style(style.clone());
                    }
                    bar.set_message(format!("{verb} {}", digest.short()));
                    bars.insert(digest.to_string(), bar);
                }
                Progress::Advance { digest, bytes } => {
                    if let Some(bar) = bars.get(digest.as_str()) {
                        bar.inc(bytes);
                    }
                }
                Progress::Done { digest, skipped } => {
                    if let Some(bar) = bars.get(digest.as_str()) {
                        bar.finish();
                    } else if skipped {
                        let _ = multi.println(format!("{} already exists", digest.short()));
                    }
                }
            }
        })
    }

    fn finish(&self) {
        let _ = self.multi.clear();
    }
}
