//! The mount table: which volume a guest path is in, for volumes nested in
//! other volumes.
//!
//! `-v ./app:/app -v ./app/config:/app/config:ro` gives the guest two
//! preopens, and wasi-libc sends `/app/config/x` to the inner one by longest
//! prefix. But `/app/./config/x`, `/app/link/x` (a symlink to `config`), or a
//! descriptor for `/app` opened earlier all resolve through the outer
//! volume's host directory, whose `config` is the host directory the inner
//! volume shadows. As a bind mount in Docker shadows what is under it, the
//! inner volume must win for every spelling and every handle.
//!
//! So for a volume with others nested in it, wrun resolves guest paths
//! itself, one component at a time beneath the directory the guest named,
//! like the kernel's path walk: it follows symlinks (relative ones only; an
//! absolute target leaves the volume and is refused, as wasmtime-wasi
//! refuses it), refuses `..` above the starting directory, and, when a
//! directory it enters is a mount point (compared by device and inode,
//! whatever the spelling), continues in the inner volume's root with that
//! volume's access. Each level is held as an open descriptor, so nothing
//! the guest or the host renames meanwhile can move the walk elsewhere. The
//! operation itself then runs on the last directory with a single-component
//! name that is not followed, so it cannot be redirected either.
//!
//! Volumes with nothing nested in them are not walked at all: wasmtime-wasi
//! resolves their paths as before.

use crate::fds::{FdBudget, FdGrant};
use crate::volume::{Access, Volume, is_within};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::VecDeque;
use std::sync::Arc;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

/// Symlinks one resolution may follow, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;
/// Directory levels one resolution may hold open at once.
const MAX_DEPTH: usize = 256;

/// A directory inside a volume where another volume is mounted.
#[derive(Debug)]
struct MountPoint {
    dev: u64,
    ino: u64,
    /// The volume mounted there.
    inner: usize,
}

#[derive(Debug)]
struct VolumeEntry {
    /// The volume's host directory, opened once for the instance.
    root: Arc<OwnedFd>,
    access: Access,
    points: Vec<MountPoint>,
}

/// The volumes of one instance, with the mount points nested in each.
#[derive(Debug, Default)]
pub(crate) struct MountTable {
    volumes: Vec<VolumeEntry>,
}

/// Where a guest path leads.
pub(crate) enum Resolved {
    /// The entry `name` (one component, not `.` or `..`, maybe absent) in
    /// directory `dir` of volume `volume`, which lies at `rel` (no symlinks,
    /// no `..`) from the volume's root.
    Entry {
        dir: Level,
        volume: usize,
        rel: String,
        name: String,
    },
    /// Directory `dir` itself (the path ended in a directory that was
    /// followed, or in `.` or `..`), at `rel` from its volume's root.
    Dir {
        dir: Level,
        volume: usize,
        rel: String,
    },
}

/// One directory of a walk: the starting descriptor, or one the walk
/// opened (counted against the instance's descriptors while held).
pub(crate) enum Level {
    Start,
    Opened(Arc<OwnedFd>, Arc<FdGrant>),
}

impl Level {
    pub(crate) fn is_start(&self) -> bool {
        matches!(self, Level::Start)
    }

    fn fd<'a>(&'a self, start: BorrowedFd<'a>) -> BorrowedFd<'a> {
        match self {
            Level::Start => start,
            Level::Opened(fd, _) => fd.as_fd(),
        }
    }

    /// The directory as an owned descriptor (a duplicate), for handing to
    /// wasmtime-wasi.
    pub(crate) fn dup(&self, start: BorrowedFd<'_>) -> Result<OwnedFd, ErrorCode> {
        rustix::io::fcntl_dupfd_cloexec(self.fd(start), 0).map_err(errno)
    }
}

impl Clone for Level {
    fn clone(&self) -> Level {
        match self {
            Level::Start => Level::Start,
            Level::Opened(fd, grant) => Level::Opened(fd.clone(), grant.clone()),
        }
    }
}

/// Whether a resolution follows a symlink in the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    Yes,
    No,
}

