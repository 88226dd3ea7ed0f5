//! `wasi:filesystem` (WASI 0.2) for components: wasmtime-wasi's own
//! implementation, behind the descriptor budget and the mount table.

use super::GuestFs;
use super::mounts::{Follow, Resolved};
use crate::volume::Access;
use rustix::fd::AsFd;
use std::sync::Arc;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::filesystem::{Descriptor, Dir, FsPerms, OpenMode, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::bindings::filesystem::{preopens, types};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi::p2::{FsError, FsResult};

/// What the filesystem host functions see of an instance's store.
pub struct FsView<'a> {
    pub fs: &'a mut GuestFs,
    pub ctx: &'a mut WasiCtx,
    pub table: &'a mut ResourceTable,
}

struct WrunFs;

impl HasData for WrunFs {
    type Data<'a> = FsView<'a>;
}

/// Replaces wasmtime-wasi's `wasi:filesystem/types` and `preopens` in
/// `linker` (which must already hold wasmtime-wasi's WASI 0.2 interfaces)
/// with wrun's.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> FsView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    types::add_to_linker::<T, WrunFs>(linker, get)?;
    preopens::add_to_linker::<T, WrunFs>(linker, get)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Where a path operation goes.
enum Plan {
    /// To wasmtime-wasi as the guest asked: nothing is mounted in the
    /// descriptor's volume.
    Direct,
    /// To entry `name` (a single component, or `.`) of directory `dir`, in
    /// `volume`; `temporary` when `dir` was made for this operation.
    At {
        dir: Resource<Descriptor>,
        temporary: bool,
        name: String,
        volume: usize,
        /// The volume mounted at the entry, if it is a mount point.
        mount: Option<usize>,
    },
}

impl Plan {
    /// The directory and name the operation acts on; `None` for `Direct`.
    fn target(&self) -> Option<(Resource<Descriptor>, String)> {
        match self {
            Plan::Direct => None,
            Plan::At { dir, name, .. } => Some((Resource::new_borrow(dir.rep()), name.clone())),
        }
    }

    fn is_mount_point(&self) -> bool {
        matches!(self, Plan::At { mount: Some(_), .. })
    }
}

