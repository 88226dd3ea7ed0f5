//! The local image store: an OCI image layout under `$WRUN_HOME/images`
//! (`oci-layout`, `index.json`, `blobs/sha256/...`), so that other OCI tools
//! read it with `oci:$WRUN_HOME/images:NAME` and copy into it.
//!
//! Every write is atomic: a blob is written to `$WRUN_HOME/tmp`, verified
//! against its digest, synced and renamed into place; `index.json` is
//! rewritten the same way. An image becomes visible only when its index
//! entry is written, after all its blobs, so an interrupted pull, load or
//! build leaves no partial image, only unreferenced blobs for
//! [`ImageStore::prune`]. Two locks order the writers: `index.lock` around
//! each read-modify-write of `index.json`, and `gc.lock`, held shared by
//! whoever is adding blobs not yet referenced and exclusively by prune, so
//! that prune never deletes the blobs of an image still arriving.

use super::spec::{self, Descriptor, Digest, Document, INDEX, Index, MANIFEST, REF_NAME};
use super::{ImageError, ImageRef};
use crate::crash_hook;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Manifests, indexes and configs larger than this are refused (the
/// distribution server's own limit for manifests).
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// An image in the store: a named (or, after a load of unnamed images,
/// dangling) entry of `index.json`.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// `repository:tag`, or `None` for a dangling image.
    pub name: Option<String>,
    pub descriptor: Descriptor,
}

/// What [`ImageStore::prune`] removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub images: Vec<ImageEntry>,
    pub blobs: Vec<Digest>,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    home: PathBuf,
    layout: PathBuf,
    tmp: PathBuf,
}

