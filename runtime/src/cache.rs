//! The compiled-artifact (AOT) cache under `$WRUN_HOME/cache`.
//!
//! Layout: `cache/<engine>/<sha256 of the app's bytes>.cwasm`, where `<engine>`
//! is a digest of wasmtime's `precompile_compatibility_hash` (wasmtime version,
//! target, compiler settings, enabled wasm features). An engine that would
//! compile differently therefore never looks at another engine's artifacts.
//!
//! Each file is wasmtime's serialized artifact followed by a 48-byte trailer:
//! a magic string, the artifact's kind (module or component) and the BLAKE3
//! digest of the artifact. wasmtime's own checks catch a stale or truncated
//! artifact but not a flipped byte in machine code, so every load verifies the
//! digest before wasmtime sees the file: a corrupted entry is reported,
//! removed and rebuilt, never executed. The verified file is then handed to
//! wasmtime as an open file, which it maps (copy-on-write) instead of copying.
//! Entries are written to a temporary file, synced and renamed into place, and
//! never modified afterwards, so a reader sees the old entry, the new one, or
//! none, and a mapping stays valid even if the entry is replaced meanwhile.

use crate::load::AppKind;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const TRAILER_MAGIC: &[u8; 15] = b"wrun-cwasm-v2\0\0";
pub(crate) const TRAILER_LEN: usize = TRAILER_MAGIC.len() + 1 + blake3::OUT_LEN;

/// Artifacts this large are hashed on all cores; below it, starting the
/// thread pool would cost more than it saves.
const PARALLEL_HASH_MIN: usize = 8 << 20;

/// A verified cache entry: an open file whose first `artifact_len` bytes are
/// the artifact.
#[derive(Debug)]
pub struct CachedArtifact {
    pub file: fs::File,
    pub kind: AppKind,
}

fn kind_byte(kind: AppKind) -> u8 {
    match kind {
        AppKind::Module => b'm',
        AppKind::Component => b'c',
    }
}

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

    /// Opens and verifies the artifact for `digest`. `Ok(None)` is a miss.
    pub fn get(&self, digest: &str) -> Result<Option<CachedArtifact>, CacheError> {
        let path = self.entry_path(digest);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(reason) => return Err(CacheError::Read { path, reason }),
        };
        let read_err = |reason| CacheError::Read {
            path: path.clone(),
            reason,
        };
        let corrupted = |reason| CacheError::Corrupted {
            path: path.clone(),
            reason,
        };
        let len = file.metadata().map_err(read_err)?.len();
        if len < TRAILER_LEN as u64 {
            return Err(corrupted("shorter than its trailer"));
        }
        let artifact_len = len - TRAILER_LEN as u64;
        let mut trailer = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut trailer, artifact_len)
            .map_err(read_err)?;
        let (magic, rest) = trailer.split_at(TRAILER_MAGIC.len());
        let (kind, digest_bytes) = rest.split_at(1);
        if magic != TRAILER_MAGIC {
            return Err(corrupted("missing trailer"));
        }
        let kind = match kind[0] {
            b'm' => AppKind::Module,
            b'c' => AppKind::Component,
            _ => return Err(corrupted("unknown artifact kind")),
        };
        let artifact_len = usize::try_from(artifact_len).map_err(|_| corrupted("too large"))?;
        // SAFETY: entries are created by renaming a complete, synced file into
        // place and are never written afterwards (see the module docs), so
        // the mapped bytes cannot change while they are hashed.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
        let artifact = map
            .get(..artifact_len)
            .ok_or_else(|| corrupted("changed while read"))?;
        let mut hasher = blake3::Hasher::new();
        if artifact_len >= PARALLEL_HASH_MIN {
            hasher.update_rayon(artifact);
        } else {
            hasher.update(artifact);
        }
        if hasher.finalize().as_bytes() != digest_bytes {
            return Err(corrupted("its digest does not match its contents"));
        }
        Ok(Some(CachedArtifact { file, kind }))
    }

    /// Stores `artifact` for `digest` atomically (temporary file, fsync, rename).
    pub fn put(&self, digest: &str, kind: AppKind, artifact: &[u8]) -> Result<(), CacheError> {
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
        crate::crash_hook::point(crate::crash_hook::CACHE_BEFORE_WRITE);
        let digest_bytes = blake3::hash(artifact);
        tmp.write_all(artifact)
            .map(|()| crate::crash_hook::point(crate::crash_hook::CACHE_BEFORE_TRAILER))
            .and_then(|()| tmp.write_all(TRAILER_MAGIC))
            .and_then(|()| tmp.write_all(&[kind_byte(kind)]))
            .and_then(|()| tmp.write_all(digest_bytes.as_bytes()))
            .map(|()| crate::crash_hook::point(crate::crash_hook::CACHE_BEFORE_SYNC))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(write_err)?;
        crate::crash_hook::point(crate::crash_hook::CACHE_BEFORE_RENAME);
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        crate::crash_hook::point(crate::crash_hook::CACHE_AFTER_RENAME);
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
        cache
            .put("abc", AppKind::Component, b"artifact bytes")
            .unwrap();
        let mut entry = cache.get("abc").unwrap().unwrap();
        assert_eq!(entry.kind, AppKind::Component);
        let mut contents = Vec::new();
        io::Read::read_to_end(&mut entry.file, &mut contents).unwrap();
        assert!(
            contents.starts_with(b"artifact bytes"),
            "the file is the artifact, then the trailer"
        );

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
