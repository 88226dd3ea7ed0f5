//! Everything a wrun guest can see of the host, and the only place it is granted.
//!
//! A guest's world is described by a [`WasiSpec`]: its arguments, its environment
//! (never inherited: only what the spec lists), its volumes (capability-mapped
//! directories, read-only or read-write) and its stdio. [`WasiSpec::builder`] turns
//! a validated spec into a wasmtime-wasi context builder. Its network is a
//! [`net::Namespace`]: a virtual stack whose only host sockets are published
//! ports and allowed outbound connections. Nothing else in wrun hands a guest
//! a host handle.
//! Served functions' outgoing HTTP requests pass [`http::OutboundHttp`].

pub mod env;
pub mod fds;
pub mod fs;
pub mod http;
pub mod input;
pub mod net;
pub mod volume;
mod wasi;

pub use env::{EnvError, merge_env, parse_env_arg, parse_env_file};
pub use volume::{Access, Volume, VolumeError};
pub use wasi::{NetworkAccess, SpecError, Stdin, WasiSpec};
