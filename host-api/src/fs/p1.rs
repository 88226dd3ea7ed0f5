//! WASI preview 1 for core modules: wasmtime-wasi's implementation, behind
//! the descriptor budget and the mount table.
//!
//! [`WasiP1`] wraps wasmtime-wasi's `WasiP1Ctx` and implements the same
//! preview 1 interface. Every call goes to wasmtime-wasi; those that open a
//! host descriptor take it from the instance's budget first (`EMFILE` for
//! the instance's limit, `ENFILE` for the process's), and in a volume with
//! other volumes nested inside it the path calls resolve through the mount
//! table. Preview 1 numbers its descriptors in a table of wasmtime-wasi's
//! own, so a resolved path is handed back to it as a path that has no
//! symlink and no mount point left in it, from the preopened root of the
//! volume it leads to; what that opens is checked to be the object the
//! resolution found, so a directory renamed meanwhile cannot redirect it.
//! `wasi_unstable` (preview 0) gets the budget but not nested volumes: a
//! module importing it is refused those (see [`WasiP1::check_p0`]).

use super::GuestFs;
use super::mounts::{Follow, Level, Resolved, join};
use crate::fds::{FdExhausted, FdGrant};
use crate::volume::Access;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::{Descriptor, Dir, FsPerms, OpenMode, WasiFilesystemCtxView};
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as Snapshot1;
use wasmtime_wasi::p1::{WasiP1Ctx, types};
use wasmtime_wasi::p2::bindings::filesystem::types::{self as fs_types, ErrorCode, HostDescriptor};
use wiggle::{GuestMemory, GuestPtr};

/// Runs a preview 2 filesystem call on a target's directory and name, on a
/// descriptor made for the call: `at!(self, target, |fs, dir, name| call)`.
macro_rules! at {
    ($self:ident, $target:expr, |$fs:ident, $dir:ident, $name:ident| $call:expr) => {{
        let temporary = $self.temporary(&$target)?;
        let $dir = Resource::new_borrow(temporary.rep());
        let $name = $target.name.clone();
        let result = {
            let $fs = &mut $self.fs_view();
            $call.await
        };
        $self.drop_temporary(temporary)?;
        result?
    }};
}

/// A core module's WASI context.
pub struct WasiP1 {
    inner: WasiP1Ctx,
    fs: GuestFs,
    /// Descriptors the guest opened, by preview 1 number, with their grants.
    files: HashMap<u32, FdGrant>,
    /// Directories in volumes with something mounted inside: where each is.
    dirs: HashMap<u32, P1Dir>,
    /// The preopened directories' numbers, found on first need.
    preopens: Option<Vec<(u32, usize)>>,
}

/// A directory descriptor of the guest, as the mount table sees it.
struct P1Dir {
    fd: Arc<OwnedFd>,
    volume: usize,
    /// From the volume's root, without symlinks.
    rel: String,
    _grant: FdGrant,
}

/// Where a resolved preview 1 path leads.
struct Target {
    /// The directory holding the entry (or the directory itself, with `.`).
    dir: Level,
    start: Arc<OwnedFd>,
    volume: usize,
    rel: String,
    /// One component, or `.` for the directory itself.
    name: String,
    mount: Option<usize>,
}

impl Target {
    /// The entry's path from its volume's root.
    fn path(&self) -> String {
        match self.name.as_str() {
            "." if self.rel.is_empty() => ".".to_owned(),
            "." => self.rel.clone(),
            name => join(&self.rel, name),
        }
    }
}

fn errno_of(e: FdExhausted) -> types::Error {
    match e {
        FdExhausted::Instance(_) => types::Errno::Mfile.into(),
        FdExhausted::Process(_) => types::Errno::Nfile.into(),
    }
}

impl WasiP1 {
    pub fn new(inner: WasiP1Ctx, fs: GuestFs) -> WasiP1 {
        WasiP1 {
            inner,
            fs,
            files: HashMap::new(),
            dirs: HashMap::new(),
            preopens: None,
        }
    }

    /// wasmtime-wasi's context, for `wasi_unstable` (preview 0).
    pub fn inner_mut(&mut self) -> &mut WasiP1Ctx {
        &mut self.inner
    }

    /// Preview 0 goes straight to wasmtime-wasi's context, without wrun's
    /// mount table: a module that imports it is refused nested volumes.
    pub fn check_p0(&self) -> Result<(), String> {
        match self.fs.nested {
            true => Err(
                "a module built for `wasi_unstable` (WASI preview 0) cannot have a volume \
                         nested in another; rebuild it for wasm32-wasip1 or wasm32-wasip2"
                    .to_owned(),
            ),
            false => Ok(()),
        }
    }