impl FsView<'_> {
    fn inner(&mut self) -> WasiFilesystemCtxView<'_> {
        WasiFilesystemCtxView {
            ctx: self.ctx.filesystem(),
            table: self.table,
        }
    }

    /// Resolves `path` from `fd` through the mount table when `fd`'s volume
    /// has something mounted inside it.
    async fn plan(
        &mut self,
        fd: &Resource<Descriptor>,
        path: &str,
        follow: Follow,
    ) -> FsResult<Plan> {
        if !self.fs.nested {
            return Ok(Plan::Direct);
        }
        let Some(&volume) = self.fs.volumes.get(&fd.rep()) else {
            return Ok(Plan::Direct);
        };
        if !self.fs.mounts.has_mounts(volume) {
            return Ok(Plan::Direct);
        }
        let start = match self.table.get(fd)? {
            Descriptor::Dir(d) => d.dir.clone(),
            Descriptor::File(_) => return Err(ErrorCode::NotDirectory.into()),
        };
        let mounts = self.fs.mounts.clone();
        let budget = self.fs.budget.clone();
        let owned_path = path.to_owned();
        let walk = move || {
            let resolved =
                mounts.resolve(start.as_fd(), volume, "", &owned_path, follow, &budget)?;
            // Whether the entry is a mount point is asked here, on the
            // same thread, while the directory is held.
            let mount = match &resolved {
                Resolved::Entry {
                    dir, volume, name, ..
                } => mounts.mounted_at(start.as_fd(), dir, *volume, name),
                Resolved::Dir { .. } => None,
            };
            let dup = match &resolved {
                Resolved::Entry { dir, .. } | Resolved::Dir { dir, .. } if !dir.is_start() => {
                    Some(dir.dup(start.as_fd())?)
                }
                _ => None,
            };
            Ok::<_, ErrorCode>((resolved, mount, dup))
        };
        let (resolved, mount, dup) = if self.fs.blocking {
            walk()?
        } else {
            tokio::task::spawn_blocking(walk)
                .await
                .map_err(|_| ErrorCode::Io)??
        };
        let (volume, name) = match &resolved {
            Resolved::Entry { volume, name, .. } => (*volume, name.clone()),
            Resolved::Dir { volume, .. } => (*volume, ".".to_owned()),
        };
        let (dir, temporary) = match dup {
            None => (Resource::new_borrow(fd.rep()), false),
            Some(owned) => (self.temporary_dir(owned, volume)?, true),
        };
        Ok(Plan::At {
            dir,
            temporary,
            name,
            volume,
            mount,
        })
    }

    /// A plan for the root of the volume mounted at the entry a plan named,
    /// for operations that act on what is mounted there (stat, open).
    fn mount_root_of(&mut self, plan: Plan) -> FsResult<Plan> {
        let Plan::At {
            mount: Some(inner), ..
        } = plan
        else {
            return Ok(plan);
        };
        self.finish(plan)?;
        let root = self.fs.mounts.dup_root(inner)?;
        Ok(Plan::At {
            dir: self.temporary_dir(root, inner)?,
            temporary: true,
            name: ".".to_owned(),
            volume: inner,
            mount: None,
        })
    }

    /// A descriptor for a directory the walk reached, with its volume's
    /// access, for one operation.
    fn temporary_dir(
        &mut self,
        fd: rustix::fd::OwnedFd,
        volume: usize,
    ) -> FsResult<Resource<Descriptor>> {
        let perms = match self.fs.access(volume) {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        let dir = Dir::new(
            std::fs::File::from(fd),
            perms,
            OpenMode::READ,
            self.fs.blocking,
        );
        Ok(self.table.push(Descriptor::Dir(dir))?)
    }

    /// Removes a plan's temporary descriptor.
    fn finish(&mut self, plan: Plan) -> FsResult<()> {
        if let Plan::At {
            dir,
            temporary: true,
            ..
        } = plan
        {
            self.table.delete(dir)?;
        }
        Ok(())
    }

    /// Records a descriptor just opened: its volume, and its host handle
    /// against the grant taken for it.
    fn opened(
        &mut self,
        fd: &Resource<Descriptor>,
        volume: Option<usize>,
        grant: crate::fds::FdGrant,
    ) -> FsResult<()> {
        let file = match self.table.get(fd)? {
            Descriptor::Dir(d) => d.dir.clone(),
            Descriptor::File(f) => f.file.clone(),
        };
        self.fs.opened(&file, grant);
        if let Some(volume) = volume {
            self.fs.volumes.insert(fd.rep(), volume);
        }
        Ok(())
    }

    /// The volume of descriptor `fd`, when volumes are tracked.
    fn volume_of(&self, fd: &Resource<Descriptor>) -> Option<usize> {
        self.fs.volumes.get(&fd.rep()).copied()
    }
}

fn without_follow(flags: types::PathFlags) -> types::PathFlags {
    let _ = flags;
    // The only path flag there is.
    types::PathFlags::empty()
}

fn follow_of(flags: types::PathFlags) -> Follow {
    if flags.contains(types::PathFlags::SYMLINK_FOLLOW) {
        Follow::Yes
    } else {
        Follow::No
    }
}

fn quota(_: crate::fds::FdExhausted) -> FsError {
    // WASI 0.2 has no EMFILE for files: `quota` says what happened.
    ErrorCode::Quota.into()
}

impl types::Host for FsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.inner(), err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.inner(), err)
    }
}

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let dirs = preopens::Host::get_directories(&mut self.inner())?;
        if self.fs.nested {
            for (fd, name) in &dirs {
                if let Some((_, volume)) = self.fs.preopens.iter().find(|(n, _)| n == name) {
                    self.fs.volumes.insert(fd.rep(), *volume);
                }
            }
        }
        Ok(dirs)
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.inner(), stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.inner(), stream)
    }
}

