//! Anonymous volumes: the empty directory `wrun run` gives each volume point
//! an image declares that no `-v` covers, under `$WRUN_HOME/volumes`, removed
//! when the run ends (Docker's anonymous volumes with `--rm`).
//!
//! A run holds a shared `flock` on its volume's directory for as long as it
//! runs, so a volume that is not held was left by a run that was killed;
//! `wrun system prune` removes those, and `wrun system df` counts the held
//! ones active. Volumes are made under the store's shared gc lock and pruned
//! under the exclusive one, so prune never sees a volume between its making
//! and its lock.

use super::ImageError;
use super::store::{ImageStore, disk_usage, is_held_shared};
use std::fs;
use std::path::{Path, PathBuf};

const PREFIX: &str = "anonymous-";

/// A run's anonymous volume: removed when dropped.
pub struct AnonymousVolume {
    dir: tempfile::TempDir,
    _lock: fs::File,
}

impl AnonymousVolume {
    pub fn create(store: &ImageStore) -> Result<AnonymousVolume, ImageError> {
        let parent = volumes_dir(store);
        let _gc = store.adding()?;
        fs::create_dir_all(&parent).map_err(ImageError::io("failed to create", &parent))?;
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&parent)
            .map_err(ImageError::io("failed to create a volume in", &parent))?;
        let lock = fs::File::open(dir.path())
            .map_err(ImageError::io("failed to open volume", dir.path()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| ImageError::io("failed to lock volume", dir.path())(e.into()))?;
        Ok(AnonymousVolume { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// An anonymous volume on disk, as `wrun system df` counts it.
#[derive(Debug, Clone)]
pub struct VolumeUsage {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// A running app uses it.
    pub active: bool,
}

fn volumes_dir(store: &ImageStore) -> PathBuf {
    store.home().join("volumes")
}

/// Every anonymous volume.
pub fn anonymous_volumes(store: &ImageStore) -> Vec<VolumeUsage> {
    let Ok(dir) = fs::read_dir(volumes_dir(store)) else {
        return Vec::new();
    };
    let mut volumes: Vec<VolumeUsage> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| VolumeUsage {
            name: e.file_name().to_string_lossy().into_owned(),
            bytes: disk_usage(&e.path()),
            active: is_held_shared(&e.path()),
            path: e.path(),
        })
        .collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    volumes
}

/// Removes the anonymous volumes no running app uses (left by runs that
/// were killed); returns them.
pub fn prune_volumes(store: &ImageStore) -> Result<Vec<VolumeUsage>, ImageError> {
    let _gc = store.collecting()?;
    let mut removed = Vec::new();
    for volume in anonymous_volumes(store) {
        if !volume.active && fs::remove_dir_all(&volume.path).is_ok() {
            removed.push(volume);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_in_use_are_kept_and_leftovers_pruned() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let running = AnonymousVolume::create(&store).unwrap();
        fs::write(running.path().join("data"), b"kept").unwrap();
        // What a killed run leaves: a volume nobody holds.
        let left = home.path().join("volumes/anonymous-killed");
        fs::create_dir_all(&left).unwrap();
        fs::write(left.join("data"), vec![0; 10_000]).unwrap();
        let all = anonymous_volumes(&store);
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().filter(|v| v.active).count(), 1);
        let removed = prune_volumes(&store).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].name, "anonymous-killed");
        assert!(removed[0].bytes >= 10_000);
        assert!(!left.exists() && running.path().join("data").exists());
        let path = running.path().to_owned();
        drop(running);
        assert!(!path.exists(), "removed when the run ends");
    }
}
