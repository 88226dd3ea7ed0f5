//! The admin API, on its own listener: list, deploy, replace and remove
//! functions at run time, `/metrics`, and the API's OpenAPI document.
//!
//! Every call but `/healthz` and `/openapi.json` needs a bearer token: the
//! admin token reaches everything; a tenant's token reaches only that
//! tenant's functions, may not grant volumes, and may only allow outbound
//! destinations its tenant's `allow_outbound` lists.

use super::config::{self, FunctionConfig};
use super::metrics::{self, Series};
use super::{Deployed, Platform, Tenant};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use wrun_runtime::AppSource;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest upload (wasm plus config) the deploy call takes.
pub const MAX_UPLOAD: usize = 256 << 20;

pub fn router(platform: Arc<Platform>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/metrics", get(metrics))
        .route("/v1/functions", get(list_all))
        .route("/v1/tenants/{tenant}/functions", get(list_tenant))
        .route(
            "/v1/tenants/{tenant}/functions/{name}",
            get(show).put(deploy).delete(remove),
        )
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(platform)
}

/// An error answer: a status and a message naming what was wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

/// Who is calling.
enum Caller {
    Admin,
    Tenant(Arc<Tenant>),
}

fn caller(platform: &Platform, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
    if let Some(admin) = &platform.admin_token
        && constant_time_eq(admin.as_bytes(), token.as_bytes())
    {
        return Ok(Caller::Admin);
    }
    // Compare against every tenant, so the time taken does not tell which
    // tenant (if any) a guessed token came close to.
    let mut found = None;
    for tenant in platform.tenants.values() {
        if let Some(t) = &tenant.token
            && constant_time_eq(t.as_bytes(), token.as_bytes())
        {
            found = Some(tenant.clone());
        }
    }
    found
        .map(Caller::Tenant)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "the token is not valid"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tenant a call names, if the caller may act on it.
fn authorize(
    platform: &Platform,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<(Caller, Arc<Tenant>), ApiError> {
    let caller = caller(platform, headers)?;
    if let Caller::Tenant(own) = &caller
        && own.name != tenant
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "this token belongs to tenant `{}` and cannot act on tenant `{tenant}`",
                own.name
            ),
        ));
    }
    let target = platform
        .tenants
        .get(tenant)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no tenant `{tenant}`")))?;
    Ok((caller, target))
}

fn require_admin(platform: &Platform, headers: &HeaderMap) -> Result<(), ApiError> {
    match caller(platform, headers)? {
        Caller::Admin => Ok(()),
        Caller::Tenant(t) => Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "this call needs the admin token; the token of tenant `{}` cannot make it",
                t.name
            ),
        )),
    }
}

fn describe(d: &Deployed) -> Value {
    let limits = &d.plan.limits;
    json!({
        "tenant": d.tenant.name,
        "name": d.name,
        "kind": d.function.kind().to_string(),
        "digest": format!("sha256:{}", d.digest),
        "routes": d.plan.routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "limits": {
            "memory": limits.memory,
            "timeout_ms": limits.timeout.as_millis() as u64,
            "max_concurrency": limits.max_concurrency,
            "max_body": limits.max_body,
            "max_fds": limits.max_fds,
        },
        "max_instance_reuse": d.plan.max_instance_reuse,
        "in_flight": d.metrics.in_flight(),
        "pooled_instances": d.function.idle_instances(),
    })
}

async fn metrics(
    State(platform): State<Arc<Platform>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&platform, &headers)?;
    let table = platform.table.load();
    let series: Vec<Series<'_>> = table
        .functions
        .values()
        .map(|d| Series {
            tenant: &d.tenant.name,
            function: &d.name,
            metrics: &d.metrics,
            idle_instances: d.function.idle_instances(),
        })
        .collect();
    let text = metrics::render(
        &series,
        platform.unrouted.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn list_all(
    State(platform): State<Arc<Platform>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&platform, &headers)?;
    let table = platform.table.load();
    Ok(Json(json!({
        "functions": table.functions.values().map(|d| describe(d)).collect::<Vec<_>>()
    })))
}

