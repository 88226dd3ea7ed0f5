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
//!
//! A running app marks its image in use ([`ImageStore::mark_in_use`]): a
//! shared `flock` on `images.in-use/<manifest>`, taken under the shared gc
//! lock and held until the app exits. Prune, which holds the gc lock
//! exclusively, keeps an image in use with its blobs and its unpacked tree
//! even if it lost its name meanwhile.
//!
//! Temporary files of writers that were killed are removed when the store
//! is opened, at most once an hour, and only when no writer is at work (the
//! gc lock is free): a lock rather than an age, because a pull may take as
//! long as its network does.

use super::spec::{self, Descriptor, Digest, Document, INDEX, Index, MANIFEST, REF_NAME};
use super::{ImageError, ImageRef};
use crate::crash_hook;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Temporary files in the layout itself (`.tmp-*` of `index.json` and
/// `oci-layout`) younger than this are kept by the sweep on open: the very
/// first `oci-layout` is written without a lock.
const LAYOUT_TEMP_AGE: Duration = Duration::from_secs(10 * 60);

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
    /// Unpacked trees removed, by manifest digest, with their bytes.
    pub trees: Vec<(String, u64)>,
    /// Temporary files and directories of interrupted writers removed.
    pub temps: usize,
    /// Everything freed: blobs, trees and temporary files.
    pub bytes: u64,
}

/// A container that uses an image, as [`ImageStore::remove`] is told.
#[derive(Debug, Clone)]
pub struct ImageUser {
    pub id: String,
    /// Running (or paused, or restarting), as opposed to stopped.
    pub running: bool,
}

/// What [`ImageStore::remove`] did.
#[derive(Debug, Default)]
pub struct RemoveReport {
    /// The names removed.
    pub untagged: Vec<String>,
    /// The image (its manifest digest), if it went too.
    pub deleted: Option<Digest>,
}

/// Which images [`ImageStore::prune_images`] removes (besides blobs no image
/// needs, temporary files, and trees of images that are gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneImages {
    /// None.
    None,
    /// Images without a name.
    Dangling,
    /// Every image no running app uses (`wrun system prune -a`); their
    /// unpacked trees go too.
    Unused,
}

