//! Running an app to completion: one Store per instance, WASI linked in,
//! limits applied, and the outcome classified for the caller.

use crate::container::Control;
use crate::limits::{LimitExceeded, Limits, MemoryLimiter, thread_cpu_time};
use crate::load::{App, AppCode};
use crate::{Runtime, RuntimeError};
use std::time::Duration;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Module, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};
use wrun_host_api::fs::p1::WasiP1;
use wrun_host_api::fs::{FsView, GuestFs};
use wrun_host_api::net::{Namespace, NetView};
use wrun_host_api::{NetworkAccess, WasiSpec};

/// How many wasm frames a trap report shows.
const BACKTRACE_FRAMES: usize = 12;

/// Why an app did not run to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] wrun_host_api::SpecError),
    #[error("app `{app}` cannot be linked: it imports what wrun does not provide:\n{}", list(.missing))]
    UnknownImports { app: String, missing: Vec<String> },
    #[error("app `{app}` cannot be linked: {reason}")]
    Link { app: String, reason: String },
    #[error("app `{app}` has no entry point: {reason}")]
    NoEntryPoint { app: String, reason: String },
    /// Instantiation failed before any of the app's code ran (e.g. a shared
    /// memory this engine does not support, a data segment that does not
    /// fit its memory).
    #[error("app `{app}` could not start: {reason}")]
    CannotStart { app: String, reason: String },
    #[error("app `{app}` trapped: {message}")]
    Trap {
        app: String,
        message: String,
        backtrace: Vec<String>,
    },
    #[error("app `{app}` stopped: {limit}")]
    LimitExceeded { app: String, limit: LimitExceeded },
    #[error(
        "app `{app}` is a core module (WASI preview 1), which has no sockets, so {what} cannot \
         apply to it; build it as a component (e.g. for wasm32-wasip2) to use the network"
    )]
    NeedsComponent { app: String, what: String },
    /// Stopped from outside (`docker stop`, `kill`), as if by `signal`.
    #[error("app `{app}` was killed (signal {signal})")]
    Killed { app: String, signal: i32 },
    /// Every slot of the instance pool is in use (`wrun serve`).
    #[error("app `{app}` could not start: {reason}")]
    Busy { app: String, reason: String },
    #[error(transparent)]
    Net(#[from] wrun_host_api::net::NetError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Marks an error raised while instantiating the app or finding its entry
/// point: the app never started, unless a start function of its own ran and
/// trapped (see `classify`).
#[derive(Debug)]
struct Instantiating;

impl std::fmt::Display for Instantiating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed to instantiate")
    }
}

fn instantiating(error: wasmtime::Error) -> wasmtime::Error {
    error.context(Instantiating)
}

/// Marks the error raised from the epoch callback when the CPU budget is spent.
#[derive(Debug)]
struct CpuTimeSpent;

impl std::fmt::Display for CpuTimeSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU time limit exceeded")
    }
}

impl std::error::Error for CpuTimeSpent {}

/// Store data of a core module: the preview 1 context.
pub(crate) struct ModuleHost {
    wasi: WasiP1,
    limiter: MemoryLimiter,
}

impl ModuleHost {
    /// A host with nothing granted, for inspecting a linker.
    pub(crate) fn empty() -> Result<ModuleHost, RunError> {
        let spec = WasiSpec::default();
        let fs = spec.guest_fs(wrun_host_api::fds::FdBudget::root(0), true)?;
        Ok(ModuleHost {
            wasi: WasiP1::new(wasmtime_wasi::WasiCtxBuilder::new().build_p1(), fs),
            limiter: MemoryLimiter::new(0),
        })
    }
}

/// Store data of a component: the WASI context, its resource table, and its
/// network namespace.
pub(crate) struct ComponentHost {
    ctx: WasiCtx,
    table: ResourceTable,
    net: Namespace,
    fs: GuestFs,
    limiter: MemoryLimiter,
}

/// Store data that carries an instance's memory limiter.
pub(crate) trait HasLimiter: Send + 'static {
    fn limiter(&mut self) -> &mut MemoryLimiter;
}

