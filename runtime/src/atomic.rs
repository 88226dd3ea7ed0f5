//! Writes that a crash cannot tear: the old content or the new, never a
//! mix (the image store's index, a container's config and state).

use crate::crash_hook;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Writes `bytes` to `path` (with `mode`) through a synced temporary file
/// in the same directory and a rename.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    crash_hook::point(crash_hook::LAYOUT_BEFORE_SYNC);
    file.as_file().sync_all()?;
    crash_hook::point(crash_hook::LAYOUT_BEFORE_RENAME);
    file.persist(path).map_err(|e| e.error)?;
    crash_hook::point(crash_hook::LAYOUT_AFTER_RENAME);
    Ok(())
}
