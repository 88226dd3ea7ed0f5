//! `/containers`: Docker's container API over the runtime's container
//! model. The handlers translate Docker JSON into a `ContainerConfig` and
//! snapshots back into Docker JSON; what a container is and does is the
//! model's business.

use super::networks;
use super::streams::{Framing, Output};
use super::{
    ApiError, ApiResult, Daemon, DaemonState, Filters, JsonBody, Query, ZERO_TIME, blocking, empty,
    labels_match, rfc3339, unix_seconds,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bollard_stubs::models::{
    ContainerConfig as DockerConfig, ContainerCreateResponse, ContainerInspectResponse,
    ContainerState, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryHostConfig,
    ContainerSummaryNetworkSettings, ContainerWaitResponse, HostConfig, HostConfigLogConfig,
    MountPoint, MountPointTypeEnum, NetworkSettings, NetworkingConfig, Port, PortBinding,
    PortTypeEnum, RestartPolicy, RestartPolicyNameEnum,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wrun_host_api::net::{NetworkInfo, PortMapping, Protocol};
use wrun_runtime::container::logs::{LogOptions, ReadOptions};
use wrun_runtime::container::{
    ContainerConfig, Mount, MountSource, Origin, RestartPolicy as Policy, Snapshot, Status,
    WaitCondition,
};
use wrun_runtime::input::excerpt;

pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/containers/json", get(list))
        .route("/containers/create", post(create))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(|| async { StatusCode::OK }))
        .route("/containers/{id}", delete(remove))
}

/// The body of `POST /containers/create`: the container's config with
/// `HostConfig` and `NetworkingConfig` beside it (API 1.47's shape).
#[derive(Debug, Default, Deserialize)]
struct CreateBody {
    #[serde(flatten)]
    config: DockerConfig,
    #[serde(rename = "HostConfig")]
    host_config: Option<HostConfig>,
    #[serde(rename = "NetworkingConfig")]
    networking_config: Option<NetworkingConfig>,
}

