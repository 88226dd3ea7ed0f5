//! `/networks`: wrun's virtual networks (`$WRUN_HOME/networks`, the same
//! ones `wrun network` and `wrun run --network` use) as Docker's `bridge`
//! driver networks. Containers on one reach each other by name and alias.
//!
//! `bridge`, `host` and `none` are listed as Docker lists them, and cannot
//! be made or removed: `bridge` (Docker's default) and `none` both give a
//! container only its own loopback, `host` is refused at create.
//!
//! A network is in use while a live app holds an address on it (a running
//! container here, or a `wrun run` process): as in Docker, it cannot be
//! removed then. Containers that are not running may still name it.

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
    EndpointSettings, Ipam, IpamConfig, Network, NetworkConnectRequest, NetworkContainer,
    NetworkCreateRequest, NetworkCreateResponse, NetworkDisconnectRequest, NetworkPruneResponse,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wrun_host_api::net::{NetworkError, NetworkInfo, NetworkStore};
use wrun_runtime::container::Snapshot;
use wrun_runtime::container::events::Kind;
use wrun_runtime::input::excerpt;

/// Docker's networks that every daemon has.
const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

pub(super) fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

/// A network error as Docker answers it.
pub(super) fn network_error(e: NetworkError) -> ApiError {
    let status = match &e {
        NetworkError::NotFound(name) => {
            return ApiError::new(StatusCode::NOT_FOUND, format!("network {name} not found"));
        }
        NetworkError::Exists(name) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                format!("network with name {name} already exists"),
            );
        }
        NetworkError::InvalidName(_)
        | NetworkError::InvalidAlias(_)
        | NetworkError::TooManyAliases(_)
        | NetworkError::InvalidSubnet(_)
        | NetworkError::Ambiguous(_) => StatusCode::BAD_REQUEST,
        NetworkError::Reserved(_) | NetworkError::InUse { .. } => StatusCode::FORBIDDEN,
        NetworkError::SubnetInUse(..) | NetworkError::NameTaken { .. } => StatusCode::CONFLICT,
        NetworkError::Full(_)
        | NetworkError::Damaged { .. }
        | NetworkError::SocketPathTooLong { .. }
        | NetworkError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// The id Docker clients see for a predefined network: its name in hex,
/// twelve digits as wrun's own ids (stable across restarts, never a
/// user network's, whose ids are random).
fn predefined_id(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0<12}")
}

fn predefined(key: &str) -> Option<&'static str> {
    PREDEFINED
        .into_iter()
        .find(|name| *name == key || predefined_id(name).starts_with(key) && key.len() >= 3)
}

/// Every user network, by name (for the endpoints of containers).
pub(super) fn by_name(store: &NetworkStore) -> HashMap<String, NetworkInfo> {
    match store.list() {
        Ok(list) => list.into_iter().map(|n| (n.name.clone(), n)).collect(),
        Err(e) => {
            tracing::warn!("cannot list networks: {e}");
            HashMap::new()
        }
    }
}

/// The gateway Docker would report for a subnet: its first address.
fn gateway(info: &NetworkInfo) -> String {
    let [a, b, c, _] = info.subnet.octets();
    format!("{a}.{b}.{c}.1")
}

/// A container's endpoints, as `NetworkSettings.Networks` shows them: one
/// per network it names (`bridge` when none), with its address while it
/// runs.
pub(super) fn endpoints(
    snapshot: &Snapshot,
    known: &HashMap<String, NetworkInfo>,
) -> HashMap<String, EndpointSettings> {
    let config = &snapshot.config;
    if config.networks.is_empty() {
        let endpoint = EndpointSettings {
            network_id: Some(predefined_id("bridge")),
            aliases: Some(Vec::new()),
            dns_names: Some(vec![config.name.clone()]),
            ..EndpointSettings::default()
        };
        return HashMap::from([("bridge".to_owned(), endpoint)]);
    }
    config
        .networks
        .iter()
        .map(|name| {
            let aliases = config.aliases.get(name).cloned().unwrap_or_default();
            let mut dns_names = vec![config.name.clone()];
            dns_names.extend(aliases.iter().cloned());
            let mut endpoint = EndpointSettings {
                aliases: Some(aliases),
                dns_names: Some(dns_names),
                ..EndpointSettings::default()
            };
            if let Some(info) = known.get(name) {
                endpoint.network_id = Some(info.id.clone());
                if let Some(address) = snapshot.addresses.iter().find(|a| a.network.id == info.id) {
                    endpoint.ip_address = Some(address.ip.to_string());
                    endpoint.ip_prefix_len = Some(24);
                    endpoint.gateway = Some(gateway(info));
                    endpoint.endpoint_id = Some(endpoint_id(&snapshot.id, &info.id));
                }
            }
            (name.clone(), endpoint)
        })
        .collect()
}