async fn list_tenant(
    State(platform): State<Arc<Platform>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&platform, &headers, &tenant)?;
    let table = platform.table.load();
    let functions: Vec<Value> = table
        .functions
        .values()
        .filter(|d| d.tenant.name == tenant)
        .map(|d| describe(d))
        .collect();
    Ok(Json(json!({ "functions": functions })))
}

async fn show(
    State(platform): State<Arc<Platform>>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&platform, &headers, &tenant)?;
    let table = platform.table.load();
    table
        .functions
        .get(&(tenant.clone(), name.clone()))
        .map(|d| Json(describe(d)))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no function `{tenant}/{name}`"),
            )
        })
}

async fn remove(
    State(platform): State<Arc<Platform>>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&platform, &headers, &tenant)?;
    match platform.remove(&tenant, &name).await {
        Ok(true) => {
            tracing::info!(tenant, function = name, "removed");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no function `{tenant}/{name}`"),
        )),
        Err(e) => Err(error(StatusCode::CONFLICT, format!("{e:#}"))),
    }
}

/// Most of an upload that is refused before it was read, so that a client
/// still sending it gets the answer rather than a broken pipe. Past
/// [`DRAIN_LIMIT`] the connection is closed instead: a refused client does
/// not get to make the server read hundreds of MiB.
async fn drain(mut upload: Multipart) {
    let mut read = 0;
    while let Ok(Some(mut field)) = upload.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                return;
            }
        }
    }
}

/// How much of a refused upload is read before answering.
const DRAIN_LIMIT: usize = 8 << 20;

