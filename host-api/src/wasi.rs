//! Turns a [`WasiSpec`] into the guest's WASI context.

use crate::volume::{Access, Volume, VolumeError, is_within, normalize_guest_path, open_beneath};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What the guest's stdin is connected to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stdin {
    /// An empty stream: reads return end-of-file at once.
    #[default]
    Empty,
    /// wrun's own stdin (`-i`).
    Inherit,
}

/// Which network a component's `wasi:sockets` reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkAccess {
    /// wrun's virtual network (see [`crate::net`]): its own loopback, the
    /// networks it joined, published ports, allowed outbound destinations.
    #[default]
    Virtual,
    /// The host's network, unrestricted (`--network host`).
    Host,
}

/// The guest's view of the host. Everything not listed here is not granted:
/// no directory, no host environment variable, no stdin unless inherited.
#[derive(Debug, Clone, Default)]
pub struct WasiSpec {
    /// The guest's argv, `argv[0]` included.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub volumes: Vec<Volume>,
    /// The guest's initial working directory; must lie inside a volume.
    pub workdir: Option<String>,
    pub stdin: Stdin,
    pub network: NetworkAccess,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("invalid working directory `{workdir}`: {reason}")]
    Workdir { workdir: String, reason: String },
    #[error("failed to open volume source `{}`: {reason}", volume.host.display())]
    Open { volume: Volume, reason: String },
    #[error("invalid argument {arg:?}: arguments passed to the guest must not contain NUL")]
    Arg { arg: String },
    #[error(transparent)]
    Fs(#[from] crate::fs::GuestFsError),
}

