//! Options shared by every command that starts an app (`run`, the shorthand,
//! and later `create` and the daemon), and where wrun keeps its state.

use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wrun_host_api::net::{
    Attachment, MAX_APP_NAME, NetSpec, NetworkStore, OutboundRule, PortMapping,
    default_runtime_dir, is_valid_name, prepare_runtime_dir,
};
use wrun_host_api::{NetworkAccess, Stdin, Volume, parse_env_arg, parse_env_file};
use wrun_runtime::container::Overrides;
use wrun_runtime::input;
use wrun_runtime::{DEFAULT_MEMORY_LIMIT, Limits, Pooling, Runtime, RuntimeConfig};

/// How an app is started: its view of the host and its limits.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunOptions {
    /// Map a host directory into the guest: HOST:GUEST[:ro|:rw]. HOST is a
    /// directory (relative paths allowed, e.g. `./data`); GUEST an absolute
    /// guest path (`/` too). `:ro` makes every write fail inside the guest.
    /// Nothing outside HOST is reachable. Repeatable. Without -v the guest sees
    /// no host directory at all.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro|:rw]", value_parser = parse_volume)]
    pub volumes: Vec<Volume>,

    /// Set an environment variable: KEY=VALUE, or KEY to copy wrun's own value
    /// (skipped when unset). Repeatable; overrides --env-file. The host
    /// environment is never inherited otherwise.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file in Docker's format (KEY=VALUE or
    /// KEY per line, `#` comments). Repeatable; a later file wins over an
    /// earlier one. At most 4 MiB per file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

    /// The guest's working directory; must lie inside a volume. Reported as
    /// WASI's initial-cwd and as PWD, and mapped as the guest's `.`, so that
    /// relative paths resolve there even with wasi-libc, which starts every
    /// program in `/`.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// Keep stdin attached. Without it the guest's stdin is empty.
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Memory limit of the instance: its linear memories plus tables (8 bytes
    /// per element), e.g. `64m`, `1g` (binary units; a bare number is bytes).
    /// Growing past it fails inside the guest; a guest that then traps exits
    /// with 137. [default: 4g]
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,

    /// Wall-clock time limit, e.g. `500ms`, `30s`, `2m`; the app is stopped
    /// when it expires, even while blocked in a WASI call, and wrun exits
    /// with 137. [default: none]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// CPU time budget: time the guest spends running (wasm and the WASI calls
    /// it makes), sampled every 10ms; sleeping and waiting for input or I/O do
    /// not count. Exceeding it stops the app with 137. [default: none]
    #[arg(long = "cpu-time", value_name = "DURATION", value_parser = parse_duration)]
    pub cpu_time: Option<Duration>,

    /// CPU quota: the app gets at most this many cores' worth of CPU time
    /// over every 100 ms period, e.g. `0.5`, `2` (as Docker's --cpus and the
    /// cgroup CPU controller); it is held back for the rest of a period once
    /// its share is spent. [default: no limit]
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// A resource limit, as Docker spells it: `nofile=N` (or `nofile=SOFT:HARD`,
    /// of which the guest gets SOFT: it cannot raise its own limit) bounds the
    /// host descriptors the app holds at once: files and directories it opens,
    /// sockets, and connections waiting in its listeners' backlogs. At the
    /// limit the app gets EMFILE (a component's file opens: `quota`), never
    /// the host's last descriptor: all apps of one wrun process together stay
    /// below its own RLIMIT_NOFILE, which wrun raises to the hard limit at
    /// start. Memory is `--memory`. [default: nofile=1024]
    #[arg(long = "ulimit", value_name = "nofile=N[:M]", value_parser = parse_ulimit)]
    pub ulimits: Vec<usize>,

    /// A name for the instance, shown in messages.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Publish a guest port on the host: [IP:][HOST_PORT:]GUEST_PORT[/tcp|/udp],
    /// as Docker spells it (`8080:80`, `127.0.0.1:8080:80`, `80` for a port
    /// the host picks and wrun prints, `8000-8009:80-89`, `5353:53/udp`).
    /// Without IP the port is published on all IPv4 interfaces. Clients that
    /// connect before the app listens wait. Components only. Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]GUEST[/PROTO]", value_parser = parse_publish)]
    pub publish: Vec<Vec<PortMapping>>,

    /// Publish every port the image exposes on a port the host picks (printed
    /// at start), as Docker's -P. Images only.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,

    /// Join a virtual network made with `wrun network create`: the app gets an
    /// address on it, and members reach each other by --name or address,
    /// also across separate wrun processes, through Unix sockets in
    /// $XDG_RUNTIME_DIR/wrun (or $WRUN_HOME/run when XDG_RUNTIME_DIR is
    /// unset), which must be this user's alone. `--network host` instead
    /// gives the app the host's network unrestricted. Repeatable. [default:
    /// none: the app has only its own loopback]
    #[arg(long = "network", value_name = "NAME|host")]
    pub networks: Vec<String>,

    /// Another name the app is known by on its networks, besides --name;
    /// unlike a name, several apps may share an alias (a lookup answers
    /// with all of them). Repeatable.
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_aliases: Vec<String>,

    /// Allow connections and datagrams to a real destination: an IP, a CIDR
    /// range or a DNS name (resolved by the host when the app looks it up),
    /// with an optional port, e.g. `10.0.0.0/8`, `127.0.0.1:5432`,
    /// `api.example.com:443`. Everything else outside the app's networks is
    /// refused. Repeatable.
    #[arg(long = "allow-outbound", value_name = "HOST_OR_CIDR[:PORT]", value_parser = parse_outbound)]
    pub allow_outbound: Vec<OutboundRule>,

    /// Allow APP to be a precompiled artifact (from `wrun compile`). Such files
    /// are machine code: only run artifacts you compiled yourself.
    #[arg(long)]
    pub allow_precompiled: bool,

    /// When to pull an image APP from its registry.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,

    /// Pull over plain HTTP; only for a registry on this machine (localhost,
    /// 127.0.0.0/8, ::1).
    #[arg(long)]
    pub insecure: bool,
}

