//! Helpers shared by the fuzz targets.

use std::path::Path;

/// A fresh scratch directory for one input, on a tmpfs when there is one:
/// the store syncs every file it writes, which on a disk would cost more
/// than the parsing under test. Each input gets its own, so that no state
/// carries from one input to the next and every crash replays alone.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("wrun-fuzz-");
        b
    };
    let dir = if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    };
    dir.expect("a scratch directory")
}

/// Splits `data` at NUL bytes, which valid JSON, TOML and text never hold
/// unescaped: one input carries several documents.
pub fn parts(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0).collect()
}
