//! `/volumes`: named volumes as Docker's `local` driver has them, over the
//! runtime's [`Volumes`] (`$WRUN_HOME/volumes/<name>/_data`). A volume is in
//! use while a container, in whatever state, names it in its mounts: as in
//! Docker, it can then be neither removed nor pruned.

use super::{
    ApiError, ApiResult, Daemon, DaemonState, Filters, JsonBody, Query, blocking, empty, events,
    labels_excluded, labels_match, rfc3339,
};
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bollard_stubs::models::{
    Volume, VolumeCreateOptions, VolumeListResponse, VolumePruneResponse, VolumeScopeEnum,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wrun_runtime::container::events::Kind;
use wrun_runtime::container::{ContainerError, MountSource, VolumeError, VolumeInfo, Volumes};
use wrun_runtime::input::excerpt;

/// The label Docker puts on a volume created without a name; `prune`
/// removes only volumes with it unless told `all` (API 1.42 and later).
const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

pub(super) fn routes() -> Router<Arc<Daemon>> {
    // A volume may be called `create` or `prune`: those paths answer GET
    // and DELETE for it, as moby's router does.
    Router::new()
        .route("/volumes", get(list))
        .route(
            "/volumes/create",
            post(create)
                .get(|daemon: DaemonState| inspect(daemon, Path("create".to_owned())))
                .delete(|daemon: DaemonState, query: Query| {
                    remove(daemon, Path("create".to_owned()), query)
                }),
        )
        .route(
            "/volumes/prune",
            post(prune)
                .get(|daemon: DaemonState| inspect(daemon, Path("prune".to_owned())))
                .delete(|daemon: DaemonState, query: Query| {
                    remove(daemon, Path("prune".to_owned()), query)
                }),
        )
        .route("/volumes/{name}", get(inspect).delete(remove))
}

fn volumes(daemon: &Daemon) -> Volumes {
    Volumes::new(&daemon.home)
}

fn volume_error(e: VolumeError) -> ApiError {
    ContainerError::from(e).into()
}

/// The volume `name`; a name no volume can have is simply not there (404,
/// as Docker answers `volume inspect` or `rm` of it).
fn lookup(volumes: &Volumes, name: &str) -> Result<VolumeInfo, VolumeError> {
    volumes.get(name).map_err(|e| match e {
        VolumeError::InvalidName(name) => VolumeError::NotFound(name),
        other => other,
    })
}

/// The ids of the containers using each volume, by volume name.
fn users(daemon: &Daemon) -> HashMap<String, Vec<String>> {
    let mut users: HashMap<String, Vec<String>> = HashMap::new();
    for snapshot in daemon.containers.list() {
        for mount in &snapshot.config.mounts {
            if let MountSource::Volume(name) = &mount.source {
                let ids = users.entry(name.clone()).or_default();
                if !ids.contains(&snapshot.id) {
                    ids.push(snapshot.id.clone());
                }
            }
        }
    }
    users
}

/// A volume's labels as Docker shows them: an anonymous one carries
/// [`ANONYMOUS_LABEL`].
fn labels(info: &VolumeInfo) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = info.labels.clone().into_iter().collect();
    if info.anonymous {
        labels.entry(ANONYMOUS_LABEL.to_owned()).or_default();
    }
    labels
}

/// The Volume object of the API.
fn to_docker(info: &VolumeInfo) -> Volume {
    Volume {
        name: info.name.clone(),
        driver: "local".to_owned(),
        mountpoint: info.mountpoint.display().to_string(),
        created_at: Some(rfc3339(info.created_at)),
        status: None,
        labels: labels(info),
        scope: Some(VolumeScopeEnum::LOCAL),
        cluster_volume: None,
        options: HashMap::new(),
        usage_data: None,
    }
}

/// A boolean filter value, as Go's `strconv.ParseBool` reads one.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "True" | "TRUE" => Some(true),
        "0" | "f" | "F" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// `GET /volumes`, with the filters `name` (a part of the name), `label`