/// When `wrun run` pulls an image, as Docker's `--pull`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// When it is not in the local store.
    #[default]
    Missing,
    /// Every time (the local copy is updated).
    Always,
    /// Never: a missing image is an error.
    Never,
}

impl RunOptions {
    /// Which network the app's sockets reach, and its namespace's spec.
    pub fn net_spec(&self) -> anyhow::Result<(NetworkAccess, NetSpec)> {
        let host = self.networks.iter().any(|n| n == "host");
        let publish: Vec<PortMapping> = self.publish.iter().flatten().cloned().collect();
        if host {
            if self.networks.len() > 1 {
                bail!("--network host cannot be combined with other networks");
            }
            if let Some(m) = publish.first() {
                bail!(
                    "-p {}:{} has no effect with --network host: the app binds host ports itself",
                    m.host_port,
                    m.guest_port
                );
            }
            if !self.allow_outbound.is_empty() {
                bail!("--allow-outbound has no effect with --network host: everything is allowed");
            }
            return Ok((NetworkAccess::Host, NetSpec::default()));
        }
        if !self.network_aliases.is_empty() && self.networks.iter().all(|n| n == "none") {
            bail!("--network-alias needs a --network to be known on");
        }
        let mut runtime_dir = PathBuf::new();
        let mut networks = Vec::new();
        if !self.networks.is_empty() {
            let home =
                wrun_home().context("no home directory and no WRUN_HOME: cannot find networks")?;
            let store = NetworkStore::new(&home, &default_runtime_dir(&home));
            for name in &self.networks {
                if name == "none" {
                    continue;
                }
                let attachment = Attachment {
                    info: store.get(name)?,
                    aliases: self.network_aliases.clone(),
                };
                if !networks.contains(&attachment) {
                    networks.push(attachment);
                }
            }
            if !networks.is_empty() {
                runtime_dir = prepare_runtime_dir(store.runtime_dir())?;
            }
        }
        let spec = NetSpec {
            name: self.name.clone(),
            publish,
            networks,
            runtime_dir,
            outbound: self.allow_outbound.clone(),
        };
        Ok((NetworkAccess::Virtual, spec))
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.memory.unwrap_or(DEFAULT_MEMORY_LIMIT),
            timeout: self.timeout,
            cpu_time: self.cpu_time,
            max_fds: self
                .ulimits
                .last()
                .copied()
                .unwrap_or(wrun_host_api::fds::DEFAULT_INSTANCE_FDS),
        }
    }

    /// What the flags ask of the container: `args` (after argv[0]; `None`
    /// keeps an image's), the environment from --env-file then -e, volumes,
    /// workdir, stdin and -P. How they combine with an image's defaults is
    /// the container model's business
    /// ([`ContainerSpec`](wrun_runtime::container::ContainerSpec)).
    pub fn overrides(&self, args: Option<Vec<String>>) -> anyhow::Result<Overrides> {
        let lookup = |name: &str| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(()),
        };
        let mut env = Vec::new();
        for file in &self.env_files {
            let text = input::read_to_string(file, input::ENV_FILE)?;
            env.extend(parse_env_file(&text, &file.display().to_string(), &lookup)?);
        }
        for arg in &self.env {
            env.extend(parse_env_arg(arg, &lookup)?);
        }
        Ok(Overrides {
            args,
            env,
            volumes: self.volumes.clone(),
            workdir: self.workdir.clone(),
            stdin: if self.interactive {
                Stdin::Inherit
            } else {
                Stdin::Empty
            },
            publish_all: self.publish_all,
        })
    }
}