impl HostDescriptor for FsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.inner(), fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.inner(), fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.inner(), fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        HostDescriptor::get_type(&mut self.inner(), fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        HostDescriptor::set_size(&mut self.inner(), fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.inner(), fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.inner(), fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        HostDescriptor::write(&mut self.inner(), fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        // wasmtime-wasi opens the directory again to list it, and closes it
        // before returning: one descriptor for the length of the call.
        let _listing = self.fs.take().map_err(quota)?;
        HostDescriptor::read_directory(&mut self.inner(), fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.inner(), fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let plan = self.plan(&fd, &path, Follow::No).await?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::create_directory_at(&mut self.inner(), fd, path).await;
        };
        let result = HostDescriptor::create_directory_at(&mut self.inner(), dir, name).await;
        self.finish(plan)?;
        result
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.inner(), fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let plan = self.plan(&fd, &path, follow_of(path_flags)).await?;
        let plan = self.mount_root_of(plan)?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::stat_at(&mut self.inner(), fd, path_flags, path).await;
        };
        let flags = without_follow(path_flags);
        let result = HostDescriptor::stat_at(&mut self.inner(), dir, flags, name).await;
        self.finish(plan)?;
        result
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let plan = self.plan(&fd, &path, follow_of(path_flags)).await?;
        let plan = self.mount_root_of(plan)?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::set_times_at(
                &mut self.inner(),
                fd,
                path_flags,
                path,
                atim,
                mtim,
            )
            .await;
        };
        let flags = without_follow(path_flags);
        let result =
            HostDescriptor::set_times_at(&mut self.inner(), dir, flags, name, atim, mtim).await;
        self.finish(plan)?;
        result
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (old, new) = self
            .plan_pair(
                &fd,
                &old_path,
                follow_of(old_path_flags),
                &new_descriptor,
                &new_path,
            )
            .await?;
        let result = match (&old, &new) {
            (Plan::Direct, Plan::Direct) => {
                HostDescriptor::link_at(
                    &mut self.inner(),
                    fd,
                    old_path_flags,
                    old_path,
                    new_descriptor,
                    new_path,
                )
                .await
            }
            _ => {
                let (old_dir, old_name, old_volume) = self.side(&old, &fd, &old_path);
                let (new_dir, new_name, new_volume) = self.side(&new, &new_descriptor, &new_path);
                if old_volume != new_volume {
                    // As across two bind mounts, even of one host filesystem.
                    Err(ErrorCode::CrossDevice.into())
                } else {
                    let flags = without_follow(old_path_flags);
                    HostDescriptor::link_at(
                        &mut self.inner(),
                        old_dir,
                        flags,
                        old_name,
                        new_dir,
                        new_name,
                    )
                    .await
                }
            }
        };
        self.finish(old)?;
        self.finish(new)?;
        result
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let grant = self.fs.take().map_err(quota)?;
        let plan = self.plan(&fd, &path, follow_of(path_flags)).await?;
        let plan = self.mount_root_of(plan)?;
        let (opened, volume) = match plan.target() {
            None => {
                let volume = self.volume_of(&fd);
                let opened =
                    HostDescriptor::open_at(&mut self.inner(), fd, path_flags, path, oflags, flags)
                        .await;
                (opened, volume)
            }
            Some((dir, name)) => {
                let path_flags = without_follow(path_flags);
                let opened = HostDescriptor::open_at(
                    &mut self.inner(),
                    dir,
                    path_flags,
                    name,
                    oflags,
                    flags,
                )
                .await;
                let volume = match &plan {
                    Plan::At { volume, .. } => Some(*volume),
                    Plan::Direct => None,
                };
                self.finish(plan)?;
                (opened, volume)
            }
        };
        let opened = opened?;
        self.opened(&opened, volume.filter(|_| self.fs.nested), grant)?;
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        let rep = fd.rep();
        let key = match self.table.get(&fd)? {
            Descriptor::Dir(d) => Arc::as_ptr(&d.dir) as usize,
            Descriptor::File(f) => Arc::as_ptr(&f.file) as usize,
        };
        HostDescriptor::drop(&mut self.inner(), fd)?;
        self.fs.volumes.remove(&rep);
        self.fs.closed(key);
        Ok(())
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let plan = self.plan(&fd, &path, Follow::No).await?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::readlink_at(&mut self.inner(), fd, path).await;
        };
        let result = HostDescriptor::readlink_at(&mut self.inner(), dir, name).await;
        self.finish(plan)?;
        result
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let plan = self.plan(&fd, &path, Follow::No).await?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::remove_directory_at(&mut self.inner(), fd, path).await;
        };
        let result = if plan.is_mount_point() {
            Err(ErrorCode::Busy.into())
        } else {
            HostDescriptor::remove_directory_at(&mut self.inner(), dir, name).await
        };
        self.finish(plan)?;
        result
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let (old, new) = self
            .plan_pair(&fd, &old_path, Follow::No, &new_fd, &new_path)
            .await?;
        let result = match (&old, &new) {
            (Plan::Direct, Plan::Direct) => {
                HostDescriptor::rename_at(&mut self.inner(), fd, old_path, new_fd, new_path).await
            }
            // A mount point cannot be moved, nor replaced.
            _ if old.is_mount_point() || new.is_mount_point() => Err(ErrorCode::Busy.into()),
            _ => {
                let (old_dir, old_name, old_volume) = self.side(&old, &fd, &old_path);
                let (new_dir, new_name, new_volume) = self.side(&new, &new_fd, &new_path);
                if old_volume != new_volume {
                    Err(ErrorCode::CrossDevice.into())
                } else {
                    HostDescriptor::rename_at(
                        &mut self.inner(),
                        old_dir,
                        old_name,
                        new_dir,
                        new_name,
                    )
                    .await
                }
            }
        };
        self.finish(old)?;
        self.finish(new)?;
        result
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let plan = self.plan(&fd, &dest_path, Follow::No).await?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::symlink_at(&mut self.inner(), fd, src_path, dest_path).await;
        };
        let result = HostDescriptor::symlink_at(&mut self.inner(), dir, src_path, name).await;
        self.finish(plan)?;
        result
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let plan = self.plan(&fd, &path, Follow::No).await?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::unlink_file_at(&mut self.inner(), fd, path).await;
        };
        let result = if plan.is_mount_point() {
            Err(ErrorCode::Busy.into())
        } else {
            HostDescriptor::unlink_file_at(&mut self.inner(), dir, name).await
        };
        self.finish(plan)?;
        result
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        HostDescriptor::read_via_stream(&mut self.inner(), fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        HostDescriptor::write_via_stream(&mut self.inner(), fd, offset)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        HostDescriptor::append_via_stream(&mut self.inner(), fd)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.inner(), a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.inner(), fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let plan = self.plan(&fd, &path, follow_of(path_flags)).await?;
        let plan = self.mount_root_of(plan)?;
        let Some((dir, name)) = plan.target() else {
            return HostDescriptor::metadata_hash_at(&mut self.inner(), fd, path_flags, path).await;
        };
        let flags = without_follow(path_flags);
        let result = HostDescriptor::metadata_hash_at(&mut self.inner(), dir, flags, name).await;
        self.finish(plan)?;
        result
    }
}

impl FsView<'_> {
    /// Plans both paths of a two-path operation; the first plan is undone
    /// if the second fails.
    async fn plan_pair(
        &mut self,
        old_fd: &Resource<Descriptor>,
        old_path: &str,
        old_follow: Follow,
        new_fd: &Resource<Descriptor>,
        new_path: &str,
    ) -> FsResult<(Plan, Plan)> {
        let old = self.plan(old_fd, old_path, old_follow).await?;
        match self.plan(new_fd, new_path, Follow::No).await {
            Ok(new) => Ok((old, new)),
            Err(e) => {
                self.finish(old)?;
                Err(e)
            }
        }
    }

    /// One side of a two-path operation: the directory, name and volume it
    /// acts on.
    fn side(
        &self,
        plan: &Plan,
        fd: &Resource<Descriptor>,
        path: &str,
    ) -> (Resource<Descriptor>, String, Option<usize>) {
        match plan {
            Plan::Direct => (
                Resource::new_borrow(fd.rep()),
                path.to_owned(),
                self.volume_of(fd),
            ),
            Plan::At {
                dir, name, volume, ..
            } => (Resource::new_borrow(dir.rep()), name.clone(), Some(*volume)),
        }
    }
}
