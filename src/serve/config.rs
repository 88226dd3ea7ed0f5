//! The serve configuration (TOML): tenants, their functions, routes and
//! limits. Unknown fields are refused with their name, so a typo never
//! silently drops a limit.
//!
//! ```toml
//! version = 1
//!
//! [tenants.acme]
//! token_env = "ACME_TOKEN"        # bearer token for the admin API (or token_file)
//! limits = { max_concurrency = 50, memory = "128m", timeout = "10s", max_body = "1m" }
//!
//! [tenants.acme.functions.hello]
//! wasm = "hello.wasm"             # relative to this file
//! routes = ["/hello", "acme.example/"]
//! env = { GREETING = "hi" }
//! volumes = ["./static:/static"]  # read-only unless `:rw`
//! allow_outbound = ["api.example.com:443"]
//! max_instance_reuse = 1          # 1: a fresh instance per request
//! ```

use anyhow::{Context as _, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wrun_host_api::net::OutboundRule;
use wrun_host_api::{Access, Volume};

/// The only configuration version this wrun reads.
pub const VERSION: u32 = 1;

/// Defaults for what a configuration leaves unsaid (documented in `--help`).
pub const DEFAULT_MEMORY: u64 = 128 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY: u64 = 10 << 20;
pub const DEFAULT_TENANT_CONCURRENCY: u32 = 100;
/// Host descriptors one instance may hold: a function lives for a request,
/// so fewer than `wrun run`'s 1024.
pub const DEFAULT_MAX_FDS: u32 = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub version: u32,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_token_env: Option<String>,
    /// Close connections idle this long, e.g. `60s` (`--idle-timeout`).
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Outbound rules the tenant may give its functions through the admin
    /// API with its own token.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory per instance, e.g. `64m`.
    pub memory: Option<String>,
    /// Time per request, e.g. `5s`.
    pub timeout: Option<String>,
    /// Instances running at once (for a tenant: across its functions).
    pub max_concurrency: Option<u32>,
    /// Largest request body, e.g. `1m`.
    pub max_body: Option<String>,
    /// Host descriptors one instance may hold at once (files, sockets,
    /// outgoing connections).
    pub max_fds: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// The app; given by the upload instead when deployed through the admin API.
    pub wasm: Option<PathBuf>,
    pub routes: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub max_instance_reuse: Option<u32>,
}

/// A route: an optional host and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Normalised as [`normalize_host`] does, and lowercase; `None` matches
    /// every host.
    pub host: Option<String>,
    /// Starts with `/`; without a trailing `/` unless it is `/` itself.
    pub prefix: String,
}

impl Route {
    /// `/path`, `host/path` or `host` (meaning `host/`).
    pub fn parse(text: &str) -> anyhow::Result<Route> {
        let bad = |why: &str| {
            let text = wrun_runtime::input::excerpt(text);
            anyhow::anyhow!("invalid route `{text}`: {why}")
        };
        let (host, path) = match text.find('/') {
            Some(0) => (None, text),
            Some(i) => (Some(&text[..i]), &text[i..]),
            None => (Some(text), "/"),
        };
        let host = match host {
            Some(host) => {
                // `a.example.` is the same name as `a.example`, as a request's
                // Host is compared (see `normalize_host`).
                let host = host.strip_suffix('.').unwrap_or(host);
                let valid = !host.is_empty()
                    && host.len() <= 253
                    && host.split('.').all(|label| !label.is_empty())
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
                if !valid {
                    return Err(bad("the host must be a DNS name without a port"));
                }
                Some(host.to_ascii_lowercase())
            }
            None => None,
        };
        if path.contains(['?', '#', ' ']) || path.contains("//") || path.contains("/../") {
            return Err(bad("the path must be a plain prefix such as `/api`"));
        }
        let prefix = match path.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        Ok(Route { host, prefix })
    }

