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
//!
//! The cache is bounded ([`DEFAULT_CACHE_SIZE`], or `WRUN_CACHE_SIZE`): after
//! each write, the least recently used files of the whole cache (every
//! engine's artifacts and the digest index) are removed until it is back
//! under 90% of the bound. Recency is the file's mtime, set on every hit
//! that finds it older than a minute: one `futimens` on the open file,
//! unlike atime, which relatime and noatime mounts do not keep. Eviction only
//! ever unlinks: a process that has an entry open or mapped keeps its pages
//! (Linux frees them when the last mapping goes), while truncating or
//! rewriting a mapped file would pull the code from under it, so nothing in
//! the cache is ever truncated or written in place.
//!
//! Temporary files of a write that was killed stay as `.tmp-*`; they are
//! removed once they are an hour old ([`STALE_TEMP`]), at most once an hour
//! per cache, when a runtime starts. An age rather than a lock: a write takes
//! seconds at most (the artifact is compiled in memory first), and removing
//! a temporary file too early only makes that writer's rename fail, which it
//! logs and survives, so writers need not pay for a lock.

use crate::load::AppKind;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The default bound of the compile cache: 1 GiB, as wasmtime's own cache's
/// soft limit.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// Eviction frees down to this share of the bound (in percent), so that a
/// full cache does not evict on every write.
const LOW_WATER_PERCENT: u64 = 90;

/// A hit re-stamps its entry when the stamp is older than this: recency to
/// the minute, without a write on every start.
const TOUCH_AFTER: Duration = Duration::from_secs(60);

/// A temporary file this old is left over from a write that was killed.
pub const STALE_TEMP: Duration = Duration::from_secs(60 * 60);

/// How often a start looks for stale temporary files (and evicts, in case
/// the bound was lowered); the image store's sweep keeps the same pace.
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Beside the cache directory (`cache.swept`), the file whose mtime says when
/// the cache was last swept: outside it, so that the cache holds entries only.
const SWEPT: &str = "swept";

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
    root: CacheRoot,
    max_size: u64,
}

impl ArtifactCache {
    /// `root` is `$WRUN_HOME/cache`; `engine_key` identifies the engine
    /// configuration (see the module docs). Bounded by [`DEFAULT_CACHE_SIZE`].
    pub fn new(root: &Path, engine_key: &str) -> ArtifactCache {
        ArtifactCache {
            dir: root.join(engine_key),
            root: CacheRoot::new(root),
            max_size: DEFAULT_CACHE_SIZE,
        }
    }

    /// The same cache with another bound, in bytes, for the whole of `root`.
    pub fn with_max_size(mut self, max_size: u64) -> ArtifactCache {
        self.max_size = max_size;
        self
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    pub fn root(&self) -> &CacheRoot {
        &self.root
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
        let meta = file.metadata().map_err(read_err)?;
        let len = meta.len();
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
        touch(&file, &meta);
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
        self.root.evict(self.max_size, Some(&path));
        Ok(())
    }

    /// Removes the entry for `digest`, if any (used after a failed verification).
    pub fn remove(&self, digest: &str) {
        let _ = fs::remove_file(self.entry_path(digest));
    }
}

/// Marks `file` as just used, if its mark is older than [`TOUCH_AFTER`].
/// A failure (a cache owned by someone else) only costs recency.
pub(crate) fn touch(file: &fs::File, meta: &fs::Metadata) {
    let now = SystemTime::now();
    let stale = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_none_or(|age| age >= TOUCH_AFTER);
    if stale && let Err(e) = file.set_modified(now) {
        tracing::debug!("failed to mark a cache entry as used: {e}");
    }
}

/// A file of the cache, as eviction and `wrun system df` see it.
#[derive(Debug, Clone)]
pub struct CacheFile {
    pub path: PathBuf,
    /// Bytes on disk (allocated blocks).
    pub size: u64,
    /// When it was last used (its mtime).
    pub used: SystemTime,
    /// A compiled artifact (else an entry of the digest index).
    pub artifact: bool,
}

/// The whole compile cache, `$WRUN_HOME/cache`: every engine's directory of
/// artifacts and the digest index.
#[derive(Debug, Clone)]
pub struct CacheRoot {
    root: PathBuf,
}

impl CacheRoot {
    pub fn new(root: &Path) -> CacheRoot {
        CacheRoot {
            root: root.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Every file of the cache but temporary files, oldest use first.
    pub fn files(&self) -> Vec<CacheFile> {
        let mut files = Vec::new();
        for (dir, _) in self.dirs() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                files.push(CacheFile {
                    path: entry.path(),
                    size: meta.blocks() * 512,
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    artifact: name.to_string_lossy().ends_with(".cwasm"),
                });
            }
        }
        files.sort_by_key(|f| f.used);
        files
    }

