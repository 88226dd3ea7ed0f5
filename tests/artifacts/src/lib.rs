//! Paths of the guest programs in `wasm-apps/`, built by this crate's build script:
//! `p1::HELLO` is the wasm32-wasip1 core module, `p2::HELLO` the wasm32-wasip2
//! component, and `foreach_app!(mac)` calls `mac!(hello)` and so on for every app.
//! `p3::HELLO` is a WASI 0.3 command, and `http::HELLO` and `http::FN` are
//! `wasi:http/proxy` components (wasm32-wasip2 only, not in `foreach_app!`).

include!(concat!(env!("OUT_DIR"), "/apps.rs"));