/// What the store holds, for `wrun system df`.
#[derive(Debug, Default, Clone)]
pub struct StoreUsage {
    pub images: usize,
    /// Images a running app uses.
    pub active_images: usize,
    /// Bytes of every blob.
    pub blob_bytes: u64,
    /// Bytes of the blobs no image in use needs.
    pub reclaimable_blob_bytes: u64,
    pub trees: usize,
    pub active_trees: usize,
    pub tree_bytes: u64,
    pub reclaimable_tree_bytes: u64,
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
        store.sweep_if_due();
        Ok(store)
    }

    /// At most once an hour, when no writer is at work, removes what killed
    /// writers left in `tmp/` and the layout (see the module docs). One
    /// `stat` when not due; failures only log.
    fn sweep_if_due(&self) {
        let marker = self.home.join("images.swept");
        if !crate::cache::sweep_due(&marker) {
            return;
        }
        // A writer holds the gc lock shared: try again at a later start.
        let Ok(Some(_gc)) = self.try_lock("gc.lock") else {
            return;
        };
        let (count, _) = self.clear_temps(LAYOUT_TEMP_AGE);
        if count > 0 {
            tracing::debug!(count, "removed temporary files of interrupted image writes");
        }
        crate::cache::stamp_swept(&marker);
    }

    /// Removes everything in `tmp/` (the caller holds the gc lock
    /// exclusively, so no writer is using it) and the layout's `.tmp-*`
    /// files at least `layout_age` old (under the index lock, so no rewrite
    /// of `index.json` is using them). Returns the count and bytes removed.
    fn clear_temps(&self, layout_age: Duration) -> (usize, u64) {
        let (mut count, mut bytes) = (0, 0);
        if let Ok(dir) = fs::read_dir(&self.tmp) {
            for entry in dir.flatten() {
                let path = entry.path();
                let size = disk_usage(&path);
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if removed.is_ok() {
                    count += 1;
                    bytes += size;
                }
            }
        }
        let Ok(_index) = self.lock("index.lock", Lock::Exclusive) else {
            return (count, bytes);
        };
        let (stale, stale_bytes) = crate::cache::remove_stale_temps(&self.layout, layout_age);
        (count + stale, bytes + stale_bytes)
    }

    /// Marks the image whose manifest is `digest` as used by this process
    /// until the guard is dropped: prune keeps it, its blobs and its
    /// unpacked tree, and `wrun system df` counts it active. Fails with
    /// `NotFound` if the image was removed before the mark was taken.
    pub fn mark_in_use(&self, digest: &Digest) -> Result<LockGuard, ImageError> {
        let _gc = self.adding()?;
        let dir = self.in_use_dir();
        fs::create_dir_all(&dir).map_err(ImageError::io("failed to create", &dir))?;
        let path = dir.join(digest.hex());
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("failed to open lock file", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| ImageError::io("failed to lock", &path)(e.into()))?;
        // Under the gc lock no prune runs: the image either is still there,
        // and stays while the mark is held, or went before it was taken.
        if !self.index()?.manifests.iter().any(|m| m.digest == *digest) {
            return Err(ImageError::NotFound {
                reference: digest.to_string(),
            });
        }
        Ok(LockGuard { _file: file })
    }

    fn in_use_dir(&self) -> PathBuf {
        self.home.join("images.in-use")
    }

    /// The manifests that running apps use; stale marks (of apps that
    /// ended) are removed when `remove_stale`, which needs the gc lock held
    /// exclusively.
    fn in_use(&self, remove_stale: bool) -> BTreeSet<Digest> {
        let mut used = BTreeSet::new();
        let Ok(dir) = fs::read_dir(self.in_use_dir()) else {
            return used;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
                continue;
            };
            if is_held_shared(&entry.path()) {
                used.insert(digest);
            } else if remove_stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        used
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

    /// Held while removing what no one uses: no `adding` holder is at work.
    pub(crate) fn collecting(&self) -> Result<LockGuard, ImageError> {
        self.lock("gc.lock", Lock::Exclusive)
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
    /// at least 12 hex digits of its manifest digest, as `wrun images` shows,
    /// or of any length after `sha256:`) that only one image has.
    pub fn find(&self, reference: &str) -> Result<ImageEntry, ImageError> {
        find_entry(&self.entries()?, reference)
    }

    /// Gives the image `source` names (as [`ImageStore::find`] takes it) the
    /// name `target` as well (`wrun tag`, `docker tag`); returns the name as
    /// stored (`hello:1` for `docker.io/library/hello:1`).
    pub fn add_name(&self, source: &str, target: &str) -> Result<String, ImageError> {
        let entry = self.find(source)?;
        let Some(name) = ImageRef::parse(target)?.tagged() else {
            return Err(ImageError::InvalidReference {
                reference: crate::input::excerpt(target).to_string(),
                reason: "a new name needs a tag, not a digest".to_owned(),
            });
        };
        self.tag(&name, &entry.descriptor)?;
        Ok(name)
    }

    /// Removes `reference` as `docker rmi` does (moby's `ImageDelete`). A
    /// name is untagged, and the image goes with its last name; an ID or a
    /// digest removes the image with all its names, which must be `force`d
    /// when it has several. `users` says which containers use an image
    /// (by manifest digest): none may be running, and none stopped unless
    /// `force`d; an image that loses its last name to a forced untag while
    /// a container runs keeps existing, unnamed. Blobs go at the next prune,
    /// and never while a running app holds them (see the module docs).
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        users: impl FnOnce(&Digest) -> Vec<ImageUser>,
    ) -> Result<RemoveReport, ImageError> {
        self.update_index(|index| {
            let entries: Vec<ImageEntry> = index
                .manifests
                .iter()
                .map(|descriptor| ImageEntry {
                    name: entry_name(descriptor),
                    descriptor: descriptor.clone(),
                })
                .collect();
            let entry = find_entry(&entries, reference)?;
            let digest = entry.descriptor.digest.clone();
            let names: Vec<String> = entries
                .iter()
                .filter(|e| e.descriptor.digest == digest)
                .filter_map(|e| e.name.clone())
                .collect();
            let users = users(&digest);
            let running = users.iter().find(|u| u.running);
            let stopped = users.iter().find(|u| !u.running);
            let short = |id: &str| id.chars().take(12).collect::<String>();
            let conflict = |hard: bool, why: String| {
                let how = if hard {
                    "cannot be forced"
                } else {
                    "must be forced"
                };
                ImageError::Conflict(format!(
                    "conflict: unable to delete {} ({how}) - {why}",
                    digest.short()
                ))
            };
            let mut report = RemoveReport::default();
            match entry
                .name
                .as_ref()
                .filter(|_| !names_by_id(reference, &digest))
            {
                Some(name) => {
                    if !force
                        && names.len() == 1
                        && let Some(user) = users.first()
                    {
                        return Err(ImageError::Conflict(format!(
                            "conflict: unable to remove repository reference \"{}\" (must force) \
                             - container {} is using its referenced image {}",
                            crate::input::excerpt(reference),
                            short(&user.id),
                            digest.short()
                        )));
                    }
                    index
                        .manifests
                        .retain(|m| entry_name(m).as_ref() != Some(name));
                    report.untagged.push(name.clone());
                    // Other names keep it; a container still running keeps it
                    // unnamed (moby ignores the conflict of an untag).
                    if names.len() > 1 {
                        return Ok(report);
                    }
                    if running.is_some() {
                        let mut unnamed = entry.descriptor.clone();
                        unnamed.annotations.clear();
                        index.manifests.push(unnamed);
                        return Ok(report);
                    }
                }
                None => {
                    if let Some(user) = running {
                        return Err(conflict(
                            true,
                            format!(
                                "image is being used by running container {}",
                                short(&user.id)
                            ),
                        ));
                    }
                    if !force {
                        if names.len() > 1 {
                            return Err(conflict(
                                false,
                                "image is referenced in multiple repositories".to_owned(),
                            ));
                        }
                        if let Some(user) = stopped {
                            return Err(conflict(
                                false,
                                format!(
                                    "image is being used by stopped container {}",
                                    short(&user.id)
                                ),
                            ));
                        }
                    }
                    report.untagged = names;
                }
            }
            index.manifests.retain(|m| m.digest != digest);
            report.deleted = Some(digest);
            Ok(report)
        })
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
        self.prune_images(if dangling {
            PruneImages::Dangling
        } else {
            PruneImages::None
        })
    }

    /// Removes the images `which` says (never one a running app uses), then
    /// every blob no remaining or running image needs, stale temporary
    /// files, and unpacked trees of images that are gone.
    pub fn prune_images(&self, which: PruneImages) -> Result<PruneReport, ImageError> {
        let _gc = self.lock("gc.lock", Lock::Exclusive)?;
        let mut report = PruneReport::default();
        let in_use = self.in_use(true);
        if which != PruneImages::None {
            report.images = self.update_index(|index| {
                let (gone, kept) =
                    std::mem::take(&mut index.manifests)
                        .into_iter()
                        .partition(|m| {
                            !in_use.contains(&m.digest)
                                && (which == PruneImages::Unused || entry_name(m).is_none())
                        });
                index.manifests = kept;
                Ok(gone
                    .into_iter()
                    .map(|descriptor| ImageEntry {
                        name: entry_name(&descriptor),
                        descriptor,
                    })
                    .collect::<Vec<_>>())
            })?;
        }
        let mut roots = self.index()?.manifests;
        roots.extend(self.in_use_descriptors(&in_use));
        let reachable = self.reachable_from(roots);
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
        // left over from an interrupted one; the index lock keeps a rewrite
        // of `index.json` in progress out of the way.
        let (temps, bytes) = self.clear_temps(Duration::ZERO);
        report.temps = temps;
        report.bytes += bytes;
        for (hex, path) in self.trees() {
            let kept =
                Digest::parse(&format!("sha256:{hex}")).is_ok_and(|d| reachable.contains(&d));
            if !kept {
                let size = disk_usage(&path);
                if fs::remove_dir_all(&path).is_ok() {
                    report.bytes += size;
                    report.trees.push((hex, size));
                }
            }
        }
        Ok(report)
    }

    /// The unpacked trees, `rootfs/<manifest hex>`.
    fn trees(&self) -> Vec<(String, PathBuf)> {
        let Ok(dir) = fs::read_dir(self.home.join("rootfs")) else {
            return Vec::new();
        };
        dir.flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect()
    }

    /// Descriptors for the manifests in `digests`, as far as their blobs
    /// are present (an image in use may have lost its index entry).
    fn in_use_descriptors(&self, digests: &BTreeSet<Digest>) -> Vec<Descriptor> {
        let mut found = Vec::new();
        for digest in digests {
            let path = self.blob_path(digest);
            let Ok(size) = fs::metadata(&path).map(|m| m.len()) else {
                continue;
            };
            let mut descriptor = Descriptor::of_digest(digest.clone(), size);
            let Ok(bytes) = self.read_document(&descriptor) else {
                continue;
            };
            descriptor.media_type = match Document::parse(None, &bytes) {
                Ok(Document::Index(i)) => i.media_type.unwrap_or_else(|| INDEX.to_owned()),
                Ok(Document::Manifest(m)) => m.media_type.unwrap_or_else(|| MANIFEST.to_owned()),
                Err(_) => continue,
            };
            found.push(descriptor);
        }
        found
    }

    /// What the store holds and what `wrun system prune -a` would free.
    pub fn usage(&self) -> Result<StoreUsage, ImageError> {
        let in_use = self.in_use(false);
        let entries = self.entries()?;
        let needed = self.reachable_from(self.in_use_descriptors(&in_use));
        let mut usage = StoreUsage {
            images: entries.len(),
            active_images: entries
                .iter()
                .filter(|e| in_use.contains(&e.descriptor.digest))
                .count(),
            ..StoreUsage::default()
        };
        let blobs = self.layout.join("blobs").join("sha256");
        if let Ok(dir) = fs::read_dir(&blobs) {
            for entry in dir.flatten() {
                let size = entry.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
                usage.blob_bytes += size;
                let name = entry.file_name();
                let needed = Digest::parse(&format!("sha256:{}", name.to_string_lossy()))
                    .is_ok_and(|d| needed.contains(&d));
                if !needed {
                    usage.reclaimable_blob_bytes += size;
                }
            }
        }
        for (hex, path) in self.trees() {
            let size = disk_usage(&path);
            usage.trees += 1;
            usage.tree_bytes += size;
            let active = Digest::parse(&format!("sha256:{hex}")).is_ok_and(|d| in_use.contains(&d));
            if active {
                usage.active_trees += 1;
            } else {
                usage.reclaimable_tree_bytes += size;
            }
        }
        Ok(usage)
    }

    /// Every blob the images `roots` need.
    fn reachable_from(&self, roots: Vec<Descriptor>) -> BTreeSet<Digest> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<Descriptor> = roots;
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
        seen
    }

    /// Writes `bytes` to `path` through a synced temporary file and a rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        crate::atomic::write(path, bytes, 0o644).map_err(ImageError::io("failed to write", path))
    }

    /// The exclusive lock `name`, or `None` if someone holds it.
    fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, ImageError> {
        let path = self.home.join(format!("images.{name}"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("failed to open lock file", &path))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(LockGuard { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(ImageError::io("failed to lock", &path)(e.into())),
        }
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

/// The image `reference` names among `entries`; see [`ImageStore::find`].
fn find_entry(entries: &[ImageEntry], reference: &str) -> Result<ImageEntry, ImageError> {
    let not_found = || ImageError::NotFound {
        reference: reference.to_owned(),
    };
    if let Some(id) = id_prefix(reference) {
        let mut found = entries
            .iter()
            .filter(|e| e.descriptor.digest.hex().starts_with(&id));
        if let Some(entry) = found.next() {
            if found.any(|e| e.descriptor.digest != entry.descriptor.digest) {
                return Err(ImageError::InvalidReference {
                    reference: crate::input::excerpt(reference).to_string(),
                    reason: "more than one image has an ID starting so".to_owned(),
                });
            }
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
            .iter()
            .filter(|e| e.descriptor.digest == digest || e.name.as_ref() == Some(&pulled_as))
            .min_by_key(|e| {
                // Prefer an entry of the same repository for its name.
                let same = e.name.as_deref().and_then(|n| ImageRef::parse(n).ok());
                same.is_none_or(|r| r.repository() != repository)
            })
            .cloned()
            .ok_or_else(not_found);
    }
    let wanted = parsed.tagged();
    entries
        .iter()
        .find(|e| e.name.is_some() && e.name == wanted)
        .cloned()
        .ok_or_else(not_found)
}

/// The ID prefix `reference` may be, lowercase: 12 or more hex digits (as
/// `wrun images` and `docker images` show IDs), or any number after
/// `sha256:` (docker-py's `short_id` has 10).
fn id_prefix(reference: &str) -> Option<String> {
    let (id, explicit) = match reference.strip_prefix("sha256:") {
        Some(id) => (id, true),
        None => (reference, false),
    };
    let hex = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && (explicit || id.len() >= 12)).then(|| id.to_ascii_lowercase())
}

/// Whether `reference`, which found the image `digest`, named it by its
/// content (an ID or a digest) rather than by one of its names.
fn names_by_id(reference: &str, digest: &Digest) -> bool {
    reference.contains('@') || id_prefix(reference).is_some_and(|id| digest.hex().starts_with(&id))
}

/// Whether a live process holds a (shared) lock on `path`.
pub(crate) fn is_held_shared(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
}

/// Bytes on disk of `path` and, for a directory, everything below it
/// (symlinks are not followed).
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(dir) = fs::read_dir(path)
    {
        for entry in dir.flatten() {
            total += disk_usage(&entry.path());
        }
    }
    total
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
            reason: e,
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

    /// An image a running app uses is kept with its blobs by every prune,
    /// even once it has lost its name; when the app ends, it goes.
    #[test]
    fn images_in_use_survive_prune() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let image = |payload: &[u8], name: &str| {
            let layer = store.put("application/wasm", payload).unwrap();
            let config = store.put(spec::WASM_CONFIG, b"{}").unwrap();
            let manifest = spec::Manifest {
                schema_version: 2,
                media_type: Some(MANIFEST.into()),
                artifact_type: None,
                config,
                layers: vec![layer],
                annotations: Default::default(),
            };
            let m = store.put(MANIFEST, &spec::to_json(&manifest)).unwrap();
            store.tag(name, &m).unwrap();
            m
        };
        let running = image(b"\0asm running", "running:1");
        let idle = image(b"\0asm idle", "idle:1");
        let mark = store.mark_in_use(&running.digest).unwrap();
        let usage = store.usage().unwrap();
        assert_eq!((usage.images, usage.active_images), (2, 1));
        assert!(
            usage.reclaimable_blob_bytes > 0 && usage.reclaimable_blob_bytes < usage.blob_bytes
        );

        // -a: every image no running app uses.
        let report = store.prune_images(PruneImages::Unused).unwrap();
        let names: Vec<_> = report.images.iter().map(|i| i.name.clone()).collect();
        assert_eq!(names, [Some("idle:1".to_owned())]);
        assert!(!store.has_blob(&idle));
        // Untagged while it runs: still kept.
        store.untag("running:1").unwrap();
        store.prune(true).unwrap();
        assert!(store.has_blob(&running));
        drop(mark);
        store.prune(true).unwrap();
        assert!(!store.has_blob(&running), "gone once the app ended");
        assert!(matches!(
            store.mark_in_use(&running.digest),
            Err(ImageError::NotFound { .. })
        ));
    }

    /// `docker rmi`'s rules: names one at a time, IDs all at once (forced
    /// when several), containers in the way, IDs of any length after
    /// `sha256:`.
    #[test]
    fn remove_follows_docker() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let image = |payload: &[u8]| {
            let layer = store.put("application/wasm", payload).unwrap();
            let config = store.put(spec::WASM_CONFIG, b"{}").unwrap();
            let manifest = spec::Manifest {
                schema_version: 2,
                media_type: Some(MANIFEST.into()),
                artifact_type: None,
                config,
                layers: vec![layer],
                annotations: Default::default(),
            };
            store.put(MANIFEST, &spec::to_json(&manifest)).unwrap()
        };
        let none = |_: &Digest| Vec::new();
        let m = image(b"\0asm one");
        store.tag("a:1", &m).unwrap();
        assert_eq!(
            store.add_name("a:1", "docker.io/library/b:2").unwrap(),
            "b:2"
        );
        assert!(store.add_name("a:1", &format!("c@{}", m.digest)).is_err());
        let id = m.digest.short().to_owned();
        let err = store.remove(&id, false, none).unwrap_err().to_string();
        assert!(err.contains("referenced in multiple repositories"), "{err}");
        let report = store.remove("a:1", false, none).unwrap();
        assert_eq!(
            (report.untagged, report.deleted),
            (vec!["a:1".into()], None)
        );
        let stopped = |_: &Digest| {
            vec![ImageUser {
                id: "c0ffee".repeat(8),
                running: false,
            }]
        };
        let err = store.remove("b:2", false, stopped).unwrap_err().to_string();
        assert!(err.contains("container c0ffeec0ffee is using"), "{err}");
        let running = |_: &Digest| {
            vec![ImageUser {
                id: "beef".repeat(16),
                running: true,
            }]
        };
        let err = store.remove(&id, true, running).unwrap_err().to_string();
        assert!(err.contains("(cannot be forced)"), "{err}");
        // Forced off its last name while it runs: kept, unnamed.
        let report = store.remove("b:2", true, running).unwrap();
        assert_eq!(
            (report.untagged, report.deleted),
            (vec!["b:2".into()], None)
        );
        let entries = store.entries().unwrap();
        assert!(entries.len() == 1 && entries[0].name.is_none());
        let short = &format!("sha256:{}", &m.digest.hex()[..10]);
        let report = store.remove(short, false, none).unwrap();
        assert_eq!(report.deleted, Some(m.digest.clone()));
        assert!(store.entries().unwrap().is_empty());
        assert!(matches!(
            store.remove("ghost", true, none),
            Err(ImageError::NotFound { .. })
        ));
    }

    #[test]
    fn temporary_files_are_swept_on_open_unless_a_writer_is_at_work() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        let marker = home.path().join("images.swept");
        let left = home.path().join("tmp/blob-killed");
        // A writer at work: its temporary file stays.
        fs::write(&left, b"half a blob").unwrap();
        fs::remove_file(&marker).unwrap();
        let writer = store.adding().unwrap();
        ImageStore::open(home.path()).unwrap();
        assert!(left.exists() && !marker.exists());
        drop(writer);
        ImageStore::open(home.path()).unwrap();
        assert!(!left.exists() && marker.exists());
    }
}