async fn create(
    daemon: DaemonState,
    query: Query,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    let name = query.get("name").unwrap_or_default().to_owned();
    let (config, warnings) = translate(name, body)?;
    let containers = daemon.containers.clone();
    // Resolving an image and creating the directory touch the disk.
    let id = blocking(move || Ok(containers.create(config)?)).await?;
    let body = ContainerCreateResponse { id, warnings };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Docker's create request as a wrun container config, with the warnings
/// for what a wasm app has no use for (accepted, never silently dropped).
fn translate(name: String, body: CreateBody) -> ApiResult<(ContainerConfig, Vec<String>)> {
    let CreateBody {
        config: docker,
        host_config,
        networking_config: networking,
    } = body;
    let host = host_config.unwrap_or_default();
    let image = docker
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::bad_request("config.Image is required: no image was given"))?;
    let mut warnings = Vec::new();
    // An absolute path names an app file (what `wrun run -d app.wasm`
    // sends); anything else an image.
    let origin = match image.starts_with('/') {
        true => Origin::File {
            path: PathBuf::from(image),
        },
        false => Origin::Image {
            reference: image,
            digest: String::new(),
        },
    };
    let mut config = ContainerConfig::new(name, origin);
    config.args = docker.cmd.clone();
    if let Some(entrypoint) = docker.entrypoint.as_ref().filter(|e| !e.is_empty()) {
        warnings.push(format!(
            "Entrypoint {entrypoint:?} is ignored: a wasm image's entrypoint is its app"
        ));
    }
    for entry in docker.env.iter().flatten() {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                config.env.push((key.to_owned(), value.to_owned()))
            }
            // `-e NAME` with NAME unset in the client: Docker passes nothing.
            _ => {}
        }
    }
    config.workdir = docker.working_dir.clone().filter(|w| !w.is_empty());
    config.labels = docker
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    config.tty = docker.tty.unwrap_or(false);
    config.open_stdin = docker.open_stdin.unwrap_or(false);
    config.stdin_once = docker.stdin_once.unwrap_or(false);
    config.stop_timeout = docker.stop_timeout.and_then(|t| u64::try_from(t).ok());
    for bind in host.binds.iter().flatten() {
        config.mounts.push(parse_bind(bind)?);
    }
    for mount in host.mounts.iter().flatten() {
        config.mounts.push(translate_mount(mount)?);
    }
    // `-v /path` (no source): an anonymous volume there, unless a bind or
    // mount covers it (docker-py lists its binds' targets here too).
    let mut points: Vec<String> = docker
        .volumes
        .iter()
        .flatten()
        .map(|(p, _)| p.clone())
        .collect();
    points.sort();
    for point in points {
        if !point.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "invalid volume `{}`: the path must be absolute",
                excerpt(&point)
            )));
        }
        config.anonymous.push(point);
    }
    for (port, bindings) in host.port_bindings.iter().flatten() {
        for binding in bindings.iter().flatten() {
            config.publish.extend(parse_binding(port, binding)?);
        }
    }
    config.publish_all = host.publish_all_ports.unwrap_or(false);
    config.memory = host.memory.filter(|&m| m > 0).map(|m| m as u64);
    config.cpus = match (host.nano_cpus, host.cpu_quota, host.cpu_period) {
        (Some(nano), _, _) if nano > 0 => Some(nano as f64 / 1e9),
        (_, Some(quota), period) if quota > 0 => {
            let period = period.filter(|&p| p > 0).unwrap_or(100_000);
            Some(quota as f64 / period as f64)
        }
        _ => None,
    };
    if host.nano_cpus.is_some_and(|n| n < 0) {
        return Err(ApiError::bad_request(format!(
            "invalid NanoCpus `{}`: must not be negative",
            host.nano_cpus.unwrap_or_default()
        )));
    }
    // Docker's words (it refuses at start; here the create is refused, so
    // no container that can never start is left behind).
    if let Some(shares) = host.cpu_shares.filter(|&s| s < 0) {
        return Err(ApiError::bad_request(format!(
            "shares: invalid argument (CpuShares `{shares}` is negative)"
        )));
    }
    config.cpu_shares = host.cpu_shares.filter(|&s| s > 0).map(|s| s as u64);
    for ulimit in host.ulimits.iter().flatten() {
        match ulimit.name.as_deref() {
            Some("nofile") => {
                let soft = ulimit.soft.unwrap_or(0);
                config.max_fds = Some(usize::try_from(soft).map_err(|_| {
                    ApiError::bad_request(format!("invalid ulimit nofile `{soft}`"))
                })?);
            }
            Some(other) => warnings.push(format!("ulimit `{other}` has no meaning for a wasm app")),
            None => {}
        }
    }
    config.restart = match &host.restart_policy {
        Some(RestartPolicy {
            name,
            maximum_retry_count,
        }) => {
            let name = name.as_ref().map(restart_name).unwrap_or("no");
            let retries = maximum_retry_count.unwrap_or(0);
            let retries = u32::try_from(retries).map_err(|_| {
                ApiError::bad_request(format!("invalid maximum retry count `{retries}`"))
            })?;
            Policy::from_docker(name, retries).map_err(ApiError::bad_request)?
        }
        None => Policy::No,
    };
    config.auto_remove = host.auto_remove.unwrap_or(false);
    if let Some(log) = &host.log_config {
        match log.typ.as_deref() {
            None | Some("" | "json-file") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "logging driver `{other}` is not supported: wrun writes json-file logs"
                )));
            }
        }
        let options: HashMap<String, String> = log.config.clone().unwrap_or_default();
        config.log =
            LogOptions::from_docker(&options).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    match host.network_mode.as_deref() {
        None | Some("" | "default" | "bridge" | "none") => {}
        Some("host") => {
            return Err(ApiError::bad_request(
                "network mode `host` is not supported by the wrun daemon: a container gets its \
                 own virtual network; publish ports with -p",
            ));
        }
        Some(network) => config.networks.push(network.to_owned()),
    }
    // API 1.44 and later may name several networks at create; each may
    // carry aliases (compose's service names).
    let endpoints = networking
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default();
    let mut endpoints: Vec<_> = endpoints.into_iter().collect();
    endpoints.sort_by(|a, b| a.0.cmp(&b.0));
    for (network, endpoint) in endpoints {
        if matches!(network.as_str(), "" | "default" | "bridge" | "none") {
            continue;
        }
        if !config.networks.contains(&network) {
            config.networks.push(network.clone());
        }
        let aliases = endpoint.aliases.unwrap_or_default();
        if !aliases.is_empty() {
            config.aliases.insert(network, aliases);
        }
    }
    let ignored = [
        (host.privileged == Some(true), "--privileged"),
        (
            host.cap_add.as_ref().is_some_and(|c| !c.is_empty()),
            "--cap-add",
        ),
        (
            host.cap_drop.as_ref().is_some_and(|c| !c.is_empty()),
            "--cap-drop",
        ),
        (
            host.devices.as_ref().is_some_and(|d| !d.is_empty()),
            "--device",
        ),
        (
            host.security_opt.as_ref().is_some_and(|s| !s.is_empty()),
            "--security-opt",
        ),
        (
            host.userns_mode.as_ref().is_some_and(|u| !u.is_empty()),
            "--userns",
        ),
        (
            docker.user.as_ref().is_some_and(|u| !u.is_empty()),
            "--user",
        ),
    ];
    for (given, flag) in ignored {
        if given {
            warnings.push(format!(
                "{flag} has no meaning for a wasm app and is ignored: the app only has what wrun \
                 grants it"
            ));
        }
    }
    Ok((config, warnings))
}