/// Deploys or replaces a function from a multipart upload with two parts:
/// `config` (the function's TOML table, without `wasm`) and `wasm` (the app).
/// Nothing changes unless the app compiles, links and its config is valid.
async fn deploy(
    State(platform): State<Arc<Platform>>,
    Path((tenant_name, name)): Path<(String, String)>,
    headers: HeaderMap,
    mut upload: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (caller, tenant) = match authorize(&platform, &headers, &tenant_name) {
        Ok(authorized) => authorized,
        Err(refused) => {
            drain(upload).await;
            return Err(refused);
        }
    };
    if !config::is_valid_name(&name) {
        drain(upload).await;
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("invalid function name `{name}`: {}", config::NAME_RULE),
        ));
    }
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let (mut config_text, mut wasm) = (None, None);
    while let Some(field) = upload
        .next_field()
        .await
        .map_err(|e| bad(format!("invalid multipart upload: {e}")))?
    {
        match field.name() {
            Some("config") => {
                config_text = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad(format!("failed to read part `config`: {e}")))?,
                )
            }
            Some("wasm") => {
                wasm = Some(
                    field
                        .bytes()
                        .await
                        .map_err(|e| bad(format!("failed to read part `wasm`: {e}")))?,
                )
            }
            other => {
                return Err(bad(format!(
                    "unexpected part `{}`: the upload has two parts, `config` and `wasm`",
                    other.unwrap_or_default()
                )));
            }
        }
    }
    let wasm = wasm.ok_or_else(|| bad("the upload has no `wasm` part".to_owned()))?;
    let function: FunctionConfig = toml::from_str(config_text.as_deref().unwrap_or_default())
        .map_err(|e| {
            bad(format!(
                "invalid function config: {}",
                e.to_string().trim_end()
            ))
        })?;
    if function.wasm.is_some() {
        return Err(bad(
            "the function config must not name `wasm`: the app is the upload's `wasm` part"
                .to_owned(),
        ));
    }
    if let Caller::Tenant(_) = caller {
        if !function.volumes.is_empty() {
            return Err(error(
                StatusCode::FORBIDDEN,
                "only the admin token may grant volumes",
            ));
        }
        if let Some(rule) = function
            .allow_outbound
            .iter()
            .find(|rule| !tenant.allow_outbound.contains(rule))
        {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!("outbound rule `{rule}` is not in tenant `{tenant_name}`'s allow_outbound"),
            ));
        }
    }
    // Relative volume paths in an uploaded config mean nothing on this
    // host; they are resolved against `/` and so must be absolute to work.
    let plan = function
        .plan(std::path::Path::new("/"), &tenant.limits)
        .map_err(|e| bad(format!("invalid function config: {e:#}")))?;
    let source = AppSource::from_bytes(format!("{tenant_name}/{name}"), wasm.to_vec());
    let prepared = {
        let (platform, tenant, name) = (platform.clone(), tenant.clone(), name.clone());
        tokio::task::spawn_blocking(move || platform.prepare(&tenant, &name, plan, &source))
            .await
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("compilation failed: {e}"),
                )
            })?
            .map_err(|e| bad(format!("{e:#}")))?
    };
    let (replaced, deployed) = platform
        .install(prepared)
        .await
        .map_err(|e| error(StatusCode::CONFLICT, format!("{e:#}")))?;
    tracing::info!(
        tenant = tenant_name,
        function = name,
        replaced,
        digest = deployed.digest,
        "deployed"
    );
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(describe(&deployed))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::collections::BTreeMap;
    use tower::ServiceExt as _;

    fn platform() -> Arc<Platform> {
        let runtime = wrun_runtime::Runtime::new(wrun_runtime::RuntimeConfig::default()).unwrap();
        let tenant = |name: &str, token: &str| {
            let limits = config::ResolvedLimits::defaults();
            (
                name.to_owned(),
                Arc::new(Tenant {
                    name: name.to_owned(),
                    token: Some(token.to_owned()),
                    limits,
                    allow_outbound: Vec::new(),
                    slots: Arc::new(tokio::sync::Semaphore::new(1)),
                    fds: wrun_host_api::fds::FdBudget::root(1000),
                }),
            )
        };
        let tenants = BTreeMap::from([
            tenant("a", "token-of-tenant-a"),
            tenant("b", "token-of-tenant-b"),
        ]);
        Arc::new(Platform::new(
            Arc::new(runtime),
            tenants,
            Some("the-admin-token".to_owned()),
        ))
    }

    async fn call(method: &str, uri: &str, token: Option<&str>) -> StatusCode {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router(platform())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.status()
    }

    #[tokio::test]
    async fn tokens_reach_only_what_they_own() {
        assert_eq!(call("GET", "/healthz", None).await, StatusCode::OK);
        assert_eq!(call("GET", "/openapi.json", None).await, StatusCode::OK);
        assert_eq!(
            call("GET", "/v1/functions", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call("GET", "/v1/functions", Some("token-of-tenant-a")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call("GET", "/v1/functions", Some("the-admin-token")).await,
            StatusCode::OK
        );
        assert_eq!(
            call("GET", "/metrics", Some("token-of-tenant-a")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call("GET", "/v1/tenants/a/functions", Some("token-of-tenant-a")).await,
            StatusCode::OK
        );
        assert_eq!(
            call("GET", "/v1/tenants/b/functions", Some("token-of-tenant-a")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(
                "DELETE",
                "/v1/tenants/b/functions/x",
                Some("token-of-tenant-a")
            )
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call("GET", "/v1/tenants/c/functions", Some("the-admin-token")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call("GET", "/v1/tenants/a/functions", Some("token-of-tenant-")).await,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/healthz",
            "/openapi.json",
            "/metrics",
            "/v1/functions",
            "/v1/tenants/{tenant}/functions",
            "/v1/tenants/{tenant}/functions/{name}",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
        let one = &paths["/v1/tenants/{tenant}/functions/{name}"];
        for method in ["get", "put", "delete"] {
            assert!(one.get(method).is_some(), "{method} is not documented");
        }
    }
}
