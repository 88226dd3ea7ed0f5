//! The guest's filesystem, as wrun grants it: wasmtime-wasi's implementation
//! of `wasi:filesystem` (WASI 0.2) and of WASI preview 1's file calls, with
//! two things added in front of it:
//!
//! * every host descriptor the guest opens (files, directories, the
//!   directory a listing reads) is taken from the instance's
//!   [`FdBudget`](crate::fds::FdBudget) first, and given back when its last
//!   holder closes it;
//! * in a volume with other volumes nested inside it, paths are resolved by
//!   the mount table ([`mounts`]), so the inner volume wins for every
//!   spelling of a path and every descriptor, as a bind mount would.
//!
//! Components get it by [`add_to_linker`], which shadows wasmtime-wasi's
//! `wasi:filesystem/types` and `preopens`; core modules by [`p1`].

mod mounts;
pub mod p1;
mod p2;

pub use p2::{FsView, add_to_linker};

use crate::fds::{FdBudget, FdExhausted, FdGrant};
use crate::volume::Access;
use mounts::MountTable;
use std::collections::HashMap;
use std::sync::Arc;

/// What one instance's filesystem holds: its mount table, its descriptor
/// budget and the host descriptors its guest has open.
pub struct GuestFs {
    mounts: Arc<MountTable>,
    nested: bool,
    /// The first volume found nested in another, and that other, for
    /// messages.
    nested_pair: Option<(String, String)>,
    budget: Arc<FdBudget>,
    /// The volume of each preopen, by guest path (`.` for the working
    /// directory), in the order the WASI context lists them.
    preopens: Vec<(String, usize)>,
    /// The volume each of the guest's directory descriptors lies in, by
    /// resource; kept only when something is nested.
    volumes: HashMap<u32, usize>,
    /// Host descriptors the guest opened, by the address of the handle
    /// wasmtime-wasi shares between a descriptor and its streams: one is
    /// closed when only this table still holds it.
    open: HashMap<usize, (Arc<std::fs::File>, FdGrant)>,
    /// The volume and path in it of the working directory, if one is set.
    workdir: Option<(usize, String)>,
    /// The preopened directories themselves.
    _preopened: FdGrant,
    blocking: bool,
}

impl GuestFs {
    pub(crate) fn new(
        spec: &crate::WasiSpec,
        budget: Arc<FdBudget>,
        blocking: bool,
    ) -> Result<GuestFs, GuestFsError> {
        let nested_pair = spec.volumes.iter().find_map(|inner| {
            let outer = spec.volumes.iter().find(|outer| {
                outer.guest != inner.guest && crate::volume::is_within(&inner.guest, &outer.guest)
            })?;
            Some((outer.to_string(), inner.to_string()))
        });
        let nested = nested_pair.is_some();
        let mut preopens: Vec<(String, usize)> = spec
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| (v.guest.clone(), i))
            .collect();
        let mut workdir = None;
        if let Some(dir) = &spec.workdir
            && let Some(volume) = spec.workdir_volume(dir)
        {
            preopens.push((".".to_owned(), volume));
            let normalized = crate::volume::normalize_guest_path(dir)
                .map_err(|e| GuestFsError::Mounts(e.to_string()))?;
            let rel = normalized[spec.volumes[volume].guest.len()..].trim_start_matches('/');
            workdir = Some((volume, rel.to_owned()));
        }
        let held = preopens.len() + if nested { spec.volumes.len() } else { 0 };
        let preopened = budget.take(held).map_err(GuestFsError::Budget)?;
        let mounts = if nested {
            MountTable::new(&spec.volumes).map_err(|e| GuestFsError::Mounts(e.to_string()))?
        } else {
            MountTable::default()
        };
        Ok(GuestFs {
            mounts: Arc::new(mounts),
            nested,
            nested_pair,
            budget,
            preopens,
            volumes: HashMap::new(),
            open: HashMap::new(),
            workdir,
            _preopened: preopened,
            blocking,
        })
    }

    /// A volume nested in another, as `(outer, inner)`, if there is one.
    pub fn nested_volumes(&self) -> Option<&(String, String)> {
        self.nested_pair.as_ref()
    }

    /// The instance's descriptor budget (shared with its sockets).
    pub fn budget(&self) -> &Arc<FdBudget> {
        &self.budget
    }

    /// Takes one descriptor for something about to be opened; at the limit,
    /// first gives back those whose every holder has gone.
    fn take(&mut self) -> Result<FdGrant, FdExhausted> {
        match self.budget.take(1) {
            Ok(grant) => Ok(grant),
            Err(_) => {
                self.sweep();
                self.budget.take(1)
            }
        }
    }

    /// Forgets the host descriptors nothing but this table holds.
    fn sweep(&mut self) {
        self.open.retain(|_, (file, _)| Arc::strong_count(file) > 1);
    }

    /// Records a descriptor the guest just opened: its host handle and grant.
    fn opened(&mut self, file: &Arc<std::fs::File>, grant: FdGrant) {
        self.open
            .insert(Arc::as_ptr(file) as usize, (file.clone(), grant));
    }

    /// The descriptor whose handle lives at `key` was closed by the guest:
    /// give its grant back unless a stream still uses it.
    fn closed(&mut self, key: usize) {
        if let Some((file, _)) = self.open.get(&key)
            && Arc::strong_count(file) == 1
        {
            self.open.remove(&key);
        }
    }

    fn access(&self, volume: usize) -> Access {
        self.mounts.access(volume)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestFsError {
    #[error("too many volumes for the instance's descriptor limit: {0}")]
    Budget(FdExhausted),
    #[error("failed to prepare the nested volumes: {0}")]
    Mounts(String),
}
