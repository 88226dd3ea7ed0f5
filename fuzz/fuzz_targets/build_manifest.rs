//! `wrun.toml`, the build manifest (BuildSpec::parse), and the run defaults
//! it becomes: written as manifest annotations by `wrun build`, read back
//! by `wrun run`, which must get the same defaults.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::Path;
use wrun_runtime::image::{BuildSpec, RunDefaults};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = BuildSpec::parse(text, "wrun.toml", Path::new("/ctx")) else {
        return;
    };
    let guest = |path: &str| {
        assert!(path.starts_with('/'), "{path}");
        assert!(!path.split('/').any(|c| c == ".." || c == "."), "{path}");
    };
    for volume in &spec.defaults.volumes {
        guest(volume);
    }
    if let Some(workdir) = &spec.defaults.workdir {
        guest(workdir);
    }
    for tree in &spec.files {
        guest(&tree.target);
        assert_ne!(tree.target, "/");
    }
    let mut annotations = BTreeMap::new();
    spec.defaults.to_annotations(&mut annotations);
    let back = RunDefaults::from_annotations(&annotations).expect("annotations wrun wrote");
    assert_eq!(back, spec.defaults);
});