    /// The directories of the cache: each engine's, and the digest index.
    fn dirs(&self) -> Vec<(PathBuf, bool)> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.path(), e.file_name() != "digests"))
            .collect()
    }

    /// Removes the least recently used files until the cache holds at most
    /// [`LOW_WATER_PERCENT`]% of `max_size`, if it holds more than
    /// `max_size`; `keep` (the entry just written) is never removed.
    /// Returns the bytes freed. Failures are logged: a cache over its bound
    /// is not worth failing a run for.
    pub fn evict(&self, max_size: u64, keep: Option<&Path>) -> u64 {
        let files = self.files();
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        if total <= max_size {
            return 0;
        }
        let target = max_size / 100 * LOW_WATER_PERCENT;
        let mut freed = 0;
        for file in files {
            if total <= target {
                break;
            }
            if keep == Some(file.path.as_path()) {
                continue;
            }
            match fs::remove_file(&file.path) {
                Ok(()) => {
                    tracing::debug!(path = %file.path.display(), "evicted from the compile cache");
                    total -= file.size;
                    freed += file.size;
                }
                // Evicted by a concurrent wrun meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= file.size,
                Err(e) => {
                    tracing::warn!("failed to evict `{}`: {e}", file.path.display());
                }
            }
        }
        freed
    }

    /// Removes temporary files older than `age`; returns their count and
    /// bytes.
    pub fn sweep_temps(&self, age: Duration) -> (usize, u64) {
        let (mut count, mut bytes) = (0, 0);
        for (dir, _) in self.dirs() {
            let (c, b) = remove_stale_temps(&dir, age);
            count += c;
            bytes += b;
        }
        (count, bytes)
    }

    /// At most once an hour (see the module docs): removes stale temporary
    /// files and evicts down to `max_size`. One `stat` when not due.
    pub fn sweep_if_due(&self, max_size: u64) {
        let marker = self.root.with_extension(SWEPT);
        if !sweep_due(&marker) || !self.root.is_dir() {
            return;
        }
        let (count, _) = self.sweep_temps(STALE_TEMP);
        if count > 0 {
            tracing::debug!(count, "removed temporary files of interrupted cache writes");
        }
        self.evict(max_size, None);
        stamp_swept(&marker);
    }

    /// The cache's files that some process has mapped now (Linux: from
    /// `/proc/*/maps`, as far as this user may read them), i.e. in use by a
    /// running app. Empty where that cannot be told.
    pub fn mapped(&self) -> std::collections::HashSet<PathBuf> {
        const MAPS: crate::input::Kind = crate::input::Kind {
            what: "memory map",
            limit: 64 << 20,
        };
        let mut mapped = std::collections::HashSet::new();
        let (Ok(root), Ok(procs)) = (fs::canonicalize(&self.root), fs::read_dir("/proc")) else {
            return mapped;
        };
        for entry in procs.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let Ok(text) = crate::input::read_to_string(&entry.path().join("maps"), MAPS) else {
                continue;
            };
            for line in text.lines() {
                // The path is the sixth field, and may contain spaces.
                if let Some(at) = line.find('/') {
                    let path = Path::new(&line[at..]);
                    if path.starts_with(&root) {
                        mapped.insert(path.to_owned());
                    }
                }
            }
        }
        mapped
    }

    /// Removes every file of the cache (`wrun system prune -a`), temporary
    /// files only when older than [`STALE_TEMP`]; returns the files removed
    /// and their bytes. Processes using an entry keep it (see the module
    /// docs).
    pub fn clear(&self) -> (Vec<CacheFile>, u64) {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for file in self.files() {
            if fs::remove_file(&file.path).is_ok() {
                bytes += file.size;
                removed.push(file);
            }
        }
        bytes += self.sweep_temps(STALE_TEMP).1;
        (removed, bytes)
    }
}

