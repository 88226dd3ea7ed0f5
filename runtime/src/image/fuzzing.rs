//! Entry points for the fuzz targets in `fuzz/` into parsers that are not
//! otherwise public. Not an API: each function only forwards to the code
//! `wrun` itself runs on untrusted input, unchanged.

use super::ImageError;
use super::spec::Document;
use super::unpack::{self, Budget, Compression, Limits};
use std::path::Path;

/// Parses a manifest or an index as a pull, a load or the store does
/// ([`Document::parse`]); `Ok(true)` for an index.
pub fn parse_document(media_type: Option<&str>, bytes: &[u8]) -> Result<bool, ImageError> {
    Ok(matches!(
        Document::parse(media_type, bytes)?,
        Document::Index(_)
    ))
}

/// Applies `layers` in order onto the directory `root` under one budget of
/// `limits`, as an image's rootfs is unpacked; `true` marks a gzip layer.
pub fn apply_layers(
    root: &Path,
    layers: &[(&[u8], bool)],
    limits: &Limits,
) -> Result<(), ImageError> {
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(ImageError::io("failed to open", root))?;
    let mut budget = Budget::default();
    for (layer, gzip) in layers {
        let compression = if *gzip {
            Compression::Gzip
        } else {
            Compression::None
        };
        unpack::apply_layer(&dir, *layer, compression, limits, &mut budget)?;
    }
    Ok(())
}