/// A running container's endpoint on a network (stable for the run).
fn endpoint_id(container: &str, network: &str) -> String {
    let short = &container[..container.len().min(52)];
    format!("{network}{short}")
}

fn predefined_network(name: &str) -> Network {
    let driver = match name {
        "none" => "null",
        other => other,
    };
    Network {
        name: Some(name.to_owned()),
        id: Some(predefined_id(name)),
        created: Some(super::ZERO_TIME.to_owned()),
        scope: Some("local".to_owned()),
        driver: Some(driver.to_owned()),
        enable_ipv4: Some(name == "bridge"),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".to_owned()),
            config: Some(Vec::new()),
            options: None,
        }),
        internal: Some(false),
        attachable: Some(false),
        ingress: Some(false),
        config_only: Some(false),
        containers: Some(HashMap::new()),
        options: Some(HashMap::new()),
        labels: Some(HashMap::new()),
        ..Network::default()
    }
}

/// The Network object of the API; `containers` are the daemon's, for the
/// running ones' addresses.
fn to_docker(store: &NetworkStore, info: &NetworkInfo, containers: &[Snapshot]) -> Network {
    let members = containers
        .iter()
        .filter_map(|c| {
            let address = c.addresses.iter().find(|a| a.network.id == info.id)?;
            let member = NetworkContainer {
                name: Some(c.config.name.clone()),
                endpoint_id: Some(endpoint_id(&c.id, &info.id)),
                mac_address: Some(String::new()),
                ipv4_address: Some(format!("{}/24", address.ip)),
                ipv6_address: Some(String::new()),
            };
            Some((c.id.clone(), member))
        })
        .collect();
    Network {
        name: Some(info.name.clone()),
        id: Some(info.id.clone()),
        created: Some(
            store
                .created(info)
                .map_or_else(|| super::ZERO_TIME.to_owned(), rfc3339),
        ),
        scope: Some("local".to_owned()),
        driver: Some("bridge".to_owned()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".to_owned()),
            config: Some(vec![IpamConfig {
                subnet: Some(format!("{}/24", info.subnet)),
                gateway: Some(gateway(info)),
                ..IpamConfig::default()
            }]),
            options: Some(HashMap::new()),
        }),
        internal: Some(false),
        attachable: Some(true),
        ingress: Some(false),
        config_only: Some(false),
        containers: Some(members),
        options: Some(HashMap::new()),
        labels: Some(info.labels.clone().into_iter().collect()),
        ..Network::default()
    }
}

/// Whether a network matches the `name` (a part of it), `id` (a prefix),
/// `label`, `driver`, `scope` and `type` (`builtin` or `custom`) filters.
fn matches(filters: &Filters, network: &Network, builtin: bool) -> bool {
    let name = network.name.as_deref().unwrap_or_default();
    let id = network.id.as_deref().unwrap_or_default();
    let labels = network.labels.clone().unwrap_or_default();
    let any = |key: &str, test: &dyn Fn(&str) -> bool| {
        filters
            .get(key)
            .is_none_or(|values| values.iter().any(|v| test(v)))
    };
    any("name", &|v| name.contains(v))
        && any("id", &|v| id.starts_with(v))
        && any("driver", &|v| network.driver.as_deref() == Some(v))
        && any("scope", &|v| v == "local")
        && any("type", &|v| match v {
            "builtin" => builtin,
            "custom" => !builtin,
            _ => false,
        })
        && labels_match(filters, |k| labels.get(k).map(String::as_str))
}

/// `GET /networks`.
async fn list(daemon: DaemonState, query: Query) -> ApiResult<Json<Vec<Network>>> {
    let filters = Filters::parse(&query)?;
    filters.only(&["name", "id", "label", "driver", "scope", "type", "dangling"])?;
    if let Some(value) = filters.get("type").and_then(|v| {
        v.iter()
            .find(|v| !matches!(v.as_str(), "builtin" | "custom"))
    }) {
        return Err(ApiError::bad_request(format!(
            "invalid filter 'type={}': use `builtin` or `custom`",
            excerpt(value)
        )));
    }
    let containers = daemon.containers.list();
    let dangling = dangling_filter(&filters)?;
    let store = daemon.containers.networks().clone();
    let infos = blocking(move || store.list().map_err(network_error)).await?;
    let store = daemon.containers.networks();
    let mut list = Vec::new();
    for name in PREDEFINED {
        let network = predefined_network(name);
        if matches(&filters, &network, true) && dangling != Some(true) {
            list.push(network);
        }
    }
    for info in &infos {
        let network = to_docker(store, info, &containers);
        let used = containers
            .iter()
            .any(|c| c.config.networks.contains(&info.name));
        if matches(&filters, &network, false) && dangling.is_none_or(|d| d != used) {
            list.push(network);
        }
    }
    Ok(Json(list))
}