/// Whether a periodic sweep is due: `marker`, stamped by [`stamp_swept`]
/// when the last one ran, is missing or at least [`SWEEP_EVERY`] old. One
/// `stat`.
pub(crate) fn sweep_due(marker: &Path) -> bool {
    fs::metadata(marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age >= SWEEP_EVERY)
}

/// Records that a sweep ran now (a failure only logs: the next start
/// sweeps again).
pub(crate) fn stamp_swept(marker: &Path) {
    let stamped = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(marker)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = stamped {
        tracing::debug!("failed to stamp `{}`: {e}", marker.display());
    }
}

/// Removes the `.tmp-*` files directly in `dir` (what a killed write leaves)
/// that are at least `age` old; returns their count and the bytes they held.
pub(crate) fn remove_stale_temps(dir: &Path, age: Duration) -> (usize, u64) {
    let now = SystemTime::now();
    let (mut count, mut bytes) = (0, 0);
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|a| a >= age);
        if old && fs::remove_file(entry.path()).is_ok() {
            count += 1;
            bytes += meta.blocks() * 512;
        }
    }
    (count, bytes)
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

    /// An entry of `len` bytes, last used `age` ago.
    fn entry(cache: &ArtifactCache, name: &str, len: usize, age: Duration) -> PathBuf {
        cache.put(name, AppKind::Module, &vec![7; len]).unwrap();
        let path = cache.entry_path(name);
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn eviction_keeps_the_most_recently_used_under_the_bound() {
        let root = tempfile::tempdir().unwrap();
        let unbounded = ArtifactCache::new(root.path(), "engine").with_max_size(u64::MAX);
        let hour = Duration::from_secs(3600);
        let old = entry(&unbounded, "old", 100 << 10, 3 * hour);
        let used = entry(&unbounded, "used", 100 << 10, 2 * hour);
        let recent = entry(&unbounded, "recent", 100 << 10, hour);
        // Another engine's entry counts against the same bound.
        let other = ArtifactCache::new(root.path(), "other-engine").with_max_size(u64::MAX);
        let stale = entry(&other, "stale", 100 << 10, 4 * hour);

        // A hit marks `used` as just used.
        unbounded.get("used").unwrap().unwrap();
        let size = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
        let bound = size(&used) + size(&recent) + size(&used) / 2;
        let cache = ArtifactCache::new(root.path(), "engine").with_max_size(bound);
        let new = entry(&cache, "new", 100 << 10, Duration::ZERO);
        // The write went over the bound: the least recently used went
        // first (the other engine's, then `old`, then `recent`), until the
        // rest fit.
        assert!(!stale.exists() && !old.exists() && !recent.exists());
        assert!(used.exists() && new.exists());
        let total: u64 = cache.root().files().iter().map(|f| f.size).sum();
        assert!(total <= bound, "{total} > {bound}");

        // The entry just written stays even when it alone is over the bound.
        let tiny = ArtifactCache::new(root.path(), "engine").with_max_size(1);
        let big = entry(&tiny, "big", 200 << 10, Duration::ZERO);
        assert!(big.exists());
        assert_eq!(tiny.root().files().len(), 1);
    }

    #[test]
    fn stale_temporary_files_are_swept_and_fresh_ones_kept() {
        let home = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(&home.path().join("cache"), "engine");
        cache.put("abc", AppKind::Module, b"artifact").unwrap();
        let stale = cache.dir().join(".tmp-killed.cwasm");
        let fresh = cache.dir().join(".tmp-writing.cwasm");
        for path in [&stale, &fresh] {
            fs::write(path, b"half an artifact").unwrap();
        }
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TEMP)
            .unwrap();
        cache.root().sweep_if_due(DEFAULT_CACHE_SIZE);
        assert!(
            !stale.exists(),
            "a temporary file older than an hour is gone"
        );
        assert!(fresh.exists(), "one a writer may still be writing is kept");
        assert!(cache.get("abc").unwrap().is_some());
        // Not due again within the hour: nothing is even looked at.
        fs::write(&stale, b"x").unwrap();
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TEMP)
            .unwrap();
        cache.root().sweep_if_due(DEFAULT_CACHE_SIZE);
        assert!(stale.exists());
    }
}
