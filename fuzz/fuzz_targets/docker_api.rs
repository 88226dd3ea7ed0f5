//! The daemon's Docker Engine API driven in process through its axum
//! router, against an empty `$WRUN_HOME`: create bodies (Docker JSON
//! through bollard-stubs' models into a container config: binds, mounts,
//! port bindings, restart policies, log options, limits), list filters in
//! both encodings, and the query parameters of logs, wait, kill, stop and
//! stats, and network create bodies, list filters and connect bodies. No
//! answer may be a 500 or a panic: bad input is a 4xx naming it,
//! and what was created can be removed.
//!
//! The first byte picks the request; the rest is its body (create) or its
//! query string (the others), after a version prefix picked by the second.

#![no_main]

use axum::body::Body;
use http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use tower::ServiceExt as _;
use wrun::daemon::{Daemon, router};
use wrun_runtime::container::{Containers, Services, Volumes};

struct World {
    runtime: tokio::runtime::Runtime,
    daemon: Arc<Daemon>,
    _home: tempfile::TempDir,
}

/// One daemon per process: its engine costs far more than a request.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let home = tempfile::tempdir().expect("a temp dir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let engine = wrun_runtime::Runtime::new(wrun_runtime::RuntimeConfig::default())
            .expect("a runtime without a cache");
        let images = wrun_runtime::image::ImageStore::open(home.path()).expect("a store");
        let services = Services {
            runtime: Arc::new(engine),
            images: images.clone(),
            volumes: Volumes::new(home.path()),
            networks: wrun_host_api::net::NetworkStore::new(home.path(), &home.path().join("run")),
            runtime_dir: home.path().join("run"),
            guests: runtime.handle().clone(),
            max_running: 64,
        };
        let containers = {
            let _guard = runtime.enter();
            Containers::open(home.path(), services).expect("containers")
        };
        World {
            daemon: Arc::new(Daemon {
                containers,
                images,
                home: home.path().to_owned(),
                started: SystemTime::now(),
            }),
            runtime,
            _home: home,
        }
    })
}

const VERSIONS: [&str; 4] = ["", "/v1.47", "/v1.24", "/v1.41"];

fuzz_target!(|data: &[u8]| {
    let [which, version, rest @ ..] = data else {
        return;
    };
    let version = VERSIONS[usize::from(version & 3)];
    let text = String::from_utf8_lossy(rest);
    let (method, path, body) = match which % 10 {
        0 => (
            "POST",
            "/containers/create?name=fuzz".to_owned(),
            rest.to_vec(),
        ),
        1 => ("GET", format!("/containers/json?{text}"), Vec::new()),
        2 => ("GET", format!("/containers/ghost/logs?{text}"), Vec::new()),
        3 => ("POST", format!("/containers/ghost/wait?{text}"), Vec::new()),
        4 => ("POST", format!("/containers/ghost/kill?{text}"), Vec::new()),
        5 => ("GET", format!("/containers/ghost/stats?{text}"), Vec::new()),
        7 => ("POST", "/networks/create".to_owned(), rest.to_vec()),
        8 => ("GET", format!("/networks?{text}"), Vec::new()),
        9 => ("POST", "/networks/ghost/connect".to_owned(), rest.to_vec()),
        _ => (
            "POST",
            format!("/containers/create?{text}"),
            b"{\"Image\":\"ghost\"}".to_vec(),
        ),
    };
    // A URI the client could not have sent is not this target's concern.
    let Ok(request) = Request::builder()
        .method(method)
        .uri(format!("{version}{path}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return;
    };
    let world = world();
    let status = world.runtime.block_on(async {
        let response = router(world.daemon.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        status
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // Each input starts from no container (an app file that exists, such
    // as `/etc/hostname`, can be created), so that it replays alone.
    for container in world.daemon.containers.list() {
        let removed =
            world
                .runtime
                .block_on(world.daemon.containers.remove(&container.id, true, true));
        assert!(removed.is_ok(), "{removed:?}");
    }
    let networks = world.daemon.containers.networks();
    for network in networks.list().expect("the networks") {
        networks
            .remove(&network.name)
            .expect("an unused network goes");
    }
});
