//! Image references as users type them and as `index.json` names images
//! (ImageRef::parse). The name an image is stored under must parse back to
//! itself, or the store could not find what it wrote.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wrun_runtime::image::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = ImageRef::parse(text) else {
        return;
    };
    let _ = (
        reference.registry(),
        reference.repository(),
        reference.digest(),
    );
    let shown = reference.to_string();
    let again = ImageRef::parse(&shown).unwrap_or_else(|e| panic!("`{shown}`: {e}"));
    assert_eq!(again, reference, "`{text}` shows as `{shown}`");
    if let Some(name) = reference.tagged() {
        let stored = ImageRef::parse(&name).unwrap_or_else(|e| panic!("`{name}`: {e}"));
        assert_eq!(stored.tagged().as_deref(), Some(name.as_str()));
    }
});