fn restart_name(name: &RestartPolicyNameEnum) -> &'static str {
    match name {
        RestartPolicyNameEnum::EMPTY | RestartPolicyNameEnum::NO => "no",
        RestartPolicyNameEnum::ALWAYS => "always",
        RestartPolicyNameEnum::UNLESS_STOPPED => "unless-stopped",
        RestartPolicyNameEnum::ON_FAILURE => "on-failure",
    }
}

/// `SOURCE:TARGET[:OPTIONS]`: SOURCE an absolute host path, or else a
/// volume name (compose sends `proj_data:/data:rw`); OPTIONS `ro` or `rw`
/// (and SELinux or propagation options, which have no meaning here).
fn parse_bind(bind: &str) -> ApiResult<Mount> {
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "invalid volume specification `{}`: {why}",
            excerpt(bind)
        ))
    };
    let mut parts = bind.splitn(3, ':');
    let source = parts.next().unwrap_or_default();
    let target = parts
        .next()
        .ok_or_else(|| bad("expected SOURCE:TARGET[:ro|rw]"))?;
    let mut read_only = false;
    for option in parts
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|o| !o.is_empty())
    {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "nocopy" | "private" | "rprivate" | "shared" | "rshared" | "slave"
            | "rslave" | "consistent" | "cached" | "delegated" => {}
            other => return Err(bad(&format!("unknown option `{other}`"))),
        }
    }
    if !target.starts_with('/') {
        return Err(bad("the target must be an absolute path"));
    }
    let source = match source {
        "" => return Err(bad("the source is empty")),
        s if s.starts_with('/') => MountSource::Bind(PathBuf::from(s)),
        name => MountSource::Volume(name.to_owned()),
    };
    Ok(Mount {
        source,
        target: target.to_owned(),
        read_only,
    })
}

fn translate_mount(mount: &bollard_stubs::models::Mount) -> ApiResult<Mount> {
    use bollard_stubs::models::MountTypeEnum as T;
    let target = mount
        .target
        .clone()
        .filter(|t| t.starts_with('/'))
        .ok_or_else(|| {
            ApiError::bad_request("invalid mount: the target must be an absolute path")
        })?;
    let source = mount.source.clone().unwrap_or_default();
    let source = match mount.typ {
        Some(T::BIND) if source.starts_with('/') => MountSource::Bind(PathBuf::from(source)),
        Some(T::BIND) => {
            return Err(ApiError::bad_request(format!(
                "invalid mount source `{}`: a bind mount's source must be an absolute path",
                excerpt(&source)
            )));
        }
        Some(T::VOLUME) | None if !source.is_empty() => MountSource::Volume(source),
        other => {
            return Err(ApiError::bad_request(format!(
                "mount type {other:?} is not supported: use bind or a named volume"
            )));
        }
    };
    Ok(Mount {
        source,
        target,
        read_only: mount.read_only.unwrap_or(false),
    })
}

/// One `PortBindings` entry (`"80/tcp": [{"HostIp":"","HostPort":"8080"}]`)
/// through the same parser as `-p`.
fn parse_binding(port: &str, binding: &PortBinding) -> ApiResult<Vec<PortMapping>> {
    let (guest, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let host_port = binding.host_port.as_deref().unwrap_or_default();
    let spec = match binding.host_ip.as_deref().unwrap_or_default() {
        "" if host_port.is_empty() => format!("{guest}/{protocol}"),
        "" => format!("{host_port}:{guest}/{protocol}"),
        ip if ip.contains(':') => format!("[{ip}]:{host_port}:{guest}/{protocol}"),
        ip => format!("{ip}:{host_port}:{guest}/{protocol}"),
    };
    PortMapping::parse(&spec).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn list(daemon: DaemonState, query: Query) -> ApiResult<axum::Json<Vec<ContainerSummary>>> {
    let limit = query.number::<i64>("limit")?.filter(|&l| l > 0);
    // As moby: a limit counts containers in every state.
    let all = query.flag("all") || limit.is_some();
    let filters = Filters::parse(&query)?;
    filters.only(&["status", "name", "id", "label", "ancestor", "exited"])?;
    if let Some(statuses) = filters.get("status") {
        for status in statuses {
            status.parse::<Status>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid filter 'status={status}': expected created, restarting, running, \
                     removing, paused, exited or dead"
                ))
            })?;
        }
    }
    let now = SystemTime::now();
    let snapshots = daemon.containers.list();
    let known = known_networks(&daemon, &snapshots).await;
    let mut list = Vec::new();
    for snapshot in snapshots {
        let status = snapshot.state.status;
        let shown = all
            || status.is_live()
            || status == Status::Restarting
            || filters.get("status").is_some();
        if !shown || !matches_filters(&snapshot, &filters) {
            continue;
        }
        list.push(summary(&snapshot, now, &known));
        if limit.is_some_and(|l| list.len() as i64 >= l) {
            break;
        }
    }
    Ok(axum::Json(list))
}

