//! The container model: what runs, built the same way by every front end.
//!
//! A front end (the `wrun run` flags today; the daemon's Docker JSON,
//! compose and the containerd shim to come) only translates its input into
//! [`Overrides`]; [`ContainerSpec`] decides how they combine with an image's
//! defaults, so that no second place does.

mod spec;

pub use spec::{ContainerSpec, Overrides};