impl MountTable {
    /// The table for `volumes`: each volume's host directory opened, and the
    /// mount points nested in each found (and, in a read-write volume,
    /// created when missing, as Docker creates a bind mount's target).
    pub(crate) fn new(volumes: &[Volume]) -> std::io::Result<MountTable> {
        let mut entries = Vec::with_capacity(volumes.len());
        for volume in volumes {
            let root = rustix::fs::open(&volume.host, dir_flags(), Mode::empty())?;
            entries.push(VolumeEntry {
                root: Arc::new(root),
                access: volume.access,
                points: Vec::new(),
            });
        }
        for (inner, volume) in volumes.iter().enumerate() {
            // The nearest enclosing volume holds the mount point; one nested
            // deeper is that volume's own.
            let Some(outer) = volumes
                .iter()
                .enumerate()
                .filter(|(i, v)| *i != inner && v.guest != volume.guest)
                .filter(|(_, v)| is_within(&volume.guest, &v.guest))
                .max_by_key(|(_, v)| v.guest.len())
                .map(|(i, _)| i)
            else {
                continue;
            };
            let outer_guest = &volumes[outer].guest;
            let relative = volume.guest[outer_guest.len()..].trim_start_matches('/');
            let entry = &entries[outer];
            let dir = match find_or_create(&entry.root, relative, entry.access)? {
                Some(dir) => dir,
                // A read-only volume lacking the directory: the guest cannot
                // reach the mount point through it at all.
                None => continue,
            };
            let (dev, ino) = identity(&rustix::fs::fstat(&dir)?);
            entries[outer].points.push(MountPoint { dev, ino, inner });
        }
        Ok(MountTable { volumes: entries })
    }

    /// Whether paths in `volume` need wrun's own resolution (something is
    /// mounted inside it).
    pub(crate) fn has_mounts(&self, volume: usize) -> bool {
        self.volumes
            .get(volume)
            .is_some_and(|v| !v.points.is_empty())
    }

    pub(crate) fn access(&self, volume: usize) -> Access {
        self.volumes
            .get(volume)
            .map_or(Access::ReadOnly, |v| v.access)
    }

