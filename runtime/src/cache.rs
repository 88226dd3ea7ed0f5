//! The compiled-artifact (AOT) cache under `$WRUN_HOME/cache`.
//!
//! Layout: `cache/<engine>/<sha256 of the app's bytes>.cwasm`, where `<engine>`
//! is a digest of wasmtime's `precompile_compatibility_hash` (wasmtime version,
//! target, compiler settings, enabled wasm features). An engine that would
//! compile differently therefore never looks at another engine's artifacts.
//!
//! Each file is wasmtime's serialized artifact followed by a trailer holding the
//! BLAKE3 digest of the artifact. wasmtime's own checks catch a stale or
//! truncated header but not a flipped byte in machine code, so every load
//! verifies the digest before wasmtime sees the bytes: a corrupted entry is
//! reported, removed and rebuilt, never executed. Entries are written to a
//! temporary file, synced and renamed into place, so a reader sees the old
//! entry, the new one, or none, and never a partial one.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const TRAILER_MAGIC: &[u8; 16] = b"wrun-cwasm-v1\0\0\0";
const TRAILER_LEN: usize = TRAILER_MAGIC.len() + blake3::OUT_LEN;

/// Why a cache entry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache entry `{}` is corrupted: {reason}", path.display())]
    Corrupted { path: PathBuf, reason: &'static str },
    #[error("failed to read cache entry `{}`: {reason}", path.display())]
    Read { path: PathBuf, reason: io::Error },
    #[error("failed to write cache entry `{}`: {reason}", path.display())]
    Write { path: PathBuf, reason: io::Error },
}

/// A directory of compiled artifacts for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// `root` is `$WRUN_HOME/cache`; `engine_key` identifies the engine
    /// configuration (see the module docs).
    pub fn new(root: &Path, engine_key: &str) -> ArtifactCache {
        ArtifactCache {
            dir: root.join(engine_key),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the entry for an app with the given sha256 content digest.
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// Reads and verifies the artifact for `digest`. `Ok(None)` is a miss.
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.entry_path(digest);
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(reason) => return Err(CacheError::Read { path, reason }),
        };
        let mut bytes = Vec::new();
        if let Err(reason) = file.read_to_end(&mut bytes) {
            return Err(CacheError::Read { path, reason });
        }
        let corrupted = |reason| CacheError::Corrupted {
            path: path.clone(),
            reason,
        };
        if bytes.len() < TRAILER_LEN {
            return Err(corrupted("shorter than its trailer"));
        }
        let artifact_len = bytes.len() - TRAILER_LEN;
        let (magic, digest_bytes) = bytes[artifact_len..].split_at(TRAILER_MAGIC.len());
        if magic != TRAILER_MAGIC {
            return Err(corrupted("missing trailer"));
        }
        if blake3::hash(&bytes[..artifact_len]).as_bytes() != digest_bytes {
            return Err(corrupted("its digest does not match its contents"));
        }
        bytes.truncate(artifact_len);
        Ok(Some(bytes))
    }

    /// Stores `artifact` for `digest` atomically (temporary file, fsync, rename).
    pub fn put(&self, digest: &str, artifact: &[u8]) -> Result<(), CacheError> {
        let path = self.entry_path(digest);
        let write_err = |reason| CacheError::Write {
            path: path.clone(),
            reason,
        };
        fs::create_dir_all(&self.dir).map_err(write_err)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".cwasm")
            .tempfile_in(&self.dir)
            .map_err(write_err)?;
        let digest_bytes = blake3::hash(artifact);
        tmp.write_all(artifact)
            .and_then(|()| tmp.write_all(TRAILER_MAGIC))
            .and_then(|()| tmp.write_all(digest_bytes.as_bytes()))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Removes the entry for `digest`, if any (used after a failed verification).
    pub fn remove(&self, digest: &str) {
        let _ = fs::remove_file(self.entry_path(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let root = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(root.path(), "engine");
        assert!(cache.get("abc").unwrap().is_none());
        cache.put("abc", b"artifact bytes").unwrap();
        assert_eq!(cache.get("abc").unwrap().unwrap(), b"artifact bytes");

        // Flip one byte of the artifact: detected.
        let path = cache.entry_path("abc");
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            cache.get("abc"),
            Err(CacheError::Corrupted { .. })
        ));

        // Truncated: detected.
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            cache.get("abc"),
            Err(CacheError::Corrupted { .. })
        ));

        cache.remove("abc");
        assert!(cache.get("abc").unwrap().is_none());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 0);
    }
}
