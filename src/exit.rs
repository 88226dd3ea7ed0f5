//! wrun's exit codes, documented in `wrun run --help` and the README.
//!
//! The guest's own exit code is passed through unchanged (WASI allows 0-125).
//! The others follow Docker's and wasmtime's conventions.

use wrun_runtime::RunError;
pub use wrun_runtime::exit::{CANNOT_RUN, LIMIT, NOT_FOUND, TRAP, WRUN_ERROR};

/// The text of the exit-code table, for `--help`.
pub const TABLE: &str = "Exit codes:\n  \
    0-125  the app's own exit code, passed through\n  \
    125    wrun failed: bad flags, bad configuration, or an internal error\n  \
    126    the app could not start: unreadable or invalid wasm, unknown imports, no entry point,\n  \
           instantiation failed before any of its code ran (e.g. a shared memory, a data\n  \
           segment that does not fit), a corrupted or unrunnable image\n  \
    127    the app file or image was not found\n  \
    134    the app trapped, also in its start function (the trap and a short backtrace\n  \
           are printed)\n  \
    137    the app exceeded a limit (--memory, --timeout, --cpu-time)";

pub fn code_for(error: &anyhow::Error) -> i32 {
    error
        .chain()
        .find_map(wrun_runtime::exit::code_of)
        .unwrap_or(WRUN_ERROR)
}

/// The error chain on one line (`a: b: c`), plus a trap's backtrace.
///
/// Each reason is said once: a cause whose text the message so far already
/// ends with is skipped. Errors that print their source in their own message
/// and also return it from `source()` (a common pattern, also in
/// dependencies) would otherwise repeat it, as `{:#}` does.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    for cause in error.chain() {
        if let Some(run) = cause.downcast_ref::<RunError>() {
            text.push_str(&wrun_runtime::exit::backtrace_text(run));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source and also returns it from `source()`.
    #[derive(Debug)]
    struct Repeats {
        source: std::io::Error,
    }

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed to open `x`: {}", self.source)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn each_reason_is_said_once() {
        let io = std::io::Error::other("not a directory");
        let error = anyhow::Error::new(Repeats { source: io }).context("failed to load `a.tar`");
        assert_eq!(
            format!("{error:#}"),
            "failed to load `a.tar`: failed to open `x`: not a directory: not a directory",
            "what anyhow prints"
        );
        assert_eq!(
            describe(&error),
            "failed to load `a.tar`: failed to open `x`: not a directory"
        );
        // A cause that adds something is kept, even if it is short.
        let error = anyhow::anyhow!("EOF").context("invalid `EOF.toml`");
        assert_eq!(describe(&error), "invalid `EOF.toml`: EOF");
    }
}
