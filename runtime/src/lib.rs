//! wrun's runtime: the engine and its configuration, loading apps through the
//! AOT cache, limits, and running instances.
//!
//! ```text
//! let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(home.join("cache")), ..Default::default() })?;
//! let app = match runtime.lookup(path)? {
//!     Lookup::Cached(app) => app,
//!     Lookup::Source(source) => runtime.compile(&source)?, // or refuse precompiled ones
//! };
//! let code = runtime.run(&app, &wasi_spec, &Limits::default()).await?;
//! ```

mod atomic;
mod cache;
pub mod container;
pub mod crash_hook;
mod digests;
pub mod exit;
pub mod image;
mod limits;
mod link;
mod load;
mod run;
mod serve;

pub use cache::{
    ArtifactCache, CacheError, CacheFile, CacheRoot, CachedArtifact, DEFAULT_CACHE_SIZE, STALE_TEMP,
};
pub use limits::{DEFAULT_MEMORY_LIMIT, LimitExceeded, Limits, Size, TICK, humanize};
pub use load::{App, AppKind, AppSource, LoadError, SourceKind};

pub use run::RunError;
#[doc(hidden)]
pub use serve::fuzzing as serve_fuzzing;
pub use serve::{
    Body, CGI_BODY_BUFFER, CgiRequest, Failure, Function, FunctionKind, FunctionSpec, MAX_CGI_HEAD,
    Outcome,
};
/// Size-capped reads of user files and excerpts of user text for messages
/// (defined in wrun-host-api, the lowest layer, so that its parsers use them
/// too).
pub use wrun_host_api::input;

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    WasmBacktraceDetails,
};
use wrun_host_api::NetworkAccess;

/// What [`Runtime::lookup`] found.
pub enum Lookup {
    /// The compiled app, from the cache.
    Cached(App),
    /// The app's bytes, to compile (or, if precompiled, to load with consent).
    Source(AppSource),
}

/// How to build a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached (`$WRUN_HOME/cache`); `None`
    /// disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The bound of the whole cache directory, in bytes; `None` is
    /// [`DEFAULT_CACHE_SIZE`].
    pub cache_size: Option<u64>,
    /// Allocate instances from a pool (for `wrun serve`) rather than on
    /// demand.
    pub pooling: Option<Pooling>,
}

/// Sizes of the instance pool: many short-lived instances instantiate
/// several times faster from a pool whose slots stay mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    /// Component instances alive at once, across all functions.
    pub max_instances: u32,
    /// The largest linear memory of an instance.
    pub max_memory: u64,
    /// Bytes of each memory and table slot kept mapped between instances
    /// rather than returned to the kernel: the pages a typical request
    /// touches, so that the next instance in that slot does not fault them
    /// in again. Costs that much resident memory per warm slot.
    pub keep_resident: u64,
}

impl Default for Pooling {
    fn default() -> Self {
        Pooling {
            max_instances: 1000,
            max_memory: DEFAULT_MEMORY_LIMIT,
            keep_resident: 4 << 20,
        }
    }
}

/// Errors of the runtime itself (as opposed to the app's).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to set up the wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("failed to set up WASI: {0:#}")]
    Linker(wasmtime::Error),
}

