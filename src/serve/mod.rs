//! `wrun serve`: multi-tenant HTTP functions.
//!
//! * [`config`]: the TOML configuration of tenants and functions.
//! * [`Platform`] (here): the deployed functions and their routes, swapped
//!   atomically as a whole when a function is deployed, replaced or removed,
//!   so a request sees one consistent version from routing to its end.
//! * [`server`]: the public HTTP listener: routing, limits, metrics.
//! * [`admin`]: the admin API on its own listener.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod server;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use config::{FunctionPlan, ResolvedLimits, Route};
use metrics::FunctionMetrics;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use wrun_host_api::WasiSpec;
use wrun_host_api::fds::FdBudget;
use wrun_host_api::http::OutboundHttp;
use wrun_runtime::{App, AppSource, Function, FunctionSpec, Limits, Runtime, SourceKind};

/// A tenant: its token for the admin API, its limits, and the semaphore
/// that bounds its instances across all its functions.
pub struct Tenant {
    pub name: String,
    pub token: Option<String>,
    pub limits: ResolvedLimits,
    /// Outbound rules the tenant's own token may give its functions.
    pub allow_outbound: Vec<String>,
    pub slots: Arc<Semaphore>,
    /// The tenant's share of the guests' descriptors, which its instances'
    /// own budgets (`max_fds` each) are taken from: an equal share of the
    /// process's, so that no tenant can leave another without.
    pub fds: Arc<FdBudget>,
}

/// A deployed function with everything a request needs.
pub struct Deployed {
    pub tenant: Arc<Tenant>,
    pub name: String,
    pub function: Arc<Function>,
    pub plan: FunctionPlan,
    /// Bounds this function's instances (within its tenant's bound).
    pub slots: Arc<Semaphore>,
    pub metrics: Arc<FunctionMetrics>,
    /// The app's SHA-256, shown by the admin API.
    pub digest: String,
}

/// Which function serves a route.
struct RouteEntry {
    route: Route,
    target: Arc<Deployed>,
}

/// One consistent version of everything deployed.
#[derive(Default)]
pub struct Table {
    /// Keyed by (tenant, function).
    pub functions: BTreeMap<(String, String), Arc<Deployed>>,
    /// Most specific first: a route with a host before one without, then
    /// longer prefixes first.
    routes: Vec<RouteEntry>,
}

impl Table {
    /// Builds the routing table. Refused, naming both functions (from the
    /// side of `newcomer`, the function being deployed, when it is one of
    /// them): two functions on one route, and two routes of different
    /// tenants that some request could match both (see [`Route::overlap`]),
    /// since the more specific one would take the other tenant's requests.
    /// Within one tenant, overlapping routes are allowed: the most specific
    /// one wins.
    fn build(
        functions: BTreeMap<(String, String), Arc<Deployed>>,
        newcomer: Option<&(String, String)>,
    ) -> anyhow::Result<Table> {
        let is_newcomer =
            |d: &Deployed| newcomer.is_some_and(|(t, n)| *t == d.tenant.name && *n == d.name);
        let mut routes: Vec<RouteEntry> = Vec::new();
        for deployed in functions.values() {
            for route in &deployed.plan.routes {
                for other in &routes {
                    let same_tenant = other.target.tenant.name == deployed.tenant.name;
                    let conflict = if other.route == *route {
                        None
                    } else if same_tenant {
                        continue;
                    } else {
                        match route.overlap(&other.route) {
                            Some(request) => Some(request),
                            None => continue,
                        }
                    };
                    let ((mine, my_route), (theirs, their_route)) = match is_newcomer(&other.target)
                    {
                        true => ((&other.target, &other.route), (deployed, route)),
                        false => ((deployed, route), (&other.target, &other.route)),
                    };
                    let (mine, theirs) = (
                        format!("{}/{}", mine.tenant.name, mine.name),
                        format!("{}/{}", theirs.tenant.name, theirs.name),
                    );
                    match conflict {
                        None => {
                            bail!("route `{my_route}` of `{mine}` is already taken by `{theirs}`")
                        }
                        Some(request) => bail!(
                            "route `{my_route}` of `{mine}` overlaps route `{their_route}` of \
                             `{theirs}`, another tenant's: a request to `{}` would match both \
                             (routes of different tenants must not overlap)",
                            request.example()
                        ),
                    }
                }
                routes.push(RouteEntry {
                    route: route.clone(),
                    target: deployed.clone(),
                });
            }
        }
        routes.sort_by(|a, b| {
            (b.route.host.is_some(), b.route.prefix.len())
                .cmp(&(a.route.host.is_some(), a.route.prefix.len()))
        });
        Ok(Table { functions, routes })
    }