    /// Whether `path` lies under this route's prefix, segment-wise: `/api`
    /// takes `/api` and `/api/x`, not `/apix`.
    pub fn matches_path(&self, path: &str) -> bool {
        self.prefix == "/"
            || path
                .strip_prefix(&self.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether a request to `host` (already passed through
    /// [`normalize_host`]) and `path` is one this route takes.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| host.is_some_and(|host| host.eq_ignore_ascii_case(h)))
            && self.matches_path(path)
    }

    /// Some request both routes would match, if there is one: this is the
    /// one rule that decides whether two tenants' routes conflict. A request
    /// has one host, so two different hosts never overlap; a route without
    /// a host takes every host; and two prefixes share a request exactly when
    /// one lies under the other (segment-wise), the longer one being such a
    /// request.
    pub fn overlap(&self, other: &Route) -> Option<Route> {
        let host = match (&self.host, &other.host) {
            (Some(a), Some(b)) if a != b => return None,
            (host, None) | (None, host) => host.clone(),
            (Some(a), Some(_)) => Some(a.clone()),
        };
        let prefix = if self.matches_path(&other.prefix) {
            &other.prefix
        } else if other.matches_path(&self.prefix) {
            &self.prefix
        } else {
            return None;
        };
        Some(Route {
            host,
            prefix: prefix.clone(),
        })
    }

    /// This route as a request's host and path, for messages: `/x`, or
    /// `a.example/x` (the host's root shown as `a.example/`).
    pub fn example(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}{}", self.prefix),
            None => self.prefix.clone(),
        }
    }
}

/// A request's host as routes compare it: without a port (`a.example:8080`,
/// `[::1]:80`) and without the trailing dot of a fully qualified name
/// (`a.example.`). Letter case is left to the comparison, so that routing
/// allocates nothing. IDNA (Unicode names) is not mapped: such a host
/// matches only its `xn--` spelling.
pub fn normalize_host(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port))
            if (!host.contains(':') || host.ends_with(']'))
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => authority,
    };
    host.strip_suffix('.').unwrap_or(host)
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) if self.prefix == "/" => write!(f, "{host}"),
            Some(host) => write!(f, "{host}{}", self.prefix),
            None => f.write_str(&self.prefix),
        }
    }
}

/// Limits after defaults and the tenant's values are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedLimits {
    pub memory: u64,
    pub timeout: Duration,
    pub max_concurrency: u32,
    pub max_body: u64,
    pub max_fds: u32,
}

impl ResolvedLimits {
    pub fn defaults() -> ResolvedLimits {
        ResolvedLimits {
            memory: DEFAULT_MEMORY,
            timeout: DEFAULT_TIMEOUT,
            max_concurrency: DEFAULT_TENANT_CONCURRENCY,
            max_body: DEFAULT_MAX_BODY,
            max_fds: DEFAULT_MAX_FDS,
        }
    }