fn matches_filters(snapshot: &Snapshot, filters: &Filters) -> bool {
    let config = &snapshot.config;
    let any = |key: &str, test: &dyn Fn(&str) -> bool| {
        filters
            .get(key)
            .is_none_or(|values| values.iter().any(|v| test(v)))
    };
    any("status", &|s| s == snapshot.state.status.as_str())
        && any("name", &|n| name_matches(n, &config.name))
        && any("id", &|id| snapshot.id.starts_with(id))
        && any("ancestor", &|a| config.image_name() == a)
        && any("exited", &|code| {
            snapshot.state.status == Status::Exited && code.parse() == Ok(snapshot.state.exit_code)
        })
        && labels_match(filters, |key| config.labels.get(key).map(String::as_str))
}

/// moby's `name` filter: a regular expression against the name with its
/// leading `/` (so `^/web$` and `web` both find `web`); one that does not
/// compile matches as plain text.
fn name_matches(filter: &str, name: &str) -> bool {
    let full = format!("/{name}");
    match regex::RegexBuilder::new(filter).size_limit(1 << 20).build() {
        Ok(re) => re.is_match(&full) || re.is_match(name),
        Err(_) => full.contains(filter),
    }
}

/// The app's command line, as `docker ps` shows it.
fn command(snapshot: &Snapshot) -> String {
    let mut argv = vec![snapshot.config.image_name()];
    argv.extend(snapshot.config.args.iter().flatten().cloned());
    argv.join(" ")
}

fn image_id(config: &ContainerConfig) -> String {
    match &config.origin {
        Origin::Image { digest, .. } => digest.clone(),
        Origin::File { .. } => String::new(),
    }
}

/// The ports, as `ps` lists them: bound ones while it runs (with the
/// host's picks), else the configured ones.
fn ports(snapshot: &Snapshot) -> Vec<Port> {
    let port = |m: &PortMapping, host_port: u16| Port {
        ip: Some(m.host_ip.to_string()),
        private_port: m.guest_port,
        public_port: Some(host_port),
        typ: Some(match m.protocol {
            Protocol::Tcp => PortTypeEnum::TCP,
            Protocol::Udp => PortTypeEnum::UDP,
        }),
    };
    match snapshot.ports.is_empty() {
        false => snapshot
            .ports
            .iter()
            .map(|p| port(&p.mapping, p.host.port()))
            .collect(),
        true => snapshot
            .config
            .publish
            .iter()
            .filter(|m| m.host_port != 0)
            .map(|m| port(m, m.host_port))
            .collect(),
    }
}

fn mounts(snapshot: &Snapshot) -> Vec<MountPoint> {
    snapshot
        .config
        .mounts
        .iter()
        .map(|m| {
            let (typ, name, source) = match &m.source {
                MountSource::Bind(path) => {
                    (MountPointTypeEnum::BIND, None, path.display().to_string())
                }
                MountSource::Volume(name) => (
                    MountPointTypeEnum::VOLUME,
                    Some(name.clone()),
                    String::new(),
                ),
            };
            MountPoint {
                typ: Some(typ),
                name,
                source: Some(source),
                destination: Some(m.target.clone()),
                driver: None,
                mode: Some(if m.read_only { "ro" } else { "rw" }.to_owned()),
                rw: Some(!m.read_only),
                propagation: Some(String::new()),
            }
        })
        .collect()
}

fn network_mode(config: &ContainerConfig) -> String {
    config
        .networks
        .first()
        .cloned()
        .unwrap_or_else(|| "bridge".to_owned())
}

fn summary(
    snapshot: &Snapshot,
    now: SystemTime,
    known: &HashMap<String, NetworkInfo>,
) -> ContainerSummary {
    let config = &snapshot.config;
    ContainerSummary {
        id: Some(snapshot.id.clone()),
        // The CLI strips the first character: Docker's names start with `/`.
        names: Some(vec![format!("/{}", config.name)]),
        image: Some(config.image_name()),
        image_id: Some(image_id(config)),
        command: Some(command(snapshot)),
        created: Some(unix_seconds(snapshot.state.created_at)),
        ports: Some(ports(snapshot)),
        size_rw: None,
        size_root_fs: None,
        labels: Some(config.labels.clone().into_iter().collect()),
        state: Some(snapshot.state.status.as_str().to_owned()),
        status: Some(snapshot.state.describe(now)),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: Some(network_mode(config)),
            annotations: None,
        }),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(networks::endpoints(snapshot, known)),
        }),
        mounts: Some(mounts(snapshot)),
    }
}

