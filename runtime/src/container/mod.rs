//! The container model: what runs, built the same way by every front end.
//!
//! A front end (the `wrun run` flags, the daemon's Docker JSON, compose and
//! the containerd shim to come) only translates its input into
//! [`Overrides`] (for a foreground run) or a [`ContainerConfig`] (for a
//! container the daemon keeps); [`ContainerSpec`] decides how they combine
//! with an image's defaults, so that no second place does. [`Containers`]
//! runs them: lifecycle ([`State`]), logs, restart policy, CPU quota.

mod config;
mod control;
pub mod events;
pub mod logs;
mod manager;
mod restart;
mod spec;
mod state;
mod stdio;
mod volumes;

pub use config::{ContainerConfig, Mount, MountSource, Origin};
pub use control::{Control, Killed, MAX_CPUS};
pub use manager::{
    ContainerError, Containers, SIGKILL, SIGTERM, Services, Snapshot, StdinWriter, WaitCondition,
    WaitOutcome, running_bound,
};
pub use restart::{Backoff, RestartPolicy};
pub use spec::{ContainerSpec, Overrides};
pub use state::{State, Status, TransitionError, human_duration};
pub use volumes::{VolumeError, VolumeInfo, Volumes, check_name as check_volume_name};