impl HasLimiter for ModuleHost {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

impl HasLimiter for ComponentHost {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

pub(crate) fn module_linker(
    engine: &wasmtime::Engine,
) -> wasmtime::Result<wasmtime::Linker<ModuleHost>> {
    let mut linker = wasmtime::Linker::new(engine);
    // `wasi_unstable` (preview 0) too: old toolchains still emit it.
    wasmtime_wasi::p0::add_to_linker_async(&mut linker, |h: &mut ModuleHost| h.wasi.inner_mut())?;
    wasmtime_wasi::p1::wasi_snapshot_preview1::add_to_linker(&mut linker, |h: &mut ModuleHost| {
        &mut h.wasi
    })?;
    Ok(linker)
}

pub(crate) fn component_linker(
    engine: &wasmtime::Engine,
    network: NetworkAccess,
) -> wasmtime::Result<wasmtime::component::Linker<ComponentHost>> {
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wrun_host_api::fs::add_to_linker(&mut linker, |h: &mut ComponentHost| FsView {
        fs: &mut h.fs,
        ctx: &mut h.ctx,
        table: &mut h.table,
    })?;
    // WASI 0.3 needs concurrent execution, which the serve engine leaves out.
    if engine.get_concurrency_support() {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    }
    if network == NetworkAccess::Virtual {
        // WASI 0.2 sockets go through wrun's virtual network. (WASI 0.3
        // sockets keep wasmtime-wasi's, which deny everything unless the
        // network is the host's.)
        wrun_host_api::net::add_to_linker(&mut linker, |h: &mut ComponentHost| NetView {
            ns: &h.net,
            table: &mut h.table,
        })?;
    }
    Ok(linker)
}

impl Runtime {
    /// Runs `app` as a command (its `_start` or `wasi:cli/run`) with the world
    /// described by `spec` and the network namespace `net`, under `limits`.
    /// Returns the guest's exit code.
    ///
    /// Must be called inside a tokio runtime; for CPU-time accounting to be
    /// accurate it should be a current-thread runtime, so the guest does not
    /// move between threads.
    pub async fn run(
        &self,
        app: &App,
        spec: &WasiSpec,
        net: Namespace,
        limits: &Limits,
    ) -> Result<i32, RunError> {
        self.run_with(app, spec, net, limits, |_| {}).await
    }

    /// [`Runtime::run`] under `control`: held to its CPU quota, and paused
    /// or killed through it (see [`Control`]).
    pub async fn run_controlled(
        &self,
        app: &App,
        spec: &WasiSpec,
        net: Namespace,
        limits: &Limits,
        control: &Control,
    ) -> Result<i32, RunError> {
        self.run_governed(app, spec, net, limits, |_| {}, Some(control))
            .await
    }

    /// [`Runtime::run`], with `configure` adjusting the WASI context last
    /// (e.g. to connect stdin and stdout to pipes).
    pub(crate) async fn run_with(
        &self,
        app: &App,
        spec: &WasiSpec,
        net: Namespace,
        limits: &Limits,
        configure: impl FnOnce(&mut wasmtime_wasi::WasiCtxBuilder),
    ) -> Result<i32, RunError> {
        self.run_governed(app, spec, net, limits, configure, None)
            .await
    }

    /// [`Runtime::run_with`] under `control` (see [`Control`]): the guest
    /// yields at every epoch tick, so that it can be paused, killed and held
    /// to its CPU quota.
    pub(crate) async fn run_governed(
        &self,
        app: &App,
        spec: &WasiSpec,
        net: Namespace,
        limits: &Limits,
        configure: impl FnOnce(&mut wasmtime_wasi::WasiCtxBuilder),
        control: Option<&Control>,
    ) -> Result<i32, RunError> {
        spec.validate()?;
        if let AppCode::Module(_) = app.code
            && let Some(what) = net.needs_sockets()
        {
            return Err(RunError::NeedsComponent {
                app: app.name.clone(),
                what,
            });
        }
        // Filesystem calls may block the running thread unless a timeout or
        // a governor must be able to interrupt them (and a governed guest
        // shares its thread with others).
        let blocking = limits.timeout.is_none() && control.is_none();
        let builder = &mut spec.builder(blocking)?;
        configure(builder);
        let run = async {
            match &app.code {
                AppCode::Module(module) => {
                    let fs = spec.guest_fs(net.fd_budget().clone(), blocking)?;
                    let wasi = WasiP1::new(builder.build_p1(), fs);
                    if module.imports().any(|i| i.module() == "wasi_unstable")
                        && let Err(reason) = wasi.check_p0()
                    {
                        return Err(RunError::Link {
                            app: app.name.clone(),
                            reason,
                        });
                    }
                    let mut store = self.new_store(limits, |limiter| ModuleHost { wasi, limiter });
                    if let Some(control) = control {
                        self.govern_store(&mut store, limits, control);
                    }
                    let result = self.run_module(&mut store, app, module).await;
                    classify(app, result, store.data().limiter.refused, limits)
                }
                AppCode::Component(component) => {
                    let fs = spec.guest_fs(net.fd_budget().clone(), blocking)?;
                    let (ctx, table) = (builder.build(), ResourceTable::new());
                    let mut store = self.new_store(limits, |limiter| ComponentHost {
                        ctx,
                        table,
                        net,
                        fs,
                        limiter,
                    });
                    if let Some(control) = control {
                        self.govern_store(&mut store, limits, control);
                    }
                    let result = self
                        .run_component(&mut store, app, component, spec.network)
                        .await;
                    classify(app, result, store.data().limiter.refused, limits)
                }
            }
        };
        let run = async {
            match control {
                Some(control) => control.govern(run).await.unwrap_or_else(|killed| {
                    Err(RunError::Killed {
                        app: app.name.clone(),
                        signal: killed.signal,
                    })
                }),
                None => run.await,
            }
        };
        match limits.timeout {
            Some(timeout) => tokio::time::timeout(timeout, run)
                .await
                .unwrap_or_else(|_| {
                    Err(RunError::LimitExceeded {
                        app: app.name.clone(),
                        limit: LimitExceeded::Timeout(timeout),
                    })
                }),
            None => run.await,
        }
    }

