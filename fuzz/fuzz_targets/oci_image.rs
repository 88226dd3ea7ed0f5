//! OCI documents as a registry or an archive hands them over: manifests,
//! indexes and configs, through everything `wrun` does with them before it
//! unpacks a layer: telling a manifest from an index, choosing the wasm
//! platform of an index, reading a wasm artifact's or a Docker+Wasm
//! image's config and its run defaults (annotations, Entrypoint/Cmd), and
//! walking what an image references (`wrun image prune`).
//!
//! The input is up to three documents separated by NUL bytes, with a first
//! byte choosing the top one's declared media type: the top manifest or
//! index, a config, and the manifest an index points at. Digests cannot be
//! fuzzed into matching, so the target stores each document and points its
//! parent at it (the `config` of a manifest, every entry of an index); the
//! raw bytes are parsed as they came, too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use wrun_runtime::image::fuzzing::parse_document;
use wrun_runtime::image::{Descriptor, Image, ImageEntry, ImageStore};

const MEDIA_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
];

/// Points `doc`'s config (a manifest) or every entry (an index) at `target`.
fn point_at(doc: &[u8], target: &Descriptor, field: &str) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(doc) else {
        return doc.to_vec();
    };
    let fix = |d: &mut Value| {
        if let Some(d) = d.as_object_mut() {
            d.insert("digest".into(), json!(target.digest.as_str()));
            d.insert("size".into(), json!(target.size));
        }
    };
    match (field, value.get_mut(field)) {
        ("config", Some(config)) => fix(config),
        ("manifests", Some(Value::Array(entries))) => entries.iter_mut().for_each(fix),
        _ => {}
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| doc.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[usize::from(which) % MEDIA_TYPES.len()];
    let parts = wrun_fuzz::parts(rest);
    let (top, config, child) = (
        parts[0],
        parts.get(1).copied().unwrap_or(b"{}"),
        parts.get(2).copied().unwrap_or(b"{}"),
    );
    let _ = parse_document(media_type, top);

    let scratch = wrun_fuzz::scratch();
    let store = ImageStore::open(scratch.path()).expect("a store");
    let config = store
        .put("application/vnd.wasm.config.v0+json", config)
        .expect("put");
    let config_type = |doc: &[u8]| {
        serde_json::from_slice::<Value>(doc)
            .ok()
            .and_then(|v| v["config"]["mediaType"].as_str().map(str::to_owned))
    };
    let child = point_at(child, &config, "config");
    let child = store
        .put("application/vnd.oci.image.manifest.v1+json", &child)
        .expect("put");
    let is_index = parse_document(media_type, top).unwrap_or(false);
    let top = if is_index {
        point_at(top, &child, "manifests")
    } else {
        // Keep the manifest's own config media type: it picks the kind.
        let mut config = config.clone();
        if let Some(kind) = config_type(top) {
            config.media_type = kind;
        }
        point_at(top, &config, "config")
    };
    let mut descriptor = store
        .put(media_type.unwrap_or("application/octet-stream"), &top)
        .expect("put");
    if media_type.is_none() {
        // What `Image::load` is given for an entry whose type is unknown.
        descriptor.media_type = if is_index {
            "application/vnd.oci.image.index.v1+json".into()
        } else {
            "application/vnd.oci.image.manifest.v1+json".into()
        };
    }
    let entry = ImageEntry {
        name: Some("fuzz:1".into()),
        descriptor: descriptor.clone(),
    };
    if let Ok(image) = Image::load(&store, &entry) {
        let _ = image.argv0();
        let _ = image.app_path(None);
    }
    store.tag("fuzz:1", &descriptor).expect("tag");
    let _ = store.find("fuzz:1").expect("the image just named");
    store.prune(true).expect("prune");
    store.untag("fuzz:1").expect("untag");
    store.prune(true).expect("prune");
});
