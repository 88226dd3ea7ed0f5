//! A test hook for the crash-consistency tests (`tests/all/crash.rs`):
//! `WRUN_TEST_CRASH=<point>[:<n>]` makes the process SIGKILL itself at a
//! named point of a write, the way a power cut, the OOM killer or `kill -9`
//! would stop it, so that a test can check what such a death leaves behind
//! deterministically instead of by timing.
//!
//! For the byte points ([`BLOB_BYTES`]) `n` counts bytes: the process dies
//! once it has written `n` bytes of blobs in total (0: before the first).
//! For every other point `n` says which time the point is reached kills
//! (default: the first). The variable is read once; unset (as always
//! outside the tests), each point costs one load of an initialized
//! `OnceLock`.
//!
//! Not an interface for users: the points and their names change with the
//! code.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable read.
pub const ENV: &str = "WRUN_TEST_CRASH";

/// Bytes written to image blobs (the store's blob writer), cumulative.
pub const BLOB_BYTES: &str = "blob-bytes";
/// A blob fully written and verified, before its temporary file is synced.
pub const BLOB_BEFORE_SYNC: &str = "blob-before-sync";
/// A blob synced, before it is renamed into `blobs/sha256/`.
pub const BLOB_BEFORE_RENAME: &str = "blob-before-rename";
/// A blob just renamed into place.
pub const BLOB_AFTER_RENAME: &str = "blob-after-rename";
/// A file of the image layout (`index.json`, `oci-layout`) written to its
/// temporary, before the sync.
pub const LAYOUT_BEFORE_SYNC: &str = "layout-before-sync";
/// The same, synced, before the rename over the old file.
pub const LAYOUT_BEFORE_RENAME: &str = "layout-before-rename";
/// The same, just renamed into place.
pub const LAYOUT_AFTER_RENAME: &str = "layout-after-rename";
/// `wrun build`: layers and config stored, before the manifest.
pub const BUILD_BEFORE_MANIFEST: &str = "build-before-manifest";
/// `wrun build`: everything stored, before the image is named.
pub const BUILD_BEFORE_TAG: &str = "build-before-tag";
/// `wrun pull`: config and layers stored, before the manifest.
pub const PULL_BEFORE_MANIFEST: &str = "pull-before-manifest";
/// `wrun pull`: everything stored and unpacked, before the image is named.
pub const PULL_BEFORE_TAG: &str = "pull-before-tag";
/// `wrun load`: every image checked, before one is named (`n`: which).
pub const LOAD_BEFORE_TAG: &str = "load-before-tag";
/// An image's layers unpacked into a staging directory, one layer applied
/// (`n`: which).
pub const ROOTFS_AFTER_LAYER: &str = "rootfs-after-layer";
/// An image's layers unpacked, before the staging directory is renamed into
/// `rootfs/`.
pub const ROOTFS_BEFORE_RENAME: &str = "rootfs-before-rename";
/// A compile-cache entry: its temporary file created, nothing written.
pub const CACHE_BEFORE_WRITE: &str = "cache-before-write";
/// The artifact written, before its trailer (magic, kind, digest).
pub const CACHE_BEFORE_TRAILER: &str = "cache-before-trailer";
/// The whole entry written, before the sync.
pub const CACHE_BEFORE_SYNC: &str = "cache-before-sync";
/// Synced, before the rename into place.
pub const CACHE_BEFORE_RENAME: &str = "cache-before-rename";
/// Just renamed into place.
pub const CACHE_AFTER_RENAME: &str = "cache-after-rename";

/// Every point, for tests that iterate over them.
pub const POINTS: &[&str] = &[
    BLOB_BYTES,
    BLOB_BEFORE_SYNC,
    BLOB_BEFORE_RENAME,
    BLOB_AFTER_RENAME,
    LAYOUT_BEFORE_SYNC,
    LAYOUT_BEFORE_RENAME,
    LAYOUT_AFTER_RENAME,
    BUILD_BEFORE_MANIFEST,
    BUILD_BEFORE_TAG,
    PULL_BEFORE_MANIFEST,
    PULL_BEFORE_TAG,
    LOAD_BEFORE_TAG,
    ROOTFS_AFTER_LAYER,
    ROOTFS_BEFORE_RENAME,
    CACHE_BEFORE_WRITE,
    CACHE_BEFORE_TRAILER,
    CACHE_BEFORE_SYNC,
    CACHE_BEFORE_RENAME,
    CACHE_AFTER_RENAME,
];

struct Plan {
    point: String,
    n: u64,
    /// Times the point was reached, or bytes counted at a byte point.
    seen: AtomicU64,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var(ENV).ok()?;
        let (point, n) = match spec.split_once(':') {
            Some((point, n)) => (point, n.parse().ok()?),
            None if spec == BLOB_BYTES => (spec.as_str(), 0),
            None => (spec.as_str(), 1),
        };
        Some(Plan {
            point: point.to_owned(),
            n,
            seen: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// Dies here if `name` is the chosen point and this is its `n`-th time.
pub fn point(name: &str) {
    if let Some(plan) = plan()
        && plan.point == name
        && plan.seen.fetch_add(1, Ordering::Relaxed) + 1 == plan.n
    {
        kill();
    }
}

/// At the byte point `name`, of `len` bytes about to be written: `Some(k)`
/// if the process must die once the first `k` of them are written (the
/// caller writes them, then calls [`kill`]); `None` if all may be written.
pub fn cut(name: &str, len: usize) -> Option<usize> {
    let plan = plan().filter(|plan| plan.point == name)?;
    let before = plan.seen.fetch_add(len as u64, Ordering::Relaxed);
    let left = plan.n.checked_sub(before)?;
    usize::try_from(left).ok().filter(|left| *left <= len)
}

/// Ends the process with SIGKILL: no destructor, no atexit handler, no
/// buffered write gets to run, as when the kernel kills it.
pub fn kill() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // Unreachable unless the signal could not be sent; dying otherwise is
    // still closer to a crash than going on.
    std::process::abort()
}