    /// One instance's store, its memory limited and its deadlines armed.
    pub(crate) fn new_store<T: HasLimiter>(
        &self,
        limits: &Limits,
        host: impl FnOnce(MemoryLimiter) -> T,
    ) -> Store<T> {
        let mut store = Store::new(self.engine(), host(MemoryLimiter::new(limits.memory)));
        store.limiter(|h| h.limiter());
        self.set_deadlines(&mut store, limits);
        store
    }

    /// Arms the epoch deadline: without time limits the guest is never
    /// interrupted; with them, every tick checks the CPU budget and, when a
    /// timeout is set, yields so that the timeout can fire while wasm spins.
    fn set_deadlines<T: Send + 'static>(&self, store: &mut Store<T>, limits: &Limits) {
        if limits.timeout.is_none() && limits.cpu_time.is_none() {
            store.set_epoch_deadline(u64::MAX / 2);
            return;
        }
        self.arm_deadlines(store, limits, limits.timeout.is_some());
    }

    /// Makes a governed guest come back to its governor at every tick, and
    /// publish its memory in use to it.
    fn govern_store<T: HasLimiter>(
        &self,
        store: &mut Store<T>,
        limits: &Limits,
        control: &Control,
    ) {
        store
            .data_mut()
            .limiter()
            .publish_to(control.memory_gauge());
        self.arm_deadlines(store, limits, true);
    }