impl WasiSpec {
    /// Checks everything that can be checked before the guest starts: each
    /// volume's host directory exists, no two volumes share a guest path, and
    /// the working directory lies inside a volume and exists there.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(arg) = self.args.iter().find(|a| a.contains('\0')) {
            return Err(SpecError::Arg { arg: arg.clone() });
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            volume.check_host()?;
            if self.volumes[..i].iter().any(|v| v.guest == volume.guest) {
                return Err(VolumeError::Duplicate {
                    guest: volume.guest.clone(),
                }
                .into());
            }
        }
        if let Some(workdir) = &self.workdir {
            self.check_workdir(workdir)?;
        }
        Ok(())
    }

    /// The index of the innermost volume that holds `workdir`.
    pub(crate) fn workdir_volume(&self, workdir: &str) -> Option<usize> {
        let normalized = normalize_guest_path(workdir).ok()?;
        self.volumes
            .iter()
            .enumerate()
            .filter(|(_, v)| is_within(&normalized, &v.guest))
            .max_by_key(|(_, v)| v.guest.len())
            .map(|(i, _)| i)
    }

    fn check_workdir(&self, workdir: &str) -> Result<(), SpecError> {
        self.open_workdir(workdir).map(drop)
    }

    /// Opens the working directory's host directory beneath the volume that
    /// contains it, without following symlinks or `..` out of that volume.
    fn open_workdir(&self, workdir: &str) -> Result<BeneathDir, SpecError> {
        let err = |reason: String| SpecError::Workdir {
            workdir: workdir.to_owned(),
            reason,
        };
        let normalized = normalize_guest_path(workdir).map_err(|e| match e {
            VolumeError::GuestPath { reason, .. } => err(reason.to_owned()),
            other => err(other.to_string()),
        })?;
        // The innermost volume containing the directory is the one the guest's
        // own path resolution would use.
        let volume = self
            .volumes
            .iter()
            .filter(|v| is_within(&normalized, &v.guest))
            .max_by_key(|v| v.guest.len())
            .ok_or_else(|| err("it is not inside any volume (-v)".to_owned()))?;
        let relative = normalized[volume.guest.len()..].trim_start_matches('/');
        open_beneath(&volume.host, relative)
            .map(|dir| (dir, volume.access))
            .map_err(|e| err(format!("cannot open it in volume `{volume}`: {e}")))
            .map(|(dir, access)| BeneathDir { dir, access })
    }

    /// The instance's filesystem state: its mount table and the count of
    /// the host descriptors it opens, against `budget`. `blocking` must be
    /// what [`WasiSpec::builder`] was given.
    pub fn guest_fs(
        &self,
        budget: std::sync::Arc<crate::fds::FdBudget>,
        blocking: bool,
    ) -> Result<crate::fs::GuestFs, SpecError> {
        Ok(crate::fs::GuestFs::new(self, budget, blocking)?)
    }

    /// Builds the guest's WASI context: argv, environment, preopened volumes,
    /// stdio. stdout and stderr are wrun's own, written through as the guest
    /// writes (nothing is buffered in wrun).
    ///
    /// `blocking_current_thread` lets filesystem calls run on the calling
    /// thread instead of tokio's blocking pool: faster, but only right when
    /// nothing else (such as a timeout) needs that thread meanwhile.
    pub fn builder(&self, blocking_current_thread: bool) -> Result<WasiCtxBuilder, SpecError> {
        let mut builder = WasiCtxBuilder::new();
        // Must precede the preopens: each directory handle captures it.
        builder.allow_blocking_current_thread(blocking_current_thread);
        builder.args(&self.args);
        for (name, value) in &self.env {
            builder.env(name, value);
        }
        for volume in &self.volumes {
            let perms = fs_perms(volume.access);
            builder
                .preopened_dir(&volume.host, &volume.guest, perms)
                .map_err(|e| SpecError::Open {
                    volume: volume.clone(),
                    reason: format!("{e:#}"),
                })?;
        }
        if let Some(workdir) = &self.workdir {
            // Today's wasi-libc starts every program in `/` and consults no
            // WASI call for its working directory, so besides reporting it
            // the way WASI 0.2 specifies (`initial-cwd`) and the way shells do
            // (`PWD`), the directory is also preopened as `.`: relative paths
            // then resolve inside it, with its volume's permissions.
            let dir = self.open_workdir(workdir)?;
            let perms = fs_perms(dir.access);
            builder
                .preopened_dir(dir.dir.path(), ".", perms)
                .map_err(|e| SpecError::Workdir {
                    workdir: workdir.clone(),
                    reason: format!("{e:#}"),
                })?;
            builder.initial_cwd(workdir);
            if !self.env.iter().any(|(name, _)| name == "PWD") {
                builder.env("PWD", workdir);
            }
        }
        if self.stdin == Stdin::Inherit {
            builder.inherit_stdin();
        }
        builder.inherit_stdout().inherit_stderr();
        if self.network == NetworkAccess::Host {
            builder
                .inherit_network()
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true);
        }
        Ok(builder)
    }
}

fn fs_perms(access: Access) -> FsPerms {
    match access {
        Access::ReadOnly => FsPerms::ReadOnly,
        Access::ReadWrite => FsPerms::ReadWrite,
    }
}

/// A directory opened beneath a volume, with that volume's access.
struct BeneathDir {
    dir: crate::volume::OpenedDir,
    access: Access,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(dir: &std::path::Path, guest: &str) -> WasiSpec {
        WasiSpec {
            volumes: vec![Volume {
                host: dir.to_owned(),
                guest: guest.to_owned(),
                access: Access::ReadWrite,
            }],
            ..WasiSpec::default()
        }
    }

    #[test]
    fn workdir_must_be_inside_a_volume() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut spec = spec_with(dir.path(), "/data");
        spec.workdir = Some("/data/sub".into());
        spec.validate().unwrap();
        spec.workdir = Some("/data".into());
        spec.validate().unwrap();
        spec.workdir = Some("/database".into());
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("not inside any volume")
        );
        spec.workdir = Some("/data/missing".into());
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("cannot open it in volume")
        );
        spec.workdir = Some("data".into());
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
    }

    #[test]
    fn duplicate_mount_points_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(dir.path(), "/data");
        spec.volumes.push(spec.volumes[0].clone());
        assert!(matches!(
            spec.validate(),
            Err(SpecError::Volume(VolumeError::Duplicate { .. }))
        ));
    }
}