/// (`key` or `key=value`, all must match), `dangling` (used by no
/// container, or used) and `driver` (`local` is the only one).
async fn list(daemon: DaemonState, query: Query) -> ApiResult<Json<VolumeListResponse>> {
    let filters = Filters::parse(&query)?;
    filters.only(&["name", "label", "dangling", "driver"])?;
    let dangling = match filters.get("dangling") {
        None => None,
        Some(values) => {
            let parsed: Option<Vec<bool>> = values
                .iter()
                .map(|v| match v.as_str() {
                    "true" | "1" => Some(true),
                    "false" | "0" => Some(false),
                    _ => None,
                })
                .collect();
            let parsed = parsed.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid filter 'dangling={}': expected true, false, 1 or 0",
                    excerpt(&values.join(","))
                ))
            })?;
            Some(parsed.contains(&true))
        }
    };
    let all = blocking({
        let daemon = daemon.clone();
        move || volumes(&daemon).list().map_err(volume_error)
    })
    .await?;
    let users = users(&daemon);
    let local = filters
        .get("driver")
        .is_none_or(|drivers| drivers.iter().any(|d| d == "local"));
    let listed = all
        .iter()
        .filter(|_| local)
        .filter(|info| {
            filters
                .get("name")
                .is_none_or(|names| names.iter().any(|n| info.name.contains(n.as_str())))
        })
        .filter(|info| dangling.is_none_or(|d| d != users.contains_key(&info.name)))
        .map(to_docker)
        .filter(|volume| labels_match(&filters, |key| volume.labels.get(key).map(String::as_str)))
        .collect();
    Ok(Json(VolumeListResponse {
        volumes: Some(listed),
        warnings: Some(Vec::new()),
    }))
}

/// `POST /volumes/create`: an existing name is answered with that volume
/// (as Docker); no name makes an anonymous volume with a random one.
async fn create(
    daemon: DaemonState,
    JsonBody(body): JsonBody<VolumeCreateOptions>,
) -> ApiResult<Response> {
    match body.driver.as_deref() {
        None | Some("" | "local") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "volume driver `{}` is not supported: wrun's volumes are local directories \
                 (driver `local`)",
                excerpt(other)
            )));
        }
    }
    if let Some(options) = body.driver_opts.as_ref().filter(|o| !o.is_empty()) {
        let mut keys: Vec<&str> = options.keys().map(String::as_str).collect();
        keys.sort_unstable();
        return Err(ApiError::bad_request(format!(
            "volume options `{}` are not supported: wrun's local volumes take no options",
            excerpt(&keys.join(","))
        )));
    }
    if body.cluster_volume_spec.is_some() {
        return Err(ApiError::bad_request(
            "cluster volumes are not supported: wrun has no swarm",
        ));
    }
    let labels: BTreeMap<String, String> = body.labels.unwrap_or_default().into_iter().collect();
    let name = body.name.unwrap_or_default();
    let events = daemon.containers.events().clone();
    let info = blocking(move || {
        let volumes = volumes(&daemon);
        match name.as_str() {
            "" => volumes.create_anonymous(labels),
            name => volumes.create(name, labels, false, true),
        }
        .map_err(volume_error)
    })
    .await?;
    events::emit(&events, Kind::Volume, "create", &info.name, &info.name);
    Ok((StatusCode::CREATED, Json(to_docker(&info))).into_response())
}

async fn inspect(daemon: DaemonState, Path(name): Path<String>) -> ApiResult<Json<Volume>> {
    let info = blocking(move || lookup(&volumes(&daemon), &name).map_err(volume_error)).await?;
    Ok(Json(to_docker(&info)))
}