    fn arm_deadlines<T: Send + 'static>(
        &self,
        store: &mut Store<T>,
        limits: &Limits,
        must_yield: bool,
    ) {
        self.start_ticker();
        let cpu_budget = limits.cpu_time;
        // Reading the thread's CPU clock is a system call: only with a budget.
        let started = cpu_budget.map(|_| thread_cpu_time());
        store.epoch_deadline_callback(move |_| {
            if let (Some(budget), Some(started)) = (cpu_budget, started)
                && thread_cpu_time().saturating_sub(started) > budget
            {
                return Err(wasmtime::Error::new(CpuTimeSpent));
            }
            Ok(if must_yield {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        store.set_epoch_deadline(1);
    }

    async fn run_module(
        &self,
        store: &mut Store<ModuleHost>,
        app: &App,
        module: &Module,
    ) -> Result<wasmtime::Result<()>, RunError> {
        let is_func = |name| matches!(module.get_export(name), Some(wasmtime::ExternType::Func(_)));
        let entry = ["_start", ""]
            .into_iter()
            .find(|name| is_func(name))
            .ok_or_else(|| RunError::NoEntryPoint {
                app: app.name.clone(),
                reason: "the module exports no `_start` function (is it a library or a reactor?)"
                    .to_owned(),
            })?;
        let pre = self
            .module_linker()?
            .instantiate_pre(module)
            .map_err(|e| self.module_link_error(app, module, e))?;
        Ok(async {
            let instance = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(instantiating)?;
            let init = match is_func("_initialize") {
                true => Some(
                    instance
                        .get_typed_func::<(), ()>(&mut *store, "_initialize")
                        .map_err(instantiating)?,
                ),
                false => None,
            };
            let entry = instance
                .get_typed_func::<(), ()>(&mut *store, entry)
                .map_err(instantiating)?;
            // A reactor-style initialiser, if present, runs before the command.
            if let Some(init) = init {
                init.call_async(&mut *store, ()).await?;
            }
            entry.call_async(&mut *store, ()).await
        }
        .await)
    }

    async fn run_component(
        &self,
        store: &mut Store<ComponentHost>,
        app: &App,
        component: &Component,
        network: NetworkAccess,
    ) -> Result<wasmtime::Result<()>, RunError> {
        let linker = self.component_linker(network)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| self.component_link_error(app, linker, component, e))?;
        // A WASI 0.3 command runs concurrently; otherwise it must be a 0.2
        // command. Looking at the export names first keeps the common case
        // from building (and, with RUST_BACKTRACE set, unwinding for) an error.
        let exports_p3_run = component
            .component_type()
            .exports(self.engine())
            .any(|(name, _)| name.starts_with("wasi:cli/run@0.3"));
        if exports_p3_run
            && let Ok(command) = wasmtime_wasi::p3::bindings::CommandPre::new(pre.clone())
        {
            // WASI 0.3's filesystem is still wasmtime-wasi's own, without
            // the mount table: refused rather than enforced halfway.
            if let Some((outer, inner)) = store.data().fs.nested_volumes() {
                return Err(RunError::Link {
                    app: app.name.clone(),
                    reason: format!(
                        "volume `{inner}` is nested in volume `{outer}`, which a WASI 0.3 \
                         component cannot have yet; mount them side by side, or build the app \
                         for WASI 0.2 (wasm32-wasip2)"
                    ),
                });
            }
            return Ok(async {
                let command = command
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(instantiating)?;
                let result = store
                    .run_concurrent(async |store| command.wasi_cli_run().call_run(store).await)
                    .await??;
                Ok(run_result_to_exit(result)?)
            }
            .await);
        }
        let command = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(|_| {
            RunError::NoEntryPoint {
                app: app.name.clone(),
                reason: "the component does not export `wasi:cli/run` (a wasi:http proxy is \
                         served, not run)"
                    .to_owned(),
            }
        })?;
        Ok(async {
            let command = command
                .instantiate_async(&mut *store)
                .await
                .map_err(instantiating)?;
            let result = command.wasi_cli_run().call_run(&mut *store).await?;
            Ok(run_result_to_exit(result)?)
        }
        .await)
    }
}

/// `wasi:cli/run` returning `err` means exit code 1, as under wasmtime.
fn run_result_to_exit(result: Result<(), ()>) -> Result<(), I32Exit> {
    result.map_err(|()| I32Exit(1))
}

/// Turns how the guest finished into an exit code or a [`RunError`].
pub(crate) fn classify(
    app: &App,
    result: Result<wasmtime::Result<()>, RunError>,
    memory_refused: Option<u64>,
    limits: &Limits,
) -> Result<i32, RunError> {
    let error = match result? {
        Ok(()) => return Ok(0),
        Err(error) => error,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ok(exit.0);
    }
    let app_name = app.name.clone();
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Err(RunError::Busy {
            app: app_name,
            reason: full.to_string(),
        });
    }
    if error.downcast_ref::<CpuTimeSpent>().is_some() {
        let limit = LimitExceeded::CpuTime(limits.cpu_time.unwrap_or(Duration::ZERO));
        return Err(RunError::LimitExceeded {
            app: app_name,
            limit,
        });
    }
    // A refused growth followed by a failure: the guest ran out of memory
    // (Rust's allocator aborts; a C app gives up when malloc returns NULL).
    if let Some(requested) = memory_refused {
        let limit = LimitExceeded::Memory {
            limit: limits.memory,
            requested,
        };
        return Err(RunError::LimitExceeded {
            app: app_name,
            limit,
        });
    }
    let wasm_ran = error
        .downcast_ref::<WasmBacktrace>()
        .is_some_and(|bt| !bt.frames().is_empty());
    // An error while instantiating, with none of the app's code on the
    // stack, means the app never started: it could not run as shipped, as
    // with a link error. A start function that traps did run: a trap.
    if error.downcast_ref::<Instantiating>().is_some() && !wasm_ran {
        let reason = error
            .chain()
            .skip(1)
            .map(|cause| cause.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        return Err(RunError::CannotStart {
            app: app_name,
            reason,
        });
    }
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .take(BACKTRACE_FRAMES)
                .map(|frame| match frame.func_name() {
                    // `{:#}` leaves out Rust's trailing hash.
                    Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
                    None => format!("<wasm function {}>", frame.func_index()),
                })
                .collect()
        })
        .unwrap_or_default();
    let message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    Err(RunError::Trap {
        app: app_name,
        message,
        backtrace,
    })
}