/// An engine plus everything shared by the instances it runs.
pub struct Runtime {
    engine: Engine,
    cache: Option<ArtifactCache>,
    digests: Option<digests::DigestIndex>,
    module_linker: OnceLock<wasmtime::Linker<run::ModuleHost>>,
    /// Components on wrun's virtual network, and on the host's network.
    component_linkers: [OnceLock<wasmtime::component::Linker<run::ComponentHost>>; 2],
    proxy_linker: OnceLock<wasmtime::component::Linker<serve::ServeHost>>,
    ticker: OnceLock<Ticker>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = Engine::new(&engine_config(config.pooling)).map_err(RuntimeError::Engine)?;
        let max_size = config.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        let cache = (config.cache_dir.as_ref()).map(|root| {
            let cache = ArtifactCache::new(root, &engine_key(&engine)).with_max_size(max_size);
            // Leftovers of killed writes, and a bound lowered since: checked
            // at most hourly, one stat otherwise.
            cache.root().sweep_if_due(max_size);
            cache
        });
        let digests = (config.cache_dir.as_ref()).map(|root| digests::DigestIndex::new(root));
        Ok(Runtime {
            engine,
            cache,
            digests,
            module_linker: OnceLock::new(),
            component_linkers: [OnceLock::new(), OnceLock::new()],
            proxy_linker: OnceLock::new(),
            ticker: OnceLock::new(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// Finds the app at `path` in the AOT cache, or reads it for compiling.
    ///
    /// A file whose digest is remembered (see `digests`) is not even read
    /// when its artifact is cached; otherwise its bytes are read and hashed.
    /// A precompiled file is returned as a source: the caller decides whether
    /// to load it (`load_precompiled`), since that needs the user's consent.
    pub fn lookup(&self, path: &Path) -> Result<Lookup, LoadError> {
        if let Some(index) = &self.digests {
            let stamp = load::stat(path)?;
            if let Some(digest) = index.lookup(&stamp)
                && let Some(app) = self.load_cached_digest(&load::app_name(path), &digest)
            {
                tracing::debug!(app = app.name(), digest, "digest remembered, file not read");
                return Ok(Lookup::Cached(app));
            }
        }
        let source = AppSource::read(path)?;
        if source.kind() == SourceKind::Precompiled {
            return Ok(Lookup::Source(source));
        }
        match self.load_cached(&source)? {
            Some(app) => {
                self.remember_digest(&source);
                Ok(Lookup::Cached(app))
            }
            None => Ok(Lookup::Source(source)),
        }
    }

    /// Finds an image's app in the AOT cache, or reads it for compiling: a
    /// wasm layer by its digest, without reading it (the bytes are verified
    /// when read); an entrypoint file of the unpacked layers as any app file,
    /// whose digest is remembered once settled.
    pub fn lookup_image(
        &self,
        image: &image::Image,
        store: &image::ImageStore,
        rootfs: Option<&Path>,
    ) -> Result<Lookup, image::ImageError> {
        let layer = match &image.app {
            image::ImageApp::Layer(layer) => layer,
            image::ImageApp::File(_) => {
                let path = image.app_path(rootfs)?;
                return self
                    .lookup(&path)
                    .map_err(|e| image::ImageError::NotRunnable {
                        reference: image.name.clone(),
                        reason: e.to_string(),
                    });
            }
        };
        let name = image.argv0();
        if let Some(app) = self.load_cached_digest(&name, layer.digest.hex()) {
            return Ok(Lookup::Cached(app));
        }
        // `read` verified the bytes against the layer's digest, which is
        // the cache key just looked up: neither is done again.
        let bytes = store.read(layer, u64::MAX)?;
        Ok(Lookup::Source(AppSource::verified(
            name,
            bytes,
            layer.digest.hex().to_owned(),
        )))
    }

    fn remember_digest(&self, source: &AppSource) {
        if let (Some(index), Some(stamp)) = (&self.digests, &source.stamp) {
            index.record(stamp, source.digest());
        }
    }

    /// Looks `source` up in the AOT cache. `Ok(None)` is a miss; a corrupted or
    /// incompatible entry is removed, logged, and also reported as a miss so
    /// the caller recompiles it.
    pub fn load_cached(&self, source: &AppSource) -> Result<Option<App>, LoadError> {
        Ok(self.load_cached_digest(source.name(), source.digest()))
    }

    fn load_cached_digest(&self, name: &str, digest: &str) -> Option<App> {
        let cache = self.cache.as_ref()?;
        let entry = match cache.get(digest) {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::warn!("{e}; recompiling");
                cache.remove(digest);
                return None;
            }
        };
        match App::deserialize_file(&self.engine, name, entry) {
            Ok(app) => Some(app),
            Err(e) => {
                tracing::warn!("cache entry for `{name}` is unusable: {e}; recompiling");
                cache.remove(digest);
                None
            }
        }
    }

    /// Compiles `source` and stores the artifact in the cache. A failure to
    /// write the cache is logged, not fatal: the app still runs.
    pub fn compile(&self, source: &AppSource) -> Result<App, LoadError> {
        if source.kind() == SourceKind::Precompiled {
            return self.load_precompiled(source);
        }
        let (kind, artifact) = source.precompile(&self.engine)?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(source.digest(), kind, &artifact)
        {
            tracing::warn!("{e}; continuing without caching");
        } else {
            self.remember_digest(source);
        }
        App::deserialize(&self.engine, source.name(), &artifact)
    }

    /// Loads a precompiled artifact. Callers must only pass artifacts the user
    /// explicitly allowed (`--allow-precompiled`).
    pub fn load_precompiled(&self, source: &AppSource) -> Result<App, LoadError> {
        App::deserialize(&self.engine, source.name(), source.bytes())
    }

    /// Compiles `source` to a serialized artifact (`wrun compile`).
    pub fn precompile(&self, source: &AppSource) -> Result<(AppKind, Vec<u8>), LoadError> {
        if source.kind() == SourceKind::Precompiled {
            return Err(source.invalid("it is already precompiled"));
        }
        source.precompile(&self.engine)
    }

    fn module_linker(&self) -> Result<&wasmtime::Linker<run::ModuleHost>, RuntimeError> {
        if let Some(linker) = self.module_linker.get() {
            return Ok(linker);
        }
        let linker = run::module_linker(&self.engine).map_err(RuntimeError::Linker)?;
        Ok(self.module_linker.get_or_init(|| linker))
    }

    fn component_linker(
        &self,
        network: NetworkAccess,
    ) -> Result<&wasmtime::component::Linker<run::ComponentHost>, RuntimeError> {
        let cell = &self.component_linkers[usize::from(network == NetworkAccess::Host)];
        if let Some(linker) = cell.get() {
            return Ok(linker);
        }
        let linker = run::component_linker(&self.engine, network).map_err(RuntimeError::Linker)?;
        Ok(cell.get_or_init(|| linker))
    }

    pub(crate) fn start_ticker(&self) {
        self.ticker
            .get_or_init(|| Ticker::start(self.engine.clone(), TICK));
    }
}

/// The engine configuration shared by every wrun command, so that artifacts
/// compiled by one are valid for all (the cache key depends on it).
fn engine_config(pooling: Option<Pooling>) -> Config {
    let mut config = Config::new();
    if let Some(pooling) = pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(pooling)));
        // Served functions are WASI 0.2 proxies and commands, which never
        // run concurrently; without the bookkeeping for concurrent guests,
        // every host call and every Store is cheaper (measured: see
        // bench/RESULTS.md). WASI 0.3 apps cannot be served as a result.
        config.concurrency_support(false);
    }
    // Epoch checks cost a few percent in loops and let timeouts and CPU
    // budgets interrupt a spinning guest; always on so that one artifact
    // serves runs with and without limits.
    config.epoch_interruption(true);
    // Names from the name section are enough for trap reports; parsing DWARF
    // would slow every load for the rare trap.
    config.wasm_backtrace_details(WasmBacktraceDetails::Disable);
    config
}

fn pool_config(pooling: Pooling) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    let instances = pooling.max_instances;
    // A component built from Rust or C holds a few core instances (the app
    // plus adapter shims), each with a table and usually a memory.
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(pooling.max_memory).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(usize::try_from(pooling.keep_resident).unwrap_or(0))
        .table_keep_resident(usize::try_from(pooling.keep_resident).unwrap_or(0))
        // Resetting a slot by scanning which pages were written (Linux 6.7
        // and later) instead of zeroing all it keeps resident: the two
        // together are what make keeping pages resident pay off.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// A short, stable identifier of everything that makes artifacts compatible.
fn engine_key(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Increments the engine's epoch every tick until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("wrun-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            });
        if let Err(e) = spawned {
            // Without ticks, time limits cannot interrupt wasm code; the
            // timeout still fires whenever the guest waits in a WASI call.
            tracing::error!("failed to start the epoch thread: {e}");
        }
        Ticker { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
