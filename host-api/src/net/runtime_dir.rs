//! The runtime directory, where networks' rendezvous sockets live, and the
//! checks that keep other local users out of it.
//!
//! A member of a network listens on Unix sockets there, so whoever can write
//! to the directory, or to one on its path, could take a member's place or
//! deny service. wrun therefore uses only a directory that this user owns
//! and others cannot enter, on a path where every directory belongs to this
//! user or root and is closed to others' writes (or sticky, as `/tmp`, where
//! others cannot rename or remove what is not theirs). A directory that
//! fails is refused with what is wrong and whose it is; nothing is ever
//! silently shared.

use crate::input;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot use `{}` as the runtime directory: {reason}", path.display())]
pub struct RuntimeDirError {
    pub path: PathBuf,
    pub reason: String,
}

/// Creates the runtime directory `dir` if needed, private to this user, and
/// checks it and its path (see the module docs). Returns the directory's
/// canonical path, which callers use from then on, so that a symlink on the
/// way cannot be changed to point elsewhere later.
pub fn prepare_runtime_dir(dir: &Path) -> Result<PathBuf, RuntimeDirError> {
    let refuse = |reason: String| RuntimeDirError {
        path: dir.to_owned(),
        reason,
    };
    if let Err(e) = super::network::create_private_dir(dir) {
        // mkdir says only "File exists" for a dangling symlink; say what is
        // in the way, and whose it is.
        let reason = dir
            .ancestors()
            .find_map(in_the_way)
            .unwrap_or_else(|| e.to_string());
        return Err(refuse(reason));
    }
    let canonical = fs::canonicalize(dir).map_err(|e| refuse(e.to_string()))?;
    let via = match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            format!(" (`{}` is a symlink to it)", dir.display())
        }
        _ => String::new(),
    };
    let me = rustix::process::geteuid().as_raw();
    let meta = fs::metadata(&canonical).map_err(|e| refuse(e.to_string()))?;
    if meta.uid() != me {
        return Err(refuse(format!(
            "`{}`{via} is owned by {}, not by this user ({})",
            canonical.display(),
            who(meta.uid()),
            who(me)
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "`{}`{via} has mode {:04o}, which lets other users in; it must be closed to them \
             (`chmod 700 {}`)",
            canonical.display(),
            meta.mode() & 0o7777,
            canonical.display()
        )));
    }
    for ancestor in canonical.ancestors().skip(1) {
        let meta = fs::metadata(ancestor).map_err(|e| refuse(e.to_string()))?;
        let owner_ok = meta.uid() == me || meta.uid() == 0;
        let others_write = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if !owner_ok || others_write {
            return Err(refuse(format!(
                "`{}`, on its path, {} (owned by {}, mode {:04o}), so they could replace \
                 what is below it",
                ancestor.display(),
                if owner_ok {
                    "can be written by other users"
                } else {
                    "belongs to another user"
                },
                who(meta.uid()),
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(canonical)
}

/// What blocks creating `path` as a directory, if it is something else.
fn in_the_way(path: &Path) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    let owner = who(meta.uid());
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).unwrap_or_default();
        let state = match fs::metadata(path) {
            Ok(m) if m.is_dir() => "a directory".to_owned(),
            Ok(_) => "not a directory".to_owned(),
            Err(_) => "which does not exist".to_owned(),
        };
        return Some(format!(
            "`{}` is a symlink to `{}`, {state}, made by {owner}",
            path.display(),
            target.display()
        ));
    }
    (!meta.is_dir()).then(|| {
        format!(
            "`{}` is a file, not a directory, owned by {owner} (mode {:04o})",
            path.display(),
            meta.mode() & 0o7777
        )
    })
}

/// `uid 1000 (alice)`, or `uid 1000` when the user database does not say.
pub(crate) fn who(uid: u32) -> String {
    const USERS: input::Kind = input::Kind {
        what: "user database",
        limit: 16 << 20,
    };
    let name = input::read_to_string(Path::new("/etc/passwd"), USERS)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse() == Ok(uid)).then(|| name.to_owned())
            })
        });
    match name {
        Some(name) => format!("uid {uid} ({})", input::excerpt(&name)),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory owned by another user: made and given away as root; as
    /// any other user, `/`, which root owns. Either way the test runs.
    fn others_dir(scratch: &Path) -> (PathBuf, u32) {
        if rustix::process::geteuid().is_root() {
            let dir = scratch.join("theirs");
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            (dir, 65534)
        } else {
            (PathBuf::from("/"), 0)
        }
    }

    #[test]
    fn a_private_directory_is_made_and_kept() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("home/run");
        let got = prepare_runtime_dir(&dir).unwrap();
        assert_eq!(got, fs::canonicalize(&dir).unwrap());
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(prepare_runtime_dir(&dir).unwrap(), got, "again");
        // A symlink of our own to it is followed, and the real path used.
        let link = scratch.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(prepare_runtime_dir(&link).unwrap(), got);
    }

    #[test]
    fn squatted_and_open_directories_are_refused_saying_whose_they_are() {
        let scratch = tempfile::tempdir().unwrap();
        let s = scratch.path();
        let me = who(rustix::process::geteuid().as_raw());

        // Open to others.
        let open = s.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let e = prepare_runtime_dir(&open).unwrap_err().to_string();
        assert!(
            e.contains("has mode 0755") && e.contains("chmod 700"),
            "{e}"
        );

        // A dangling symlink where the directory should be: the case where
        // mkdir says only "File exists".
        let dangling = s.join("dangling");
        std::os::unix::fs::symlink("/nonexistent/wrun", &dangling).unwrap();
        let e = prepare_runtime_dir(&dangling).unwrap_err().to_string();
        assert!(
            e.contains("is a symlink to `/nonexistent/wrun`, which does not exist, made by")
                && e.contains(&me),
            "{e}"
        );

        // A file in the way.
        let file = s.join("file");
        fs::write(&file, "").unwrap();
        let e = prepare_runtime_dir(&file.join("run"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a file, not a directory"), "{e}");

        // Another user's directory, and a symlink to one.
        let (theirs, uid) = others_dir(s);
        let e = prepare_runtime_dir(&theirs).unwrap_err().to_string();
        assert!(
            e.contains(&format!("is owned by {}, not by this user", who(uid))),
            "{e}"
        );
        let link = s.join("link");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        let e = prepare_runtime_dir(&link).unwrap_err().to_string();
        assert!(
            e.contains("is a symlink to it") && e.contains(&who(uid)),
            "{e}"
        );

        // A directory of our own inside one others can write to.
        let shared = s.join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_runtime_dir(&shared.join("run"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("on its path, can be written by other users") && e.contains("0777"),
            "{e}"
        );
        // ... unless it is sticky, like /tmp.
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        prepare_runtime_dir(&shared.join("run")).unwrap();
    }

    #[test]
    fn users_are_named() {
        assert_eq!(who(0), "uid 0 (root)");
        assert_eq!(who(4_000_000_000), "uid 4000000000");
    }
}