    fn take(&mut self) -> Result<FdGrant, types::Error> {
        self.fs.budget.take(1).map_err(errno_of)
    }

    fn fs_view(&mut self) -> WasiFilesystemCtxView<'_> {
        let view = self.inner.ctx();
        WasiFilesystemCtxView {
            ctx: view.ctx.filesystem(),
            table: view.table,
        }
    }

    /// The preview 1 number of each preopen still open and its volume; the
    /// preopens come after stdio in the order the WASI context lists them,
    /// which is checked by name rather than assumed.
    fn preopens(&mut self) -> Result<&[(u32, usize)], types::Error> {
        if self.preopens.is_none() {
            let mut found = Vec::new();
            for (index, (name, volume)) in self.fs.preopens.clone().into_iter().enumerate() {
                let fd = 3 + index as u32;
                let mut buf = vec![0u8; name.len()];
                let len = buf.len() as u32;
                let mut memory = GuestMemory::Unshared(&mut buf);
                let named = Snapshot1::fd_prestat_dir_name(
                    &mut self.inner,
                    &mut memory,
                    fd.into(),
                    GuestPtr::new(0),
                    len,
                );
                if named.is_ok() && buf == name.as_bytes() {
                    found.push((fd, volume));
                }
            }
            self.preopens = Some(found);
        }
        Ok(self.preopens.as_deref().unwrap_or_default())
    }

    /// Descriptor `fd` was closed (or replaced by a renumbering).
    fn forget(&mut self, fd: u32) {
        self.files.remove(&fd);
        self.dirs.remove(&fd);
        if let Some(preopens) = &mut self.preopens {
            preopens.retain(|(n, _)| *n != fd);
        }
    }

    /// Where directory `fd` is, if it lies in a volume with something
    /// mounted inside (preopens are looked up the first time).
    fn dir_of(&mut self, fd: u32) -> Result<Option<(Arc<OwnedFd>, usize, String)>, types::Error> {
        if !self.fs.nested {
            return Ok(None);
        }
        if let Some(dir) = self.dirs.get(&fd) {
            return Ok(Some((dir.fd.clone(), dir.volume, dir.rel.clone())));
        }
        let Some(&(_, volume)) = self.preopens()?.iter().find(|(n, _)| *n == fd) else {
            return Ok(None);
        };
        // A preopen: its volume's root, or the working directory in it.
        let is_workdir = self
            .fs
            .preopens
            .iter()
            .position(|(name, _)| name == ".")
            .is_some_and(|i| 3 + i as u32 == fd);
        let (root, rel) = match (&self.fs.workdir, is_workdir) {
            (Some((_, rel)), true) if !rel.is_empty() => {
                let root = Arc::new(self.fs.mounts.dup_root(volume)?);
                let resolved = self.fs.mounts.resolve(
                    root.as_fd(),
                    volume,
                    "",
                    &format!("{rel}/"),
                    Follow::Yes,
                    &self.fs.budget,
                )?;
                let Resolved::Dir { dir, rel, .. } = resolved else {
                    return Err(types::Errno::Notdir.into());
                };
                (Arc::new(dir.dup(root.as_fd())?), rel)
            }
            _ => (Arc::new(self.fs.mounts.dup_root(volume)?), String::new()),
        };
        let grant = self.take()?;
        self.dirs.insert(
            fd,
            P1Dir {
                fd: root.clone(),
                volume,
                rel: rel.clone(),
                _grant: grant,
            },
        );
        Ok(Some((root, volume, rel)))
    }

    /// Resolves `path` from directory `fd` through the mount table when its
    /// volume has something mounted inside; `None` when wasmtime-wasi can
    /// take the call as it is.
    fn plan(
        &mut self,
        memory: &GuestMemory<'_>,
        fd: types::Fd,
        path: GuestPtr<str>,
        follow: Follow,
    ) -> Result<Option<Target>, types::Error> {
        match self.dir_of(u32::from(fd))? {
            Some((_, volume, _)) if self.fs.mounts.has_mounts(volume) => {
                self.plan_any(memory, fd, path, follow)
            }
            _ => Ok(None),
        }
    }

    /// [`WasiP1::plan`] whatever is mounted in the directory's volume, for
    /// the other side of a two-path call; `None` for a directory it does
    /// not know.
    fn plan_any(
        &mut self,
        memory: &GuestMemory<'_>,
        fd: types::Fd,
        path: GuestPtr<str>,
        follow: Follow,
    ) -> Result<Option<Target>, types::Error> {
        let Some((start, volume, start_rel)) = self.dir_of(u32::from(fd))? else {
            return Ok(None);
        };
        let path = memory.as_cow_str(path)?.into_owned();
        let resolved = self.fs.mounts.resolve(
            start.as_fd(),
            volume,
            &start_rel,
            &path,
            follow,
            &self.fs.budget,
        )?;
        let target = match resolved {
            Resolved::Entry {
                dir,
                volume,
                rel,
                name,
            } => {
                let mount = self
                    .fs
                    .mounts
                    .mounted_at(start.as_fd(), &dir, volume, &name);
                Target {
                    dir,
                    start,
                    volume,
                    rel,
                    name,
                    mount,
                }
            }
            Resolved::Dir { dir, volume, rel } => Target {
                dir,
                start,
                volume,
                rel,
                name: ".".to_owned(),
                mount: None,
            },
        };
        Ok(Some(target))
    }

    /// The target's mount root instead of the mount point, for calls that
    /// act on what is mounted there.
    fn mount_root_of(&self, target: Target) -> Result<Target, types::Error> {
        let Some(inner) = target.mount else {
            return Ok(target);
        };
        let root = Arc::new(self.fs.mounts.dup_root(inner)?);
        Ok(Target {
            dir: Level::Start,
            start: root,
            volume: inner,
            rel: String::new(),
            name: ".".to_owned(),
            mount: None,
        })
    }

    /// A wasmtime-wasi descriptor for the target's directory, with its
    /// volume's access, for one call.
    fn temporary(&mut self, target: &Target) -> Result<Resource<Descriptor>, types::Error> {
        let fd = target.dir.dup(target.start.as_fd())?;
        let perms = match self.fs.access(target.volume) {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        let dir = Dir::new(
            std::fs::File::from(fd),
            perms,
            OpenMode::READ,
            self.fs.blocking,
        );
        Ok(self.inner.ctx().table.push(Descriptor::Dir(dir))?)
    }

    fn drop_temporary(&mut self, fd: Resource<Descriptor>) -> Result<(), types::Error> {
        self.inner.ctx().table.delete(fd)?;
        Ok(())
    }

    /// Both targets of a two-path call, in one volume (else `EXDEV`, as
    /// across two mounts), neither a mount point (else `EBUSY`).
    fn same_volume(a: &Target, b: &Target) -> Result<(), types::Error> {
        if a.mount.is_some() || b.mount.is_some() {
            return Err(types::Errno::Busy.into());
        }
        if a.volume != b.volume {
            return Err(types::Errno::Xdev.into());
        }
        Ok(())
    }

    /// The identity (wasmtime-wasi's metadata hash, whose lower half is a
    /// preview 1 `ino`) of what `target` names.
    async fn identity(&mut self, target: &Target) -> Result<u64, types::Error> {
        let hash = at!(self, target, |fs, dir, name| {
            HostDescriptor::metadata_hash_at(fs, dir, fs_types::PathFlags::empty(), name)
        });
        Ok(hash.lower)
    }

    /// Opens a resolved target through wasmtime-wasi's preview 1 table: as a
    /// path without symlinks or mount points from its volume's preopen,
    /// then checked to be the very object resolved.
    #[allow(clippy::too_many_arguments)]
    async fn open_target(
        &mut self,
        target: Target,
        oflags: types::Oflags,
        fs_rights_base: types::Rights,
        fs_rights_inheriting: types::Rights,
        fdflags: types::Fdflags,
    ) -> Result<types::Fd, types::Error> {
        let target = self.mount_root_of(target)?;
        if oflags.contains(types::Oflags::CREAT) {
            // Created here, beneath the resolved directory itself, so that
            // nothing renamed meanwhile can move where it is created.
            let mut create = fs_types::OpenFlags::CREATE;
            if oflags.contains(types::Oflags::EXCL) {
                create |= fs_types::OpenFlags::EXCLUSIVE;
            }
            let created = at!(self, target, |fs, dir, name| HostDescriptor::open_at(
                fs,
                dir,
                fs_types::PathFlags::empty(),
                name,
                create,
                fs_types::DescriptorFlags::WRITE
            ));
            self.drop_temporary(created)?;
        }
        let expected = self.identity(&target).await?;
        let preopen = self
            .preopens()?
            .iter()
            .find(|(_, v)| *v == target.volume)
            .map(|(fd, _)| *fd)
            .ok_or(types::Errno::Notcapable)?;
        let mut path = target.path().into_bytes();
        let len = u32::try_from(path.len()).map_err(|_| types::Errno::Nametoolong)?;
        let mut memory = GuestMemory::Unshared(&mut path);
        let truncate = oflags.contains(types::Oflags::TRUNC);
        let oflags = oflags - types::Oflags::CREAT - types::Oflags::EXCL - types::Oflags::TRUNC;
        let fd = Snapshot1::path_open(
            &mut self.inner,
            &mut memory,
            preopen.into(),
            types::Lookupflags::empty(),
            GuestPtr::new((0, len)),
            oflags,
            fs_rights_base,
            fs_rights_inheriting,
            fdflags,
        )
        .await?;
        let mut none = GuestMemory::Unshared(&mut []);
        let stat = Snapshot1::fd_filestat_get(&mut self.inner, &mut none, fd)
            .await
            .ok();
        if stat.as_ref().map(|s| s.ino) != Some(expected) {
            let _ = Snapshot1::fd_close(&mut self.inner, &mut none, fd).await;
            // Something on the way was renamed after it was resolved.
            return Err(types::Errno::Again.into());
        }
        if truncate
            && let Err(e) = Snapshot1::fd_filestat_set_size(&mut self.inner, &mut none, fd, 0).await
        {
            let _ = Snapshot1::fd_close(&mut self.inner, &mut none, fd).await;
            return Err(e);
        }
        if oflags.contains(types::Oflags::DIRECTORY)
            || matches!(stat, Some(s) if s.filetype == types::Filetype::Directory)
        {
            let held = match &target.dir {
                _ if target.name == "." => target.dir.dup(target.start.as_fd())?,
                dir => {
                    let parent = dir.dup(target.start.as_fd())?;
                    rustix::fs::openat(
                        &parent,
                        target.name.as_str(),
                        rustix::fs::OFlags::PATH
                            | rustix::fs::OFlags::DIRECTORY
                            | rustix::fs::OFlags::NOFOLLOW
                            | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .map_err(|e| types::Error::from(ErrorCode::from(std::io::Error::from(e))))?
                }
            };
            let grant = self.take()?;
            let rel = match target.name.as_str() {
                "." => target.rel.clone(),
                name => join(&target.rel, name),
            };
            self.dirs.insert(
                u32::from(fd),
                P1Dir {
                    fd: Arc::new(held),
                    volume: target.volume,
                    rel,
                    _grant: grant,
                },
            );
        }
        Ok(fd)
    }
}

fn follow_of(flags: types::Lookupflags) -> Follow {
    if flags.contains(types::Lookupflags::SYMLINK_FOLLOW) {
        Follow::Yes
    } else {
        Follow::No
    }
}

fn timestamp(
    set: bool,
    ts: types::Timestamp,
    now: bool,
) -> Result<fs_types::NewTimestamp, types::Error> {
    if set && now {
        return Err(types::Errno::Inval.into());
    }
    Ok(if set {
        fs_types::NewTimestamp::Timestamp(fs_types::Datetime {
            seconds: ts / 1_000_000_000,
            nanoseconds: (ts % 1_000_000_000) as u32,
        })
    } else if now {
        fs_types::NewTimestamp::Now
    } else {
        fs_types::NewTimestamp::NoChange
    })
}

impl Snapshot1 for WasiP1 {
    async fn fd_close(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<(), types::Error> {
        if self.fs.nested {
            // Preopens are told by their numbers: learn them before one goes.
            self.preopens()?;
        }
        Snapshot1::fd_close(&mut self.inner, memory, fd).await?;
        self.forget(u32::from(fd));
        Ok(())
    }

    async fn fd_renumber(
        &mut self,
        memory: &mut GuestMemory<'_>,
        from: types::Fd,
        to: types::Fd,
    ) -> Result<(), types::Error> {
        if self.fs.nested {
            self.preopens()?;
        }
        Snapshot1::fd_renumber(&mut self.inner, memory, from, to).await?;
        let (from, to) = (u32::from(from), u32::from(to));
        if from == to {
            return Ok(());
        }
        let file = self.files.remove(&from);
        let dir = self.dirs.remove(&from);
        let preopen = self
            .preopens
            .as_ref()
            .and_then(|p| p.iter().find(|(n, _)| *n == from).map(|(_, v)| *v));
        self.forget(from);
        self.forget(to);
        if let Some(file) = file {
            self.files.insert(to, file);
        }
        if let Some(dir) = dir {
            self.dirs.insert(to, dir);
        }
        if let (Some(volume), Some(preopens)) = (preopen, &mut self.preopens) {
            preopens.push((to, volume));
        }
        Ok(())
    }

    async fn fd_readdir(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        buf: GuestPtr<u8>,
        buf_len: types::Size,
        cookie: types::Dircookie,
    ) -> Result<types::Size, types::Error> {
        // wasmtime-wasi opens the directory again to list it, for the call.
        let _listing = self.take()?;
        Snapshot1::fd_readdir(&mut self.inner, memory, fd, buf, buf_len, cookie).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn path_open(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        dirflags: types::Lookupflags,
        path: GuestPtr<str>,
        oflags: types::Oflags,
        fs_rights_base: types::Rights,
        fs_rights_inheriting: types::Rights,
        fdflags: types::Fdflags,
    ) -> Result<types::Fd, types::Error> {
        let grant = self.take()?;
        let fd = match self.plan(memory, dirfd, path, follow_of(dirflags))? {
            None => {
                Snapshot1::path_open(
                    &mut self.inner,
                    memory,
                    dirfd,
                    dirflags,
                    path,
                    oflags,
                    fs_rights_base,
                    fs_rights_inheriting,
                    fdflags,
                )
                .await?
            }
            Some(target) => {
                self.open_target(
                    target,
                    oflags,
                    fs_rights_base,
                    fs_rights_inheriting,
                    fdflags,
                )
                .await?
            }
        };
        self.files.insert(u32::from(fd), grant);
        Ok(fd)
    }

    async fn path_create_directory(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        path: GuestPtr<str>,
    ) -> Result<(), types::Error> {
        let Some(target) = self.plan(memory, dirfd, path, Follow::No)? else {
            return Snapshot1::path_create_directory(&mut self.inner, memory, dirfd, path).await;
        };
        at!(self, target, |fs, dir, name| {
            HostDescriptor::create_directory_at(fs, dir, name)
        });
        Ok(())
    }

    async fn path_filestat_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        flags: types::Lookupflags,
        path: GuestPtr<str>,
    ) -> Result<types::Filestat, types::Error> {
        let Some(target) = self.plan(memory, dirfd, path, follow_of(flags))? else {
            return Snapshot1::path_filestat_get(&mut self.inner, memory, dirfd, flags, path).await;
        };
        let target = self.mount_root_of(target)?;
        let none = fs_types::PathFlags::empty();
        let stat = at!(self, target, |fs, dir, name| HostDescriptor::stat_at(
            fs, dir, none, name
        ));
        let ino = self.identity(&target).await?;
        let zero = fs_types::Datetime {
            seconds: 0,
            nanoseconds: 0,
        };
        Ok(types::Filestat {
            dev: 1,
            ino,
            filetype: stat.type_.try_into().map_err(types::Error::trap)?,
            nlink: stat.link_count,
            size: stat.size,
            atim: stat.data_access_timestamp.unwrap_or(zero).try_into()?,
            mtim: stat
                .data_modification_timestamp
                .unwrap_or(zero)
                .try_into()?,
            ctim: stat.status_change_timestamp.unwrap_or(zero).try_into()?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn path_filestat_set_times(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        flags: types::Lookupflags,
        path: GuestPtr<str>,
        atim: types::Timestamp,
        mtim: types::Timestamp,
        fst_flags: types::Fstflags,
    ) -> Result<(), types::Error> {
        let Some(target) = self.plan(memory, dirfd, path, follow_of(flags))? else {
            return Snapshot1::path_filestat_set_times(
                &mut self.inner,
                memory,
                dirfd,
                flags,
                path,
                atim,
                mtim,
                fst_flags,
            )
            .await;
        };
        let target = self.mount_root_of(target)?;
        let atim = timestamp(
            fst_flags.contains(types::Fstflags::ATIM),
            atim,
            fst_flags.contains(types::Fstflags::ATIM_NOW),
        )?;
        let mtim = timestamp(
            fst_flags.contains(types::Fstflags::MTIM),
            mtim,
            fst_flags.contains(types::Fstflags::MTIM_NOW),
        )?;
        let none = fs_types::PathFlags::empty();
        at!(self, target, |fs, dir, name| HostDescriptor::set_times_at(
            fs, dir, none, name, atim, mtim
        ));
        Ok(())
    }

    async fn path_link(
        &mut self,
        memory: &mut GuestMemory<'_>,
        src_fd: types::Fd,
        src_flags: types::Lookupflags,
        src_path: GuestPtr<str>,
        target_fd: types::Fd,
        target_path: GuestPtr<str>,
    ) -> Result<(), types::Error> {
        let from = self.plan(memory, src_fd, src_path, follow_of(src_flags))?;
        let to = self.plan(memory, target_fd, target_path, Follow::No)?;
        if from.is_none() && to.is_none() {
            return Snapshot1::path_link(
                &mut self.inner,
                memory,
                src_fd,
                src_flags,
                src_path,
                target_fd,
                target_path,
            )
            .await;
        }
        let (from, to) = self.both(
            memory,
            from,
            (src_fd, src_path, follow_of(src_flags)),
            to,
            (target_fd, target_path),
        )?;
        let (from_dir, to_dir) = (self.temporary(&from)?, self.temporary(&to)?);
        let result = HostDescriptor::link_at(
            &mut self.fs_view(),
            Resource::new_borrow(from_dir.rep()),
            fs_types::PathFlags::empty(),
            from.name.clone(),
            Resource::new_borrow(to_dir.rep()),
            to.name.clone(),
        )
        .await;
        self.drop_temporary(from_dir)?;
        self.drop_temporary(to_dir)?;
        Ok(result?)
    }

    async fn path_readlink(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        path: GuestPtr<str>,
        buf: GuestPtr<u8>,
        buf_len: types::Size,
    ) -> Result<types::Size, types::Error> {
        let Some(target) = self.plan(memory, dirfd, path, Follow::No)? else {
            return Snapshot1::path_readlink(&mut self.inner, memory, dirfd, path, buf, buf_len)
                .await;
        };
        let link = at!(self, target, |fs, dir, name| HostDescriptor::readlink_at(
            fs, dir, name
        ));
        let mut bytes = link.into_bytes();
        bytes.truncate(usize::try_from(buf_len).unwrap_or(usize::MAX));
        let n = u32::try_from(bytes.len()).map_err(|_| types::Errno::Overflow)?;
        memory.copy_from_slice(&bytes, buf.as_array(n))?;
        Ok(n)
    }

    async fn path_remove_directory(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        path: GuestPtr<str>,
    ) -> Result<(), types::Error> {
        let Some(target) = self.plan(memory, dirfd, path, Follow::No)? else {
            return Snapshot1::path_remove_directory(&mut self.inner, memory, dirfd, path).await;
        };
        if target.mount.is_some() {
            return Err(types::Errno::Busy.into());
        }
        at!(self, target, |fs, dir, name| {
            HostDescriptor::remove_directory_at(fs, dir, name)
        });
        Ok(())
    }

    async fn path_rename(
        &mut self,
        memory: &mut GuestMemory<'_>,
        src_fd: types::Fd,
        src_path: GuestPtr<str>,
        dest_fd: types::Fd,
        dest_path: GuestPtr<str>,
    ) -> Result<(), types::Error> {
        let from = self.plan(memory, src_fd, src_path, Follow::No)?;
        let to = self.plan(memory, dest_fd, dest_path, Follow::No)?;
        if from.is_none() && to.is_none() {
            return Snapshot1::path_rename(
                &mut self.inner,
                memory,
                src_fd,
                src_path,
                dest_fd,
                dest_path,
            )
            .await;
        }
        let (from, to) = self.both(
            memory,
            from,
            (src_fd, src_path, Follow::No),
            to,
            (dest_fd, dest_path),
        )?;
        let (from_dir, to_dir) = (self.temporary(&from)?, self.temporary(&to)?);
        let result = HostDescriptor::rename_at(
            &mut self.fs_view(),
            Resource::new_borrow(from_dir.rep()),
            from.name.clone(),
            Resource::new_borrow(to_dir.rep()),
            to.name.clone(),
        )
        .await;
        self.drop_temporary(from_dir)?;
        self.drop_temporary(to_dir)?;
        Ok(result?)
    }

    async fn path_symlink(
        &mut self,
        memory: &mut GuestMemory<'_>,
        src_path: GuestPtr<str>,
        dirfd: types::Fd,
        dest_path: GuestPtr<str>,
    ) -> Result<(), types::Error> {
        let Some(target) = self.plan(memory, dirfd, dest_path, Follow::No)? else {
            return Snapshot1::path_symlink(&mut self.inner, memory, src_path, dirfd, dest_path)
                .await;
        };
        let link_target = memory.as_cow_str(src_path)?.into_owned();
        at!(self, target, |fs, dir, name| HostDescriptor::symlink_at(
            fs,
            dir,
            link_target,
            name
        ));
        Ok(())
    }

    async fn path_unlink_file(
        &mut self,
        memory: &mut GuestMemory<'_>,
        dirfd: types::Fd,
        path: GuestPtr<str>,
    ) -> Result<(), types::Error> {
        let Some(target) = self.plan(memory, dirfd, path, Follow::No)? else {
            return Snapshot1::path_unlink_file(&mut self.inner, memory, dirfd, path).await;
        };
        if target.mount.is_some() {
            return Err(types::Errno::Busy.into());
        }
        at!(
            self,
            target,
            |fs, dir, name| HostDescriptor::unlink_file_at(fs, dir, name)
        );
        Ok(())
    }

    fn set_hostcall_fuel(&mut self, fuel: usize) {
        Snapshot1::set_hostcall_fuel(&mut self.inner, fuel)
    }

    fn args_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        argv: GuestPtr<GuestPtr<u8>>,
        argv_buf: GuestPtr<u8>,
    ) -> Result<(), types::Error> {
        Snapshot1::args_get(&mut self.inner, memory, argv, argv_buf)
    }

    fn args_sizes_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
    ) -> Result<(types::Size, types::Size), types::Error> {
        Snapshot1::args_sizes_get(&mut self.inner, memory)
    }

    fn environ_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        environ: GuestPtr<GuestPtr<u8>>,
        environ_buf: GuestPtr<u8>,
    ) -> Result<(), types::Error> {
        Snapshot1::environ_get(&mut self.inner, memory, environ, environ_buf)
    }

    fn environ_sizes_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
    ) -> Result<(types::Size, types::Size), types::Error> {
        Snapshot1::environ_sizes_get(&mut self.inner, memory)
    }

    fn clock_res_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        id: types::Clockid,
    ) -> Result<types::Timestamp, types::Error> {
        Snapshot1::clock_res_get(&mut self.inner, memory, id)
    }

    fn clock_time_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        id: types::Clockid,
        precision: types::Timestamp,
    ) -> Result<types::Timestamp, types::Error> {
        Snapshot1::clock_time_get(&mut self.inner, memory, id, precision)
    }

    async fn fd_advise(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_advise(&mut self.inner, memory, fd, offset, len, advice).await
    }

    fn fd_allocate(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        offset: types::Filesize,
        len: types::Filesize,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_allocate(&mut self.inner, memory, fd, offset, len)
    }

    async fn fd_datasync(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_datasync(&mut self.inner, memory, fd).await
    }

    async fn fd_fdstat_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<types::Fdstat, types::Error> {
        Snapshot1::fd_fdstat_get(&mut self.inner, memory, fd).await
    }

    fn fd_fdstat_set_flags(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        flags: types::Fdflags,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_fdstat_set_flags(&mut self.inner, memory, fd, flags)
    }

    fn fd_fdstat_set_rights(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        fs_rights_base: types::Rights,
        fs_rights_inheriting: types::Rights,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_fdstat_set_rights(
            &mut self.inner,
            memory,
            fd,
            fs_rights_base,
            fs_rights_inheriting,
        )
    }

    async fn fd_filestat_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<types::Filestat, types::Error> {
        Snapshot1::fd_filestat_get(&mut self.inner, memory, fd).await
    }

    async fn fd_filestat_set_size(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        size: types::Filesize,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_filestat_set_size(&mut self.inner, memory, fd, size).await
    }

    async fn fd_filestat_set_times(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        atim: types::Timestamp,
        mtim: types::Timestamp,
        fst_flags: types::Fstflags,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_filestat_set_times(&mut self.inner, memory, fd, atim, mtim, fst_flags).await
    }

    async fn fd_read(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        iovs: types::IovecArray,
    ) -> Result<types::Size, types::Error> {
        Snapshot1::fd_read(&mut self.inner, memory, fd, iovs).await
    }

    async fn fd_pread(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        iovs: types::IovecArray,
        offset: types::Filesize,
    ) -> Result<types::Size, types::Error> {
        Snapshot1::fd_pread(&mut self.inner, memory, fd, iovs, offset).await
    }

    async fn fd_write(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        ciovs: types::CiovecArray,
    ) -> Result<types::Size, types::Error> {
        Snapshot1::fd_write(&mut self.inner, memory, fd, ciovs).await
    }

    async fn fd_pwrite(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        ciovs: types::CiovecArray,
        offset: types::Filesize,
    ) -> Result<types::Size, types::Error> {
        Snapshot1::fd_pwrite(&mut self.inner, memory, fd, ciovs, offset).await
    }

    fn fd_prestat_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<types::Prestat, types::Error> {
        Snapshot1::fd_prestat_get(&mut self.inner, memory, fd)
    }

    fn fd_prestat_dir_name(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        path: GuestPtr<u8>,
        path_max_len: types::Size,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_prestat_dir_name(&mut self.inner, memory, fd, path, path_max_len)
    }

    async fn fd_seek(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        offset: types::Filedelta,
        whence: types::Whence,
    ) -> Result<types::Filesize, types::Error> {
        Snapshot1::fd_seek(&mut self.inner, memory, fd, offset, whence).await
    }

    async fn fd_sync(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<(), types::Error> {
        Snapshot1::fd_sync(&mut self.inner, memory, fd).await
    }

    fn fd_tell(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
    ) -> Result<types::Filesize, types::Error> {
        Snapshot1::fd_tell(&mut self.inner, memory, fd)
    }

    async fn poll_oneoff(
        &mut self,
        memory: &mut GuestMemory<'_>,
        subs: GuestPtr<types::Subscription>,
        events: GuestPtr<types::Event>,
        nsubscriptions: types::Size,
    ) -> Result<types::Size, types::Error> {
        Snapshot1::poll_oneoff(&mut self.inner, memory, subs, events, nsubscriptions).await
    }

    fn proc_exit(
        &mut self,
        memory: &mut GuestMemory<'_>,
        status: types::Exitcode,
    ) -> wasmtime::Error {
        Snapshot1::proc_exit(&mut self.inner, memory, status)
    }

    fn proc_raise(
        &mut self,
        memory: &mut GuestMemory<'_>,
        sig: types::Signal,
    ) -> Result<(), types::Error> {
        Snapshot1::proc_raise(&mut self.inner, memory, sig)
    }

    fn sched_yield(&mut self, memory: &mut GuestMemory<'_>) -> Result<(), types::Error> {
        Snapshot1::sched_yield(&mut self.inner, memory)
    }

    fn random_get(
        &mut self,
        memory: &mut GuestMemory<'_>,
        buf: GuestPtr<u8>,
        buf_len: types::Size,
    ) -> Result<(), types::Error> {
        Snapshot1::random_get(&mut self.inner, memory, buf, buf_len)
    }

    fn sock_accept(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        flags: types::Fdflags,
    ) -> Result<types::Fd, types::Error> {
        Snapshot1::sock_accept(&mut self.inner, memory, fd, flags)
    }

    fn sock_recv(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        ri_data: types::IovecArray,
        ri_flags: types::Riflags,
    ) -> Result<(types::Size, types::Roflags), types::Error> {
        Snapshot1::sock_recv(&mut self.inner, memory, fd, ri_data, ri_flags)
    }

    fn sock_send(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        si_data: types::CiovecArray,
        si_flags: types::Siflags,
    ) -> Result<types::Size, types::Error> {
        Snapshot1::sock_send(&mut self.inner, memory, fd, si_data, si_flags)
    }

    fn sock_shutdown(
        &mut self,
        memory: &mut GuestMemory<'_>,
        fd: types::Fd,
        how: types::Sdflags,
    ) -> Result<(), types::Error> {
        Snapshot1::sock_shutdown(&mut self.inner, memory, fd, how)
    }
}

impl WasiP1 {
    /// Both sides of a two-path call as targets, once one of them needed
    /// the mount table: the other is resolved too, and both must lie in
    /// one volume and name no mount point.
    fn both(
        &mut self,
        memory: &GuestMemory<'_>,
        from: Option<Target>,
        (from_fd, from_path, from_follow): (types::Fd, GuestPtr<str>, Follow),
        to: Option<Target>,
        (to_fd, to_path): (types::Fd, GuestPtr<str>),
    ) -> Result<(Target, Target), types::Error> {
        let from = match from {
            Some(t) => Some(t),
            None => self.plan_any(memory, from_fd, from_path, from_follow)?,
        };
        let to = match to {
            Some(t) => Some(t),
            None => self.plan_any(memory, to_fd, to_path, Follow::No)?,
        };
        // A side wrun does not know is in a volume without mounts, which
        // the other side is not in.
        let (Some(from), Some(to)) = (from, to) else {
            return Err(types::Errno::Xdev.into());
        };
        Self::same_volume(&from, &to)?;
        Ok((from, to))
    }
}