    /// The function for a request to `host` (as [`config::normalize_host`]
    /// leaves it) and `path`, with the route prefix it matched.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<(&Arc<Deployed>, &str)> {
        self.routes
            .iter()
            .find(|e| e.route.matches(host, path))
            .map(|e| (&e.target, e.route.prefix.as_str()))
    }
}

/// Everything `wrun serve` runs: the runtime, the tenants, and the current
/// table of functions.
pub struct Platform {
    pub runtime: Arc<Runtime>,
    pub tenants: BTreeMap<String, Arc<Tenant>>,
    pub table: ArcSwap<Table>,
    /// Serialises changes, so that two deploys cannot lose one another.
    changes: tokio::sync::Mutex<()>,
    /// Metrics outlive a function's replacement: keyed by (tenant, function).
    metrics: Mutex<HashMap<(String, String), Arc<FunctionMetrics>>>,
    pub unrouted: AtomicU64,
    pub admin_token: Option<String>,
}

impl Platform {
    pub fn new(
        runtime: Arc<Runtime>,
        tenants: BTreeMap<String, Arc<Tenant>>,
        admin_token: Option<String>,
    ) -> Platform {
        Platform {
            runtime,
            tenants,
            table: ArcSwap::from_pointee(Table::default()),
            changes: tokio::sync::Mutex::new(()),
            metrics: Mutex::default(),
            unrouted: AtomicU64::new(0),
            admin_token,
        }
    }

    /// Compiles and checks a function, without deploying it. `source` is the
    /// app's bytes (from a file or an upload); precompiled artifacts are
    /// refused, since they are machine code.
    pub fn prepare(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        plan: FunctionPlan,
        source: &AppSource,
    ) -> anyhow::Result<Deployed> {
        if source.kind() == SourceKind::Precompiled {
            bail!(
                "`{}` is a precompiled artifact; serve takes wasm (or wat) only",
                source.name()
            );
        }
        let app = match self.runtime.load_cached(source)? {
            Some(app) => app,
            None => self.runtime.compile(source)?,
        };
        self.prepare_app(tenant, name, plan, app, source.digest().to_owned())
    }

    fn prepare_app(
        &self,
        tenant: &Arc<Tenant>,
        name: &str,
        plan: FunctionPlan,
        app: App,
        digest: String,
    ) -> anyhow::Result<Deployed> {
        let app = app.renamed(format!("{}/{name}", tenant.name));
        let spec = FunctionSpec {
            wasi: WasiSpec {
                env: plan.env.clone(),
                volumes: plan.volumes.clone(),
                ..WasiSpec::default()
            },
            outbound: OutboundHttp::new(plan.allow_outbound.clone()),
            limits: Limits {
                memory: plan.limits.memory,
                timeout: Some(plan.limits.timeout),
                cpu_time: None,
                max_fds: plan.limits.max_fds as usize,
            },
            max_instance_reuse: plan.max_instance_reuse,
            fd_parent: Some(tenant.fds.clone()),
        };
        let function = self.runtime.function(app, spec)?;
        let metrics = self
            .metrics
            .lock()
            .map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?
            .entry((tenant.name.clone(), name.to_owned()))
            .or_default()
            .clone();
        Ok(Deployed {
            tenant: tenant.clone(),
            name: name.to_owned(),
            function: Arc::new(function),
            slots: Arc::new(Semaphore::new(plan.limits.max_concurrency as usize)),
            plan,
            metrics,
            digest,
        })
    }

