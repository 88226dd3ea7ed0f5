//! Image layers: the unpacker (apply_layer) on tar and gzip layers, one or
//! two applied in order over one budget, as a rootfs is made, with small
//! limits so that every input stays fast. Beyond not panicking, what it
//! leaves must keep its promises: nothing beside the root, only files,
//! directories and symlinks, no setuid/setgid/sticky bits, no more file
//! bytes than the budget, and no symlink that resolves out of the root.
//!
//! The first byte: bit 0 gzip, bit 1 apply the layer twice (as a second,
//! upper layer over itself: replacements and whiteouts), bit 2 the input
//! holds a second layer after the marker `\0WRUN-FUZZ-LAYER\0`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};
use wrun_runtime::image::UnpackLimits;
use wrun_runtime::image::fuzzing::apply_layers;

const LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 1 << 20,
    max_entries: 512,
    max_path_len: 1024,
};

const MARKER: &[u8] = b"\0WRUN-FUZZ-LAYER\0";

/// Where `target`, read in `dir` (a real directory under `root`, by its
/// components), leads by the kernel's rules: `None` if out of the root. A
/// path that stops at a file or at nothing stays where it stopped.
fn resolve(root: &Path, dir: &[OsString], target: &Path, hops: &mut u32) -> Option<Vec<OsString>> {
    if target.is_absolute() {
        return None;
    }
    let mut at: Vec<OsString> = dir.to_vec();
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop()?;
            }
            Component::Normal(name) => {
                let path = at
                    .iter()
                    .fold(root.to_path_buf(), |p, c| p.join(c))
                    .join(name);
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        *hops += 1;
                        // The kernel gives up (ELOOP) long before this.
                        if *hops > 40 {
                            return Some(at);
                        }
                        let Ok(next) = std::fs::read_link(&path) else {
                            return Some(at);
                        };
                        at = resolve(root, &at, &next, hops)?;
                    }
                    Ok(meta) if meta.is_dir() => at.push(name.to_owned()),
                    _ => return Some(at),
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}

/// Checks everything under `root`; returns the file bytes found.
fn check_tree(root: &Path, dir: &mut Vec<OsString>, inodes: &mut HashSet<(u64, u64)>) -> u64 {
    let mut bytes = 0;
    let here = dir.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    for entry in std::fs::read_dir(&here).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let kind = meta.file_type();
        let mode = meta.permissions().mode();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).expect("readlink");
            assert!(
                resolve(root, dir, &target, &mut 0).is_some(),
                "`{}` -> `{}` leads out of the root",
                path.display(),
                target.display()
            );
        } else if kind.is_dir() {
            // Parents made on the way get the umask's say; no special bits.
            assert_eq!(mode & 0o7000, 0, "`{}` has mode {:o}", path.display(), mode);
            dir.push(entry.file_name());
            bytes += check_tree(root, dir, inodes);
            dir.pop();
        } else if kind.is_file() {
            assert!(
                matches!(mode & 0o7777, 0o644 | 0o755),
                "`{}` has mode {:o}",
                path.display(),
                mode
            );
            // Hard links share their bytes: each file counts once.
            if inodes.insert((meta.dev(), meta.ino())) {
                bytes += meta.len();
            }
        } else {
            panic!(
                "`{}` is neither a file, a directory nor a symlink",
                path.display()
            );
        }
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let gzip = flags & 1 != 0;
    let (first, second) = match rest.windows(MARKER.len()).position(|w| w == MARKER) {
        Some(at) if flags & 4 != 0 => (&rest[..at], Some(&rest[at + MARKER.len()..])),
        _ => (rest, None),
    };
    let mut layers = vec![(first, gzip)];
    if let Some(second) = second {
        layers.push((second, gzip));
    }
    if flags & 2 != 0 {
        layers.push((first, gzip));
    }
    let scratch = wrun_fuzz::scratch();
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).expect("root");
    // A refusal may leave the root partly written (the caller discards
    // it), but even then nothing may have escaped it.
    let _ = apply_layers(&root, &layers, &LIMITS);
    let beside: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(beside, ["root"], "something was written beside the root");
    let bytes = check_tree(&root, &mut Vec::new(), &mut HashSet::new());
    assert!(bytes <= LIMITS.max_bytes, "{bytes} bytes unpacked");
});
