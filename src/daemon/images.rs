//! `/images`: the local image store as Docker clients see it: list,
//! inspect, pull, push, tag, remove, save, load and prune. Each is the
//! runtime's own image code (`wrun_runtime::image`), as the `wrun` CLI's
//! image commands use it; this module translates Docker's requests and
//! answers, and keeps the slow work (disk, network) off the API's thread:
//! on blocking threads, at most [`MAX_TRANSFERS`] transfers at a time.
//!
//! Pulls and pushes answer as moby does: an error before the first
//! progress line is the answer's status (404 for an image the registry does
//! not have), one after it an in-stream `{"errorDetail":..,"error":..}`
//! line; a client that goes away stops the transfer, which leaves no
//! partial image (see the store).

use super::{
    ApiError, ApiResult, Daemon, DaemonState, Filters, Query, blocking, empty, rfc3339,
    unix_seconds,
};
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bollard_stubs::models::{
    CreateImageInfo, ErrorDetail, ImageConfig, ImageDeleteResponseItem, ImageInspect,
    ImageInspectRootFs, ImagePruneResponse, ImageSummary, ProgressDetail,
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};
use wrun_runtime::Size;
use wrun_runtime::container::{Containers, Origin, Status};
use wrun_runtime::image::{
    AuthFile, Credentials, Digest, Image, ImageEntry, ImageError, ImageRef, ImageStore, ImageUser,
    Progress, ProgressFn, PruneImages, Registry, RegistryOptions, is_local_registry, load_archive,
    save_archive,
};

/// The largest archive `docker load` may send: an image's layers may hold
/// 1 GiB of files (the unpacker's limit), and an archive several images.
const MAX_ARCHIVE: u64 = 2 << 30;
/// How long a `docker load` body may pause before it is given up: the load
/// holds the store's lock that keeps prune waiting.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// Pulls, pushes, saves and loads at once; more wait for their turn.
const MAX_TRANSFERS: usize = 4;
static TRANSFERS: Semaphore = Semaphore::const_new(MAX_TRANSFERS);

pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(pull))
        .route("/images/load", post(load))
        .route("/images/prune", post(prune))
        .route("/images/get", get(save_many))
        // Names hold `/` and `:` unescaped (`myrepo/bb:v1`), so the rest of
        // the path is the name and its last segment the operation, as in
        // moby's `/images/{name:.*}/json`.
        .route(
            "/images/{*rest}",
            get(get_by_name).post(post_by_name).delete(remove),
        )
}

/// Docker's status for an image error: `name` is what the client asked for.
fn image_error(e: ImageError, name: &str) -> ApiError {
    match e {
        ImageError::NotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, format!("No such image: {name}"))
        }
        ImageError::InvalidReference { .. } | ImageError::InvalidDigest { .. } => {
            ApiError::bad_request(e.to_string())
        }
        ImageError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
        other => internal(other),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The names of each image, by manifest digest: its tags, and the
/// `repo@digest` names of images pulled by digest.
fn names(entries: &[ImageEntry]) -> HashMap<String, (Vec<String>, Vec<String>)> {
    let mut names: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for entry in entries {
        let (tags, digests) = names
            .entry(entry.descriptor.digest.to_string())
            .or_default();
        match &entry.name {
            Some(name) if name.contains('@') => digests.push(name.clone()),
            Some(name) => tags.push(name.clone()),
            None => {}
        }
    }
    names
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
    let store = daemon.images.clone();
    blocking(move || summaries(&store)).await.map(axum::Json)
}

fn summaries(store: &ImageStore) -> ApiResult<Vec<ImageSummary>> {
    let entries = store.entries().map_err(internal)?;
    let names = names(&entries);
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
        let (repo_tags, repo_digests) = names.get(&digest).cloned().unwrap_or_default();
        list.push(ImageSummary {
            id: digest.clone(),
            parent_id: String::new(),
            repo_tags,
            repo_digests,
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
    Ok(list)
}

/// `GET /images/{name}/json` (inspect) and `GET /images/{name}/get` (save).
async fn get_by_name(daemon: DaemonState, Path(rest): Path<String>) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        let (store, name) = (daemon.images.clone(), name.to_owned());
        return blocking(move || inspect(&store, &name))
            .await
            .map(|i| axum::Json(i).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return save(&daemon, vec![name.to_owned()]).await;
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, "page not found"))
}

