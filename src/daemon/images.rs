//! `/images`: the local image store, as `docker images` and `docker image
//! inspect` see it.

use super::{ApiError, ApiResult, Daemon, DaemonState, unix_seconds};
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use bollard_stubs::models::{ImageConfig, ImageInspect, ImageInspectRootFs, ImageSummary};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use wrun_runtime::image::{Image, ImageEntry, ImageError, ImageStore};

pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(pull))
        // Names hold `/` and `:` unescaped (`myrepo/bb:v1`), so the rest of
        // the path is the name and its last segment the operation, as in
        // moby's `/images/{name:.*}/json`.
        .route("/images/{*rest}", get(by_name))
}

/// The tags of each image, by manifest digest.
fn tags(entries: &[ImageEntry]) -> HashMap<String, Vec<String>> {
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for entry in entries {
        let list = tags.entry(entry.descriptor.digest.to_string()).or_default();
        if let Some(name) = &entry.name {
            list.push(name.clone());
        }
    }
    tags
}

/// When the image's config says it was made (the epoch if it does not).
fn created(image: &Image) -> SystemTime {
    image
        .config
        .get("created")
        .and_then(|c| c.as_str())
        .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

async fn list(daemon: DaemonState) -> ApiResult<axum::Json<Vec<ImageSummary>>> {
    let store = &daemon.images;
    let entries = store.entries().map_err(internal)?;
    let tags = tags(&entries);
    let mut seen = std::collections::HashSet::new();
    let mut list = Vec::new();
    for entry in &entries {
        let digest = entry.descriptor.digest.to_string();
        if !seen.insert(digest.clone()) {
            continue;
        }
        let image = match Image::load(store, entry) {
            Ok(image) => image,
            Err(e) => {
                tracing::warn!("image `{digest}`: {e}");
                continue;
            }
        };
        list.push(ImageSummary {
            id: digest.clone(),
            parent_id: String::new(),
            repo_tags: tags.get(&digest).cloned().unwrap_or_default(),
            repo_digests: Vec::new(),
            created: unix_seconds(created(&image)),
            size: image.size() as i64,
            shared_size: -1,
            virtual_size: None,
            labels: HashMap::new(),
            containers: -1,
            manifests: None,
        });
    }
    list.sort_by_key(|image| std::cmp::Reverse(image.created));
    Ok(axum::Json(list))
}

async fn by_name(
    daemon: DaemonState,
    Path(rest): Path<String>,
) -> ApiResult<axum::Json<ImageInspect>> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "page not found"));
    };
    inspect(&daemon.images, name).map(axum::Json)
}

fn inspect(store: &ImageStore, name: &str) -> ApiResult<ImageInspect> {
    let entry = store.find(name).map_err(|e| match e {
        ImageError::NotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, format!("No such image: {name}"))
        }
        e @ (ImageError::InvalidReference { .. } | ImageError::InvalidDigest { .. }) => {
            ApiError::bad_request(e.to_string())
        }
        other => internal(other),
    })?;
    let image = Image::load(store, &entry).map_err(internal)?;
    let digest = entry.descriptor.digest.to_string();
    let entries = store.entries().map_err(internal)?;
    let defaults = &image.defaults;
    let mut argv = vec![image.argv0()];
    argv.extend(image.fixed_args.iter().cloned());
    Ok(ImageInspect {
        id: Some(digest.clone()),
        repo_tags: Some(tags(&entries).remove(&digest).unwrap_or_default()),
        repo_digests: Some(Vec::new()),
        created: Some(super::rfc3339(created(&image))),
        config: Some(ImageConfig {
            cmd: Some(defaults.args.clone()),
            entrypoint: Some(argv),
            env: Some(defaults.env.clone()),
            working_dir: Some(defaults.workdir.clone().unwrap_or_default()),
            exposed_ports: Some(
                defaults
                    .exposed_ports
                    .iter()
                    .map(|p| (p.clone(), HashMap::new()))
                    .collect(),
            ),
            volumes: Some(
                defaults
                    .volumes
                    .iter()
                    .map(|v| (v.clone(), HashMap::new()))
                    .collect(),
            ),
            labels: Some(HashMap::new()),
            ..ImageConfig::default()
        }),
        architecture: Some(image.architecture.clone()),
        os: Some(image.os.clone()),
        size: Some(image.size() as i64),
        root_fs: Some(ImageInspectRootFs {
            typ: "layers".to_owned(),
            layers: Some(
                image
                    .manifest
                    .layers
                    .iter()
                    .map(|l| l.digest.to_string())
                    .collect(),
            ),
        }),
        ..ImageInspect::default()
    })
}

/// Pulls go through `wrun pull` for now; the daemon says so rather than
/// pretending.
async fn pull() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "the wrun daemon does not pull images yet: pull with `wrun pull IMAGE` (or build one \
         with `wrun build`), then run it",
    )
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}
