//! `wrun save` / `wrun load`: OCI archives, a tar of an OCI image layout
//! (what `skopeo copy ... oci-archive:FILE:NAME` reads and writes).
//!
//! Saving is reproducible: entries sorted, times and owners cleared. Loading
//! trusts nothing in the archive: only the layout's own files are accepted,
//! every blob is verified against the digest that names it as it is copied
//! into the store, and images are named only once all their blobs are in.

use super::ImageError;
use super::resolve::Image;
use super::spec::{self, Descriptor, Digest, Document, INDEX, Index, REF_NAME};
use super::store::{ImageEntry, ImageStore, MAX_DOCUMENT};
use super::unpack;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// What [`load_archive`] stored: each image's name (if it had one) and
/// manifest digest.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub images: Vec<(Option<String>, Digest)>,
}

/// Writes the images `names` (as the store finds them) and their blobs as
/// an OCI archive.
pub fn save_archive(
    store: &ImageStore,
    names: &[String],
    out: impl Write,
) -> Result<(), ImageError> {
    let mut entries: Vec<ImageEntry> = Vec::new();
    for name in names {
        let entry = store.find(name)?;
        if !entries
            .iter()
            .any(|e| e.name == entry.name && e.descriptor.digest == entry.descriptor.digest)
        {
            entries.push(entry);
        }
    }
    let mut blobs: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    let mut index = Index {
        schema_version: 2,
        media_type: Some(INDEX.to_owned()),
        ..Index::default()
    };
    for entry in &entries {
        let mut pending = vec![entry.descriptor.clone()];
        while let Some(descriptor) = pending.pop() {
            if blobs.contains_key(&descriptor.digest) {
                continue;
            }
            let bytes = store.read(&descriptor, MAX_DOCUMENT)?;
            match Document::parse(Some(&descriptor.media_type), &bytes)? {
                Document::Manifest(m) => {
                    for blob in std::iter::once(m.config).chain(m.layers) {
                        blobs.insert(blob.digest.clone(), blob);
                    }
                }
                // Only the platforms present locally travel.
                Document::Index(i) => {
                    pending.extend(i.manifests.into_iter().filter(|m| store.has_blob(m)));
                }
            }
            blobs.insert(descriptor.digest.clone(), descriptor);
        }
        let mut named = entry.descriptor.clone();
        named.annotations.clear();
        if let Some(name) = &entry.name {
            named.annotations.insert(REF_NAME.to_owned(), name.clone());
        }
        index.manifests.push(named);
    }

    let mut tar = tar::Builder::new(out);
    let io = |e: std::io::Error| ImageError::Io {
        context: "failed to write the archive",
        path: "-".into(),
        reason: e,
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = header(tar::EntryType::Directory, 0, 0o755);
        tar.append_data(&mut header, dir, std::io::empty())
            .map_err(io)?;
    }
    for descriptor in blobs.values() {
        let mut reader = store.open_blob(descriptor)?;
        let mut header = header(tar::EntryType::Regular, descriptor.size, 0o644);
        let path = format!("blobs/sha256/{}", descriptor.digest.hex());
        // A corrupted blob fails the read, and with it the save.
        tar.append_data(&mut header, path, &mut reader)
            .map_err(|e| super::store::verify_error(&descriptor.digest, e))?;
        reader.finish()?;
    }
    let mut index_bytes = serde_json::to_vec_pretty(&index).unwrap_or_default();
    index_bytes.push(b'\n');
    let layout = format!(r#"{{"imageLayoutVersion":"{}"}}"#, spec::OCI_LAYOUT_VERSION);
    for (name, bytes) in [
        ("index.json", &index_bytes[..]),
        ("oci-layout", layout.as_bytes()),
    ] {
        let mut header = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
        tar.append_data(&mut header, name, bytes).map_err(io)?;
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(())
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Loads an OCI archive into the store. `docker save` has written the same
/// layout since Docker 25, plus `manifest.json` and `repositories`, which
/// are skipped (not tested here: there is no Docker engine to make one).
pub fn load_archive(store: &ImageStore, input: impl Read) -> Result<LoadReport, ImageError> {
    let invalid = |reason: String| ImageError::InvalidDocument {
        what: "archive".into(),
        reason,
    };
    let _adding = store.adding()?;
    let mut archive = tar::Archive::new(input);
    let mut index_bytes = None;
    let read_error = |e: std::io::Error| invalid(format!("failed to read it: {e}"));
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = path
            .strip_prefix("./")
            .unwrap_or(&path)
            .trim_end_matches('/');
        let kind = entry.header().entry_type();
        let size = entry.header().size().map_err(read_error)?;
        match (name, kind) {
            ("" | "blobs" | "blobs/sha256", tar::EntryType::Directory) => {}
            ("oci-layout", tar::EntryType::Regular) => {
                let mut text = String::new();
                entry
                    .by_ref()
                    .take(4096)
                    .read_to_string(&mut text)
                    .map_err(read_error)?;
                if !text.contains("imageLayoutVersion") {
                    return Err(invalid(format!(
                        "`oci-layout` is not an OCI layout marker: `{text}`"
                    )));
                }
            }
            ("index.json", tar::EntryType::Regular) => {
                if size > MAX_DOCUMENT {
                    return Err(invalid(format!("`index.json` is {size} bytes")));
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(read_error)?;
                index_bytes = Some(bytes);
            }
            // `docker save` extras, describing the same images.
            ("manifest.json" | "repositories", tar::EntryType::Regular) => {}
            (blob, tar::EntryType::Regular) if blob.starts_with("blobs/sha256/") => {
                let digest = Digest::parse(&format!("sha256:{}", &blob["blobs/sha256/".len()..]))
                    .map_err(|_| {
                    invalid(format!("entry `{path}` is not named by a sha256 digest"))
                })?;
                let descriptor = Descriptor::of_digest(digest, size);
                if store.has_blob(&descriptor) {
                    continue;
                }
                let mut writer = store.writer(&descriptor)?;
                std::io::copy(&mut entry, &mut writer).map_err(read_error)?;
                writer.commit()?;
            }
            _ => {
                return Err(invalid(format!(
                    "unexpected entry `{path}` ({kind:?}); an OCI archive holds only `oci-layout`, \
                     `index.json` and `blobs/sha256/<digest>` files"
                )));
            }
        }
    }
    let index_bytes = index_bytes.ok_or_else(|| invalid("it has no `index.json`".into()))?;
    let index: Index =
        serde_json::from_slice(&index_bytes).map_err(|e| invalid(format!("`index.json`: {e}")))?;
    let mut report = LoadReport::default();
    let mut ready = Vec::new();
    for descriptor in index.manifests {
        let name = super::store::entry_name(&descriptor);
        // A name that is no image reference could never be run, tagged or
        // removed by: the archive is refused rather than the store given it.
        if let Some(name) = &name {
            super::ImageRef::parse(name).map_err(|e| invalid(format!("`index.json`: {e}")))?;
        }
        let mut entry = ImageEntry { name, descriptor };
        // Every image must be whole and runnable (its layers unpack
        // cleanly) before any is named.
        let image = Image::load(store, &entry)?;
        image.rootfs(store, &unpack::Limits::default())?;
        entry.descriptor.annotations.clear();
        ready.push(entry);
    }
    for entry in ready {
        crate::crash_hook::point(crate::crash_hook::LOAD_BEFORE_TAG);
        match &entry.name {
            Some(name) => store.tag(name, &entry.descriptor)?,
            None => store.add_dangling(&entry.descriptor)?,
        }
        report.images.push((entry.name, entry.descriptor.digest));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive of just `index.json`, naming one image `name`.
    fn archive(name: &str) -> Vec<u8> {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"sha256:{}","size":2,"annotations":{{"{REF_NAME}":"{name}"}}}}]}}"#,
            spec::MANIFEST,
            "0".repeat(64)
        );
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, index.len() as u64, 0o644);
        tar.append_data(&mut h, "index.json", index.as_bytes())
            .unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn names_that_are_no_reference_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open(home.path()).unwrap();
        for name in ["Volumes", "a b:1", "x:-tag", "-x", "a//b", ""] {
            let err = load_archive(&store, &archive(name)[..])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("invalid image reference `{name}`")),
                "{name}: {err}"
            );
            assert!(store.entries().unwrap().is_empty());
        }
    }
}