/// `DELETE /volumes/{name}`: refused (409) while a container uses it, even
/// with `force`, which only makes a missing volume no error.
async fn remove(
    daemon: DaemonState,
    Path(name): Path<String>,
    query: Query,
) -> ApiResult<Response> {
    let force = query.flag("force");
    let events = daemon.containers.events().clone();
    let removed = blocking(move || {
        let volumes = volumes(&daemon);
        match lookup(&volumes, &name) {
            Ok(_) => {}
            Err(VolumeError::NotFound(_)) if force => return Ok(None),
            Err(e) => return Err(volume_error(e)),
        }
        if let Some(containers) = users(&daemon).remove(&name) {
            return Err(volume_error(VolumeError::InUse { name, containers }));
        }
        volumes.remove(&name).map_err(volume_error)?;
        Ok(Some(name))
    })
    .await?;
    if let Some(name) = removed {
        events::emit(&events, Kind::Volume, "destroy", &name, &name);
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune`: removes the volumes no container uses; only
/// anonymous ones unless the filter `all` is true (Docker since API 1.42),
/// narrowed by `label` and `label!`. Answers what it removed and the bytes
/// their files held.
async fn prune(daemon: DaemonState, query: Query) -> ApiResult<Json<VolumePruneResponse>> {
    let filters = Filters::parse(&query)?;
    filters.only(&["label", "label!", "all"])?;
    let all = match filters.get("all") {
        None => false,
        Some([one]) => parse_bool(one).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid filter 'all={}': expected true or false",
                excerpt(one)
            ))
        })?,
        Some(many) => {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'all={}': only one value is expected",
                excerpt(&many.join(","))
            )));
        }
    };
    let events = daemon.containers.events().clone();
    let (deleted, bytes) = blocking(move || {
        let volumes = volumes(&daemon);
        let users = users(&daemon);
        let mut deleted = Vec::new();
        let mut bytes = 0;
        for info in volumes.list().map_err(volume_error)? {
            let labels = labels(&info);
            let label = |key: &str| labels.get(key).map(String::as_str);
            let wanted = !users.contains_key(&info.name)
                && (all || labels.contains_key(ANONYMOUS_LABEL))
                && labels_match(&filters, label)
                && !labels_excluded(&filters, label);
            if !wanted {
                continue;
            }
            let size = volumes.size(&info.name).unwrap_or(0);
            match volumes.remove(&info.name) {
                Ok(()) => {
                    bytes += size;
                    deleted.push(info.name);
                }
                // As moby: what cannot be removed stays, and the rest goes.
                Err(e) => tracing::warn!(volume = %info.name, "prune: {e}"),
            }
        }
        Ok((deleted, bytes))
    })
    .await?;
    for name in &deleted {
        events::emit(&events, Kind::Volume, "destroy", name, name);
    }
    Ok(Json(VolumePruneResponse {
        volumes_deleted: Some(deleted),
        space_reclaimed: Some(i64::try_from(bytes).unwrap_or(i64::MAX)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_daemon as daemon;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    use wrun_runtime::container::{ContainerConfig, Mount, Origin};

    async fn call(daemon: &Arc<Daemon>, method: &str, uri: &str, body: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = super::super::router(daemon.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// `filters=` as the CLI encodes it, percent-encoded.
    fn filters(json: &str) -> String {
        let encoded: String = json
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("filters={encoded}")
    }

    #[tokio::test]
    async fn volumes_are_created_inspected_listed_and_filtered() {
        let home = tempfile::tempdir().unwrap();
        let d = daemon(home.path());
        let (status, body) = call(
            &d,
            "POST",
            "/v1.47/volumes/create",
            r#"{"Name":"data","Driver":"local","Labels":{"tier":"db"}}"#,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let made = json(&body);
        assert_eq!(made["Name"], "data");
        assert_eq!(made["Driver"], "local");
        assert_eq!(made["Scope"], "local");
        assert_eq!(made["Labels"], serde_json::json!({"tier": "db"}));
        assert_eq!(made["Options"], serde_json::json!({}));
        let mountpoint = home.path().join("volumes/data/_data");
        assert_eq!(made["Mountpoint"], mountpoint.display().to_string());
        assert!(mountpoint.is_dir());
        assert!(
            humantime::parse_rfc3339(made["CreatedAt"].as_str().unwrap()).is_ok(),
            "{body}"
        );
        // Again: the same volume, its data kept.
        std::fs::write(mountpoint.join("f"), "x").unwrap();
        let (status, again) = call(&d, "POST", "/volumes/create", r#"{"Name":"data"}"#).await;
        assert_eq!(
            (status, json(&again)["CreatedAt"].clone()),
            (201, made["CreatedAt"].clone())
        );
        assert!(mountpoint.join("f").exists());
        // No name: an anonymous volume, named as Docker names one.
        let (status, body) = call(&d, "POST", "/volumes/create", "").await;
        assert_eq!(status, 201, "{body}");
        let anonymous = json(&body)["Name"].as_str().unwrap().to_owned();
        assert_eq!(anonymous.len(), 64);
        assert_eq!(json(&body)["Labels"][ANONYMOUS_LABEL], "");
        let (status, body) = call(&d, "GET", "/v1.47/volumes/data", "").await;
        assert_eq!((status, json(&body)["Name"].clone()), (200, "data".into()));
        let (status, body) = call(&d, "GET", "/volumes/ghost", "").await;
        assert_eq!(status, 404);
        assert_eq!(json(&body)["message"], "get ghost: no such volume");

        let names = |body: &str| -> Vec<String> {
            let list = json(body);
            assert_eq!(list["Warnings"], serde_json::json!([]), "{body}");
            list["Volumes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["Name"].as_str().unwrap().to_owned())
                .collect()
        };
        let (_, body) = call(&d, "GET", "/volumes", "").await;
        let mut all = vec![anonymous.clone(), "data".to_owned()];
        all.sort();
        assert_eq!(names(&body), all);
        let cases = [
            (r#"{"name":{"at":true}}"#, vec!["data"]),
            (r#"{"label":["tier=db"]}"#, vec!["data"]),
            (r#"{"label":{"tier=web":true}}"#, vec![]),
            (r#"{"dangling":["false"]}"#, vec![]),
            (r#"{"driver":["local"],"name":["data"]}"#, vec!["data"]),
            (r#"{"driver":["nfs"]}"#, vec![]),
        ];
        for (filter, want) in cases {
            let (status, body) =
                call(&d, "GET", &format!("/volumes?{}", filters(filter)), "").await;
            assert_eq!(status, 200, "{filter}: {body}");
            assert_eq!(names(&body), want, "{filter}");
        }
        let (status, body) = call(
            &d,
            "GET",
            &format!("/volumes?{}", filters(r#"{"dangling":["maybe"]}"#)),
            "",
        )
        .await;
        assert_eq!(status, 400);
        assert!(body.contains("dangling=maybe"), "{body}");
        let (status, body) = call(
            &d,
            "GET",
            &format!("/volumes?{}", filters(r#"{"size":["1"]}"#)),
            "",
        )
        .await;
        assert_eq!(status, 400);
        assert!(body.contains("invalid filter 'size'"), "{body}");
    }

    #[tokio::test]
    async fn bad_names_drivers_and_options_are_refused_by_name() {
        let home = tempfile::tempdir().unwrap();
        let d = daemon(home.path());
        let cases = [
            (r#"{"Name":"../etc"}"#, "`../etc`"),
            (r#"{"Name":"a b"}"#, "`a b`"),
            (
                r#"{"Name":"v","Driver":"nfs"}"#,
                "volume driver `nfs` is not supported",
            ),
            (
                r#"{"Name":"v","DriverOpts":{"type":"tmpfs","o":"size=1m"}}"#,
                "`o,type`",
            ),
            (r#"{"Name":5}"#, "invalid JSON in the request body"),
        ];
        for (body, want) in cases {
            let (status, reply) = call(&d, "POST", "/volumes/create", body).await;
            assert_eq!(status, 400, "{body}: {reply}");
            assert!(
                json(&reply)["message"].as_str().unwrap().contains(want),
                "{reply}"
            );
        }
        let (_, body) = call(&d, "GET", "/volumes", "").await;
        assert_eq!(json(&body)["Volumes"], serde_json::json!([]));
        // A name no volume can have is not there.
        let (status, _) = call(&d, "DELETE", "/volumes/..x", "").await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn a_volume_a_container_names_is_neither_removed_nor_pruned() {
        let home = tempfile::tempdir().unwrap();
        let d = daemon(home.path());
        for body in [
            r#"{"Name":"used"}"#,
            r#"{"Name":"spare"}"#,
            r#"{"Name":"prune"}"#,
        ] {
            assert_eq!(call(&d, "POST", "/volumes/create", body).await.0, 201);
        }
        let (_, body) = call(&d, "POST", "/volumes/create", r#"{"Labels":{"k":"v"}}"#).await;
        let anonymous = json(&body)["Name"].as_str().unwrap().to_owned();
        std::fs::write(
            home.path().join(format!("volumes/{anonymous}/_data/f")),
            "hello",
        )
        .unwrap();
        // Created, never started: it uses the volume all the same.
        let app = home.path().join("app.wasm");
        std::fs::write(&app, b"\0asm\x01\0\0\0").unwrap();
        let mut config = ContainerConfig::new("holder".to_owned(), Origin::File { path: app });
        config.mounts.push(Mount {
            source: MountSource::Volume("used".to_owned()),
            target: "/data".to_owned(),
            read_only: false,
        });
        let id = d.containers.create(config).unwrap();
        for uri in ["/volumes/used", "/volumes/used?force=1"] {
            let (status, body) = call(&d, "DELETE", uri, "").await;
            assert_eq!(status, 409, "{body}");
            assert_eq!(
                json(&body)["message"],
                format!("remove used: volume is in use - [{id}]")
            );
        }
        let (_, body) = call(
            &d,
            "GET",
            &format!("/volumes?{}", filters(r#"{"dangling":{"true":true}}"#)),
            "",
        )
        .await;
        assert!(
            !body.contains("\"used\"") && body.contains("\"spare\""),
            "{body}"
        );

        // Prune: anonymous ones by default, the unused named ones with `all`.
        let (status, body) = call(
            &d,
            "POST",
            &format!("/volumes/prune?{}", filters(r#"{"label!":["k=v"]}"#)),
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["VolumesDeleted"], serde_json::json!([]));
        let (status, body) = call(&d, "POST", "/v1.47/volumes/prune", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json(&body)["VolumesDeleted"],
            serde_json::json!([anonymous])
        );
        assert_eq!(json(&body)["SpaceReclaimed"], 5);
        let (status, body) = call(
            &d,
            "POST",
            &format!("/volumes/prune?{}", filters(r#"{"all":["maybe"]}"#)),
            "",
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = call(
            &d,
            "POST",
            &format!("/volumes/prune?{}", filters(r#"{"all":{"true":true}}"#)),
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json(&body)["VolumesDeleted"],
            serde_json::json!(["prune", "spare"])
        );
        assert_eq!(call(&d, "GET", "/volumes/used", "").await.0, 200);

        d.containers.remove(&id, false, false).await.unwrap();
        assert_eq!(call(&d, "DELETE", "/volumes/used", "").await.0, 204);
        assert_eq!(call(&d, "DELETE", "/volumes/used", "").await.0, 404);
        assert_eq!(
            call(&d, "DELETE", "/volumes/used?force=True", "").await.0,
            204
        );
        // The volumes called like the API's own paths are volumes too.
        assert_eq!(
            call(&d, "POST", "/volumes/create", r#"{"Name":"create"}"#)
                .await
                .0,
            201
        );
        assert_eq!(call(&d, "GET", "/volumes/create", "").await.0, 200);
        assert_eq!(call(&d, "DELETE", "/volumes/create", "").await.0, 204);
    }
}
