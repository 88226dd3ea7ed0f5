//! Applies OCI image layer tarballs onto a directory.
//!
//! Layers come from registries we do not control, so every entry is treated as
//! hostile: a layer must not be able to write outside the image root, plant a
//! symlink that leads out of it, create device nodes or setuid programs, or
//! exhaust the disk or memory of the host that unpacks it.
//!
//! On error `root` is left partly written: the caller discards it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{
    Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt,
};
use flate2::read::MultiGzDecoder;
use tar::EntryType;

/// The prefix that marks an OCI whiteout: the entry deletes, it is not written.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// What follows the prefix in `.wh..wh..opq`, the whiteout that hides
/// everything lower layers put in its directory.
const OPAQUE_WHITEOUT: &[u8] = b".wh..opq";
/// Tar bytes a legitimate entry may need besides its path and body: its
/// header, plus a pax or GNU long-name header of its own.
const TAR_OVERHEAD_PER_ENTRY: u64 = 3 * 512;
/// The two zero blocks that end an archive, and padding after them.
const TAR_TRAILER: u64 = 20 * 512;

/// How much one image may unpack, across all its layers: a hostile layer cannot fill the disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of regular-file content, summed over all layers.
    pub max_bytes: u64,
    /// Tar entries of any kind, summed over all layers.
    pub max_entries: u64,
    /// Bytes in one entry path or link target.
    pub max_path_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
            max_entries: 100_000,
            max_path_len: 4096,
        }
    }
}

/// The layer media type's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// A gzip-compressed tar, possibly in several gzip members.
    Gzip,
}

impl Compression {
    /// Only the compressions we can decode are accepted, so an unknown layer
    /// (zstd, encrypted, foreign) is refused up front instead of being parsed
    /// as a tar.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }
}

/// Running totals across the layers of one image.
///
/// Kept by the caller across layers because the limits bound the whole image:
/// otherwise many small layers would add up to an unbounded one.
#[derive(Debug, Default)]
pub struct Budget {
    bytes: u64,
    entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry that is refused, named.
    #[error("layer entry `{entry}`: {reason}")]
    Entry { entry: String, reason: String },
    #[error("the layers unpack to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the layers hold more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// A corrupt gzip stream or a truncated tar.
    #[error("failed to read the layer: {0}")]
    Read(io::Error),
    // Not a `source()`: the message says it already (see `ImageError::Io`).
    #[error("failed to write `{entry}`: {reason}")]
    Write { entry: String, reason: io::Error },
}

/// Applies one layer (an OCI changeset, in order) onto `root`, which earlier layers may already have filled.
///
/// Every write goes through `root` as a capability, so even a symlink that
/// something else planted in `root` cannot lead a write out of it.
pub fn apply_layer(
    root: &Dir,
    layer: impl Read,
    compression: Compression,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<(), UnpackError> {
    match compression {
        Compression::None => apply_tar(root, layer, limits, budget),
        // Multi-member, because parallel compressors (pigz) write layers that way.
        Compression::Gzip => apply_tar(root, MultiGzDecoder::new(layer), limits, budget),
    }
}

fn apply_tar(
    root: &Dir,
    stream: impl Read,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<(), UnpackError> {
    // The tar crate reads pax and GNU long-name headers whole into memory and
    // skips the bodies of entries we do not write, both before we see the
    // entry. Capping the decompressed stream bounds that memory and time to
    // what the remaining budget could legitimately need.
    let per_entry = TAR_OVERHEAD_PER_ENTRY.saturating_add(2 * limits.max_path_len as u64);
    let left = limits
        .max_bytes
        .saturating_sub(budget.bytes)
        .saturating_add(
            limits
                .max_entries
                .saturating_sub(budget.entries)
                .saturating_mul(per_entry),
        )
        .saturating_add(TAR_TRAILER);
    let mut archive = tar::Archive::new(Capped {
        inner: stream,
        left,
        exhausted: false,
        header: Vec::with_capacity(512),
        body_left: 0,
        oversized: None,
    });
    let result = apply_entries(root, &mut archive, limits, budget);
    let capped = archive.into_inner();
    match result {
        Err(UnpackError::Read(_)) if capped.exhausted => Err(UnpackError::TooLarge {
            limit: limits.max_bytes,
        }),
        Err(UnpackError::Read(_)) if capped.oversized.is_some() => {
            let (kind, size) = capped.oversized.unwrap_or_default();
            Err(UnpackError::Entry {
                entry: format!("<{kind} header>"),
                reason: format!(
                    "it declares {size} bytes; at most {MAX_METADATA_ENTRY} are allowed"
                ),
            })
        }
        other => other,
    }
}

/// The largest pax or GNU long-name/long-link header body accepted: far
/// above any real path or set of attributes, far below what would hurt.
const MAX_METADATA_ENTRY: u64 = 1 << 20;

/// A reader that fails once it has given `left` bytes (a gzip bomb stops
/// here), and that follows the tar framing as the bytes pass, so that a pax
/// or long-name header declaring a huge body fails before the tar crate
/// reads that body into memory.
struct Capped<R> {
    inner: R,
    left: u64,
    exhausted: bool,
    /// The header block being read, while not inside an entry's body.
    header: Vec<u8>,
    /// Bytes of the current entry's body (with padding) still to pass.
    body_left: u64,
    /// The kind and declared size of a refused metadata header.
    oversized: Option<(&'static str, u64)>,
}

impl<R> Capped<R> {
    /// Follows the framing through `bytes`; fails on an oversized header.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = bytes.len().min(512 - self.header.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < 512 {
                break;
            }
            let size = header_size(&self.header);
            let kind = match self.header[156] {
                b'x' | b'g' => Some("pax"),
                b'L' | b'K' => Some("long name"),
                _ => None,
            };
            self.header.clear();
            if let Some(kind) = kind
                && size > MAX_METADATA_ENTRY
            {
                self.oversized = Some((kind, size));
                return Err(io::Error::other(format!("a {kind} header of {size} bytes")));
            }
            // An all-zero end block has size 0 and keeps us reading headers.
            self.body_left = size.div_ceil(512).saturating_mul(512);
        }
        Ok(())
    }
}