fn dangling_filter(filters: &Filters) -> ApiResult<Option<bool>> {
    let Some(values) = filters.get("dangling") else {
        return Ok(None);
    };
    match values {
        [v] if matches!(v.as_str(), "1" | "true" | "True") => Ok(Some(true)),
        [v] if matches!(v.as_str(), "0" | "false" | "False") => Ok(Some(false)),
        _ => Err(ApiError::bad_request(format!(
            "invalid filter 'dangling={}': expected true or false",
            excerpt(&values.join(","))
        ))),
    }
}

/// The user network `key` (a name, an id or an id's prefix).
async fn find(daemon: &Daemon, key: &str) -> ApiResult<NetworkInfo> {
    let store = daemon.containers.networks().clone();
    let key = key.to_owned();
    blocking(move || store.find(&key).map_err(network_error)).await
}

/// `GET /networks/{id}`.
async fn inspect(daemon: DaemonState, Path(key): Path<String>) -> ApiResult<Json<Network>> {
    if let Some(name) = predefined(&key) {
        return Ok(Json(predefined_network(name)));
    }
    let info = find(&daemon, &key).await?;
    let containers = daemon.containers.list();
    Ok(Json(to_docker(
        daemon.containers.networks(),
        &info,
        &containers,
    )))
}

/// `POST /networks/create`: the `bridge` driver (or none named) with at
/// most one IPv4 /24 subnet; what a wasm network cannot honour is refused
/// by name or, when harmless, reported in `Warning`.
async fn create(
    daemon: DaemonState,
    JsonBody(body): JsonBody<NetworkCreateRequest>,
) -> ApiResult<Response> {
    if body.name.is_empty() {
        return Err(ApiError::bad_request("a network needs a name"));
    }
    if PREDEFINED.contains(&body.name.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "operation is not permitted on predefined {} network",
                body.name
            ),
        ));
    }
    match body.driver.as_deref() {
        None | Some("" | "bridge" | "local") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "network driver `{}` is not supported: wrun's networks are virtual bridges \
                 (driver `bridge`)",
                excerpt(other)
            )));
        }
    }
    let refused = [
        (body.enable_ipv6 == Some(true), "IPv6 (--ipv6)"),
        (body.ingress == Some(true), "an ingress network"),
        (body.config_only == Some(true), "a config-only network"),
        (body.config_from.is_some(), "--config-from"),
    ];
    if let Some((_, what)) = refused.iter().find(|(set, _)| *set) {
        return Err(ApiError::bad_request(format!(
            "{what} is not supported by wrun's virtual networks"
        )));
    }
    let ipam = body.ipam.unwrap_or_default();
    let configs = ipam.config.unwrap_or_default();
    let subnet = match configs.as_slice() {
        [] => None,
        [one] => {
            if one.ip_range.is_some() || one.auxiliary_addresses.is_some() {
                return Err(ApiError::bad_request(
                    "--ip-range and --aux-address are not supported: a wrun network hands out \
                     the addresses of its whole /24",
                ));
            }
            one.subnet.clone()
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "{} subnets given: a wrun network has exactly one IPv4 /24",
                configs.len()
            )));
        }
    };
    let mut warnings = Vec::new();
    let options = body.options.unwrap_or_default();
    if !options.is_empty() {
        let mut keys: Vec<_> = options.keys().map(|k| excerpt(k).to_string()).collect();
        keys.sort();
        warnings.push(format!(
            "driver options {} have no meaning for a wasm network and are ignored",
            keys.join(", ")
        ));
    }
    if body.internal == Some(true) {
        warnings.push(
            "--internal is implied: a wrun container reaches no outside address unless its \
             outbound policy allows it"
                .to_owned(),
        );
    }
    let labels: BTreeMap<String, String> = body.labels.unwrap_or_default().into_iter().collect();
    let store = daemon.containers.networks().clone();
    let name = body.name;
    let info = blocking(move || {
        store
            .create_labelled(&name, subnet.as_deref(), labels)
            .map_err(network_error)
    })
    .await?;
    tracing::info!(network = %info.name, id = %info.id, "network created");
    events::emit(
        daemon.containers.events(),
        Kind::Network,
        "create",
        &info.id,
        &info.name,
    );
    let response = NetworkCreateResponse {
        id: info.id,
        warning: warnings.join("\n"),
    };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// `DELETE /networks/{id}`.