async fn inspect(
    daemon: DaemonState,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ContainerInspectResponse>> {
    let snapshot = daemon.containers.inspect(&id)?;
    let known = known_networks(&daemon, std::slice::from_ref(&snapshot)).await;
    Ok(axum::Json(inspect_response(&snapshot, &known)))
}

/// The networks the containers name (none read when they name none).
async fn known_networks(daemon: &Daemon, snapshots: &[Snapshot]) -> HashMap<String, NetworkInfo> {
    if snapshots.iter().all(|s| s.config.networks.is_empty()) {
        return HashMap::new();
    }
    let store = daemon.containers.networks().clone();
    tokio::task::spawn_blocking(move || networks::by_name(&store))
        .await
        .unwrap_or_default()
}

fn status_enum(status: Status) -> ContainerStateStatusEnum {
    match status {
        Status::Created => ContainerStateStatusEnum::CREATED,
        Status::Running => ContainerStateStatusEnum::RUNNING,
        Status::Paused => ContainerStateStatusEnum::PAUSED,
        Status::Restarting => ContainerStateStatusEnum::RESTARTING,
        Status::Exited => ContainerStateStatusEnum::EXITED,
        Status::Dead => ContainerStateStatusEnum::DEAD,
    }
}

fn inspect_response(
    snapshot: &Snapshot,
    known: &HashMap<String, NetworkInfo>,
) -> ContainerInspectResponse {
    let config = &snapshot.config;
    let state = &snapshot.state;
    let port_map: HashMap<String, Option<Vec<PortBinding>>> = {
        let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for port in ports(snapshot) {
            let key = format!(
                "{}/{}",
                port.private_port,
                if port.typ == Some(PortTypeEnum::UDP) {
                    "udp"
                } else {
                    "tcp"
                }
            );
            map.entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: port.ip.clone(),
                    host_port: port.public_port.map(|p| p.to_string()),
                });
        }
        map
    };
    let bindings: HashMap<String, Option<Vec<PortBinding>>> = {
        let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for m in &config.publish {
            map.entry(format!("{}/{}", m.guest_port, m.protocol))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(m.host_ip.to_string()),
                    host_port: Some(if m.host_port == 0 {
                        String::new()
                    } else {
                        m.host_port.to_string()
                    }),
                });
        }
        map
    };
    let time = |t: Option<SystemTime>| t.map(rfc3339).unwrap_or_else(|| ZERO_TIME.to_owned());
    ContainerInspectResponse {
        id: Some(snapshot.id.clone()),
        created: Some(rfc3339(state.created_at)),
        path: Some(config.image_name()),
        args: Some(config.args.clone().unwrap_or_default()),
        state: Some(ContainerState {
            status: Some(status_enum(state.status)),
            running: Some(matches!(
                state.status,
                Status::Running | Status::Paused | Status::Restarting
            )),
            paused: Some(state.status == Status::Paused),
            restarting: Some(state.status == Status::Restarting),
            oom_killed: Some(state.oom_killed),
            dead: Some(state.status == Status::Dead),
            pid: Some(0),
            exit_code: Some(i64::from(state.exit_code)),
            error: Some(state.error.clone().unwrap_or_default()),
            started_at: Some(time(state.started_at)),
            finished_at: Some(time(state.finished_at)),
            health: None,
        }),
        image: Some(image_id(config)),
        log_path: Some(snapshot.dir.join("container.log").display().to_string()),
        name: Some(format!("/{}", config.name)),
        restart_count: Some(i64::from(state.restart_count)),
        driver: Some("wrun".to_owned()),
        platform: Some("wasi".to_owned()),
        mounts: Some(mounts(snapshot)),
        config: Some(DockerConfig {
            image: Some(config.image_name()),
            cmd: config.args.clone(),
            env: Some(config.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(config.workdir.clone().unwrap_or_default()),
            labels: Some(config.labels.clone().into_iter().collect()),
            tty: Some(config.tty),
            open_stdin: Some(config.open_stdin),
            stdin_once: Some(config.stdin_once),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            exposed_ports: Some(
                bindings
                    .keys()
                    .map(|k| (k.clone(), HashMap::new()))
                    .collect(),
            ),
            stop_timeout: config.stop_timeout.map(|t| t as i64),
            ..DockerConfig::default()
        }),
        host_config: Some(HostConfig {
            // docker-py reads it to decide whether `run()` returns output.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), config.log.max_size.to_string()),
                    ("max-file".to_owned(), config.log.max_file.to_string()),
                ])),
            }),
            network_mode: Some(network_mode(config)),
            port_bindings: Some(bindings),
            binds: Some(
                config
                    .mounts
                    .iter()
                    .map(|m| {
                        let source = match &m.source {
                            MountSource::Bind(p) => p.display().to_string(),
                            MountSource::Volume(n) => n.clone(),
                        };
                        format!(
                            "{source}:{}:{}",
                            m.target,
                            if m.read_only { "ro" } else { "rw" }
                        )
                    })
                    .collect(),
            ),
            auto_remove: Some(config.auto_remove),
            restart_policy: Some(RestartPolicy {
                name: Some(match config.restart {
                    Policy::No => RestartPolicyNameEnum::NO,
                    Policy::Always => RestartPolicyNameEnum::ALWAYS,
                    Policy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                    Policy::OnFailure { .. } => RestartPolicyNameEnum::ON_FAILURE,
                }),
                maximum_retry_count: Some(i64::from(config.restart.max_retries())),
            }),
            memory: Some(config.memory.map_or(0, |m| m as i64)),
            nano_cpus: Some(config.cpus.map_or(0, |c| (c * 1e9) as i64)),
            cpu_shares: Some(config.cpu_shares.map_or(0, |s| s as i64)),
            publish_all_ports: Some(config.publish_all),
            ..HostConfig::default()
        }),
        network_settings: Some(NetworkSettings {
            ports: Some(port_map),
            networks: Some(networks::endpoints(snapshot, known)),
            ..NetworkSettings::default()
        }),
        ..ContainerInspectResponse::default()
    }
}