    /// The volume mounted at entry `name` of `dir` (in `volume`), if that
    /// entry is a mount point.
    pub(crate) fn mounted_at(
        &self,
        start: BorrowedFd<'_>,
        dir: &Level,
        volume: usize,
        name: &str,
    ) -> Option<usize> {
        let points = &self.volumes.get(volume)?.points;
        if points.is_empty() {
            return None;
        }
        let stat = rustix::fs::statat(dir.fd(start), name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        self.point(volume, &stat)
    }

    fn point(&self, volume: usize, stat: &rustix::fs::Stat) -> Option<usize> {
        let points = &self.volumes.get(volume)?.points;
        let (dev, ino) = identity(stat);
        points
            .iter()
            .find(|p| p.dev == dev && p.ino == ino)
            .map(|p| p.inner)
    }

    /// The root of `volume` as a walk level.
    fn root_level(&self, volume: usize) -> Result<Level, ErrorCode> {
        let entry = self.volumes.get(volume).ok_or(ErrorCode::BadDescriptor)?;
        // The volume's root is held for the whole instance already.
        Ok(Level::Opened(entry.root.clone(), Arc::new(FdGrant::none())))
    }

    /// A new descriptor for the root of `volume`.
    pub(crate) fn dup_root(&self, volume: usize) -> Result<OwnedFd, ErrorCode> {
        let entry = self.volumes.get(volume).ok_or(ErrorCode::BadDescriptor)?;
        rustix::io::fcntl_dupfd_cloexec(&*entry.root, 0).map_err(errno)
    }

    /// Resolves `path` beneath `start` (a directory of `volume`, at
    /// `start_rel` from its root), honouring the mount points. Held levels
    /// are counted against `budget`.
    pub(crate) fn resolve(
        &self,
        start: BorrowedFd<'_>,
        volume: usize,
        start_rel: &str,
        path: &str,
        follow: Follow,
        budget: &Arc<FdBudget>,
    ) -> Result<Resolved, ErrorCode> {
        if path.is_empty() {
            return Err(ErrorCode::NoEntry);
        }
        if path.starts_with('/') {
            // As wasmtime-wasi answers a path that leads outside.
            return Err(ErrorCode::NotPermitted);
        }
        let mut queue: VecDeque<String> = components(path);
        let mut must_be_dir = path.ends_with('/');
        let mut stack: Vec<(Level, usize, String)> =
            vec![(Level::Start, volume, start_rel.to_owned())];
        let mut symlinks = 0;
        while let Some(component) = queue.pop_front() {
            let last = queue.is_empty();
            let (dir, vol, rel) = stack.last().cloned().ok_or(ErrorCode::NotPermitted)?;
            match component.as_str() {
                "." => {}
                ".." => {
                    if stack.len() == 1 {
                        return Err(ErrorCode::NotPermitted);
                    }
                    stack.pop();
                }
                name => {
                    let follow_this = !last || follow == Follow::Yes || must_be_dir;
                    let stat =
                        match rustix::fs::statat(dir.fd(start), name, AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(stat) => stat,
                            Err(rustix::io::Errno::NOENT) if last => {
                                return Ok(Resolved::Entry {
                                    dir,
                                    volume: vol,
                                    rel,
                                    name: name.to_owned(),
                                });
                            }
                            Err(e) => return Err(errno(e)),
                        };
                    let kind = FileType::from_raw_mode(stat.st_mode);
                    if !follow_this {
                        return Ok(Resolved::Entry {
                            dir,
                            volume: vol,
                            rel,
                            name: name.to_owned(),
                        });
                    }
                    match kind {
                        FileType::Symlink => {
                            symlinks += 1;
                            if symlinks > MAX_SYMLINKS {
                                return Err(ErrorCode::Loop);
                            }
                            let target = rustix::fs::readlinkat(dir.fd(start), name, Vec::new())
                                .map_err(errno)?;
                            let target = target
                                .to_str()
                                .map_err(|_| ErrorCode::IllegalByteSequence)?;
                            if target.starts_with('/') || target.is_empty() {
                                return Err(ErrorCode::NotPermitted);
                            }
                            if last && target.ends_with('/') {
                                must_be_dir = true;
                            }
                            for c in components(target).into_iter().rev() {
                                queue.push_front(c);
                            }
                        }
                        FileType::Directory => {
                            if stack.len() >= MAX_DEPTH {
                                return Err(ErrorCode::NameTooLong);
                            }
                            let level = match self.point(vol, &stat) {
                                Some(inner) => {
                                    stack.push((self.root_level(inner)?, inner, String::new()));
                                    continue;
                                }
                                None => self.open_level(dir.fd(start), name, &stat, budget)?,
                            };
                            stack.push((level, vol, join(&rel, name)));
                        }
                        _ if last && !must_be_dir => {
                            return Ok(Resolved::Entry {
                                dir,
                                volume: vol,
                                rel,
                                name: name.to_owned(),
                            });
                        }
                        _ => return Err(ErrorCode::NotDirectory),
                    }
                }
            }
        }
        let (dir, volume, rel) = stack.pop().ok_or(ErrorCode::NotPermitted)?;
        Ok(Resolved::Dir { dir, volume, rel })
    }

    /// Opens directory `name` of `dir`, checking that it is the one `stat`
    /// described (not swapped for a symlink meanwhile).
    fn open_level(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        stat: &rustix::fs::Stat,
        budget: &Arc<FdBudget>,
    ) -> Result<Level, ErrorCode> {
        let grant = budget.take(1).map_err(|_| ErrorCode::Quota)?;
        let fd = rustix::fs::openat(dir, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty())
            .map_err(errno)?;
        let opened = rustix::fs::fstat(&fd).map_err(errno)?;
        if opened.st_dev != stat.st_dev || opened.st_ino != stat.st_ino {
            return Err(ErrorCode::Busy);
        }
        Ok(Level::Opened(Arc::new(fd), Arc::new(grant)))
    }
}

/// A file's device and inode, which name it whatever path led to it.
#[allow(clippy::unnecessary_cast)] // `st_dev` and `st_ino` differ in type by platform
fn identity(stat: &rustix::fs::Stat) -> (u64, u64) {
    (stat.st_dev as u64, stat.st_ino as u64)
}

/// `dir/name`, or `name` at the root.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Splits a path into its components, dropping empty ones (`a//b`).
fn components(path: &str) -> VecDeque<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Flags for a directory handle used only to resolve paths beneath it.
fn dir_flags() -> OFlags {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    flags
}

/// Opens `relative` beneath `root`, following symlinks that stay inside;
/// creates the missing directories when `access` allows. `None` when it is
/// missing in a read-only volume.
fn find_or_create(
    root: &OwnedFd,
    relative: &str,
    access: Access,
) -> std::io::Result<Option<OwnedFd>> {
    let table = MountTable::default();
    let budget = FdBudget::root(usize::MAX);
    let resolve = |path: &str| {
        table
            .resolve(root.as_fd(), 0, "", path, Follow::Yes, &budget)
            .map_err(|e| std::io::Error::other(format!("cannot resolve `{relative}`: {e:?}")))
    };
    let parts: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
    for end in 1..=parts.len() {
        // A trailing slash: the last component must be a directory.
        let prefix = format!("{}/", parts[..end].join("/"));
        if let Resolved::Entry { dir, name, .. } = resolve(&prefix)? {
            if access == Access::ReadOnly {
                return Ok(None);
            }
            rustix::fs::mkdirat(
                dir.fd(root.as_fd()),
                name.as_str(),
                Mode::from_raw_mode(0o755),
            )?;
        }
    }
    match resolve(&format!("{relative}/"))? {
        Resolved::Dir { dir, .. } => Ok(Some(
            dir.dup(root.as_fd())
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?,
        )),
        Resolved::Entry { .. } => Err(std::io::Error::other(format!(
            "`{relative}` is not a directory"
        ))),
    }
}

/// A host error as the guest's error code.
pub(crate) fn errno(e: rustix::io::Errno) -> ErrorCode {
    ErrorCode::from(std::io::Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn volume(host: &Path, guest: &str, access: Access) -> Volume {
        Volume {
            host: host.to_owned(),
            guest: guest.to_owned(),
            access,
        }
    }

    /// `outer/` with `cfg/` mounted from `inner/` at `/app/cfg`, and links.
    fn layout() -> (tempfile::TempDir, MountTable) {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join("outer");
        std::fs::create_dir_all(outer.join("cfg")).unwrap();
        std::fs::create_dir_all(outer.join("a/b")).unwrap();
        std::fs::create_dir(dir.path().join("inner")).unwrap();
        std::os::unix::fs::symlink("cfg", outer.join("to_cfg")).unwrap();
        std::os::unix::fs::symlink("a/../to_cfg", outer.join("twisted")).unwrap();
        std::os::unix::fs::symlink("/etc", outer.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop2", outer.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", outer.join("loop2")).unwrap();
        let table = MountTable::new(&[
            volume(&outer, "/app", Access::ReadWrite),
            volume(&dir.path().join("inner"), "/app/cfg", Access::ReadOnly),
        ])
        .unwrap();
        (dir, table)
    }

    fn resolve(
        table: &MountTable,
        path: &str,
        follow: Follow,
    ) -> Result<(usize, String, String), ErrorCode> {
        let budget = FdBudget::root(1000);
        let root = table.dup_root(0).unwrap();
        Ok(
            match table.resolve(root.as_fd(), 0, "", path, follow, &budget)? {
                Resolved::Entry {
                    volume, rel, name, ..
                } => (volume, rel, name),
                Resolved::Dir { volume, rel, .. } => (volume, rel, ".".to_owned()),
            },
        )
    }

    #[test]
    fn every_spelling_of_a_mount_point_enters_it() {
        let (_dir, table) = layout();
        for path in [
            "cfg/x",
            "./cfg/x",
            "cfg//x",
            "a/../cfg/x",
            "a/b/../../cfg/x",
            "to_cfg/x",
            "twisted/x",
        ] {
            assert_eq!(
                resolve(&table, path, Follow::Yes).unwrap(),
                (1, String::new(), "x".to_owned()),
                "{path}"
            );
        }
        // `..` at the inner root goes back to the outer volume, as at a mount.
        assert_eq!(
            resolve(&table, "cfg/../a/x", Follow::Yes).unwrap(),
            (0, "a".to_owned(), "x".to_owned())
        );
        // The mount point itself, not followed, is an entry of the outer one.
        assert_eq!(
            resolve(&table, "cfg", Follow::No).unwrap(),
            (0, String::new(), "cfg".to_owned())
        );
        assert_eq!(
            resolve(&table, "cfg", Follow::Yes).unwrap(),
            (1, String::new(), ".".to_owned())
        );
    }

    #[test]
    fn escapes_and_loops_are_refused() {
        let (_dir, table) = layout();
        assert_eq!(
            resolve(&table, "..", Follow::Yes).unwrap_err(),
            ErrorCode::NotPermitted
        );
        assert_eq!(
            resolve(&table, "a/../../x", Follow::Yes).unwrap_err(),
            ErrorCode::NotPermitted
        );
        assert_eq!(
            resolve(&table, "/etc/passwd", Follow::Yes).unwrap_err(),
            ErrorCode::NotPermitted
        );
        assert_eq!(
            resolve(&table, "abs/passwd", Follow::Yes).unwrap_err(),
            ErrorCode::NotPermitted
        );
        assert_eq!(
            resolve(&table, "loop1", Follow::Yes).unwrap_err(),
            ErrorCode::Loop
        );
        assert_eq!(
            resolve(&table, "", Follow::Yes).unwrap_err(),
            ErrorCode::NoEntry
        );
        assert_eq!(
            resolve(&table, "missing/x", Follow::Yes).unwrap_err(),
            ErrorCode::NoEntry
        );
        // A missing last component is an entry to create.
        assert_eq!(
            resolve(&table, "a/new", Follow::Yes).unwrap(),
            (0, "a".to_owned(), "new".to_owned())
        );
    }

    #[test]
    fn held_levels_count_against_the_budget() {
        let (_dir, table) = layout();
        let root = table.dup_root(0).unwrap();
        let tight = FdBudget::root(1);
        assert_eq!(
            table
                .resolve(root.as_fd(), 0, "", "a/b/x", Follow::Yes, &tight)
                .err(),
            Some(ErrorCode::Quota)
        );
        assert_eq!(tight.used(), 0);
    }

    #[test]
    fn a_read_only_volume_is_not_given_a_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ro")).unwrap();
        std::fs::create_dir(dir.path().join("rw")).unwrap();
        let table = MountTable::new(&[
            volume(&dir.path().join("ro"), "/app", Access::ReadOnly),
            volume(&dir.path().join("rw"), "/app/data", Access::ReadWrite),
        ])
        .unwrap();
        assert!(!table.has_mounts(0));
        assert!(!dir.path().join("ro/data").exists());
    }
}
