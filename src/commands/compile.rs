//! `wrun compile`: precompile an app ahead of time.

use crate::common::runtime;
use anyhow::Context as _;
use std::io::Write as _;
use std::path::PathBuf;
use wrun_runtime::AppSource;

/// Precompile an app to native code (a `.cwasm` artifact).
///
/// The artifact runs with `wrun run --allow-precompiled` on a machine with the
/// same wrun version and CPU features. `wrun run` does this by itself through
/// its cache; use this to ship or inspect artifacts.
#[derive(clap::Args)]
pub struct CompileCommand {
    /// The app: a .wasm module or component, or a .wat text file.
    #[arg(value_name = "APP")]
    app: PathBuf,

    /// Where to write the artifact [default: APP with the extension `.cwasm`].
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
}

impl CompileCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let runtime = runtime()?;
        let source = AppSource::read(&self.app)?;
        let (_, artifact) = super::with_spinner(&source, || runtime.precompile(&source))?;
        let output = self
            .output
            .unwrap_or_else(|| self.app.with_extension("cwasm"));
        write_atomically(&output, &artifact)
            .with_context(|| format!("failed to write `{}`", output.display()))?;
        Ok(0)
    }
}

/// Writes to a temporary file beside `path` and renames it into place, so
/// that `path` is never left half-written.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
