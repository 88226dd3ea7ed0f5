//! Exit codes: what a run that did not reach an exit of its own is reported
//! as, by `wrun run` and by a container's `State.ExitCode` alike.
//!
//! The guest's own exit code is passed through unchanged (WASI allows 0-125).
//! The others follow Docker's and wasmtime's conventions.

use crate::image::ImageError;
use crate::{LoadError, RunError};

/// wrun itself failed: a usage or configuration error (Docker's 125).
pub const WRUN_ERROR: i32 = 125;
/// The app could not be loaded or linked: invalid wasm, unknown imports, no
/// entry point (Docker's 126, "cannot invoke").
pub const CANNOT_RUN: i32 = 126;
/// The app file does not exist (Docker's 127, "not found").
pub const NOT_FOUND: i32 = 127;
/// The guest trapped (128 + SIGABRT, as wasmtime reports a trap).
pub const TRAP: i32 = 134;
/// The guest exceeded a limit: memory, timeout or CPU time (128 + SIGKILL, as
/// for a container killed by the OOM killer or `docker stop`).
pub const LIMIT: i32 = 137;

/// The exit code `cause` stands for, if it is one of the runtime's errors.
pub fn code_of(cause: &(dyn std::error::Error + 'static)) -> Option<i32> {
    if let Some(e) = cause.downcast_ref::<LoadError>() {
        return Some(match e {
            LoadError::NotFound { .. } => NOT_FOUND,
            LoadError::Read { .. }
            | LoadError::Input(_)
            | LoadError::Invalid { .. }
            | LoadError::PrecompiledNotAllowed { .. } => CANNOT_RUN,
        });
    }
    if let Some(e) = cause.downcast_ref::<ImageError>() {
        return Some(match e {
            ImageError::NotFound { .. } => NOT_FOUND,
            ImageError::Corrupted { .. }
            | ImageError::MissingBlob { .. }
            | ImageError::InvalidDocument { .. }
            | ImageError::NotRunnable { .. }
            | ImageError::Unpack(_) => CANNOT_RUN,
            _ => WRUN_ERROR,
        });
    }
    if let Some(e) = cause.downcast_ref::<RunError>() {
        return Some(match e {
            RunError::UnknownImports { .. }
            | RunError::Link { .. }
            | RunError::NoEntryPoint { .. }
            | RunError::CannotStart { .. } => CANNOT_RUN,
            RunError::Trap { .. } => TRAP,
            RunError::LimitExceeded { .. } => LIMIT,
            RunError::Killed { signal, .. } => 128 + signal,
            RunError::Spec(_)
            | RunError::Runtime(_)
            | RunError::Busy { .. }
            | RunError::NeedsComponent { .. }
            | RunError::Net(_) => WRUN_ERROR,
        });
    }
    None
}

/// A trap's backtrace as wrun prints it under the message (empty for
/// anything else): `wasm backtrace:` and a numbered frame per line.
pub fn backtrace_text(error: &RunError) -> String {
    let mut text = String::new();
    if let RunError::Trap { backtrace, .. } = error
        && !backtrace.is_empty()
    {
        text.push_str("\nwasm backtrace:");
        for (i, frame) in backtrace.iter().enumerate() {
            text.push_str(&format!("\n  {i:>2}: {frame}"));
        }
    }
    text
}