/// Guest arguments must be UTF-8 (WASI strings).
pub fn guest_argv(app: &Path, args: &[OsString]) -> anyhow::Result<Vec<String>> {
    // argv[0] is the base name only, so that host paths do not leak in.
    let argv0 = app
        .file_name()
        .unwrap_or(app.as_os_str())
        .to_string_lossy()
        .into_owned();
    let mut argv = vec![argv0];
    for arg in args {
        let arg = arg
            .to_str()
            .with_context(|| format!("guest argument {arg:?} is not valid UTF-8"))?;
        argv.push(arg.to_owned());
    }
    Ok(argv)
}

/// `$WRUN_HOME`, or the platform data directory (e.g. `~/.local/share/wrun`).
pub fn wrun_home() -> Option<PathBuf> {
    match std::env::var_os("WRUN_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => dirs::data_dir().map(|d| d.join("wrun")),
    }
}

/// The local image store, `$WRUN_HOME/images`.
pub fn image_store() -> anyhow::Result<wrun_runtime::image::ImageStore> {
    let home = wrun_home().context("no home directory and no WRUN_HOME: cannot find images")?;
    Ok(wrun_runtime::image::ImageStore::open(&home)?)
}

/// The runtime every command uses: one engine configuration, so that the
/// cache serves them all.
pub fn runtime() -> anyhow::Result<Runtime> {
    new_runtime(None)
}

/// The runtime, with instances allocated from a pool when `pooling` is set
/// (`wrun serve`); its artifacts are cached apart from the others'.
pub fn new_runtime(pooling: Option<Pooling>) -> anyhow::Result<Runtime> {
    let cache_dir = wrun_home().map(|home| home.join("cache"));
    if cache_dir.is_none() {
        tracing::warn!("no home directory and no WRUN_HOME: compiled apps will not be cached");
    }
    Ok(Runtime::new(RuntimeConfig {
        cache_dir,
        cache_size: cache_size()?,
        pooling,
    })?)
}

/// `WRUN_CACHE_SIZE`: the bound of `$WRUN_HOME/cache` (binary units, e.g.
/// `512m`, `4g`); unset means the runtime's default (1 GiB).
pub fn cache_size() -> anyhow::Result<Option<u64>> {
    let Some(value) = std::env::var_os("WRUN_CACHE_SIZE") else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    let bytes = parse_size(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "invalid WRUN_CACHE_SIZE `{}`: not a size like `512m` or `4g`: {e}",
            input::excerpt(&text)
        )
    })?;
    Ok(Some(bytes))
}

/// A size in binary units (`64m` is 64 MiB), as every size wrun takes.
///
/// More than 20 significant digits (`u64::MAX` has 20) are refused before
/// parse-size sees them: its rounding of a mantissa of `u64::MAX` followed by
/// more digits overflows (a panic in a debug build, a wrong size in a
/// release one; found by the flag_values fuzzer). The digits are counted as
/// parse-size reads them, past the `_` and ` ` separators it skips.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | ' '))
        .filter(char::is_ascii_digit)
        .skip_while(|&c| c == '0')
        .count();
    if digits > 20 {
        return Err("the number is too large".to_owned());
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|e| e.to_string())
}