    /// Deploys or replaces `deployed` atomically: requests already running
    /// finish on the version they started with. Returns whether a function
    /// was replaced. Fails, changing nothing, if a route is taken.
    pub async fn install(&self, deployed: Deployed) -> anyhow::Result<(bool, Arc<Deployed>)> {
        let _guard = self.changes.lock().await;
        let mut functions = self.table.load().functions.clone();
        let key = (deployed.tenant.name.clone(), deployed.name.clone());
        let deployed = Arc::new(deployed);
        let replaced = functions.insert(key.clone(), deployed.clone()).is_some();
        self.table
            .store(Arc::new(Table::build(functions, Some(&key))?));
        Ok((replaced, deployed))
    }

    /// Removes a function; returns whether it existed.
    pub async fn remove(&self, tenant: &str, name: &str) -> anyhow::Result<bool> {
        let _guard = self.changes.lock().await;
        let mut functions = self.table.load().functions.clone();
        let removed = functions
            .remove(&(tenant.to_owned(), name.to_owned()))
            .is_some();
        if removed {
            self.table.store(Arc::new(Table::build(functions, None)?));
        }
        Ok(removed)
    }

    /// Deploys every function of a config file, all or nothing.
    pub async fn install_all(&self, deployed: Vec<Deployed>) -> anyhow::Result<()> {
        let _guard = self.changes.lock().await;
        let mut functions = BTreeMap::new();
        for d in deployed {
            functions.insert((d.tenant.name.clone(), d.name.clone()), Arc::new(d));
        }
        self.table.store(Arc::new(Table::build(functions, None)?));
        Ok(())
    }
}

/// Builds the platform from a config file: tenants, then every function,
/// compiled and checked before anything serves.
pub async fn from_config(
    runtime: Arc<Runtime>,
    config: &config::ConfigFile,
    base: &Path,
    admin_token: Option<String>,
) -> anyhow::Result<Platform> {
    let mut tenants = BTreeMap::new();
    let guests = FdBudget::process();
    let share = guests.limit() / config.tenants.len().max(1);
    for (name, t) in &config.tenants {
        let limits = ResolvedLimits::defaults()
            .apply(&t.limits, None)
            .with_context(|| format!("tenant `{name}`"))?;
        let token = config::read_token(t.token_file.as_deref(), t.token_env.as_deref(), base)
            .with_context(|| format!("tenant `{name}`"))?;
        tenants.insert(
            name.clone(),
            Arc::new(Tenant {
                name: name.clone(),
                token,
                allow_outbound: t.allow_outbound.clone(),
                slots: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
                fds: FdBudget::child(guests, share),
                limits,
            }),
        );
    }
    // A token shared by two parties would let one act as the other.
    let mut tokens: Vec<(String, &str)> = Vec::new();
    if let Some(admin) = &admin_token {
        tokens.push(("the admin API".to_owned(), admin));
    }
    for tenant in tenants.values() {
        if let Some(token) = &tenant.token {
            if let Some((owner, _)) = tokens.iter().find(|(_, t)| *t == token.as_str()) {
                bail!(
                    "tenant `{}` has the same token as {owner}: every token must be different",
                    tenant.name
                );
            }
            tokens.push((format!("tenant `{}`", tenant.name), token));
        }
    }
    let platform = Platform::new(runtime, tenants, admin_token);
    let mut deployed = Vec::new();
    for (tenant_name, t) in &config.tenants {
        let tenant = &platform.tenants[tenant_name];
        for (name, f) in &t.functions {
            let what = || format!("function `{tenant_name}/{name}`");
            let plan = f.plan(base, &tenant.limits).with_context(what)?;
            let Some(wasm) = &plan.wasm else {
                bail!("{}: `wasm` is missing: name the app's file", what());
            };
            let source = AppSource::read(wasm).with_context(what)?;
            let started = std::time::Instant::now();
            let d = platform
                .prepare(tenant, name, plan, &source)
                .with_context(what)?;
            tracing::info!(function = %what(), kind = %d.function.kind(), elapsed = ?started.elapsed(), "ready");
            deployed.push(d);
        }
    }
    platform.install_all(deployed).await?;
    Ok(platform)
}
