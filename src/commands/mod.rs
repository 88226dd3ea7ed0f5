pub mod build;
pub mod client;
pub mod compile;
pub mod container;
pub mod daemon;
pub mod image;
pub mod network;
pub mod registry;
pub mod run;
pub mod serve;
pub mod system;

use std::path::Path;
use wrun_runtime::{App, AppSource, LoadError, Lookup, Runtime, Size, SourceKind};

/// Loads an app through the AOT cache, compiling it on a miss with a spinner
/// on a terminal (and nothing on a pipe).
pub fn load_app(runtime: &Runtime, path: &Path, allow_precompiled: bool) -> Result<App, LoadError> {
    let source = match runtime.lookup(path)? {
        Lookup::Cached(app) => {
            tracing::debug!(app = app.name(), "loaded from the cache");
            return Ok(app);
        }
        Lookup::Source(source) => source,
    };
    if source.kind() == SourceKind::Precompiled {
        if !allow_precompiled {
            return Err(LoadError::PrecompiledNotAllowed {
                name: source.name().to_owned(),
            });
        }
        return runtime.load_precompiled(&source);
    }
    compile(runtime, &source)
}

/// Compiles an app (storing it in the cache), with a spinner on a terminal.
pub fn compile(runtime: &Runtime, source: &AppSource) -> Result<App, LoadError> {
    let started = std::time::Instant::now();
    let app = with_spinner(source, || runtime.compile(source))?;
    tracing::info!(app = source.name(), elapsed = ?started.elapsed(), "compiled");
    Ok(app)
}

/// Runs `work` (a compilation) while a spinner with the elapsed time turns on
/// stderr, if stderr is a terminal.
pub fn with_spinner<T>(source: &AppSource, work: impl FnOnce() -> T) -> T {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        spinner.set_style(style);
    }
    spinner.set_message(format!(
        "compiling {} ({})",
        source.name(),
        Size(source.bytes().len() as u64)
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let result = work();
    spinner.finish_and_clear();
    result
}