    /// `self` with what `config` says, checked; `ceiling` (the tenant's
    /// limits) caps every value, so a function cannot exceed its tenant.
    pub fn apply(
        &self,
        config: &LimitsConfig,
        ceiling: Option<&ResolvedLimits>,
    ) -> anyhow::Result<ResolvedLimits> {
        let mut limits = *self;
        if let Some(memory) = &config.memory {
            limits.memory =
                parse_size(memory).with_context(|| format!("invalid memory limit `{memory}`"))?;
        }
        if let Some(timeout) = &config.timeout {
            limits.timeout = humantime::parse_duration(timeout)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!("invalid timeout `{timeout}`: expected e.g. `500ms`, `30s`")
                })?;
        }
        if let Some(n) = config.max_concurrency {
            if n == 0 {
                bail!("invalid max_concurrency `0`: must be at least 1");
            }
            limits.max_concurrency = n;
        }
        if let Some(body) = &config.max_body {
            limits.max_body =
                parse_size(body).with_context(|| format!("invalid max_body `{body}`"))?;
        }
        if let Some(n) = config.max_fds {
            if n == 0 {
                bail!("invalid max_fds `0`: must be at least 1");
            }
            limits.max_fds = n;
        }
        if let Some(c) = ceiling {
            let size = |bytes: u64| wrun_runtime::Size(bytes).to_string();
            let time = |d: Duration| humantime::format_duration(d).to_string();
            let checks = [
                (
                    "memory",
                    limits.memory > c.memory,
                    size(limits.memory),
                    size(c.memory),
                ),
                (
                    "timeout",
                    limits.timeout > c.timeout,
                    time(limits.timeout),
                    time(c.timeout),
                ),
                (
                    "max_concurrency",
                    limits.max_concurrency > c.max_concurrency,
                    limits.max_concurrency.to_string(),
                    c.max_concurrency.to_string(),
                ),
                (
                    "max_body",
                    limits.max_body > c.max_body,
                    size(limits.max_body),
                    size(c.max_body),
                ),
                (
                    "max_fds",
                    limits.max_fds > c.max_fds,
                    limits.max_fds.to_string(),
                    c.max_fds.to_string(),
                ),
            ];
            if let Some((what, _, value, max)) = checks.into_iter().find(|check| check.1) {
                bail!("{what} `{value}` exceeds the tenant's limit of `{max}`");
            }
        }
        Ok(limits)
    }
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    crate::common::parse_size(text).map_err(anyhow::Error::msg)
}

/// A function's configuration, checked and with paths resolved.
#[derive(Debug, Clone)]
pub struct FunctionPlan {
    pub wasm: Option<PathBuf>,
    pub routes: Vec<Route>,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    pub allow_outbound: Vec<OutboundRule>,
    pub limits: ResolvedLimits,
    pub max_instance_reuse: u32,
}

impl FunctionConfig {
    /// Checks the function's fields. Relative paths resolve against `base`
    /// (the config file's directory).
    pub fn plan(&self, base: &Path, tenant: &ResolvedLimits) -> anyhow::Result<FunctionPlan> {
        if self.routes.is_empty() {
            bail!("`routes` is empty: give at least one, e.g. `routes = [\"/hello\"]`");
        }
        let routes = self
            .routes
            .iter()
            .map(|r| Route::parse(r))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for name in self.env.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                bail!("invalid environment variable name `{name}`");
            }
        }
        let volumes = self
            .volumes
            .iter()
            .map(|v| parse_volume(v, base))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let allow_outbound = self
            .allow_outbound
            .iter()
            .map(|r| OutboundRule::parse(r).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limits = tenant.apply(&self.limits, Some(tenant))?;
        let max_instance_reuse = match self.max_instance_reuse {
            Some(0) => {
                bail!("invalid max_instance_reuse `0`: 1 means a fresh instance per request")
            }
            Some(n) => n,
            None => 1,
        };
        Ok(FunctionPlan {
            wasm: self.wasm.as_ref().map(|w| base.join(w)),
            routes,
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            volumes,
            allow_outbound,
            limits,
            max_instance_reuse,
        })
    }
}

/// Docker's `HOST:GUEST[:ro|:rw]`, but read-only unless `:rw` is said: a
/// function serving many requests should not be able to write by accident.
fn parse_volume(spec: &str, base: &Path) -> anyhow::Result<Volume> {
    let mut volume = Volume::parse(spec)?;
    if !spec.ends_with(":rw") {
        volume.access = Access::ReadOnly;
    }
    if volume.host.is_relative() {
        volume.host = base.join(&volume.host);
    }
    Ok(volume)
}