impl ImageStore {
    /// Opens the store under `home` (`$WRUN_HOME`), creating an empty layout
    /// on first use.
    pub fn open(home: &Path) -> Result<ImageStore, ImageError> {
        let layout = home.join("images");
        let store = ImageStore {
            home: home.to_owned(),
            tmp: home.join("tmp"),
            layout,
        };
        for dir in [store.layout.join("blobs").join("sha256"), store.tmp.clone()] {
            fs::create_dir_all(&dir).map_err(ImageError::io("failed to create", &dir))?;
        }
        let marker = store.layout.join("oci-layout");
        if !marker.exists() {
            let text = format!(r#"{{"imageLayoutVersion":"{}"}}"#, spec::OCI_LAYOUT_VERSION);
            store.write_atomic(&marker, text.as_bytes())?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock("index.lock", Lock::Exclusive)?;
            if !store.index_path().exists() {
                store.write_index(&Index {
                    schema_version: 2,
                    media_type: Some(INDEX.to_owned()),
                    ..Index::default()
                })?;
            }
        }
        Ok(store)
    }

    /// The OCI layout directory.
    pub fn layout(&self) -> &Path {
        &self.layout
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.join("blobs").join("sha256").join(digest.hex())
    }

    /// Whether the blob is present with the expected size (its content is
    /// verified whenever it is read).
    pub fn has_blob(&self, descriptor: &Descriptor) -> bool {
        fs::metadata(self.blob_path(&descriptor.digest))
            .is_ok_and(|m| m.is_file() && m.len() == descriptor.size)
    }

    /// Stores bytes whose digest this process computed.
    pub fn put(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, ImageError> {
        let descriptor = Descriptor::of(media_type, bytes);
        if !self.has_blob(&descriptor) {
            let mut writer = self.writer(&descriptor)?;
            writer.write_all(bytes).map_err(|e| writer.error(e))?;
            writer.commit()?;
        }
        Ok(descriptor)
    }

    /// A writer for a blob that must match `expected`: it refuses bytes past
    /// the declared size, and [`BlobWriter::commit`] checks the digest before
    /// the blob appears in the store.
    pub fn writer(&self, expected: &Descriptor) -> Result<BlobWriter, ImageError> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .permissions(readable())
            .tempfile_in(&self.tmp)
            .map_err(ImageError::io(
                "failed to create a temporary file in",
                &self.tmp,
            ))?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            written: 0,
            expected: expected.clone(),
            target: self.blob_path(&expected.digest),
        })
    }

    /// Reads a whole blob of at most `max` bytes, verified against its digest.
    pub fn read(&self, descriptor: &Descriptor, max: u64) -> Result<Vec<u8>, ImageError> {
        if descriptor.size > max {
            return Err(ImageError::InvalidDocument {
                what: format!("blob `{}`", descriptor.digest),
                reason: format!("{} bytes is more than the {max} allowed", descriptor.size),
            });
        }
        let mut bytes = Vec::with_capacity(descriptor.size as usize);
        self.open_blob(descriptor)?
            .read_to_end(&mut bytes)
            .map_err(|e| verify_error(&descriptor.digest, e))?;
        Ok(bytes)
    }

    /// Reads a blob known only by digest (an index entry's target before its
    /// descriptor is trusted), of at most [`MAX_DOCUMENT`] bytes.
    pub fn read_document(&self, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        self.read(descriptor, MAX_DOCUMENT)
    }

    /// Opens a blob for streaming; the reader fails at the end if the bytes
    /// do not match the descriptor, so nothing read from it may be trusted
    /// before it reached the end without error.
    pub fn open_blob(&self, descriptor: &Descriptor) -> Result<VerifyingReader<File>, ImageError> {
        let path = self.blob_path(&descriptor.digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::MissingBlob {
                    digest: descriptor.digest.clone(),
                });
            }
            Err(e) => return Err(ImageError::io("failed to open blob", path)(e)),
        };
        Ok(VerifyingReader::new(file, descriptor))
    }

    fn index_path(&self) -> PathBuf {
        self.layout.join("index.json")
    }

    pub fn index(&self) -> Result<Index, ImageError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(ImageError::io("failed to read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::InvalidDocument {
            what: format!("`{}`", path.display()),
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        let mut bytes = serde_json::to_vec_pretty(index).unwrap_or_default();
        bytes.push(b'\n');
        self.write_atomic(&self.index_path(), &bytes)
    }

    /// Changes `index.json` under the index lock.
    fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let _lock = self.lock("index.lock", Lock::Exclusive)?;
        let mut index = self.index()?;
        let result = change(&mut index)?;
        self.write_index(&index)?;
        Ok(result)
    }

    /// Held while blobs that no image references yet are being added.
    pub fn adding(&self) -> Result<LockGuard, ImageError> {
        self.lock("gc.lock", Lock::Shared)
    }

    /// Names `descriptor` (a manifest or index whose blobs are all present)
    /// `name`, replacing what had that name.
    pub fn tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), ImageError> {
        let mut entry = descriptor.clone();
        entry.annotations.retain(|k, _| k != REF_NAME);
        entry
            .annotations
            .insert(REF_NAME.to_owned(), name.to_owned());
        self.update_index(|index| {
            index
                .manifests
                .retain(|m| entry_name(m).as_deref() != Some(name));
            index.manifests.push(entry);
            Ok(())
        })
    }

    /// Records an image without a name (from an archive of unnamed images),
    /// unless the same manifest is already present.
    pub fn add_dangling(&self, descriptor: &Descriptor) -> Result<(), ImageError> {
        let mut entry = descriptor.clone();
        entry.annotations.clear();
        self.update_index(|index| {
            if !index.manifests.iter().any(|m| m.digest == entry.digest) {
                index.manifests.push(entry);
            }
            Ok(())
        })
    }

    pub fn entries(&self) -> Result<Vec<ImageEntry>, ImageError> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .map(|descriptor| ImageEntry {
                name: entry_name(&descriptor),
                descriptor,
            })
            .collect())
    }

    /// Finds an image by `name[:tag]`, `name@digest`, or an ID (a prefix of
    /// at least 12 hex digits of its manifest digest, as `wrun images` shows).
    pub fn find(&self, reference: &str) -> Result<ImageEntry, ImageError> {
        let entries = self.entries()?;
        let not_found = || ImageError::NotFound {
            reference: reference.to_owned(),
        };
        let id = reference.strip_prefix("sha256:").unwrap_or(reference);
        if id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let id = id.to_ascii_lowercase();
            if let Some(entry) = entries
                .iter()
                .find(|e| e.descriptor.digest.hex().starts_with(&id))
            {
                return Ok(entry.clone());
            }
        }
        let parsed = ImageRef::parse(reference)?;
        if let Some(digest) = parsed.digest() {
            let repository = parsed.repository();
            // An image pulled by the digest of a multi-platform index is
            // stored as its platform's manifest, under the name it was
            // pulled by.
            let pulled_as = parsed.to_string();
            return entries
                .into_iter()
                .filter(|e| e.descriptor.digest == digest || e.name.as_ref() == Some(&pulled_as))
                .min_by_key(|e| {
                    // Prefer an entry of the same repository for its name.
                    let same = e.name.as_deref().and_then(|n| ImageRef::parse(n).ok());
                    same.is_none_or(|r| r.repository() != repository)
                })
                .ok_or_else(not_found);
        }
        let wanted = parsed.tagged();
        entries
            .into_iter()
            .find(|e| e.name.is_some() && e.name == wanted)
            .ok_or_else(not_found)
    }

    /// Removes the name `reference`; the image's blobs go at the next prune.
    pub fn untag(&self, reference: &str) -> Result<ImageEntry, ImageError> {
        let entry = self.find(reference)?;
        self.update_index(|index| {
            index.manifests.retain(|m| match &entry.name {
                Some(name) => entry_name(m).as_ref() != Some(name),
                None => m.digest != entry.descriptor.digest,
            });
            Ok(())
        })?;
        Ok(entry)
    }

    /// Removes dangling images (with `dangling`), then every blob no
    /// image references, stale temporary files, and unpacked file systems
    /// of images that are gone.
    pub fn prune(&self, dangling: bool) -> Result<PruneReport, ImageError> {
        let _gc = self.lock("gc.lock", Lock::Exclusive)?;
        let mut report = PruneReport::default();
        if dangling {
            report.images = self.update_index(|index| {
                let (gone, kept) = std::mem::take(&mut index.manifests)
                    .into_iter()
                    .partition(|m| entry_name(m).is_none());
                index.manifests = kept;
                Ok(gone
                    .into_iter()
                    .map(|descriptor| ImageEntry {
                        name: None,
                        descriptor,
                    })
                    .collect::<Vec<_>>())
            })?;
        }
        let reachable = self.reachable()?;
        let blobs = self.layout.join("blobs").join("sha256");
        for entry in fs::read_dir(&blobs).map_err(ImageError::io("failed to list", &blobs))? {
            let entry = entry.map_err(ImageError::io("failed to list", &blobs))?;
            let name = entry.file_name();
            let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
                continue;
            };
            if reachable.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            fs::remove_file(&path).map_err(ImageError::io("failed to remove", &path))?;
            report.bytes += size;
            report.blobs.push(digest);
        }
        // No writer holds the shared lock now, so every temporary file is
        // left over from an interrupted one.
        if let Ok(dir) = fs::read_dir(&self.tmp) {
            for entry in dir.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        // Temporary files of `index.json` rewrites a crash interrupted;
        // the index lock keeps a rewrite in progress out of the way.
        {
            let _index = self.lock("index.lock", Lock::Exclusive)?;
            if let Ok(dir) = fs::read_dir(&self.layout) {
                for entry in dir.flatten() {
                    if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        let rootfs = self.home.join("rootfs");
        if let Ok(dir) = fs::read_dir(&rootfs) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let kept = Digest::parse(&format!("sha256:{}", name.to_string_lossy()))
                    .is_ok_and(|d| reachable.contains(&d));
                if !kept {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(report)
    }

    /// Every blob some image in the index needs.
    fn reachable(&self) -> Result<BTreeSet<Digest>, ImageError> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<Descriptor> = self.index()?.manifests;
        while let Some(descriptor) = pending.pop() {
            if !seen.insert(descriptor.digest.clone()) {
                continue;
            }
            if !matches!(
                descriptor.media_type.as_str(),
                MANIFEST | INDEX | spec::DOCKER_MANIFEST | spec::DOCKER_MANIFEST_LIST
            ) {
                continue;
            }
            // A child of an index may be absent (platforms not pulled).
            let Ok(bytes) = self.read_document(&descriptor) else {
                continue;
            };
            match Document::parse(Some(&descriptor.media_type), &bytes) {
                Ok(Document::Manifest(m)) => {
                    seen.insert(m.config.digest);
                    seen.extend(m.layers.into_iter().map(|l| l.digest));
                }
                Ok(Document::Index(i)) => pending.extend(i.manifests),
                Err(_) => {}
            }
        }
        Ok(seen)
    }

    /// Writes `bytes` to `path` through a synced temporary file and a rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(readable())
            .tempfile_in(dir)
            .map_err(ImageError::io("failed to create a temporary file in", dir))?;
        file.write_all(bytes)
            .map(|()| crash_hook::point(crash_hook::LAYOUT_BEFORE_SYNC))
            .and_then(|()| file.as_file().sync_all())
            .map_err(ImageError::io("failed to write", path))?;
        crash_hook::point(crash_hook::LAYOUT_BEFORE_RENAME);
        file.persist(path)
            .map_err(|e| ImageError::io("failed to write", path)(e.error))?;
        crash_hook::point(crash_hook::LAYOUT_AFTER_RENAME);
        Ok(())
    }

    fn lock(&self, name: &str, kind: Lock) -> Result<LockGuard, ImageError> {
        let path = self.home.join(format!("images.{name}"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("failed to open lock file", &path))?;
        let operation = match kind {
            Lock::Shared => rustix::fs::FlockOperation::LockShared,
            Lock::Exclusive => rustix::fs::FlockOperation::LockExclusive,
        };
        rustix::fs::flock(&file, operation)
            .map_err(|e| ImageError::io("failed to lock", &path)(e.into()))?;
        Ok(LockGuard { _file: file })
    }
}

/// Blobs and the index are content anyone may read, as other OCI tools
/// write them; `tempfile` would create them for the owner alone.
fn readable() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(0o644)
}

enum Lock {
    Shared,
    Exclusive,
}

/// A held lock on the store; released when dropped (or when the process
/// ends, however it ends).
pub struct LockGuard {
    _file: File,
}

/// The `repository:tag` an index entry is named by, normalized so that
/// `docker.io/library/hello:1` (as containerd writes it) is `hello:1`.
pub(crate) fn entry_name(descriptor: &Descriptor) -> Option<String> {
    // containerd's annotation first: `docker save` puts only the tag in the
    // OCI one.
    let name = descriptor
        .annotations
        .get(spec::CONTAINERD_NAME)
        .or_else(|| descriptor.annotations.get(REF_NAME))?;
    Some(
        ImageRef::parse(name)
            .ok()
            .and_then(|r| r.tagged())
            .unwrap_or_else(|| name.clone()),
    )
}

/// A blob being written; see [`ImageStore::writer`].
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    expected: Descriptor,
    target: PathBuf,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    fn error(&self, e: io::Error) -> ImageError {
        ImageError::io("failed to write blob", self.file.path())(e)
    }

    /// Verifies what was written and moves it into the store.
    pub fn commit(self) -> Result<(), ImageError> {
        let digest = &self.expected.digest;
        if self.written != self.expected.size {
            return Err(ImageError::Corrupted {
                digest: digest.clone(),
                reason: format!(
                    "{} bytes arrived where {} were declared",
                    self.written, self.expected.size
                ),
            });
        }
        let actual = Digest::from_hasher(self.hasher);
        if actual != *digest {
            return Err(ImageError::Corrupted {
                digest: digest.clone(),
                reason: format!("its content hashes to `{actual}`"),
            });
        }
        crash_hook::point(crash_hook::BLOB_BEFORE_SYNC);
        self.file
            .as_file()
            .sync_all()
            .map_err(ImageError::io("failed to write blob", &self.target))?;
        crash_hook::point(crash_hook::BLOB_BEFORE_RENAME);
        self.file
            .persist(&self.target)
            .map_err(|e| ImageError::io("failed to write blob", &self.target)(e.error))?;
        crash_hook::point(crash_hook::BLOB_AFTER_RENAME);
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.expected.size {
            return Err(io::Error::other(format!(
                "blob `{}` is longer than its declared {} bytes",
                self.expected.digest, self.expected.size
            )));
        }
        if let Some(k) = crash_hook::cut(crash_hook::BLOB_BYTES, buf.len()) {
            self.file.write_all(&buf[..k])?;
            crash_hook::kill();
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A reader that hashes what passes through it and fails at the end (or as
/// soon as it passes the declared size) if the content is not what the
/// descriptor says.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expected: Descriptor,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: &Descriptor) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
            expected: expected.clone(),
            done: false,
        }
    }

    /// Reads to the end, so that the digest is checked even when the
    /// consumer stopped early (a tar reader stops at its end marker).
    pub fn finish(mut self) -> Result<(), ImageError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| verify_error(&self.expected.digest, e))?;
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        let digest = &self.expected.digest;
        if self.read > self.expected.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Mismatch(format!(
                    "it is longer than its declared {} bytes",
                    self.expected.size
                )),
            ));
        }
        if n == 0 {
            self.done = true;
            if self.read != self.expected.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Mismatch(format!(
                        "it has {} bytes where {} were declared",
                        self.read, self.expected.size
                    )),
                ));
            }
            let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
            if actual != *digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Mismatch(format!("its content hashes to `{actual}`")),
                ));
            }
        }
        Ok(n)
    }
}

