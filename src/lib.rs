//! The `wrun` front ends as a library: the CLI's subcommands, the option
//! groups they share, the exit codes, and the `wrun serve` HTTP front end.
//! `main.rs` parses and dispatches; keeping the rest here lets the fuzz
//! targets (`fuzz/`) and in-process tests reach the parsers of untrusted
//! input that live in the front ends (serve configs, admin API bodies, flag
//! values).

pub mod commands;
pub mod common;
pub mod daemon;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod serve;
