//! `wrun daemon`'s HTTP front end: the Docker Engine API (1.24 to 1.47)
//! that the docker CLI, docker-py and compose speak, translated into the
//! runtime's container model (`wrun_runtime::container`), which decides
//! everything. One module per resource, as moby's routers; the wire types
//! are bollard-stubs' models of the API.
//!
//! What real clients send and need, request by request, is recorded in
//! `shared/notes/docker-api.md`; the choices below cite it where they are
//! not obvious.

mod containers;
mod events;
mod images;
pub mod listener;
mod networks;
mod streams;
mod system;
pub mod tls;
mod volumes;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use wrun_runtime::container::Containers;
use wrun_runtime::image::ImageStore;

/// The API version the daemon speaks (Docker 27.5's).
pub const API_VERSION: &str = "1.47";
/// The oldest version it accepts (dockerd 27's minimum).
pub const MIN_API_VERSION: &str = "1.24";

/// The largest request body read (create bodies are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// What the routers work on.
pub struct Daemon {
    pub containers: Containers,
    pub images: ImageStore,
    pub home: std::path::PathBuf,
    pub started: SystemTime,
}

/// The daemon's router: every path with or without a `/vX.Y` prefix
/// (docker-py asks `/version` unversioned first), answers carrying
/// Docker's headers, and errors as `{"message": ...}`.
pub fn router(daemon: Arc<Daemon>) -> Router {
    let api = Router::new()
        .merge(system::routes())
        .merge(containers::routes())
        .merge(images::routes())
        .merge(volumes::routes())
        .merge(networks::routes())
        .merge(events::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "page not found") })
        .with_state(daemon.clone())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .fallback_service(api)
        .layer(axum::middleware::from_fn(versioned))
}

/// A version as `(major, minor)`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Strips a `/vX.Y` prefix after checking the version against the range
/// the daemon speaks, and sets Docker's headers on every answer.
async fn versioned(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let versioned = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(version, rest)| {
            Some((parse_version(version)?, version.to_owned(), rest.to_owned()))
        });
    let mut response = match versioned {
        Some((version, text, rest)) => {
            let max = parse_version(API_VERSION).unwrap_or_default();
            let min = parse_version(MIN_API_VERSION).unwrap_or_default();
            if version > max {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "client version {text} is too new. Maximum supported API version is \
                         {API_VERSION}"
                    ),
                )
                .into_response()
            } else if version < min {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "client version {text} is too old. Minimum supported API version is \
                         {MIN_API_VERSION}, please upgrade your client to a newer version"
                    ),
                )
                .into_response()
            } else {
                let query = request
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                match format!("/{rest}{query}").parse::<Uri>() {
                    Ok(uri) => {
                        *request.uri_mut() = uri;
                        next.run(request).await
                    }
                    Err(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid request path")
                        .into_response(),
                }
            }
        }
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert("api-version", HeaderValue::from_static(API_VERSION));
    headers.insert("ostype", HeaderValue::from_static("linux"));
    headers.insert("docker-experimental", HeaderValue::from_static("false"));
    headers.insert(
        "server",
        HeaderValue::from_static(concat!("wrun/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    response
}

/// An error as Docker answers it: a status and `{"message": ...}`, which the
/// CLI prints as `Error response from daemon: <message>`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            // A 304 has no body (Docker: `start` of a running container).
            return self.status.into_response();
        }
        let body = serde_json::json!({ "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<wrun_runtime::container::ContainerError> for ApiError {
    fn from(e: wrun_runtime::container::ContainerError) -> ApiError {
        use wrun_runtime::container::ContainerError as E;
        let e = match e {
            E::Network(e) => return networks::network_error(e),
            other => other,
        };
        let status = match &e {
            E::NotFound(_) | E::ImageNotFound(_) => StatusCode::NOT_FOUND,
            E::Volume(wrun_runtime::container::VolumeError::NotFound(_)) => StatusCode::NOT_FOUND,
            E::NameInUse { .. } | E::Conflict { .. } => StatusCode::CONFLICT,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            // Answered above.
            E::Network(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Volume(wrun_runtime::container::VolumeError::Exists(_)) => StatusCode::CONFLICT,
            E::Volume(wrun_runtime::container::VolumeError::InUse { .. }) => StatusCode::CONFLICT,
            E::Unchanged(..) => StatusCode::NOT_MODIFIED,
            E::InvalidName(_) | E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::Volume(wrun_runtime::container::VolumeError::InvalidName(_)) => {
                StatusCode::BAD_REQUEST
            }
            E::Image(wrun_runtime::image::ImageError::NotFound { .. }) => StatusCode::NOT_FOUND,
            // A name no image can have is the client's mistake (Docker: 400
            // "invalid reference format").
            E::Image(
                wrun_runtime::image::ImageError::InvalidReference { .. }
                | wrun_runtime::image::ImageError::InvalidDigest { .. },
            ) => StatusCode::BAD_REQUEST,
            E::Start(_) | E::Image(_) | E::Volume(_) | E::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Runs file-system (or other blocking) work off the API's thread.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a blocking task failed: {e}"),
        )
    })?
}

/// Query parameters, as clients send them (`1`/`True`/`true` alike).
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    fn parse(uri: &Uri) -> ApiResult<Query> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        Ok(Query(pairs.0.into_iter().collect()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean as moby reads one: `1`, `true` and `True` are true;
    /// absent, empty, `0` and `false` are false.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True" | "TRUE"))
    }

    /// A number, if given (an empty value counts as absent).
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for `{key}`: `{}` is not a number",
                    wrun_runtime::input::excerpt(text)
                ))
            }),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Query> {
        Query::parse(&parts.uri)
    }
}