/// A digest or size mismatch found while reading, carried through `io::Error`.
#[derive(Debug)]
pub(crate) struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

/// Turns a read error into "corrupted" when it was a verification failure.
pub(crate) fn verify_error(digest: &Digest, e: io::Error) -> ImageError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Mismatch>())
    {
        Some(Mismatch(reason)) => ImageError::Corrupted {
            digest: digest.clone(),
            reason: reason.clone(),
        },
        None => ImageError::Io {
            context: "failed to read blob",
            path: PathBuf::from(digest.to_string()),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_on_the_way_in_and_out() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let d = store.put("application/wasm", b"hello").unwrap();
        assert_eq!(store.read(&d, 100).unwrap(), b"hello");
        // A writer refuses content that does not match.
        let mut w = store.writer(&d).unwrap();
        w.write_all(b"hellO").unwrap();
        let err = w.commit().unwrap_err().to_string();
        assert!(
            err.contains(d.digest.as_str()) && err.contains("hashes to"),
            "{err}"
        );
        // A flipped byte on disk is reported by digest.
        fs::write(store.blob_path(&d.digest), b"hellO").unwrap();
        let err = store.read(&d, 100).unwrap_err().to_string();
        assert!(err.contains("is corrupted"), "{err}");
        // Nothing is left behind in tmp by a failed write.
        assert_eq!(fs::read_dir(home.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn tags_find_and_prune() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let layer = store.put("application/wasm", b"\0asm").unwrap();
        let config = store.put(spec::WASM_CONFIG, b"{}").unwrap();
        let orphan = store.put("application/wasm", b"orphan").unwrap();
        let manifest = spec::Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST.into()),
            artifact_type: None,
            config,
            layers: vec![layer.clone()],
            annotations: Default::default(),
        };
        let m = store.put(MANIFEST, &spec::to_json(&manifest)).unwrap();
        store.tag("hello:1", &m).unwrap();
        assert_eq!(store.find("hello:1").unwrap().descriptor.digest, m.digest);
        assert_eq!(
            store
                .find("docker.io/library/hello:1")
                .unwrap()
                .name
                .unwrap(),
            "hello:1"
        );
        assert_eq!(
            store.find(m.digest.short()).unwrap().descriptor.digest,
            m.digest
        );
        assert!(store.find(&format!("hello@{}", m.digest)).is_ok());
        assert!(matches!(
            store.find("hello:2"),
            Err(ImageError::NotFound { .. })
        ));
        fs::write(store.layout().join(".tmp-crashed"), b"{").unwrap();
        let report = store.prune(true).unwrap();
        assert_eq!(report.blobs, vec![orphan.digest]);
        assert!(!store.layout().join(".tmp-crashed").exists());
        assert!(store.has_blob(&layer));
        store.untag("hello:1").unwrap();
        let report = store.prune(true).unwrap();
        assert_eq!(report.blobs.len(), 3);
    }
}