/// Reads and parses a config file.
pub fn read(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = wrun_runtime::input::read_to_string(path, wrun_runtime::input::SERVE_CONFIG)?;
    parse(&text).with_context(|| format!("invalid serve config `{}`", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<ConfigFile> {
    let config: ConfigFile = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}", wrun_runtime::image::toml_error(text, &e)))?;
    if config.version != VERSION {
        bail!(
            "unsupported version `{}`: this wrun reads `version = {VERSION}`",
            config.version
        );
    }
    for (name, tenant) in &config.tenants {
        if !is_valid_name(name) {
            bail!("invalid tenant name `{name}`: {NAME_RULE}");
        }
        for function in tenant.functions.keys() {
            if !is_valid_name(function) {
                bail!("invalid function name `{name}/{function}`: {NAME_RULE}");
            }
        }
        if tenant.token_file.is_some() && tenant.token_env.is_some() {
            bail!("tenant `{name}` has both token_file and token_env; give one");
        }
    }
    Ok(config)
}

pub const NAME_RULE: &str = "use 1-64 letters, digits, `-` or `_`, starting with a letter or digit";

pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Reads a bearer token from a file (first line) or an environment variable.
pub fn read_token(
    file: Option<&Path>,
    env: Option<&str>,
    base: &Path,
) -> anyhow::Result<Option<String>> {
    let token = match (file, env) {
        (Some(file), _) => {
            let path = base.join(file);
            let text = wrun_runtime::input::read_to_string(&path, wrun_runtime::input::TOKEN_FILE)?;
            text.lines().next().unwrap_or_default().trim().to_owned()
        }
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("environment variable `{var}` (a token) is not set"))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.len() < 16 {
        bail!("a token must be at least 16 characters long");
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = Route::parse("/api/").unwrap();
        assert_eq!((r.host.as_deref(), r.prefix.as_str()), (None, "/api"));
        assert!(r.matches_path("/api") && r.matches_path("/api/x") && !r.matches_path("/apix"));
        let r = Route::parse("Acme.Example").unwrap();
        assert_eq!(
            (r.host.as_deref(), r.prefix.as_str()),
            (Some("acme.example"), "/")
        );
        assert_eq!(
            Route::parse("a.example/x").unwrap().to_string(),
            "a.example/x"
        );
        assert!(Route::parse("a.example:80/x").is_err());
        assert!(Route::parse("/a?b").is_err());
    }

    /// The rule for routes of different tenants, as a table: `overlap` must
    /// answer the same both ways round, give a request that both routes
    /// take when there is one, and agree with `matches` on that request.
    #[test]
    fn routes_overlap_when_some_request_matches_both() {
        let cases = [
            // Path prefixes, segment-wise: under, equal, above; not siblings.
            ("/victim", "/victim/x", Some("/victim/x")),
            ("/victim", "/victim", Some("/victim")),
            ("/victim", "/victim/", Some("/victim")),
            ("/victim/a/b", "/victim", Some("/victim/a/b")),
            ("/victim", "/victimx", None),
            ("/victim/a", "/victim/b", None),
            ("/a", "/b", None),
            // `/` lies above everything.
            ("/", "/victim", Some("/victim")),
            ("/", "/", Some("/")),
            ("/", "victim.example", Some("victim.example/")),
            ("/", "victim.example/x", Some("victim.example/x")),
            // A host takes every path on it, so it covers every path route.
            ("victim.example", "/victim", Some("victim.example/victim")),
            ("victim.example", "/", Some("victim.example/")),
            (
                "victim.example/api",
                "/api/v1",
                Some("victim.example/api/v1"),
            ),
            ("victim.example/api", "/", Some("victim.example/api")),
            ("victim.example/api", "/other", None),
            // A path under another tenant's host+path route.
            (
                "victim.example/x",
                "victim.example/x/y",
                Some("victim.example/x/y"),
            ),
            (
                "victim.example/x",
                "victim.example",
                Some("victim.example/x"),
            ),
            ("victim.example/x", "victim.example/y", None),
            // One host, however it is spelled; never two different hosts.
            ("Victim.Example", "victim.example", Some("victim.example/")),
            (
                "victim.example.",
                "victim.example/x",
                Some("victim.example/x"),
            ),
            ("VICTIM.example./x", "/x/y", Some("victim.example/x/y")),
            ("a.example", "b.example", None),
            ("a.example", "a.example.b", None),
            ("a.example/x", "b.example/x", None),
        ];
        for (a, b, expected) in cases {
            let (ra, rb) = (Route::parse(a).unwrap(), Route::parse(b).unwrap());
            for (x, y) in [(&ra, &rb), (&rb, &ra)] {
                let found = x.overlap(y);
                assert_eq!(
                    found.as_ref().map(Route::example).as_deref(),
                    expected,
                    "`{x}` against `{y}`"
                );
                if let Some(request) = found {
                    for route in [x, y] {
                        assert!(
                            route.matches(request.host.as_deref(), &request.prefix),
                            "`{route}` does not take `{}`",
                            request.example()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn request_hosts_are_normalised_as_routes_are() {
        let route = Route::parse("a.example/x").unwrap();
        for host in [
            "a.example",
            "A.Example",
            "a.example.",
            "A.EXAMPLE.:8080",
            "a.example:80",
        ] {
            assert!(
                route.matches(Some(normalize_host(host)), "/x/y"),
                "`{host}` did not match"
            );
        }
        for host in ["b.example", "a.example.b", "a.example:x", "xa.example", ""] {
            assert!(
                !route.matches(Some(normalize_host(host)), "/x"),
                "`{host}` matched"
            );
        }
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("::1"), "::1");
        for bad in [
            "a..example",
            ".",
            ".a.example",
            "a.example:80",
            "a_b.example",
        ] {
            assert!(Route::parse(bad).is_err(), "`{bad}` was accepted");
        }
    }

    #[test]
    fn long_inputs_are_quoted_short() {
        let route = format!("/{}?", "r".repeat(1 << 20));
        assert!(Route::parse(&route).unwrap_err().to_string().len() < 400);
        let config = format!(
            "version = 1\n[tenants.a]\nx = \"{}\"\n",
            "t".repeat(1 << 20)
        );
        let e = format!("{:#}", parse(&config).unwrap_err());
        assert!(
            e.len() < 1000 && e.contains("line 3"),
            "{}",
            &e[..e.len().min(1000)]
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse("version = 1\n[tenants.a]\nlimitz = {}\n").unwrap_err();
        assert!(format!("{e:#}").contains("limitz"), "{e:#}");
        let e = parse("version = 2\n").unwrap_err();
        assert!(e.to_string().contains("version `2`"));
    }

    #[test]
    fn function_limits_are_capped_by_the_tenant() {
        let tenant = ResolvedLimits::defaults();
        let mut f = FunctionConfig {
            routes: vec!["/x".into()],
            ..FunctionConfig::default()
        };
        f.limits.memory = Some("1g".into());
        let e = f.plan(Path::new("/"), &tenant).unwrap_err();
        assert!(e.to_string().contains("exceeds the tenant's limit"), "{e}");
        f.limits.memory = None;
        f.limits.max_fds = Some(DEFAULT_MAX_FDS + 1);
        let e = f.plan(Path::new("/"), &tenant).unwrap_err();
        assert!(e.to_string().contains("max_fds `257` exceeds"), "{e}");
        f.limits.max_fds = Some(0);
        assert!(f.plan(Path::new("/"), &tenant).is_err());
        f.limits.max_fds = Some(8);
        assert_eq!(f.plan(Path::new("/"), &tenant).unwrap().limits.max_fds, 8);
        f.limits.max_fds = None;
        f.limits.memory = Some("16m".into());
        f.volumes = vec!["./d:/d".into(), "./w:/w:rw".into()];
        let plan = f.plan(Path::new("/base"), &tenant).unwrap();
        assert_eq!(plan.limits.memory, 16 << 20);
        assert_eq!(plan.volumes[0].access, Access::ReadOnly);
        assert_eq!(plan.volumes[1].access, Access::ReadWrite);
        assert_eq!(plan.volumes[0].host, Path::new("/base/./d"));
    }
}