/// A tar header's size field: octal digits, or GNU's base-256 form (high bit
/// set), which only absurd sizes need.
fn header_size(header: &[u8]) -> u64 {
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        return u64::MAX;
    }
    field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .fold(0u64, |n, b| {
            n.saturating_mul(8).saturating_add(u64::from(b - b'0'))
        })
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            self.exhausted = true;
            return Err(io::Error::other(
                "the layer is larger than the budget allows",
            ));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

fn apply_entries<R: Read>(
    root: &Dir,
    archive: &mut tar::Archive<R>,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<(), UnpackError> {
    let mut layer = Layer {
        root,
        limits,
        written: HashSet::new(),
    };
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        budget.entries += 1;
        if budget.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        layer.apply(&mut entry, budget)?;
    }
    Ok(())
}

/// One layer being applied.
struct Layer<'a> {
    root: &'a Dir,
    limits: &'a Limits,
    /// Paths this layer wrote, and their ancestors. An opaque whiteout hides
    /// only what lower layers put there (OCI image spec), so it must spare
    /// these; bounded by `max_entries` paths of at most `max_path_len` bytes.
    written: HashSet<PathBuf>,
}

impl Layer<'_> {
    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        budget: &mut Budget,
    ) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason: String| UnpackError::Entry {
            entry: name.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let path = entry_path(&raw, "its path", self.limits).map_err(refuse)?;
        let Some(file_name) = path.file_name() else {
            // `./`: the root itself, whose permissions the caller owns.
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(refuse("only a directory may name the root".into())),
            };
        };
        if let Some(hidden) = file_name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            let parent = path.parent().unwrap_or(Path::new(""));
            return self.whiteout(parent, hidden, &name);
        }
        let write = |reason| UnpackError::Write {
            entry: name.clone(),
            reason,
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if size > self.limits.max_bytes.saturating_sub(budget.bytes) {
                    return Err(UnpackError::TooLarge {
                        limit: self.limits.max_bytes,
                    });
                }
                // Only the execute bit survives: setuid, setgid and sticky bits
                // from an image would be privilege escalation on the host.
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|_| refuse("its mode is not an octal number".into()))?;
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                self.make_room(&path).map_err(write)?;
                self.write_file(&path, entry, size, mode, budget, &name)?;
            }
            EntryType::Directory => self.make_dir(&path).map_err(write)?,
            EntryType::Symlink => {
                let target = link_target(entry, self.limits).map_err(refuse)?;
                if target.is_absolute() {
                    return Err(refuse(format!(
                        "its symlink target `{}` is absolute",
                        target.display()
                    )));
                }
                if has_dotdot_after_name(&target) {
                    return Err(refuse(format!(
                        "its symlink target `{}` has `..` after a name",
                        target.display()
                    )));
                }
                self.make_room(&path).map_err(write)?;
                if !self.stays_inside(&path, &target).map_err(write)? {
                    return Err(refuse(format!(
                        "its symlink target `{}` leaves the root",
                        target.display()
                    )));
                }
                self.root.symlink(&target, &path).map_err(write)?;
            }
            EntryType::Link => {
                let target = link_target(entry, self.limits).map_err(refuse)?;
                let what = format!("its hard link target `{}`", target.display());
                let target = entry_path(target.as_os_str().as_bytes(), &what, self.limits)
                    .map_err(refuse)?;
                if target == path {
                    return Ok(());
                }
                // A hard link to a directory or symlink would let a later entry
                // write through it; to a missing file it would fail half-done.
                match self.root.symlink_metadata(&target) {
                    Ok(meta) if meta.is_file() => {}
                    Ok(_) => {
                        return Err(refuse(format!(
                            "its hard link target `{}` is not a regular file",
                            target.display()
                        )));
                    }
                    Err(_) => {
                        return Err(refuse(format!(
                            "its hard link target `{}` does not exist",
                            target.display()
                        )));
                    }
                }
                self.make_room(&path).map_err(write)?;
                self.root
                    .hard_link(&target, self.root, &path)
                    .map_err(write)?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(refuse("device files are not allowed".into()));
            }
            EntryType::Fifo => return Err(refuse("fifos are not allowed".into())),
            other => {
                return Err(refuse(format!("entry type `{other:?}` is not supported")));
            }
        }
        self.mark_written(&path);
        Ok(())
    }

    /// Creates the parents of `path` and removes whatever is at `path`: a later
    /// layer replaces an earlier one's entry, whatever its kind (OCI changeset).
    fn make_room(&self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            self.root
                .create_dir_with(parent, DirBuilder::new().recursive(true).mode(0o755))?;
        }
        remove(self.root, path)
    }

    fn make_dir(&self, path: &Path) -> io::Result<()> {
        // An existing directory is merged into, not replaced (OCI changeset);
        // anything else there, a symlink included, gives way.
        match self.root.symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            _ => {
                self.make_room(path)?;
                self.root
                    .create_dir_with(path, DirBuilder::new().mode(0o755))?;
            }
        }
        // Set explicitly so the umask cannot make the image unreadable.
        self.root
            .set_permissions(path, Permissions::from_mode(0o755))
    }

    fn write_file(
        &self,
        path: &Path,
        body: &mut impl Read,
        size: u64,
        mode: u32,
        budget: &mut Budget,
        name: &str,
    ) -> Result<(), UnpackError> {
        let write = |reason| UnpackError::Write {
            entry: name.to_owned(),
            reason,
        };
        // `create_new` never follows a symlink at `path`, even if one appeared
        // after `make_room` removed the old entry.
        let mut file = self
            .root
            .open_with(
                path,
                OpenOptions::new().write(true).create_new(true).mode(mode),
            )
            .map_err(write)?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(write)?;
        let mut buf = vec![0; 64 * 1024];
        let mut copied = 0u64;
        // Count what actually arrives, not what the header claims, and never
        // read past the declared size: the header is the budget's only guard.
        let mut body = body.take(size);
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Read(e)),
            };
            copied += n as u64;
            budget.bytes += n as u64;
            if budget.bytes > self.limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    limit: self.limits.max_bytes,
                });
            }
            file.write_all(&buf[..n]).map_err(write)?;
        }
        if copied < size {
            return Err(UnpackError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("`{name}` ends after {copied} of its {size} bytes"),
            )));
        }
        Ok(())
    }

    /// Whether `target`, read from the directory holding `link`, stays in
    /// the root. The parent is canonicalized first, so a directory reached
    /// through a symlink (`d -> .`) counts at its real depth.
    fn stays_inside(&self, link: &Path, target: &Path) -> io::Result<bool> {
        let parent = link.parent().unwrap_or(Path::new(""));
        let mut depth = if parent.as_os_str().is_empty() {
            0
        } else {
            let real = self.root.canonicalize(parent)?;
            real.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count()
        };
        for component in target.components() {
            match component {
                Component::Normal(_) => depth += 1,
                Component::ParentDir if depth == 0 => return Ok(false),
                Component::ParentDir => depth -= 1,
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    fn whiteout(&mut self, parent: &Path, hidden: &[u8], name: &str) -> Result<(), UnpackError> {
        let write = |reason| UnpackError::Write {
            entry: name.to_owned(),
            reason,
        };
        if hidden == OPAQUE_WHITEOUT {
            return self.opaque(parent).map_err(write);
        }
        // `.wh...` would whiteout the parent's parent: a way out of the root.
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(UnpackError::Entry {
                entry: name.to_owned(),
                reason: "its whiteout names no file".into(),
            });
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` names are aufs bookkeeping, meaningless here.
            return Ok(());
        }
        let target = parent.join(OsStr::from_bytes(hidden));
        // A whiteout hides lower layers only, never this layer's own entries.
        if self.written.contains(&target) {
            return Ok(());
        }
        remove(self.root, &target).map_err(write)
    }

    /// Empties `dir` of what lower layers put there, sparing this layer's entries.
    fn opaque(&self, dir: &Path) -> io::Result<()> {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            // A symlink here is a lower layer's entry standing where the
            // directory would be; its target belongs to someone else.
            if !dir.as_os_str().is_empty() {
                match self.root.symlink_metadata(&dir) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            let children = if dir.as_os_str().is_empty() {
                self.root.entries()?
            } else {
                self.root.read_dir(&dir)?
            };
            for child in children {
                let child = dir.join(child?.file_name());
                if !self.written.contains(&child) {
                    remove(self.root, &child)?;
                } else if self.root.symlink_metadata(&child)?.is_dir() {
                    pending.push(child);
                }
            }
        }
        Ok(())
    }

    fn mark_written(&mut self, path: &Path) {
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty() || !self.written.insert(ancestor.to_path_buf()) {
                // Ancestors of a recorded path were recorded with it.
                break;
            }
        }
    }
}

/// Whether a `..` in a link target follows a name (`a/../b`). The kernel
/// resolves `a/..` from wherever `a` leads, and `a` may be, or a later entry
/// may make it, a symlink to anywhere in the root: `x -> .` makes `x/..` the
/// root's parent. Only leading `..` can be counted against the link's depth,
/// and no honest image needs more (links are `../lib/x`, `./y`, `z`).
pub(super) fn has_dotdot_after_name(target: &Path) -> bool {
    let mut named = false;
    target.components().any(|c| match c {
        Component::Normal(_) => {
            named = true;
            false
        }
        Component::ParentDir => named,
        _ => false,
    })
}

/// Removes whatever is at `path` without following a symlink there; a missing
/// path is fine, since whiteouts and replacements may name one.
fn remove(root: &Dir, path: &Path) -> io::Result<()> {
    match root.symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => root.remove_dir_all(path),
        Ok(_) => root.remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Turns an entry path into a path relative to the root, refusing any that
/// could name something outside it. `..` is refused even where it would stay
/// inside (`a/../b`): no honest layer needs it, and refusing is simpler to trust.
/// An empty result names the root itself (`./`).
fn entry_path(raw: &[u8], what: &str, limits: &Limits) -> Result<PathBuf, String> {
    check_bytes(raw, what, limits)?;
    if raw.starts_with(b"/") {
        return Err(format!("{what} is absolute"));
    }
    let mut path = PathBuf::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(format!("{what} leaves the layer")),
            name => path.push(OsStr::from_bytes(name)),
        }
    }
    Ok(path)
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, limits: &Limits) -> Result<PathBuf, String> {
    let raw = entry.link_name_bytes().ok_or("it has no link target")?;
    let what = format!("its link target `{}`", String::from_utf8_lossy(&raw));
    check_bytes(&raw, &what, limits)?;
    Ok(PathBuf::from(OsStr::from_bytes(&raw)))
}

/// Checks shared by entry paths and link targets: the kernel would truncate
/// at a NUL, so what we checked would not be what gets created.
fn check_bytes(raw: &[u8], what: &str, limits: &Limits) -> Result<(), String> {
    if raw.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if raw.contains(&0) {
        return Err(format!("{what} contains a NUL byte"));
    }
    if raw.len() > limits.max_path_len {
        return Err(format!(
            "{what} is longer than {} bytes",
            limits.max_path_len
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt as _};
    use tar::Header;

    /// A tar written header by header, so hostile entries are really in it.
    #[derive(Default)]
    struct Tar(Vec<u8>);

    impl Tar {
        fn entry(self, name: &[u8], kind: EntryType, mode: u32, link: &[u8], body: &[u8]) -> Self {
            let tar = if name.len() > 100 {
                self.pseudo(EntryType::GNULongName, &[name, b"\0"].concat())
            } else {
                self
            };
            let mut header = Header::new_gnu();
            let short = &name[..name.len().min(100)];
            header.as_old_mut().name[..short.len()].copy_from_slice(short);
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(body.len() as u64);
            header.set_cksum();
            tar.block(header.as_bytes(), body)
        }

        /// A GNU long-name or pax header, which the tar crate folds into the next entry.
        fn pseudo(self, kind: EntryType, body: &[u8]) -> Self {
            self.entry(b"././@LongLink", kind, 0o644, b"", body)
        }

        fn block(mut self, header: &[u8], body: &[u8]) -> Self {
            self.0.extend_from_slice(header);
            self.0.extend_from_slice(body);
            self.0.resize(self.0.len().next_multiple_of(512), 0);
            self
        }

        fn file(self, name: &str, body: &str) -> Self {
            self.entry(
                name.as_bytes(),
                EntryType::Regular,
                0o644,
                b"",
                body.as_bytes(),
            )
        }

        fn dir(self, name: &str) -> Self {
            self.entry(name.as_bytes(), EntryType::Directory, 0o755, b"", b"")
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.entry(
                name.as_bytes(),
                EntryType::Symlink,
                0o777,
                target.as_bytes(),
                b"",
            )
        }

        fn link(self, name: &str, target: &str) -> Self {
            self.entry(
                name.as_bytes(),
                EntryType::Link,
                0o644,
                target.as_bytes(),
                b"",
            )
        }

        fn done(mut self) -> Vec<u8> {
            self.0.extend([0; 1024]);
            self.0
        }
    }

    /// A pax record: its length counts its own digits.
    fn pax(key: &str, value: &str) -> Vec<u8> {
        let rest = format!(" {key}={value}\n");
        let mut len = rest.len() + 1;
        while len.to_string().len() + rest.len() > len {
            len += 1;
        }
        format!("{len}{rest}").into_bytes()
    }

    /// The root inside an outer directory, so a test can see nothing leaked beside it.
    fn root() -> (tempfile::TempDir, Dir) {
        let outer = tempfile::tempdir().unwrap();
        fs::create_dir(outer.path().join("root")).unwrap();
        let dir =
            Dir::open_ambient_dir(outer.path().join("root"), cap_std::ambient_authority()).unwrap();
        (outer, dir)
    }

    fn apply(root: &Dir, tar: &[u8]) -> Result<(), UnpackError> {
        apply_layer(
            root,
            tar,
            Compression::None,
            &Limits::default(),
            &mut Budget::default(),
        )
    }

    #[track_caller]
    fn assert_refused(result: Result<(), UnpackError>, entry: &str, reason: &str) {
        match result {
            Err(UnpackError::Entry {
                entry: e,
                reason: r,
            }) => {
                assert_eq!(e, entry);
                assert!(r.contains(reason), "`{r}` does not say `{reason}`");
            }
            other => panic!("expected `{entry}` refused, got {other:?}"),
        }
    }

    /// Every path under `dir`, sorted, with what it is.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            for child in fs::read_dir(dir.join(&rel)).unwrap() {
                let rel = rel.join(child.unwrap().file_name());
                let full = dir.join(&rel);
                let meta = fs::symlink_metadata(&full).unwrap();
                let name = rel.display();
                if meta.is_symlink() {
                    out.push(format!(
                        "{name} -> {}",
                        fs::read_link(&full).unwrap().display()
                    ));
                } else if meta.is_dir() {
                    out.push(format!("{name}/"));
                    pending.push(rel);
                } else {
                    out.push(format!("{name} = {}", fs::read_to_string(&full).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn media_types() {
        let oci = "application/vnd.oci.image.layer";
        assert_eq!(
            Compression::from_media_type(&format!("{oci}.v1.tar")),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_media_type(&format!("{oci}.v1.tar+gzip")),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(&format!("{oci}.nondistributable.v1.tar")),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_media_type(&format!("{oci}.nondistributable.v1.tar+gzip")),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(&format!("{oci}.v1.tar+zstd")),
            None
        );
        assert_eq!(Compression::from_media_type("application/json"), None);
    }

    #[test]
    fn refuses_paths_outside_the_layer() {
        let (outer, root) = root();
        let limits = Limits {
            max_path_len: 150,
            ..Limits::default()
        };
        let long = "a/".repeat(80);
        let cases: [(&[u8], &str); 5] = [
            (b"../etc/passwd", "its path leaves the layer"),
            (b"a/../../b", "its path leaves the layer"),
            (b"/etc/x", "its path is absolute"),
            (b"", "its path is empty"),
            (long.as_bytes(), "its path is longer than 150 bytes"),
        ];
        for (name, reason) in cases {
            let tar = Tar::default()
                .entry(name, EntryType::Regular, 0o644, b"", b"x")
                .done();
            let result = apply_layer(
                &root,
                &tar[..],
                Compression::None,
                &limits,
                &mut Budget::default(),
            );
            assert_refused(result, &String::from_utf8_lossy(name), reason);
        }
        // Only a long name can carry a NUL: the header's own field ends at one.
        let nul = Tar::default()
            .pseudo(EntryType::GNULongName, b"a\0b\0")
            .file("innocent", "x")
            .done();
        assert_refused(apply(&root, &nul), "a\0b", "its path contains a NUL byte");
        let pax_path = Tar::default()
            .pseudo(EntryType::XHeader, &pax("path", "../../pax"))
            .file("innocent", "x")
            .done();
        assert_refused(apply(&root, &pax_path), "../../pax", "leaves the layer");
        let message = apply(&root, &Tar::default().file("../etc/passwd", "x").done())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "layer entry `../etc/passwd`: its path leaves the layer"
        );

        // `./` prefixes are stripped and the root's own entry is accepted.
        let tar = Tar::default().dir("./").dir(".").file("./a/b", "ok").done();
        apply(&root, &tar).unwrap();
        assert_eq!(tree(&outer.path().join("root")), ["a/", "a/b = ok"]);
        assert_eq!(tree(outer.path()), ["root/", "root/a/", "root/a/b = ok"]);
    }

    #[test]
    fn writes_cannot_escape_through_planted_symlinks() {
        let (outer, root) = root();
        let outside = outer.path().join("outside");
        fs::create_dir(&outside).unwrap();
        // Planted by something other than this module, which refuses such links.
        std::os::unix::fs::symlink(&outside, outer.path().join("root/abs")).unwrap();
        std::os::unix::fs::symlink("../outside", outer.path().join("root/rel")).unwrap();
        for name in ["abs/pwned", "rel/pwned", "rel/deep/pwned"] {
            match apply(&root, &Tar::default().file(name, "x").done()) {
                Err(UnpackError::Write { entry, .. }) => assert_eq!(entry, name),
                other => panic!("`{name}` was not refused: {other:?}"),
            }
        }
        let hard = Tar::default().file("f", "x").link("abs/f", "f").done();
        assert!(matches!(
            apply(&root, &hard),
            Err(UnpackError::Write { .. })
        ));
        let sym = Tar::default().symlink("rel/s", "x").done();
        assert!(matches!(apply(&root, &sym), Err(UnpackError::Write { .. })));
        assert_eq!(tree(&outside), Vec::<String>::new());
    }

    #[test]
    fn refuses_symlinks_that_leave_the_root() {
        let (outer, root) = root();
        let out = Tar::default().symlink("a/b", "../../x").done();
        assert_refused(
            apply(&root, &out),
            "a/b",
            "symlink target `../../x` leaves the root",
        );
        let abs = Tar::default().symlink("a/b", "/etc/passwd").done();
        assert_refused(
            apply(&root, &abs),
            "a/b",
            "symlink target `/etc/passwd` is absolute",
        );
        // `d` is the root itself, so `d/s -> ../x` would point beside the root.
        let via_link = Tar::default()
            .symlink("d", ".")
            .symlink("d/s", "../x")
            .done();
        assert_refused(apply(&root, &via_link), "d/s", "leaves the root");
        let empty = Tar::default().symlink("e", "").done();
        assert_refused(apply(&root, &empty), "e", "it has no link target");

        apply(&root, &Tar::default().symlink("a/b", "../c").done()).unwrap();
        let link = fs::read_link(outer.path().join("root/a/b")).unwrap();
        assert_eq!(link, Path::new("../c"));
    }

    /// `..` after a name in a link target is resolved by the kernel from
    /// wherever that name leads, which a later entry can make a symlink
    /// anywhere in the root: `x -> .` and then `l -> x/..` is the root's
    /// parent, though `l` and `x/..` both look like they stay inside.
    #[test]
    fn refuses_symlinks_that_leave_through_another_link() {
        let cases: [&[(&str, &str)]; 4] = [
            &[("x", "."), ("l", "x/..")],
            &[("d/up", ".."), ("d/l", "up/..")],
            // The target's link is made after the link through it.
            &[("d/l", "up/.."), ("d/up", "..")],
            &[("a/b/l", "c/../../.."), ("a/b/c", "../..")],
        ];
        for links in cases {
            let (outer, root) = root();
            let mut tar = Tar::default();
            for (name, target) in links {
                tar = tar.symlink(name, target);
            }
            let result = apply(&root, &tar.done());
            let refused = links.iter().find(|(_, t)| t.contains("/.."));
            let (name, target) = refused.unwrap();
            assert_refused(
                result,
                name,
                &format!("its symlink target `{target}` has `..` after a name"),
            );
            assert!(!outer.path().join("root").join(name).exists());
        }
        // Leading `..` and names after them are what real images hold.
        let (_outer, root) = root();
        let fine = Tar::default()
            .symlink("usr/lib/x", "../../bin/./y")
            .symlink("a/b", "./c")
            .done();
        apply(&root, &fine).unwrap();
    }

    #[test]
    fn refuses_bad_hard_links() {
        let (outer, root) = root();
        let base = Tar::default()
            .dir("d")
            .file("f", "x")
            .symlink("s", "f")
            .done();
        apply(&root, &base).unwrap();
        let cases = [
            ("missing", "its hard link target `missing` does not exist"),
            ("d", "its hard link target `d` is not a regular file"),
            ("s", "its hard link target `s` is not a regular file"),
            ("../f", "its hard link target `../f` leaves the layer"),
            ("/f", "its hard link target `/f` is absolute"),
        ];
        for (target, reason) in cases {
            assert_refused(
                apply(&root, &Tar::default().link("l", target).done()),
                "l",
                reason,
            );
        }
        assert!(!outer.path().join("root/l").exists());
    }

    #[test]
    fn refuses_devices_and_fifos_and_skips_pax_headers() {
        let (outer, root) = root();
        for (kind, reason) in [
            (EntryType::Char, "device files are not allowed"),
            (EntryType::Block, "device files are not allowed"),
            (EntryType::Fifo, "fifos are not allowed"),
        ] {
            let tar = Tar::default().entry(b"dev/x", kind, 0o644, b"", b"").done();
            assert_refused(apply(&root, &tar), "dev/x", reason);
        }
        let tar = Tar::default()
            .pseudo(EntryType::XGlobalHeader, &pax("comment", "global"))
            .pseudo(EntryType::XHeader, &pax("path", "from/pax"))
            .file("short", "p")
            .file(&"l".repeat(120), "g")
            .done();
        apply(&root, &tar).unwrap();
        let mut expected = vec!["from/".to_owned(), "from/pax = p".to_owned()];
        expected.push(format!("{} = g", "l".repeat(120)));
        expected.sort();
        assert_eq!(tree(&outer.path().join("root")), expected);
    }

    #[test]
    fn modes_are_normalized() {
        let (outer, root) = root();
        let tar = Tar::default()
            .entry(b"suid", EntryType::Regular, 0o4755, b"", b"")
            .entry(b"private", EntryType::Regular, 0o600, b"", b"")
            .entry(b"sgid", EntryType::Regular, 0o2640, b"", b"")
            .entry(b"group-exec", EntryType::Regular, 0o610, b"", b"")
            .entry(b"sticky", EntryType::Directory, 0o1777, b"", b"")
            .done();
        apply(&root, &tar).unwrap();
        let mode = |name: &str| {
            let path = outer.path().join("root").join(name);
            fs::metadata(path).unwrap().permissions().mode() & 0o7777
        };
        assert_eq!(mode("suid"), 0o755);
        assert_eq!(mode("private"), 0o644);
        assert_eq!(mode("sgid"), 0o644);
        assert_eq!(mode("group-exec"), 0o755);
        assert_eq!(mode("sticky"), 0o755);
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let (outer, root) = root();
        let lower = Tar::default()
            .file("d/x", "lower")
            .file("f", "lower")
            .file("target", "keep")
            .symlink("s", "target")
            .done();
        apply(&root, &lower).unwrap();
        // A file where a symlink was must not be written through it.
        let upper = Tar::default()
            .file("d", "file")
            .dir("f")
            .file("s", "new")
            .done();
        apply(&root, &upper).unwrap();
        assert_eq!(
            tree(&outer.path().join("root")),
            ["d = file", "f/", "s = new", "target = keep"]
        );
    }

    #[test]
    fn limits_hold_across_layers() {
        let (outer, root) = root();
        let limits = Limits {
            max_bytes: 1000,
            max_entries: 4,
            max_path_len: 100,
        };
        let mut budget = Budget::default();
        let big = Tar::default().file("big", &"x".repeat(1001)).done();
        let result = apply_layer(&root, &big[..], Compression::None, &limits, &mut budget);
        assert!(
            matches!(result, Err(UnpackError::TooLarge { limit: 1000 })),
            "{result:?}"
        );
        assert!(!outer.path().join("root/big").exists());

        let mut budget = Budget::default();
        let layer = |name: &str| Tar::default().file(name, &"x".repeat(600)).done();
        apply_layer(
            &root,
            &layer("one")[..],
            Compression::None,
            &limits,
            &mut budget,
        )
        .unwrap();
        let result = apply_layer(
            &root,
            &layer("two")[..],
            Compression::None,
            &limits,
            &mut budget,
        );
        assert!(
            matches!(result, Err(UnpackError::TooLarge { .. })),
            "{result:?}"
        );

        let mut budget = Budget::default();
        let three = Tar::default().dir("a").dir("b").dir("c").done();
        apply_layer(&root, &three[..], Compression::None, &limits, &mut budget).unwrap();
        let result = apply_layer(&root, &three[..], Compression::None, &limits, &mut budget);
        assert!(
            matches!(result, Err(UnpackError::TooManyEntries { limit: 4 })),
            "{result:?}"
        );
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        let (outer, root) = root();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
            max_path_len: 100,
        };
        let zeros = vec![0; 16 << 20];
        // A file that declares its 16 MiB honestly, and a long name that the tar
        // crate would read whole into memory before we see its entry.
        let file = Tar::default().entry(b"bomb", EntryType::Regular, 0o644, b"", &zeros);
        let name = Tar::default()
            .pseudo(EntryType::GNULongName, &zeros)
            .file("x", "");
        for bomb in [file.done(), name.done()] {
            let compressed = gzip(&bomb);
            assert!(compressed.len() < 100_000, "{}", compressed.len());
            let mut budget = Budget::default();
            let result = apply_layer(
                &root,
                &compressed[..],
                Compression::Gzip,
                &limits,
                &mut budget,
            );
            // The long name stops even earlier, at the metadata guard.
            assert!(
                matches!(&result, Err(UnpackError::TooLarge { .. }))
                    || matches!(&result, Err(UnpackError::Entry { entry, .. }) if entry.ends_with("header>")),
                "{result:?}"
            );
            assert!(budget.bytes <= limits.max_bytes);
        }
        assert_eq!(tree(&outer.path().join("root")), Vec::<String>::new());
    }

    #[test]
    fn oversized_metadata_headers_fail_before_they_are_read() {
        let (_outer, root) = root();
        // Within the byte budget, but far more than any real long name.
        let zeros = vec![b'a'; 4 << 20];
        for kind in [EntryType::GNULongName, EntryType::XHeader] {
            let tar = Tar::default().pseudo(kind, &zeros).file("x", "").done();
            let result = apply(&root, &tar);
            match result {
                Err(UnpackError::Entry { entry, reason }) => {
                    assert!(entry.ends_with("header>"), "{entry}");
                    assert!(reason.contains("4194304 bytes"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Real ones pass.
        let long = "d/".repeat(100) + "f";
        let tar = Tar::default()
            .pseudo(EntryType::GNULongName, long.as_bytes())
            .file("x", "y")
            .done();
        apply(&root, &tar).unwrap();
    }

    #[test]
    fn truncated_tars_and_corrupt_gzip_are_read_errors() {
        let (_outer, root) = root();
        let tar = Tar::default().file("f", &"x".repeat(1000)).done();
        for cut in [300, 512 + 100] {
            let result = apply(&root, &tar[..cut]);
            assert!(
                matches!(result, Err(UnpackError::Read(_))),
                "{cut}: {result:?}"
            );
        }
        let compressed = gzip(&tar);
        let inputs: [&[u8]; 2] = [b"this is not gzip", &compressed[..compressed.len() / 2]];
        for input in inputs {
            let result = apply_layer(
                &root,
                input,
                Compression::Gzip,
                &Limits::default(),
                &mut Budget::default(),
            );
            assert!(matches!(result, Err(UnpackError::Read(_))), "{result:?}");
        }
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let (outer, root) = root();
        let lower = Tar::default()
            .file("a/f", "lower")
            .file("a/keep", "lower")
            .file("d/x/y", "lower")
            .symlink("s", "a/keep")
            .file("o/old", "lower")
            .file("o/sub/old", "lower")
            .done();
        apply(&root, &lower).unwrap();
        let upper = Tar::default()
            .file("a/.wh.f", "")
            .file(".wh.d", "")
            .file(".wh.s", "")
            .file("gone/.wh.missing", "")
            .file("n", "same layer")
            .file(".wh.n", "")
            .file("o/before", "upper")
            .file("o/sub/new", "upper")
            .file("o/.wh..wh..opq", "")
            .file("o/after", "upper")
            .done();
        apply(&root, &upper).unwrap();
        assert_eq!(
            tree(&outer.path().join("root")),
            [
                "a/",
                "a/keep = lower",
                "n = same layer",
                "o/",
                "o/after = upper",
                "o/before = upper",
                "o/sub/",
                "o/sub/new = upper",
            ]
        );
        for name in ["a/.wh...", "a/.wh.", "../.wh.x"] {
            let result = apply(&root, &Tar::default().file(name, "").done());
            assert!(
                matches!(result, Err(UnpackError::Entry { .. })),
                "{name}: {result:?}"
            );
        }
        assert!(outer.path().join("root/a/keep").exists());
    }

    #[test]
    fn two_layers_build_the_expected_tree() {
        let (outer, root) = root();
        let mut budget = Budget::default();
        let limits = Limits::default();
        let lower = Tar::default()
            .dir("etc")
            .file("etc/config", "v1")
            .file("etc/old", "v1")
            .entry(b"bin/tool", EntryType::Regular, 0o755, b"", b"#!")
            .symlink("bin/alias", "tool")
            .link("bin/hard", "bin/tool")
            .done();
        let upper = Tar::default()
            .file("etc/config", "v2")
            .file("etc/.wh.old", "")
            .dir("var/log")
            .symlink("etc/up", "../bin/tool")
            .done();
        apply_layer(&root, &lower[..], Compression::None, &limits, &mut budget).unwrap();
        apply_layer(
            &root,
            &gzip(&upper)[..],
            Compression::Gzip,
            &limits,
            &mut budget,
        )
        .unwrap();
        let dir = outer.path().join("root");
        assert_eq!(
            tree(&dir),
            [
                "bin/",
                "bin/alias -> tool",
                "bin/hard = #!",
                "bin/tool = #!",
                "etc/",
                "etc/config = v2",
                "etc/up -> ../bin/tool",
                "var/",
                "var/log/",
            ]
        );
        assert_eq!(fs::read_to_string(dir.join("etc/up")).unwrap(), "#!");
        let tool = fs::metadata(dir.join("bin/tool")).unwrap();
        assert_eq!(
            tool.ino(),
            fs::metadata(dir.join("bin/hard")).unwrap().ino()
        );
        assert_eq!(tool.permissions().mode() & 0o777, 0o755);
        assert_eq!((budget.bytes, budget.entries), (2 + 2 + 2 + 2, 10));
    }
}
