//! Volumes: host directories mapped into the guest's filesystem namespace.
//!
//! A volume is a wasmtime-wasi preopen. Every guest path is resolved beneath the
//! directory handle opened here (`openat2` with `RESOLVE_BENEATH` on Linux, or
//! cap-std's component-by-component resolution elsewhere), so `..`, absolute
//! paths and symlinks, existing or created by the guest, cannot leave it.
//! [`Access::ReadOnly`] makes every mutation (create, write, truncate, rename,
//! delete, link, metadata changes) fail inside the guest with `EPERM`.

use std::fmt;
use std::path::{Path, PathBuf};

/// How a guest may use a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// A host directory mapped to an absolute guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host directory, as the user gave it (relative paths are relative to
    /// wrun's working directory).
    pub host: PathBuf,
    /// The normalised absolute guest path, e.g. `/data` or `/`.
    pub guest: String,
    pub access: Access,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeError {
    #[error("invalid volume `{spec}`: expected HOST:GUEST[:ro|:rw]")]
    Syntax { spec: String },
    #[error(
        "invalid volume `{spec}`: `{host}` is not a path, and named volumes are not supported yet; \
         write `./{host}` for a directory"
    )]
    NamedVolume { spec: String, host: String },
    #[error("invalid volume `{spec}`: unknown mode `{mode}` (expected `ro` or `rw`)")]
    Mode { spec: String, mode: String },
    #[error("invalid guest path `{guest}`: {reason}")]
    GuestPath { guest: String, reason: &'static str },
    #[error("failed to open volume source `{}`: no such directory", host.display())]
    HostMissing { host: PathBuf },
    #[error("failed to open volume source `{}`: not a directory", host.display())]
    HostNotDirectory { host: PathBuf },
    #[error("failed to open volume source `{}`: {reason}", host.display())]
    HostUnreadable { host: PathBuf, reason: String },
    #[error("duplicate mount point `{guest}`: two volumes map to the same guest path")]
    Duplicate { guest: String },
}

impl Volume {
    /// Parses Docker's bind-mount syntax: `HOST:GUEST`, `HOST:GUEST:ro` or
    /// `HOST:GUEST:rw`. HOST must look like a path (contain a `/`, or be `.` or
    /// `..`): a bare name is Docker's named volume, which is refused for now
    /// rather than silently read as a relative directory.
    pub fn parse(spec: &str) -> Result<Volume, VolumeError> {
        let syntax = || VolumeError::Syntax {
            spec: crate::input::excerpt(spec).to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, guest, mode) = match parts.as_slice() {
            [host, guest] => (*host, *guest, None),
            [host, guest, mode] => (*host, *guest, Some(*mode)),
            _ => return Err(syntax()),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(syntax());
        }
        if !host.contains('/') && host != "." && host != ".." {
            return Err(VolumeError::NamedVolume {
                spec: crate::input::excerpt(spec).to_string(),
                host: crate::input::excerpt(host).to_string(),
            });
        }
        let access = match mode {
            None | Some("rw") => Access::ReadWrite,
            Some("ro") => Access::ReadOnly,
            Some(other) => {
                return Err(VolumeError::Mode {
                    spec: crate::input::excerpt(spec).to_string(),
                    mode: crate::input::excerpt(other).to_string(),
                });
            }
        };
        Ok(Volume {
            host: PathBuf::from(host),
            guest: normalize_guest_path(guest)?,
            access,
        })
    }

    /// Checks that the host side is an existing, readable directory.
    pub fn check_host(&self) -> Result<(), VolumeError> {
        check_host_dir(&self.host)
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.access {
            Access::ReadOnly => ":ro",
            Access::ReadWrite => "",
        };
        write!(f, "{}:{}{mode}", self.host.display(), self.guest)
    }
}