/// A JSON body, read whole (bounded by [`MAX_BODY`]); an empty body is the
/// type's default, as moby treats one. Errors name what is wrong.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> axum::extract::FromRequest<S>
    for JsonBody<T>
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> ApiResult<JsonBody<T>> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    e.status(),
                    format!("failed to read the request body (at most {MAX_BODY} bytes): {e}"),
                )
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
    }
}

/// The `filters` query parameter in both encodings clients use: the CLI's
/// `{"status":{"running":true}}` and docker-py's `{"status":["running"]}`.
#[derive(Debug, Default)]
pub struct Filters(HashMap<String, Vec<String>>);

impl Filters {
    pub fn parse(query: &Query) -> ApiResult<Filters> {
        let Some(text) = query.get("filters").filter(|t| !t.is_empty()) else {
            return Ok(Filters::default());
        };
        let bad = |why: String| {
            ApiError::bad_request(format!(
                "invalid filter `{}`: {why}",
                wrun_runtime::input::excerpt(text)
            ))
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".to_owned()))?;
        let mut filters = HashMap::new();
        for (key, values) in object {
            let list: Vec<String> = match values {
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(format!("the values of `{key}` must be strings")))?,
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => {
                    return Err(bad(format!(
                        "the values of `{key}` must be a list or a map"
                    )));
                }
            };
            filters.insert(key.clone(), list);
        }
        Ok(Filters(filters))
    }

    /// The values of `key`; `None` when it is not filtered on.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.0.get(key).map(Vec::as_slice)
    }

    /// Refuses filters outside `known`, naming the first.
    pub fn only(&self, known: &[&str]) -> ApiResult<()> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(key) => Err(ApiError::bad_request(format!("invalid filter '{key}'"))),
            None => Ok(()),
        }
    }
}

/// Whether `labels` match every `label` filter (`key` or `key=value`; all
/// must match, as in Docker).
pub fn labels_match<'a>(
    filters: &Filters,
    mut labels: impl FnMut(&str) -> Option<&'a str>,
) -> bool {
    filters.get("label").is_none_or(|wanted| {
        wanted.iter().all(|w| match w.split_once('=') {
            Some((key, value)) => labels(key) == Some(value),
            None => labels(w).is_some(),
        })
    })
}

/// Whether the labels match every `label!` filter, which excludes (as
/// moby's prune: only when all of them match).
pub fn labels_excluded<'a>(
    filters: &Filters,
    mut labels: impl FnMut(&str) -> Option<&'a str>,
) -> bool {
    filters.get("label!").is_some_and(|excluded| {
        excluded.iter().all(|w| match w.split_once('=') {
            Some((key, value)) => labels(key) == Some(value),
            None => labels(w).is_some(),
        })
    })
}

/// Seconds since the epoch, as list answers carry `Created`.
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with nanoseconds, as inspect answers carry timestamps.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Go's zero time, which Docker reports for a time that has not come.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub(crate) type DaemonState = State<Arc<Daemon>>;