async fn remove(daemon: DaemonState, Path(key): Path<String>) -> ApiResult<Response> {
    if let Some(name) = predefined(&key) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name} is a pre-defined network and cannot be removed"),
        ));
    }
    let info = find(&daemon, &key).await?;
    let store = daemon.containers.networks().clone();
    let name = info.name.clone();
    blocking(move || store.remove(&name).map_err(network_error)).await?;
    events::emit(
        daemon.containers.events(),
        Kind::Network,
        "destroy",
        &info.id,
        &info.name,
    );
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`: every user network no container names and no
/// app is on, with the `label` and `until` filters.
async fn prune(daemon: DaemonState, query: Query) -> ApiResult<Json<NetworkPruneResponse>> {
    let filters = Filters::parse(&query)?;
    filters.only(&["label", "label!", "until"])?;
    let until = match filters.get("until") {
        None => None,
        Some(values) => Some(parse_until(values)?),
    };
    let containers = daemon.containers.list();
    let store = daemon.containers.networks().clone();
    let deleted = blocking(move || {
        let mut deleted = Vec::new();
        for info in store.list().map_err(network_error)? {
            let named = containers
                .iter()
                .any(|c| c.config.networks.contains(&info.name));
            let old_enough =
                until.is_none_or(|until| store.created(&info).is_some_and(|c| c < until));
            let label = |k: &str| info.labels.get(k).map(String::as_str);
            if named
                || !old_enough
                || !labels_match(&filters, label)
                || labels_excluded(&filters, label)
            {
                continue;
            }
            match store.remove(&info.name) {
                Ok(_) => deleted.push(info),
                // In use by a `wrun run` process: kept, as Docker keeps it.
                Err(NetworkError::InUse { .. }) => {}
                Err(e) => return Err(network_error(e)),
            }
        }
        Ok(deleted)
    })
    .await?;
    for info in &deleted {
        events::emit(
            daemon.containers.events(),
            Kind::Network,
            "destroy",
            &info.id,
            &info.name,
        );
    }
    Ok(Json(NetworkPruneResponse {
        networks_deleted: Some(deleted.into_iter().map(|n| n.name).collect()),
    }))
}

/// The `until` filter: a Unix timestamp, or a duration before now (`24h`),
/// as Docker takes it.
fn parse_until(values: &[String]) -> ApiResult<std::time::SystemTime> {
    let [value] = values else {
        return Err(ApiError::bad_request("give the `until` filter once"));
    };
    if let Some(time) = super::containers::parse_time("until", value).ok().flatten() {
        return Ok(time);
    }
    humantime::parse_duration(value)
        .ok()
        .and_then(|ago| std::time::SystemTime::now().checked_sub(ago))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid filter 'until={}': expected a Unix timestamp or a duration such as 24h",
                excerpt(value)
            ))
        })
}

/// A container must be named.
fn container_key(container: Option<String>) -> ApiResult<String> {
    container
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("no container given: `Container` is required"))
}

/// `POST /networks/{id}/connect`.
async fn connect(
    daemon: DaemonState,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<NetworkConnectRequest>,
) -> ApiResult<Response> {
    let container = container_key(body.container)?;
    if predefined(&key).is_some() {
        return Err(ApiError::bad_request(format!(
            "cannot connect to network {key}: a wrun container is on `bridge` (its own \
             loopback) when it joins no network"
        )));
    }
    let endpoint = body.endpoint_config.unwrap_or_default();
    if endpoint
        .ipam_config
        .as_ref()
        .is_some_and(|c| c.ipv4_address.as_deref().is_some_and(|a| !a.is_empty()))
    {
        return Err(ApiError::bad_request(
            "a fixed address (--ip) is not supported: a wrun network hands out addresses itself",
        ));
    }
    // The model finds the network (by name, id or prefix) itself.
    daemon
        .containers
        .connect(&container, &key, endpoint.aliases.unwrap_or_default())
        .await?;
    Ok(empty(StatusCode::OK))
}

/// `POST /networks/{id}/disconnect`.
async fn disconnect(
    daemon: DaemonState,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<NetworkDisconnectRequest>,
) -> ApiResult<Response> {
    let container = container_key(body.container)?;
    if predefined(&key).is_some() {
        // Every container without a network is on `bridge`: there is
        // nothing to leave (compose disconnects before it connects).
        daemon.containers.inspect(&container)?;
        return Ok(empty(StatusCode::OK));
    }
    daemon.containers.disconnect(&container, &key).await?;
    Ok(empty(StatusCode::OK))
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        network_error(e)
    }
}