fn parse_publish(s: &str) -> Result<Vec<PortMapping>, String> {
    PortMapping::parse(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_outbound(s: &str) -> Result<OutboundRule, String> {
    OutboundRule::parse(s).map_err(|e| e.to_string())
}

fn parse_volume(s: &str) -> Result<Volume, String> {
    Volume::parse(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_memory(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s).map_err(|e| {
        format!(
            "`{}` is not a size like `64m` or `1g`: {e}",
            input::excerpt(s)
        )
    })?;
    if bytes == 0 {
        return Err("the memory limit must be greater than zero".to_owned());
    }
    Ok(bytes)
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    let max = wrun_runtime::container::MAX_CPUS;
    match s.trim().parse::<f64>() {
        Ok(cpus) if cpus > 0.0 && cpus <= max => Ok(cpus),
        _ => Err(format!(
            "`{}` is not a number of CPUs above 0 and at most {max}, like `0.5` or `2`",
            input::excerpt(s)
        )),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| {
        format!(
            "`{}` is not a duration like `500ms`, `30s` or `2m`: {e}",
            input::excerpt(s)
        )
    })?;
    if d.is_zero() {
        return Err("the duration must be greater than zero".to_owned());
    }
    Ok(d)
}

/// `--ulimit nofile=SOFT[:HARD]`: the soft value, which is what a guest
/// gets (it has no way to raise its own limit).
pub(crate) fn parse_ulimit(s: &str) -> Result<usize, String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!(
            "`{}` is not a limit like `nofile=1024`",
            input::excerpt(s)
        ));
    };
    if name != "nofile" {
        return Err(format!(
            "unsupported ulimit `{}`: wrun supports `nofile` (memory is --memory, CPU time is \
             --cpu-time)",
            input::excerpt(name)
        ));
    }
    let number = |text: &str| {
        text.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "`{}`: `{}` is not a positive number of descriptors",
                    input::excerpt(s),
                    input::excerpt(text)
                )
            })
    };
    let (soft, hard) = match value.split_once(':') {
        Some((soft, hard)) => (number(soft)?, Some(number(hard)?)),
        None => (number(value)?, None),
    };
    if hard.is_some_and(|hard| hard < soft) {
        return Err(format!(
            "`{}`: the soft limit exceeds the hard limit",
            input::excerpt(s)
        ));
    }
    Ok(soft)
}

/// An app name, by the same rule as network names (see `is_valid_name`).
fn parse_name(s: &str) -> Result<String, String> {
    if !is_valid_name(s, MAX_APP_NAME) {
        return Err(format!(
            "`{}` is not a valid name: use letters, digits, `_`, `.` and `-`, starting with a \
             letter or digit",
            input::excerpt(s)
        ));
    }
    Ok(s.to_owned())
}

/// Writes `bytes` to `path`, readable and writable by this user only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .with_context(|| format!("failed to write `{}`", path.display()))
}

/// Waits for SIGTERM or SIGINT and names it.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers there is nothing to wait for but the end.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_memory("1048576").unwrap(), 1 << 20);
        assert!(parse_memory("lots").unwrap_err().contains("`lots`"));
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn flag_errors_quote_an_excerpt_of_the_value() {
        let huge = "9".repeat(100_000) + "x";
        for error in [
            parse_memory(&huge).unwrap_err(),
            parse_duration(&huge).unwrap_err(),
            parse_ulimit(&huge).unwrap_err(),
            parse_ulimit(&format!("nofile={huge}")).unwrap_err(),
            parse_ulimit(&format!("{huge}=1")).unwrap_err(),
            parse_name(&huge).unwrap_err(),
        ] {
            assert!(
                error.len() < 400,
                "{} bytes: {}",
                error.len(),
                &error[..200]
            );
            assert!(error.contains("(100001 bytes)"), "{error}");
        }
    }

    #[test]
    fn sizes_past_u64_are_refused_not_wrapped() {
        // parse-size 1.1 overflows rounding these (fuzz/regressions/flag_values).
        for text in [
            "1844674407370955161551615",
            "18446744073709551615.9k",
            "99999999999999999999",
            " 1_844 674407370955161551615",
            " 000 18446744073709551615 6",
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains("too large"), "{text}: {e}");
        }
        assert_eq!(parse_size("0000000000000000000000064m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("1 024_k").unwrap(), 1 << 20);
        assert!(parse_size("18446744073709551616").is_err());
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn ulimits() {
        assert_eq!(parse_ulimit("nofile=64").unwrap(), 64);
        assert_eq!(parse_ulimit("nofile=64:128").unwrap(), 64);
        for bad in [
            "nofile",
            "nofile=",
            "nofile=0",
            "nofile=x",
            "nofile=8:4",
            "nproc=10",
            "=5",
        ] {
            let e = parse_ulimit(bad).unwrap_err();
            assert!(e.contains('`'), "{bad}: {e}");
        }
        assert!(parse_ulimit("core=0").unwrap_err().contains("`core`"));
    }

    #[test]
    fn names() {
        assert!(parse_name("api").is_ok());
        assert!(parse_name("db-1.internal_x").is_ok());
        assert!(parse_name("-x").is_err());
        assert!(parse_name("a b").is_err());
        assert!(parse_name("").is_err());
    }
}