/// `POST /images/{name}/tag` and `POST /images/{name}/push`.
async fn post_by_name(
    daemon: DaemonState,
    Path(rest): Path<String>,
    query: Query,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/tag") {
        return tag(&daemon, name, &query).await;
    }
    if let Some(name) = rest.strip_suffix("/push") {
        return push(&daemon, name, &query, &headers).await;
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, "page not found"))
}

fn inspect(store: &ImageStore, name: &str) -> ApiResult<ImageInspect> {
    let entry = store.find(name).map_err(|e| image_error(e, name))?;
    let image = Image::load(store, &entry).map_err(internal)?;
    let digest = entry.descriptor.digest.to_string();
    let entries = store.entries().map_err(internal)?;
    let defaults = &image.defaults;
    let mut argv = vec![image.argv0()];
    argv.extend(image.fixed_args.iter().cloned());
    let (repo_tags, repo_digests) = names(&entries).remove(&digest).unwrap_or_default();
    Ok(ImageInspect {
        id: Some(digest.clone()),
        repo_tags: Some(repo_tags),
        repo_digests: Some(repo_digests),
        created: Some(rfc3339(created(&image))),
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

/// `POST /images/{name}/tag?repo=&tag=`: `repo` comes fully qualified
/// (`docker.io/myrepo/bb`) and is stored as Docker shows it (`myrepo/bb`).
async fn tag(daemon: &Arc<Daemon>, name: &str, query: &Query) -> ApiResult<Response> {
    let repo = query.get("repo").unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad_request(
            "the `repo` parameter is required: the repository to name the image in",
        ));
    }
    let target = match query.get("tag").unwrap_or_default() {
        "" => repo.to_owned(),
        tag => format!("{repo}:{tag}"),
    };
    let (store, name) = (daemon.images.clone(), name.to_owned());
    blocking(move || {
        store
            .add_name(&name, &target)
            .map_err(|e| image_error(e, &name))
    })
    .await?;
    Ok(empty(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=&noprune=`, with moby's rules for what a
/// name, an ID and a container in use mean (see `ImageStore::remove`).
async fn remove(
    daemon: DaemonState,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<axum::Json<Vec<ImageDeleteResponseItem>>> {
    let force = query.flag("force");
    // No parent images here; what `noprune` keeps is the image's blobs.
    let prune = !query.flag("noprune");
    let daemon = daemon.0.clone();
    blocking(move || {
        let store = &daemon.images;
        let report = store
            .remove(&name, force, |digest| users(&daemon.containers, digest))
            .map_err(|e| image_error(e, &name))?;
        let mut items: Vec<_> = report
            .untagged
            .into_iter()
            .map(|name| ImageDeleteResponseItem {
                untagged: Some(name),
                deleted: None,
            })
            .collect();
        if let Some(digest) = report.deleted {
            let mut deleted = vec![digest.to_string()];
            if prune {
                let pruned = store.prune(false).map_err(internal)?;
                deleted.extend(
                    pruned
                        .blobs
                        .into_iter()
                        .filter(|b| *b != digest)
                        .map(|b| b.to_string()),
                );
            }
            items.extend(deleted.into_iter().map(|d| ImageDeleteResponseItem {
                untagged: None,
                deleted: Some(d),
            }));
        }
        Ok(items)
    })
    .await
    .map(axum::Json)
}

/// The containers made from the image `digest`.
fn users(containers: &Containers, digest: &Digest) -> Vec<ImageUser> {
    containers
        .list()
        .into_iter()
        .filter(
            |s| matches!(&s.config.origin, Origin::Image { digest: d, .. } if d == digest.as_str()),
        )
        .map(|s| ImageUser {
            running: matches!(
                s.state.status,
                Status::Running | Status::Paused | Status::Restarting
            ),
            id: s.id,
        })
        .collect()
}

/// `POST /images/prune?filters=`: `dangling=true` (the default) removes the
/// images without a name, `dangling=false` (`-a`) every image no container
/// uses; then every blob no image needs.
async fn prune(daemon: DaemonState, query: Query) -> ApiResult<axum::Json<ImagePruneResponse>> {
    let filters = Filters::parse(&query)?;
    filters.only(&["dangling"])?;
    let mut which = PruneImages::Dangling;
    let mut seen = None;
    for value in filters.get("dangling").unwrap_or_default() {
        let dangling = match value.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter 'dangling={}': expected true or false",
                    wrun_runtime::input::excerpt(value)
                )));
            }
        };
        if seen.is_some_and(|s| s != dangling) {
            return Err(ApiError::bad_request(
                "invalid filter 'dangling': both true and false given",
            ));
        }
        seen = Some(dangling);
        which = match dangling {
            true => PruneImages::Dangling,
            false => PruneImages::Unused,
        };
    }
    let store = daemon.images.clone();
    let report = blocking(move || store.prune_images(which).map_err(internal)).await?;
    let mut items = Vec::new();
    let mut images: Vec<Digest> = Vec::new();
    for image in &report.images {
        if let Some(name) = &image.name {
            items.push(ImageDeleteResponseItem {
                untagged: Some(name.clone()),
                deleted: None,
            });
        }
        if !images.contains(&image.descriptor.digest) {
            images.push(image.descriptor.digest.clone());
        }
    }
    let blobs = report.blobs.iter().filter(|b| !images.contains(b));
    for digest in images.iter().chain(blobs) {
        items.push(ImageDeleteResponseItem {
            untagged: None,
            deleted: Some(digest.to_string()),
        });
    }
    Ok(axum::Json(ImagePruneResponse {
        images_deleted: Some(items),
        space_reclaimed: Some(i64::try_from(report.bytes).unwrap_or(i64::MAX)),
    }))
}

/// One line of a JSON progress stream, as moby ends them.
fn json_line(value: &impl serde::Serialize) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.extend_from_slice(b"\r\n");
    Bytes::from(bytes)
}

fn status(text: impl Into<String>) -> Bytes {
    json_line(&CreateImageInfo {
        status: Some(text.into()),
        ..CreateImageInfo::default()
    })
}

/// A blob's status line: `current` of `total` bytes when it moves.
fn blob_status(text: &str, digest: &Digest, moved: Option<(u64, u64)>) -> Bytes {
    let (detail, bar) = match moved {
        Some((current, total)) => {
            let done = (current.min(total) * 50).checked_div(total).unwrap_or(50) as usize;
            let bar = format!(
                "[{}>{}] {}/{}",
                "=".repeat(done),
                " ".repeat(50 - done),
                Size(current),
                Size(total)
            );
            let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
            let detail = ProgressDetail {
                current: count(current),
                total: count(total),
            };
            (detail, Some(bar))
        }
        None => (ProgressDetail::default(), None),
    };
    json_line(&CreateImageInfo {
        id: Some(digest.short().to_owned()),
        status: Some(text.to_owned()),
        progress: bar,
        progress_detail: Some(detail),
        ..CreateImageInfo::default()
    })
}

/// The in-stream error line, which the CLI prints and exits 1 on.
fn error_line(message: String) -> Bytes {
    json_line(&CreateImageInfo {
        error: Some(message.clone()),
        error_detail: Some(ErrorDetail {
            code: None,
            message: Some(message),
        }),
        ..CreateImageInfo::default()
    })
}

/// What a transfer sends its client: the runtime's progress, or a line of
/// its own.
enum Event {
    Progress(Progress),
    Line(Bytes),
}

/// Where a transfer reports. Byte counts are gathered into at most about
/// 50 lines per blob, so that what waits for a slow client stays small.
#[derive(Clone)]
struct Emitter {
    tx: mpsc::UnboundedSender<Event>,
    /// Per blob moving: its size and the bytes not reported yet.
    pending: Arc<Mutex<HashMap<Digest, (u64, u64)>>>,
}

impl Emitter {
    fn line(&self, line: Bytes) {
        let _ = self.tx.send(Event::Line(line));
    }

    fn progress(&self) -> ProgressFn {
        let this = self.clone();
        Arc::new(move |event| {
            let Ok(mut pending) = this.pending.lock() else {
                return;
            };
            let event = match event {
                Progress::Start { digest, size } => {
                    pending.insert(digest.clone(), (size, 0));
                    Progress::Start { digest, size }
                }
                Progress::Advance { digest, bytes } => {
                    let (size, waiting) = pending.entry(digest.clone()).or_default();
                    *waiting += bytes;
                    if *waiting < (*size / 50).max(64 << 10) {
                        return;
                    }
                    let bytes = std::mem::take(waiting);
                    Progress::Advance { digest, bytes }
                }
                Progress::Done { digest, skipped } => {
                    if let Some((_, waiting)) = pending.remove(&digest)
                        && waiting > 0
                    {
                        let advance = Progress::Advance {
                            digest: digest.clone(),
                            bytes: waiting,
                        };
                        let _ = this.tx.send(Event::Progress(advance));
                    }
                    Progress::Done { digest, skipped }
                }
            };
            let _ = this.tx.send(Event::Progress(event));
        })
    }
}

/// A pull or push at work on a blocking thread (with an async runtime of
/// its own, as the CLI runs them), reporting through `events`. The task
/// answers `None` if the client went away, which stopped the transfer.
struct Transfer {
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<Option<Result<(), ImageError>>>,
}

fn transfer<F, Fut>(permit: SemaphorePermit<'static>, work: F) -> Transfer
where
    F: FnOnce(Emitter) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ImageError>>,
{
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                return Some(Err(ImageError::Io {
                    context: "failed to start an async runtime for",
                    path: "the transfer".into(),
                    reason: e,
                }));
            }
        };
        let gone = tx.clone();
        let emitter = Emitter {
            tx,
            pending: Arc::default(),
        };
        runtime.block_on(async move {
            tokio::select! {
                result = work(emitter) => Some(result),
                () = gone.closed() => None,
            }
        })
    });
    Transfer { events, task }
}

/// The answer to a transfer: `200 application/json`, streamed, once the
/// transfer has said something (`head` first, then its events through
/// `format`, then the error it ended with, if any); or, if it ended before
/// saying anything, its error (through `error`) as the status.
async fn respond(
    transfer: Transfer,
    head: Vec<Bytes>,
    format: impl FnMut(Progress) -> Bytes + Send + 'static,
    error: impl FnOnce(ImageError) -> ApiError,
) -> ApiResult<Response> {
    let Transfer { mut events, task } = transfer;
    let Some(first) = events.recv().await else {
        return match task.await {
            Ok(Some(Ok(()))) => Ok(json_stream(Body::from_stream(
                futures_util::stream::iter(head).map(Ok::<_, std::io::Error>),
            ))),
            Ok(Some(Err(e))) => Err(error(e)),
            Ok(None) => Err(internal("the transfer was cancelled")),
            Err(e) => Err(internal(format!("the transfer failed: {e}"))),
        };
    };
    let events = futures_util::stream::unfold(
        (Some(first), events, format),
        |(first, mut events, mut format)| async move {
            let event = match first {
                Some(event) => event,
                None => events.recv().await?,
            };
            let line = match event {
                Event::Line(line) => line,
                Event::Progress(progress) => format(progress),
            };
            Some((line, (None, events, format)))
        },
    );
    let end = futures_util::stream::once(async move {
        match task.await {
            Ok(Some(Err(e))) => error_line(e.to_string()),
            Ok(_) => Bytes::new(),
            Err(e) => error_line(format!("the transfer failed: {e}")),
        }
    });
    let lines = futures_util::stream::iter(head)
        .chain(events)
        .chain(end)
        .filter(|line| std::future::ready(!line.is_empty()))
        .map(Ok::<_, std::io::Error>);
    Ok(json_stream(Body::from_stream(lines)))
}

fn json_stream(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Whether `name` says its tag or digest (`a:1`, `host:5000/a@sha256:..`).
fn has_tag_or_digest(name: &str) -> bool {
    name.contains('@')
        || name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// The image `fromImage` and `tag` name (a `tag` may be a digest, as the
/// CLI sends `docker pull a@sha256:..`).
fn pull_reference(from: &str, tag: &str) -> ApiResult<ImageRef> {
    let text = match tag {
        "" if has_tag_or_digest(from) => from.to_owned(),
        "" => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "pulling every tag of `{}` (docker pull --all-tags) is not supported by \
                     wrun: name a tag",
                    wrun_runtime::input::excerpt(from)
                ),
            ));
        }
        tag if tag.starts_with("sha256:") => format!("{from}@{tag}"),
        tag => format!("{from}:{tag}"),
    };
    ImageRef::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A registry client for `host`: with the client's credentials, else those
/// `wrun login` stored. A registry on this machine is spoken to over plain
/// HTTP, as Docker treats 127.0.0.0/8 as an insecure registry by default;
/// any other over HTTPS.
fn connect(
    home: &std::path::Path,
    host: &str,
    credentials: Option<Credentials>,
) -> Result<Registry, ImageError> {
    let credentials = match credentials {
        Some(credentials) => Some(credentials),
        None => AuthFile::new(home).get(host)?,
    };
    let options = RegistryOptions {
        insecure: is_local_registry(host),
        credentials,
    };
    Registry::new(host, &options)
}

/// `POST /images/create?fromImage=&tag=`: `docker pull`, streaming moby's
/// progress lines.
async fn pull(daemon: DaemonState, query: Query, headers: HeaderMap) -> ApiResult<Response> {
    if query.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "importing a file system (`docker import`) is not supported by wrun: pull an image, \
             or load an OCI archive with `docker load`",
        ));
    }
    let from = query.get("fromImage").unwrap_or_default();
    if from.is_empty() {
        return Err(ApiError::bad_request(
            "the `fromImage` parameter is required: the image to pull",
        ));
    }
    let reference = pull_reference(from, query.get("tag").unwrap_or_default())?;
    // As moby: for a pull, a header that does not decode counts as none.
    let credentials = headers
        .get("x-registry-auth")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Credentials::from_registry_auth_header(v).ok().flatten());
    let head = vec![json_line(&CreateImageInfo {
        id: Some(match (reference.tag(), reference.digest()) {
            (Some(tag), _) => tag.to_owned(),
            (None, Some(digest)) => digest.to_string(),
            (None, None) => "latest".to_owned(),
        }),
        status: Some(format!("Pulling from {}", reference.path())),
        ..CreateImageInfo::default()
    })];
    let permit = TRANSFERS
        .acquire()
        .await
        .map_err(|e| internal(format!("the image transfers are closed: {e}")))?;
    let (store, home) = (daemon.images.clone(), daemon.home.clone());
    let wanted = reference.clone();
    let work = transfer(permit, move |emit: Emitter| async move {
        let registry = connect(&home, wanted.registry(), credentials)?;
        let report = registry.pull(&store, &wanted, &emit.progress()).await?;
        emit.line(status(format!("Digest: {}", report.digest)));
        emit.line(status(match report.transferred {
            0 => format!("Status: Image is up to date for {}", report.name),
            _ => format!("Status: Downloaded newer image for {}", report.name),
        }));
        Ok(())
    });
    let mut moved: HashMap<Digest, (u64, u64)> = HashMap::new();
    let format = move |event| match event {
        Progress::Start { digest, size } => {
            moved.insert(digest.clone(), (0, size));
            blob_status("Pulling fs layer", &digest, None)
        }
        Progress::Advance { digest, bytes } => {
            let (current, total) = moved.entry(digest.clone()).or_default();
            *current += bytes;
            blob_status("Downloading", &digest, Some((*current, *total)))
        }
        Progress::Done {
            digest,
            skipped: true,
        } => blob_status("Already exists", &digest, None),
        Progress::Done { digest, .. } => {
            let mut lines = blob_status("Download complete", &digest, None).to_vec();
            lines.extend_from_slice(&blob_status("Pull complete", &digest, None));
            Bytes::from(lines)
        }
    };
    respond(work, head, format, |e| match e {
        ImageError::NotInRegistry {
            reference, reason, ..
        } => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("manifest for {reference} not found: {reason}"),
        ),
        ImageError::NotRunnable { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        other => image_error(other, &reference.to_string()),
    })
    .await
}

/// `POST /images/{name}/push?tag=`: `docker push` (every tag of the
/// repository when `tag` is empty, as `--all-tags`).
async fn push(
    daemon: &Arc<Daemon>,
    name: &str,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let tag = query.get("tag").unwrap_or_default();
    let local = match tag {
        "" => name.to_owned(),
        tag => format!("{name}:{tag}"),
    };
    let reference = ImageRef::parse(&local).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if reference.digest().is_some() {
        return Err(ApiError::bad_request(format!(
            "cannot push `{}`: name a tag, not a digest",
            wrun_runtime::input::excerpt(&local)
        )));
    }
    let all_tags = tag.is_empty() && !has_tag_or_digest(name);
    let credentials = match headers.get("x-registry-auth") {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid X-Registry-Auth header: not text"))?;
            Credentials::from_registry_auth_header(value)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
    };
    let registry_name = match reference.registry() {
        "index.docker.io" => "docker.io",
        host => host,
    };
    let head = vec![status(format!(
        "The push refers to repository [{registry_name}/{}]",
        reference.path()
    ))];
    let permit = TRANSFERS
        .acquire()
        .await
        .map_err(|e| internal(format!("the image transfers are closed: {e}")))?;
    let (store, home) = (daemon.images.clone(), daemon.home.clone());
    let repository = reference.repository();
    let work = transfer(permit, move |emit: Emitter| async move {
        let locals: Vec<String> = match all_tags {
            false => vec![store.find(&local)?.name.unwrap_or_else(|| local.clone())],
            true => store
                .entries()?
                .into_iter()
                .filter_map(|e| e.name)
                .filter(|n| ImageRef::parse(n).is_ok_and(|r| r.repository() == repository))
                .collect(),
        };
        if locals.is_empty() {
            return Err(ImageError::NotFound { reference: local });
        }
        for local in locals {
            let remote = ImageRef::parse(&local)?;
            let registry = connect(&home, remote.registry(), credentials.clone())?;
            let report = registry
                .push(&store, &local, &remote, &emit.progress())
                .await?;
            let tag = remote.tag().unwrap_or("latest");
            emit.line(status(format!(
                "{tag}: digest: {} size: {}",
                report.digest, report.size
            )));
            emit.line(json_line(&serde_json::json!({
                "progressDetail": {},
                "aux": {"Tag": tag, "Digest": report.digest.to_string(), "Size": report.size},
            })));
        }
        Ok(())
    });
    let mut moved: HashMap<Digest, (u64, u64)> = HashMap::new();
    let format = move |event| match event {
        Progress::Start { digest, size } => {
            moved.insert(digest.clone(), (0, size));
            blob_status("Pushing", &digest, Some((0, size)))
        }
        Progress::Advance { digest, bytes } => {
            let (current, total) = moved.entry(digest.clone()).or_default();
            *current += bytes;
            blob_status("Pushing", &digest, Some((*current, *total)))
        }
        Progress::Done {
            digest,
            skipped: true,
        } => blob_status("Layer already exists", &digest, None),
        Progress::Done { digest, .. } => blob_status("Pushed", &digest, None),
    };
    let name = name.to_owned();
    respond(work, head, format, move |e| match e {
        ImageError::NotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("An image does not exist locally with the tag: {name}"),
        ),
        other => image_error(other, &name),
    })
    .await
}

/// `GET /images/get?names=..&names=..`: `docker save` of several images.
async fn save_many(daemon: DaemonState, uri: Uri) -> ApiResult<Response> {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let names: Vec<String> = pairs
        .0
        .into_iter()
        .filter(|(key, _)| key == "names")
        .map(|(_, name)| name)
        .collect();
    save(&daemon, names).await
}

/// An OCI archive of `names` (what `wrun save` writes), streamed as it is
/// written. Every name is found first, so that a wrong one is a 404; an
/// error past the first byte (a corrupted blob) cuts the stream.
async fn save(daemon: &Arc<Daemon>, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "no image to save: give one or more `names`",
        ));
    }
    let store = daemon.images.clone();
    let found = names.clone();
    blocking(move || {
        for name in &found {
            store.find(name).map_err(|e| image_error(e, name))?;
        }
        Ok(())
    })
    .await?;
    let permit = TRANSFERS
        .acquire()
        .await
        .map_err(|e| internal(format!("the image transfers are closed: {e}")))?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let store = daemon.images.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let out = ChannelWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(ChannelWriter::CHUNK),
        };
        if let Err(e) = save_archive(&store, &names, out) {
            tracing::warn!("docker save of {names:?}: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Bytes written on a blocking thread, sent to the response in chunks; a
/// client that went away fails the write, which ends the save.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 64 << 10;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(Self::CHUNK),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The request body, read on a blocking thread as it arrives.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// `POST /images/load`: `docker load` of an OCI archive (what `wrun save`
/// and `docker save` write), at most [`MAX_ARCHIVE`] bytes, read as it
/// arrives. The archive is checked whole (every entry, blob and layer)
/// before any image is named, so a bad one is a 400 that changes no image;
/// then one `{"stream":"Loaded image: NAME\n"}` line per image (also with
/// `quiet`, which only silences progress, of which a load has none).
async fn load(daemon: DaemonState, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    load_limited(&daemon, &headers, body, MAX_ARCHIVE).await
}

async fn load_limited(
    daemon: &Arc<Daemon>,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> ApiResult<Response> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the archive is larger than the {} the daemon loads",
                Size(limit)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let permit = TRANSFERS
        .acquire()
        .await
        .map_err(|e| internal(format!("the image transfers are closed: {e}")))?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let store = daemon.images.clone();
    let loading = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        load_archive(
            &store,
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
        )
    });
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    let mut over = false;
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                break;
            }
            Err(_) => {
                let why = format!("nothing arrived for {} s", BODY_IDLE.as_secs());
                let _ = tx
                    .send(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why)))
                    .await;
                break;
            }
        };
        received += chunk.len() as u64;
        if received > limit {
            over = true;
            let _ = tx.send(Err(std::io::Error::other("too large"))).await;
            break;
        }
        // The loader stops reading at the archive's end, or at its first
        // error: the rest of the body is not needed.
        if tx.send(Ok(chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let loaded = loading
        .await
        .map_err(|e| internal(format!("the load failed: {e}")))?;
    if over {
        return Err(too_large());
    }
    let report = loaded.map_err(|e| match e {
        ImageError::Io { .. } => internal(format!("failed to load the archive: {e}")),
        // Everything else is the archive's fault: its entries, blobs,
        // layers or names.
        e => ApiError::bad_request(format!("failed to load the archive: {e}")),
    })?;
    let lines: Vec<Bytes> = report
        .images
        .iter()
        .map(|(name, digest)| {
            // (`BuildInfo`, the stubs' model of this line, only deserializes.)
            let line = match name {
                Some(name) => format!("Loaded image: {name}\n"),
                None => format!("Loaded image ID: {digest}\n"),
            };
            json_line(&serde_json::json!({ "stream": line }))
        })
        .collect();
    Ok(json_stream(Body::from(lines.concat())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    #[test]
    fn pull_references_follow_the_cli() {
        let r = pull_reference("docker.io/library/busybox", "latest").unwrap();
        assert_eq!(r.to_string(), "busybox:latest");
        assert_eq!(r.path(), "library/busybox");
        let r = pull_reference("127.0.0.1:5000/team/app", "v1").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:v1");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = pull_reference("127.0.0.1:5000/app", &digest).unwrap();
        assert_eq!(r.digest().unwrap().as_str(), digest);
        assert_eq!(
            pull_reference("app:2", "").unwrap().to_string(),
            "app:2",
            "docker-py's short form"
        );
        let e = pull_reference("app", "").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        let e = pull_reference("Not A Name", "1").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Not A Name"), "{}", e.message);
    }

    use crate::daemon::test_daemon as daemon;

    /// A body past the limit is refused as it streams, whatever it
    /// declares; the store is untouched.
    #[tokio::test]
    async fn load_bodies_are_bounded() {
        let home = tempfile::tempdir().unwrap();
        let daemon = daemon(home.path());
        let chunks = futures_util::stream::iter(
            (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1024]))),
        );
        let e = load_limited(&daemon, &HeaderMap::new(), Body::from_stream(chunks), 4096)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("larger than the"), "{}", e.message);
        assert!(daemon.images.entries().unwrap().is_empty());

        let request = Request::post("/images/load")
            .body(Body::from(
                "this is not a tar archive, not even close".repeat(20),
            ))
            .unwrap();
        let response = super::super::router(daemon.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("failed to load the archive"), "{body}");
        assert!(daemon.images.entries().unwrap().is_empty());
    }
}
