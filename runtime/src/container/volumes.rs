//! Named volumes: directories the daemon owns, under
//! `$WRUN_HOME/volumes/<name>/_data` (Docker's layout), that outlive the
//! containers using them.

use super::state::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The longest volume name (Docker has no bound; a file name has 255).
const MAX_NAME: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "invalid volume name `{0}`: use letters, digits, `_`, `.` and `-`, starting with a \
         letter or digit, at most 128 characters, not starting with `anonymous-`"
    )]
    InvalidName(String),
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("volume name `{0}` is already in use")]
    Exists(String),
    /// Containers name it in their mounts (Docker's wording, which clients
    /// show as it is).
    #[error("remove {name}: volume is in use - [{}]", containers.join(" "))]
    InUse {
        name: String,
        containers: Vec<String>,
    },
    #[error("failed to {what} `{}`: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_owned();
    move |source| VolumeError::Io { what, path, source }
}

/// Checks a volume name: Docker's characters, and not the prefix of the
/// run-scoped directories an image's volume points get beside the named
/// volumes (`anonymous-`, which `wrun system prune` clears).
pub fn check_name(name: &str) -> Result<(), VolumeError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with("anonymous-");
    match valid {
        true => Ok(()),
        false => Err(VolumeError::InvalidName(
            crate::input::excerpt(name).to_string(),
        )),
    }
}

/// What is kept about a volume beside its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    pub labels: BTreeMap<String, String>,
    /// Made for one container's volume point, removed with it (`rm -v`).
    pub anonymous: bool,
    /// The directory mounted into containers.
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

