//! Named volumes: directories the daemon owns, under
//! `$WRUN_HOME/volumes/<name>/_data` (Docker's layout), that outlive the
//! containers using them.

use super::state::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The longest volume name (Docker has no bound; a file name has 255).
const MAX_NAME: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "invalid volume name `{0}`: use letters, digits, `_`, `.` and `-`, starting with a \
         letter or digit, at most 128 characters"
    )]
    InvalidName(String),
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("volume name `{0}` is already in use")]
    Exists(String),
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
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(VolumeError::InvalidName(
                crate::input::excerpt(name).to_string(),
            ));
        }
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
}
