//! `wrun load`: an OCI archive (a tar of an image layout) into a fresh
//! store (load_archive), with every check it makes before naming an image:
//! entry names, blob digests, `index.json`, each image's documents, and its
//! layers unpacked. A crash-free refusal is fine; what it names must then
//! load.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wrun_runtime::image::{Image, ImageStore, load_archive};

fuzz_target!(|data: &[u8]| {
    let scratch = wrun_fuzz::scratch();
    let store = ImageStore::open(scratch.path()).expect("a store");
    let Ok(report) = load_archive(&store, data) else {
        return;
    };
    for entry in store.entries().expect("the index load_archive wrote") {
        Image::load(&store, &entry).expect("an image load_archive named");
    }
    for (name, _) in report.images {
        if let Some(name) = name {
            store.find(&name).expect("a name load_archive reported");
        }
    }
});
