//! The admin API's deploy call (`PUT /v1/tenants/{tenant}/functions/{name}`)
//! driven in process through its axum router, with a fuzzed multipart body
//! and content type: the multipart framing, the `config` part's TOML, the
//! checks of what a tenant's token may grant, the plan, and, when all that
//! passes, compiling the `wasm` part (slow; the seed corpus carries a tiny
//! valid module, so most inputs stop before it or pass it quickly).
//!
//! The first byte picks the token (bits 0-1: admin, tenant `a`, tenant `b`,
//! none), the tenant in the path (bits 2-3) and the function's name (bits
//! 4-5); the content type is the first line of the rest, the body what
//! follows it. A panic while compiling would surface as a 500, which is
//! refused here as much as a panic in the handler itself.

#![no_main]

use axum::body::Body;
use http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt as _;
use wrun::serve::config::ResolvedLimits;
use wrun::serve::{Platform, Tenant, admin};

const ADMIN: &str = "fuzz-admin-token-0000";
const TOKENS: [Option<&str>; 4] = [
    Some(ADMIN),
    Some("fuzz-tenant-a-token-0000"),
    Some("fuzz-tenant-b-token-0000"),
    None,
];
const TENANTS: [&str; 4] = ["a", "b", "c", "a"];
const NAMES: [&str; 4] = ["hello", "api", "x_1", "-bad"];

struct World {
    runtime: tokio::runtime::Runtime,
    platform: Arc<Platform>,
}

/// One platform per process: building its engine costs far more than a run.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = wrun_runtime::Runtime::new(wrun_runtime::RuntimeConfig::default())
            .expect("a runtime without a cache");
        let tenant = |name: &str, token: &str, outbound: &[&str]| {
            (
                name.to_owned(),
                Arc::new(Tenant {
                    name: name.to_owned(),
                    token: Some(token.to_owned()),
                    limits: ResolvedLimits::defaults(),
                    allow_outbound: outbound.iter().map(|s| s.to_string()).collect(),
                    slots: Arc::new(tokio::sync::Semaphore::new(4)),
                    fds: wrun_host_api::fds::FdBudget::root(1000),
                }),
            )
        };
        let tenants = BTreeMap::from([
            tenant("a", "fuzz-tenant-a-token-0000", &["api.example.com:443"]),
            tenant("b", "fuzz-tenant-b-token-0000", &[]),
        ]);
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a tokio runtime"),
            platform: Arc::new(Platform::new(
                Arc::new(runtime),
                tenants,
                Some(ADMIN.to_owned()),
            )),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let token = TOKENS[usize::from(which & 3)];
    let tenant = TENANTS[usize::from((which >> 2) & 3)];
    let name = NAMES[usize::from((which >> 4) & 3)];
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let mut request = Request::builder()
        .method("PUT")
        .uri(format!("/v1/tenants/{tenant}/functions/{name}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    // A header value the client library could not have sent is not this
    // target's concern.
    if let Ok(value) = http::HeaderValue::from_bytes(content_type) {
        request = request.header("content-type", value);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let world = world();
    let status = world.runtime.block_on(async {
        let response = admin::router(world.platform.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        status
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // Each input starts from nothing deployed, so that it replays alone.
    let deployed: Vec<(String, String)> = world
        .platform
        .table
        .load()
        .functions
        .keys()
        .cloned()
        .collect();
    for (tenant, name) in deployed {
        let _ = world
            .runtime
            .block_on(world.platform.remove(&tenant, &name));
    }
});