async fn start(daemon: DaemonState, Path(id): Path<String>) -> ApiResult<Response> {
    daemon.containers.start(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn stop(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    // `t` is accepted and has no effect: a wasm app has no signal handler
    // that could use the grace period (see `container::SIGTERM`).
    let _grace = query.number::<i64>("t")?;
    let signal = match query.get("signal").filter(|s| !s.is_empty()) {
        Some(signal) => parse_signal(signal)?,
        None => wrun_runtime::container::SIGTERM,
    };
    daemon.containers.stop(&id, signal).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn kill(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    let signal = match query.get("signal").filter(|s| !s.is_empty()) {
        Some(signal) => parse_signal(signal)?,
        None => wrun_runtime::container::SIGKILL,
    };
    daemon.containers.kill(&id, signal).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// A signal as Docker takes one: a number, a name, or a name with `SIG`.
fn parse_signal(text: &str) -> ApiResult<i32> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
    ];
    if let Ok(n) = text.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let name = text.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {}", excerpt(text))))
}

async fn restart(daemon: DaemonState, Path(id): Path<String>) -> ApiResult<Response> {
    daemon.containers.restart(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn pause(daemon: DaemonState, Path(id): Path<String>) -> ApiResult<Response> {
    daemon.containers.pause(&id)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn unpause(daemon: DaemonState, Path(id): Path<String>) -> ApiResult<Response> {
    daemon.containers.unpause(&id)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn rename(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("a new name is required (`name`)"))?;
    daemon.containers.rename(&id, name)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn remove(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    daemon
        .containers
        .remove(&id, query.flag("force"), query.flag("v"))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Answers at once with the headers (the CLI sends `start` only after they
/// arrive), then the outcome when the condition is met. The wait is
/// registered before the answer, so a `start` racing behind it loses no
/// exit; a client that goes away drops it, and nothing else.
async fn wait(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    let condition = WaitCondition::parse(query.get("condition").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let wait = daemon.containers.wait(&id, condition)?;
    let body = futures_util::stream::once(async move {
        let outcome = wait.await;
        // The exit code says how it ended (a trap is 134, as `wrun run`
        // exits); the reason is in its log and in `State.Error`. Docker's
        // `Error` here means the wait itself failed, and the CLI then
        // exits 125 whatever the code.
        let _reason = outcome.error;
        let response = ContainerWaitResponse {
            status_code: i64::from(outcome.exit_code),
            error: None,
        };
        let mut json = serde_json::to_vec(&response).unwrap_or_default();
        json.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(json))
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// One sample of a container's usage, and of the host's CPU time.
struct Sample {
    at: SystemTime,
    snapshot: Snapshot,
    host_cpu: u64,
}

impl Sample {
    fn take(daemon: &Daemon, id: &str) -> ApiResult<Sample> {
        Ok(Sample {
            at: SystemTime::now(),
            snapshot: daemon.containers.inspect(id)?,
            host_cpu: host_cpu_nanos(),
        })
    }

    fn cpu(&self) -> serde_json::Value {
        let used = u64::try_from(self.snapshot.cpu_time.as_nanos()).unwrap_or(u64::MAX);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        serde_json::json!({
            "cpu_usage": {
                "total_usage": used,
                "usage_in_usermode": used,
                "usage_in_kernelmode": 0,
            },
            "system_cpu_usage": self.host_cpu,
            "online_cpus": cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        })
    }
}

/// The host's CPU time in nanoseconds, all CPUs and modes together (the
/// first line of `/proc/stat`), as `system_cpu_usage` is.
fn host_cpu_nanos() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux ABI wrun builds for.
    ticks.saturating_mul(10_000_000)
}

/// Docker's stats document: CPU time against the host's (from which the
/// CLI computes CPU %), and memory in use against the limit.
fn stats_json(now: &Sample, before: Option<&Sample>) -> serde_json::Value {
    let config = &now.snapshot.config;
    let limit = config.memory.unwrap_or(wrun_runtime::DEFAULT_MEMORY_LIMIT);
    let zero = serde_json::json!({"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": 0});
    serde_json::json!({
        "read": rfc3339(now.at),
        "preread": before.map_or_else(|| ZERO_TIME.to_owned(), |b| rfc3339(b.at)),
        "id": now.snapshot.id,
        "name": format!("/{}", config.name),
        "pids_stats": {"current": u64::from(now.snapshot.state.status.is_live())},
        "num_procs": 0,
        "cpu_stats": now.cpu(),
        "precpu_stats": before.map_or(zero, Sample::cpu),
        "memory_stats": {"usage": now.snapshot.memory, "limit": limit, "stats": {}},
        "blkio_stats": {},
        "networks": {},
    })
}

/// `stats`: with `stream` (the default), a sample a second until the
/// client goes away; without, one sample, against one taken a second
/// before unless `one-shot` (as moby).
async fn stats(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    let stream = query.get("stream").is_none_or(|_| query.flag("stream"));
    let one_shot = query.flag("one-shot");
    let first = Sample::take(&daemon, &id)?;
    let line = |v: serde_json::Value| {
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))
    };
    let body = match (stream, one_shot) {
        (false, true) => Body::from_stream(futures_util::stream::once(async move {
            line(stats_json(&first, None))
        })),
        (false, false) => Body::from_stream(futures_util::stream::once(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = Sample::take(&daemon, &id).unwrap_or(Sample {
                at: SystemTime::now(),
                snapshot: first.snapshot.clone(),
                host_cpu: host_cpu_nanos(),
            });
            line(stats_json(&now, Some(&first)))
        })),
        (true, _) => {
            let samples = futures_util::stream::unfold(Some(first), move |before| {
                let daemon = daemon.clone();
                let id = id.clone();
                async move {
                    let before = before?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // Gone (removed): the stream ends.
                    let now = Sample::take(&daemon, &id).ok()?;
                    let json = stats_json(&now, Some(&before));
                    Some((line(json), Some(now)))
                }
            });
            Body::from_stream(samples)
        }
    };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A time as `logs` takes one: Unix seconds with an optional fraction
/// (what the CLI sends for `--since 10m` or a date).
pub(super) fn parse_time(key: &str, text: &str) -> ApiResult<Option<SystemTime>> {
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    let bad = || {
        ApiError::bad_request(format!(
            "invalid value for `{key}`: `{}` is not a Unix timestamp",
            excerpt(text)
        ))
    };
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: u64 = seconds.parse().map_err(|_| bad())?;
    let nanos = match fraction {
        "" => 0,
        f if f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{f:0<9}").parse::<u32>().map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    Ok(Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos)))
}

fn read_options(query: &Query) -> ApiResult<ReadOptions> {
    let tail = match query.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid value for `tail`: `{}` is not a number or `all`",
                excerpt(n)
            ))
        })?),
    };
    Ok(ReadOptions {
        stdout: query.flag("stdout"),
        stderr: query.flag("stderr"),
        tail,
        since: parse_time("since", query.get("since").unwrap_or_default())?,
        until: parse_time("until", query.get("until").unwrap_or_default())?,
    })
}

async fn logs(daemon: DaemonState, Path(id): Path<String>, query: Query) -> ApiResult<Response> {
    let options = read_options(&query)?;
    if !options.stdout && !options.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tty = daemon.containers.inspect(&id)?.config.tty;
    let framing = Framing {
        raw: tty,
        timestamps: query.flag("timestamps"),
    };
    let containers = daemon.containers.clone();
    let follow = query.flag("follow");
    let (history, follow) = blocking(move || Ok(containers.logs(&id, &options, follow)?)).await?;
    let output = Output {
        history,
        follow,
        wanted: Box::new(move |e| options.matches(e)),
        framing,
    };
    let mut response = output.body().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    Ok(response)
}

/// `attach`: with `Upgrade: tcp` (what the CLI, docker-py and compose
/// send), a 101 and the container's output on the hijacked connection
/// until it ends; without, the same bytes as a streamed 200 body (as moby).
/// Attaching before `start` (what `docker run` does) sees the run's
/// output from its first byte.
async fn attach(
    daemon: DaemonState,
    Path(id): Path<String>,
    query: Query,
    mut request: Request,
) -> ApiResult<Response> {
    let stdout = query.flag("stdout");
    let stderr = query.flag("stderr");
    if !(stdout || stderr || query.flag("stdin")) {
        return Err(ApiError::bad_request(
            "at least one of stdin, stdout or stderr must be set",
        ));
    }
    if !(query.flag("stream") || query.flag("logs")) {
        return Err(ApiError::bad_request(
            "at least one of stream or logs must be set",
        ));
    }
    let snapshot = daemon.containers.inspect(&id)?;
    let framing = Framing {
        raw: snapshot.config.tty,
        timestamps: false,
    };
    let options = ReadOptions {
        stdout,
        stderr,
        ..ReadOptions::default()
    };
    let history = match query.flag("logs") {
        true => {
            let containers = daemon.containers.clone();
            let id = id.clone();
            blocking(move || Ok(containers.logs(&id, &options, false)?))
                .await?
                .0
        }
        false => Vec::new(),
    };
    let follower = match query.flag("stream") {
        true => Some(daemon.containers.attach(&id)?),
        false => None,
    };
    // What the client sends after the upgrade is the container's stdin.
    let stdin = match query.flag("stdin") && query.flag("stream") {
        true => daemon.containers.stdin(&id)?,
        false => None,
    };
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let make_output = move |follow| Output {
        history,
        follow,
        wanted: Box::new(move |e| options.matches(e)),
        framing,
    };
    if !upgrade {
        let follow = match follower {
            Some(follower) => follower.await,
            None => None,
        };
        let mut response = make_output(follow).body().into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(framing.content_type()),
        );
        return Ok(response);
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (input, mut io) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        // Its own task: output must flow while input waits, and the other
        // way round. It ends with the client's input, or with the output.
        let forward = stdin.map(|stdin| tokio::spawn(forward_stdin(input, stdin)));
        let follow = match follower {
            Some(follower) => follower.await,
            None => None,
        };
        let frames = make_output(follow).frames();
        let mut frames = std::pin::pin!(frames);
        use tokio::io::AsyncWriteExt as _;
        while let Some(frame) = futures_util::StreamExt::next(&mut frames).await {
            if io.write_all(&frame).await.is_err() {
                // The client went away; the container runs on.
                break;
            }
        }
        let _ = io.shutdown().await;
        if let Some(forward) = forward {
            forward.abort();
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, framing.content_type())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap_or_default())
}

/// Copies an attached client's input into the container's stdin until the
/// client's input ends (the CLI half-closes its connection) or the stdin
/// closes. Bounded: one buffer, and the pipe's 64 KiB.
async fn forward_stdin(
    mut input: impl tokio::io::AsyncRead + Unpin,
    stdin: wrun_runtime::container::StdinWriter,
) {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = vec![0u8; 16 << 10];
    loop {
        match input.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdin.write(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    stdin.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_name_host_paths_or_volumes() {
        let m = parse_bind("/srv/data:/data:ro").unwrap();
        assert_eq!(m.source, MountSource::Bind("/srv/data".into()));
        assert!(m.read_only);
        let m = parse_bind("proj_data:/data:rw").unwrap();
        assert_eq!(m.source, MountSource::Volume("proj_data".into()));
        for bad in ["/a", "/a:rel", "/a:/b:bogus", ":/b"] {
            let e = parse_bind(bad).unwrap_err();
            assert!(e.message.contains(&format!("`{bad}`")), "{}", e.message);
        }
    }

    #[test]
    fn port_bindings_go_through_the_flag_parser() {
        let b = |ip: &str, port: &str| PortBinding {
            host_ip: Some(ip.to_owned()),
            host_port: Some(port.to_owned()),
        };
        let m = parse_binding("80/tcp", &b("", "8080")).unwrap();
        assert_eq!((m[0].host_port, m[0].guest_port), (8080, 80));
        let m = parse_binding("53/udp", &b("127.0.0.1", "")).unwrap();
        assert_eq!((m[0].host_port, m[0].protocol), (0, Protocol::Udp));
        assert!(parse_binding("80/tcp", &b("::1", "8080")).is_ok());
        assert!(parse_binding("http/tcp", &b("", "1")).is_err());
    }

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("hup").unwrap(), 1);
        assert!(
            parse_signal("SIGNOPE")
                .unwrap_err()
                .message
                .contains("SIGNOPE")
        );
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn log_times_are_unix_seconds() {
        let t = parse_time("since", "1700000000.5").unwrap().unwrap();
        assert_eq!(
            t,
            SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000)
        );
        assert_eq!(parse_time("since", "").unwrap(), None);
        assert!(parse_time("since", "yesterday").is_err());
    }
}