fn check_host_dir(host: &Path) -> Result<(), VolumeError> {
    match std::fs::metadata(host) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(VolumeError::HostNotDirectory {
            host: host.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VolumeError::HostMissing {
            host: host.to_owned(),
        }),
        Err(e) => Err(VolumeError::HostUnreadable {
            host: host.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Normalises an absolute guest path: collapses repeated and trailing slashes and
/// refuses `.`/`..` components, so that two spellings of one directory cannot
/// become two mount points and a mount point never names its parent.
pub fn normalize_guest_path(guest: &str) -> Result<String, VolumeError> {
    let err = |reason| VolumeError::GuestPath {
        guest: crate::input::excerpt(guest).to_string(),
        reason,
    };
    if !guest.starts_with('/') {
        return Err(err("must be absolute (start with `/`)"));
    }
    if guest.contains('\0') {
        return Err(err("must not contain NUL"));
    }
    let mut normalized = String::new();
    for component in guest.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(err("must not contain `.` or `..` components"));
        }
        normalized.push('/');
        normalized.push_str(component);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok(normalized)
}

/// Whether `path` (normalised) is `dir` or lies beneath it.
pub(crate) fn is_within(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// A directory opened beneath a volume root, named by a path that reopens
/// exactly that directory for as long as this value lives.
pub(crate) struct OpenedDir {
    #[cfg(target_os = "linux")]
    _fd: rustix::fd::OwnedFd,
    path: PathBuf,
}

impl OpenedDir {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens `relative` (a normalised path without `.`/`..`) beneath `root`.
///
/// On Linux this is `openat2` with `RESOLVE_BENEATH`, so no symlink or `..`
/// on the way can leave `root`; the result is named through `/proc/self/fd`,
/// which reopens the very directory that was checked. Elsewhere, and on
/// kernels without `openat2`, both paths are canonicalised and compared.
pub(crate) fn open_beneath(root: &Path, relative: &str) -> std::io::Result<OpenedDir> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fd::AsRawFd;
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root_fd = rustix::fs::open(root, flags, Mode::empty())?;
        let target = if relative.is_empty() { "." } else { relative };
        match rustix::fs::openat2(
            &root_fd,
            target,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => {
                let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                return Ok(OpenedDir { _fd: fd, path });
            }
            Err(rustix::io::Errno::XDEV) => {
                return Err(std::io::Error::other("the path leads outside the volume"));
            }
            Err(rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let root = root.canonicalize()?;
    let dir = root.join(relative).canonicalize()?;
    if !dir.starts_with(&root) {
        return Err(std::io::Error::other("the path leads outside the volume"));
    }
    if !dir.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    Ok(OpenedDir {
        #[cfg(target_os = "linux")]
        _fd: rustix::fs::open(&dir, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())?,
        path: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let v = Volume::parse("./data:/data").unwrap();
        assert_eq!(v.host, PathBuf::from("./data"));
        assert_eq!(v.guest, "/data");
        assert_eq!(v.access, Access::ReadWrite);
        assert_eq!(
            Volume::parse("/srv/x:/x:ro").unwrap().access,
            Access::ReadOnly
        );
        assert_eq!(Volume::parse(".:/").unwrap().guest, "/");
        assert_eq!(Volume::parse("./a://b//c/").unwrap().guest, "/b/c");
    }

    #[test]
    fn refuses_bad_forms() {
        assert!(matches!(
            Volume::parse("./a"),
            Err(VolumeError::Syntax { .. })
        ));
        assert!(matches!(
            Volume::parse(":/a"),
            Err(VolumeError::Syntax { .. })
        ));
        assert!(matches!(
            Volume::parse("./a:/b:ro:x"),
            Err(VolumeError::Syntax { .. })
        ));
        assert!(matches!(
            Volume::parse("data:/data"),
            Err(VolumeError::NamedVolume { .. })
        ));
        assert!(matches!(
            Volume::parse("./a:/b:rx"),
            Err(VolumeError::Mode { .. })
        ));
        assert!(matches!(
            Volume::parse("./a:b"),
            Err(VolumeError::GuestPath { .. })
        ));
        assert!(matches!(
            Volume::parse("./a:/b/../c"),
            Err(VolumeError::GuestPath { .. })
        ));
        assert!(matches!(
            Volume::parse("./a:/b/./c"),
            Err(VolumeError::GuestPath { .. })
        ));
    }

    #[test]
    fn long_specs_are_quoted_short() {
        let long = format!("./a:/b:{}", "x".repeat(1 << 20));
        let message = Volume::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 400, "{}", &message[..400]);
        assert!(message.contains("bytes)"), "{message}");
        let long = format!("./a:/{}/../b", "y".repeat(1 << 20));
        assert!(Volume::parse(&long).unwrap_err().to_string().len() < 400);
    }

    #[test]
    fn within() {
        assert!(is_within("/data/x", "/data"));
        assert!(is_within("/data", "/data"));
        assert!(!is_within("/database", "/data"));
        assert!(is_within("/anything", "/"));
    }

    #[test]
    fn opens_only_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("escape")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("abs")).unwrap();
        assert!(open_beneath(&root, "sub").unwrap().path().is_dir());
        assert!(open_beneath(&root, "").is_ok());
        assert!(open_beneath(&root, "escape").is_err());
        assert!(open_beneath(&root, "abs").is_err());
        assert!(open_beneath(&root, "missing").is_err());
    }

    #[test]
    fn checks_host_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(check_host_dir(dir.path()).is_ok());
        assert!(matches!(
            check_host_dir(&file),
            Err(VolumeError::HostNotDirectory { .. })
        ));
        assert!(matches!(
            check_host_dir(&dir.path().join("missing")),
            Err(VolumeError::HostMissing { .. })
        ));
    }
}