/// The named volumes of one `$WRUN_HOME`.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub fn new(home: &Path) -> Volumes {
        Volumes {
            root: home.join("volumes"),
        }
    }

    fn dir(&self, name: &str) -> Result<PathBuf, VolumeError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    /// Creates the volume `name`; with `exist_ok` an existing one is
    /// returned as it is (Docker's `volume create` of an existing name, and
    /// `-v name:/path` on first use).
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
        exist_ok: bool,
    ) -> Result<VolumeInfo, VolumeError> {
        let dir = self.dir(name)?;
        std::fs::create_dir_all(&self.root).map_err(io("create", &self.root))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return match exist_ok {
                    true => self.get(name),
                    false => Err(VolumeError::Exists(name.to_owned())),
                };
            }
            Err(e) => return Err(io("create", &dir)(e)),
        }
        let data = dir.join("_data");
        std::fs::create_dir(&data).map_err(io("create", &data))?;
        let info = VolumeInfo {
            name: name.to_owned(),
            created_at: SystemTime::now(),
            labels,
            anonymous,
            mountpoint: data,
        };
        let meta = dir.join("volume.json");
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        crate::atomic::write(&meta, &json, 0o600).map_err(io("write", &meta))?;
        Ok(info)
    }

    /// Creates an anonymous volume under a new random name of 64 hex digits,
    /// as Docker names a volume created without one.
    pub fn create_anonymous(
        &self,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError> {
        loop {
            let mut bytes = [0u8; 32];
            rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).map_err(
                |e| VolumeError::Io {
                    what: "draw a random name for a volume in",
                    path: self.root.clone(),
                    source: e.into(),
                },
            )?;
            match self.create(&hex::encode(bytes), labels.clone(), true, false) {
                // 256 random bits do not collide; if they did, draw again.
                Err(VolumeError::Exists(_)) => continue,
                made => return made,
            }
        }
    }

    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let dir = self.dir(name)?;
        let meta = dir.join("volume.json");
        let bytes = match std::fs::read(&meta) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_owned()));
            }
            Err(e) => return Err(io("read", &meta)(e)),
        };
        let mut info: VolumeInfo = serde_json::from_slice(&bytes).map_err(|e| VolumeError::Io {
            what: "parse",
            path: meta.clone(),
            source: std::io::Error::other(e),
        })?;
        info.mountpoint = dir.join("_data");
        Ok(info)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.root)(e)),
        };
        let mut volumes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read", &self.root))?;
            if let Some(name) = entry.file_name().to_str() {
                match self.get(name) {
                    Ok(info) => volumes.push(info),
                    // Half-made (a crash between mkdir and the metadata).
                    Err(VolumeError::NotFound(_) | VolumeError::InvalidName(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// The bytes of the files in the volume's data, as Docker counts a
    /// volume's size (`SpaceReclaimed` of a prune): file lengths, not
    /// blocks; symlinks are not followed, and a file with several links
    /// counts once.
    pub fn size(&self, name: &str) -> Result<u64, VolumeError> {
        fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> std::io::Result<u64> {
            use std::os::unix::fs::MetadataExt;
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    total += walk(&entry.path(), seen)?;
                } else if meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino())) {
                    total += meta.len();
                }
            }
            Ok(total)
        }
        let info = self.get(name)?;
        walk(&info.mountpoint, &mut HashSet::new()).map_err(io("read", &info.mountpoint))
    }

    /// Removes the volume and its data. Whether a container uses it is the
    /// caller's to check.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dir = self.dir(name)?;
        // The metadata goes first: a crash halfway leaves no volume, only
        // data that `list` does not show.
        let meta = dir.join("volume.json");
        std::fs::remove_file(&meta).map_err(io("remove", &meta))?;
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_once_listed_and_removed() {
        let home = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(home.path());
        let made = volumes
            .create("data", BTreeMap::new(), false, false)
            .unwrap();
        std::fs::write(made.mountpoint.join("f"), "x").unwrap();
        assert!(matches!(
            volumes.create("data", BTreeMap::new(), false, false),
            Err(VolumeError::Exists(_))
        ));
        let again = volumes
            .create("data", BTreeMap::new(), false, true)
            .unwrap();
        assert_eq!(again.mountpoint, made.mountpoint);
        assert_eq!(
            std::fs::read_to_string(again.mountpoint.join("f")).unwrap(),
            "x"
        );
        assert_eq!(volumes.list().unwrap().len(), 1);
        volumes.remove("data").unwrap();
        assert!(matches!(volumes.get("data"), Err(VolumeError::NotFound(_))));
        assert!(volumes.list().unwrap().is_empty());
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(
                matches!(
                    volumes.create(bad, BTreeMap::new(), false, true),
                    Err(VolumeError::InvalidName(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn anonymous_volumes_get_random_names_and_sizes_count_file_bytes() {
        let home = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(home.path());
        let one = volumes.create_anonymous(BTreeMap::new()).unwrap();
        let two = volumes.create_anonymous(BTreeMap::new()).unwrap();
        assert_ne!(one.name, two.name);
        assert_eq!(one.name.len(), 64);
        assert!(one.name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(volumes.get(&one.name).unwrap().anonymous);
        assert_eq!(volumes.size(&one.name).unwrap(), 0);
        std::fs::write(one.mountpoint.join("a"), "hello").unwrap();
        std::fs::create_dir(one.mountpoint.join("d")).unwrap();
        std::fs::write(one.mountpoint.join("d/b"), vec![0; 1000]).unwrap();
        std::fs::hard_link(one.mountpoint.join("a"), one.mountpoint.join("d/a2")).unwrap();
        std::os::unix::fs::symlink("/", one.mountpoint.join("root")).unwrap();
        // 5 + 1000, the hard link once, and the symlink's own length (1).
        assert_eq!(volumes.size(&one.name).unwrap(), 1006);
        assert!(matches!(
            volumes.size("nope"),
            Err(VolumeError::NotFound(_))
        ));
        let in_use = VolumeError::InUse {
            name: "data".into(),
            containers: vec!["abc".into(), "def".into()],
        };
        assert_eq!(
            in_use.to_string(),
            "remove data: volume is in use - [abc def]"
        );
    }
}
