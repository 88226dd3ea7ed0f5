//! Remembering app digests by file identity, so that a warm start of a large
//! app reads and hashes nothing but its cached artifact.
//!
//! An entry maps a file's identity and timestamps (device, inode, size,
//! mtime and ctime to the nanosecond) to the sha256 of its contents. Any
//! write to the file changes its ctime, which no user can set, so a changed
//! file is never mistaken for the one that was hashed. Two precautions cover
//! the rest: the file must look the same before and after it is read (or no
//! entry is made), and a file changed within the last few seconds is not
//! recorded at all, since timestamps are only as fine as the kernel's clock
//! tick and a second write within one tick would keep them (the "racy git"
//! problem). Entries are tiny files under `cache/digests/`, written
//! atomically; an unreadable or malformed entry is just a miss.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An entry is a digest and a newline; anything much larger is not one.
const ENTRY: crate::input::Kind = crate::input::Kind {
    what: "digest entry",
    limit: 1 << 10,
};

/// Files changed more recently than this are hashed on every run.
const SETTLE: Duration = Duration::from_secs(3);

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub(crate) fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn key(&self) -> String {
        let text = format!(
            "{}:{}:{}:{}.{}:{}.{}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..16])
    }

    /// Whether the file changed too recently for its timestamps to tell a
    /// later change apart.
    fn is_settled(&self) -> bool {
        let (secs, nanos) = self.mtime.max(self.ctime);
        let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
            return false;
        };
        let changed = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age >= SETTLE)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DigestIndex {
    dir: PathBuf,
}

impl DigestIndex {
    pub(crate) fn new(cache_root: &Path) -> DigestIndex {
        DigestIndex {
            dir: cache_root.join("digests"),
        }
    }

    pub(crate) fn lookup(&self, stamp: &FileStamp) -> Option<String> {
        let file = fs::File::open(self.dir.join(stamp.key())).ok()?;
        let text = crate::input::read_string_from(&file, "digest entry", ENTRY).ok()?;
        // Entries are evicted with the artifacts, least recently used first.
        if let Ok(meta) = file.metadata() {
            crate::cache::touch(&file, &meta);
        }
        let digest = text.trim_end();
        (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| digest.to_ascii_lowercase())
    }

    /// Records `digest` for `stamp` if the file has settled; failures only
    /// cost a future re-hash, so they are logged and ignored.
    pub(crate) fn record(&self, stamp: &FileStamp, digest: &str) {
        if !stamp.is_settled() {
            return;
        }
        let result = fs::create_dir_all(&self.dir).and_then(|()| {
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&self.dir)?;
            writeln!(tmp, "{digest}")?;
            tmp.persist(self.dir.join(stamp.key()))
                .map_err(|e| e.error)?;
            Ok(())
        });
        if let Err(e) = result {
            tracing::debug!("failed to record the digest of an app: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_settled_files_and_finds_them() {
        let root = tempfile::tempdir().unwrap();
        let index = DigestIndex::new(root.path());
        let file = root.path().join("app.wasm");
        fs::write(&file, "bytes").unwrap();
        let fresh = FileStamp::of(&fs::metadata(&file).unwrap());
        index.record(&fresh, &"a".repeat(64));
        assert_eq!(
            index.lookup(&fresh),
            None,
            "a file written just now is not recorded"
        );

        let mut settled = fresh.clone();
        settled.mtime.0 -= 60;
        settled.ctime.0 -= 60;
        index.record(&settled, &"b".repeat(64));
        assert_eq!(index.lookup(&settled), Some("b".repeat(64)));
        let mut changed = settled.clone();
        changed.ctime.1 += 1;
        assert_eq!(index.lookup(&changed), None);

        fs::write(index.dir.join(settled.key()), "not a digest").unwrap();
        assert_eq!(index.lookup(&settled), None);
    }
}
