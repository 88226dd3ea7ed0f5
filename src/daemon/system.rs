//! `/_ping`, `/version`, `/info`, and the endpoints wrun answers with
//! what to use instead (`exec`, `build`).

use super::{API_VERSION, ApiError, Daemon, DaemonState, MIN_API_VERSION};
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bollard_stubs::models::{LocalNodeState, SwarmInfo, SystemInfo, SystemInfoCgroupDriverEnum};
use std::sync::Arc;
use wrun_runtime::container::Status;

pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/containers/{id}/exec", post(exec))
        .route("/exec/{id}/{*rest}", any(exec))
        .route("/build", post(build))
}

/// What moby answers (notes/docker-api.md §2): the CLI reads its version
/// from the `Api-Version` header, which the middleware sets.
async fn ping() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("swarm", HeaderValue::from_static("inactive"));
    (headers, "OK").into_response()
}

fn arch() -> &'static str {
    // Go's names, which clients print.
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// `/version`, by hand rather than with the stubs' `SystemVersion`: the
/// CLI prints the Engine component's `Details`, which the stubs cannot
/// hold (they model it as an empty map).
async fn version() -> axum::Json<serde_json::Value> {
    let version = env!("CARGO_PKG_VERSION");
    let details = serde_json::json!({
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "none (wrun is written in Rust)",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "Experimental": "false",
        "BuildTime": "",
    });
    axum::Json(serde_json::json!({
        "Platform": { "Name": format!("wrun {version}") },
        "Components": [{ "Name": "Engine", "Version": version, "Details": details }],
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "none (wrun is written in Rust)",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
}

async fn info(daemon: DaemonState) -> axum::Json<SystemInfo> {
    let containers = daemon.containers.list();
    let count = |wanted: &[Status]| {
        containers
            .iter()
            .filter(|c| wanted.contains(&c.state.status))
            .count() as i64
    };
    let images = daemon.images.entries().map(|e| e.len()).unwrap_or(0) as i64;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    axum::Json(SystemInfo {
        id: Some(String::new()),
        containers: Some(containers.len() as i64),
        containers_running: Some(count(&[Status::Running, Status::Restarting])),
        containers_paused: Some(count(&[Status::Paused])),
        containers_stopped: Some(count(&[Status::Created, Status::Exited, Status::Dead])),
        images: Some(images),
        driver: Some("wrun".to_owned()),
        logging_driver: Some("json-file".to_owned()),
        cgroup_driver: Some(SystemInfoCgroupDriverEnum::NONE),
        kernel_version: Some(kernel_version()),
        operating_system: Some("wrun (WebAssembly)".to_owned()),
        os_type: Some("linux".to_owned()),
        architecture: Some(std::env::consts::ARCH.to_owned()),
        ncpu: Some(ncpu),
        mem_total: Some(mem_total()),
        name: Some(
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        ),
        docker_root_dir: Some(daemon.home.display().to_string()),
        server_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        default_runtime: Some("wrun".to_owned()),
        swarm: Some(SwarmInfo {
            local_node_state: Some(LocalNodeState::INACTIVE),
            ..SwarmInfo::default()
        }),
        warnings: Some(Vec::new()),
        ..SystemInfo::default()
    })
}

/// The machine's memory, from `/proc/meminfo` (0 if it cannot be read).
fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

async fn exec() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "exec is not supported by wrun: a wasm app has no shell or second process to run; \
         start another container from the same image instead",
    )
}

async fn build() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "build is not supported by the wrun daemon: build images with `wrun build`",
    )
}