pub(crate) fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// A daemon over an empty `$WRUN_HOME` (`home`), its guests on the
/// calling test's Tokio runtime, for the routers' in-process tests.
#[cfg(test)]
pub(crate) fn test_daemon(home: &std::path::Path) -> Arc<Daemon> {
    use wrun_host_api::net::NetworkStore;
    use wrun_runtime::container::{Services, Volumes};
    let runtime = wrun_runtime::Runtime::new(wrun_runtime::RuntimeConfig::default()).unwrap();
    let images = ImageStore::open(home).unwrap();
    let services = Services {
        runtime: Arc::new(runtime),
        images: images.clone(),
        volumes: Volumes::new(home),
        networks: NetworkStore::new(home, &home.join("run")),
        runtime_dir: home.join("run"),
        guests: tokio::runtime::Handle::current(),
        max_running: 64,
    };
    Arc::new(Daemon {
        containers: Containers::open(home, services).unwrap(),
        images,
        home: home.to_owned(),
        started: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, Request};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::test_daemon as daemon;

    async fn call(method: &str, uri: &str, body: &str) -> (StatusCode, HeaderMap, String) {
        let home = tempfile::tempdir().unwrap();
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = router(daemon(home.path())).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn ping_carries_the_version_clients_negotiate_with() {
        for method in ["GET", "HEAD"] {
            let (status, headers, _) = call(method, "/_ping", "").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["api-version"], API_VERSION);
            assert_eq!(headers["ostype"], "linux");
        }
        let (_, _, body) = call("GET", "/v1.24/_ping", "").await;
        assert_eq!(body, "OK");
    }

    #[tokio::test]
    async fn versions_outside_the_range_are_refused_as_dockerd_does() {
        let (status, _, body) = call("GET", "/version", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"ApiVersion\":\"1.47\""), "{body}");
        let (status, _, body) = call("GET", "/v1.48/version", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("client version 1.48 is too new"), "{body}");
        let (status, headers, body) = call("GET", "/v1.23/info", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("client version 1.23 is too old"), "{body}");
        // Errors carry Docker's headers too.
        assert_eq!(headers["api-version"], API_VERSION);
        let (status, _, body) = call("GET", "/v1.47/nothing", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, r#"{"message":"page not found"}"#);
    }

    #[tokio::test]
    async fn bad_bodies_and_queries_are_named() {
        let (status, _, body) = call("POST", "/containers/create", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid JSON in the request body"), "{body}");
        let (status, _, body) = call("POST", "/containers/create", r#"{"Image":"ghost"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("No such image: ghost"), "{body}");
        let (status, _, body) =
            call("POST", "/containers/create", r#"{"Image":"Not A Name!"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("Not A Name!"), "{body}");
        let (status, _, body) = call("POST", "/containers/create", "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("Image is required"), "{body}");
        let (status, _, body) = call(
            "GET",
            "/containers/json?filters=%7B%22color%22%3A%5B%22red%22%5D%7D",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid filter 'color'"), "{body}");
        let (status, _, body) = call("GET", "/containers/json?filters=%5B1%5D", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("expected a JSON object"), "{body}");
        let (status, _, body) = call("GET", "/containers/json?limit=many", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("`many`"), "{body}");
        let (status, _, body) = call("POST", "/containers/ghost/wait", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("No such container: ghost"), "{body}");
        let (status, _, _) = call(
            "GET",
            "/containers/json?all=True&filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn filters_come_in_both_encodings() {
        let parse = |text: &str| {
            let uri: Uri = format!("/x?filters={}", urlencode(text)).parse().unwrap();
            Filters::parse(&Query::parse(&uri).unwrap()).unwrap()
        };
        let cli = parse(r#"{"label":{"a=b":true,"c":true},"status":{"running":true}}"#);
        let py = parse(r#"{"label":["a=b","c"],"status":["running"]}"#);
        for filters in [cli, py] {
            let mut labels = filters.get("label").unwrap().to_vec();
            labels.sort();
            assert_eq!(labels, ["a=b", "c"]);
            let all = HashMap::from([("a", "b"), ("c", "")]);
            assert!(labels_match(&filters, |k| all.get(k).copied()));
            let some = HashMap::from([("a", "b")]);
            assert!(!labels_match(&filters, |k| some.get(k).copied()));
        }
    }

    fn urlencode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}
