//! sluice's REST API: Kafka Connect's paths, bodies, status codes and error shape, so the
//! tools that talk to Kafka Connect talk to sluice unchanged.
//!
//! Handlers only translate: connectors are validated by the runtime's validation (the same
//! as `sluice validate`), changed through the worker's [`WorkerHandle`], and their states
//! read from its [`StatusView`].

pub mod auth;
mod error;
pub mod loggers;
mod metrics;
mod offsets;
mod openapi;
mod responses;
pub mod topics;
pub mod types;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use sluice_api::ConfigMap;
use sluice_runtime::registry::PluginRegistry;
use sluice_runtime::status::StatusView;
use sluice_runtime::validation::{ValidatedConnector, validate};
use sluice_runtime::worker::{ConnectorState, TargetState, WorkerHandle};
use sluice_runtime::{ConnectorDefinition, ConnectorProblem};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use types::{
    ConfigInfos, ConfigKeyInfo, ConfigPatch, ConnectorConfig, ConnectorExpanded, ConnectorInfo,
    ConnectorList, ConnectorName, ConnectorStatus, ConnectorType, CreateConnector, ErrorBody,
    Expand, Health, HealthStatus, PluginInfo, ServerInfo, ShownConfig, TaskId, TaskInfo,
    TaskStatus,
};

use responses::{
    ConnectorChangeErrors, ConnectorErrors, NoConnector, NoPlugin, ShuttingDown, StoreErrors,
    TaskErrors,
};

pub use error::ApiError;

/// Request bodies larger than this are refused (413) before they are parsed.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The most `tasks.max` a connector created or changed over REST may ask for. Plugins
/// make one task config per task (and the worker one task each), so an unbounded value
/// (`"tasks.max": "3000000000"`) would exhaust the worker's memory; no connector needs
/// more tasks than this on one worker.
pub const MAX_TASKS: u32 = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub worker: WorkerHandle,
    pub registry: Arc<PluginRegistry>,
    pub status: StatusView,
    pub version: String,
    /// `kafka_cluster_id` in `GET /`: the Kafka cluster's id, or null without Kafka.
    pub cluster_id: Option<String>,
    /// `rest.auth`: who may call the API.
    pub auth: auth::Auth,
    /// `/admin/loggers`: the process's log levels.
    pub loggers: loggers::LogLevels,
    /// The worker's per-connector counters (and active topics).
    pub metrics: Arc<sluice_runtime::metrics::MetricsRegistry>,
    /// `topic.tracking.enable` / `topic.tracking.allow.reset`.
    pub topic_tracking: topics::TopicTracking,
}

/// The API: every route, documented by `GET /openapi.json`, behind authentication.
pub fn router(state: ApiState) -> Router {
    let auth = state.auth.clone();
    let (routes, _) = api().split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .with_state(state)
}

/// The OpenAPI document of [`router`]'s routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::complete(api().into_openapi())
}

/// Every route, each registered through `routes!`, which also adds the handler's
/// `#[utoipa::path]` (path, method, parameters, bodies, responses) to the document: the
/// router and the document cannot disagree. Register routes nowhere else. Handlers of one
/// `routes!` share a path.
fn api() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(root))
        .routes(routes!(health))
        .routes(routes!(list_connectors, create_connector))
        .routes(routes!(get_connector, delete_connector))
        .routes(routes!(get_config, put_config, patch_config))
        .routes(routes!(connector_status))
        .routes(routes!(restart_connector))
        .routes(routes!(pause_connector))
        .routes(routes!(resume_connector))
        .routes(routes!(stop_connector))
        .routes(routes!(
            offsets::get_offsets,
            offsets::patch_offsets,
            offsets::delete_offsets
        ))
        .routes(routes!(list_tasks))
        .routes(routes!(task_status))
        .routes(routes!(restart_task))
        .routes(routes!(list_plugins))
        .routes(routes!(plugin_config))
        .routes(routes!(validate_config))
        .routes(routes!(topics::get_topics))
        .routes(routes!(topics::reset_topics))
        .routes(routes!(loggers::list_loggers))
        .routes(routes!(loggers::list_loggers_slash))
        .routes(routes!(loggers::get_logger, loggers::put_logger))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi_json))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP method not allowed on this path",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not found")
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// A connector name from the path: not empty, no control characters (a `/` cannot reach
/// here: it splits the path).
pub(crate) fn name_of(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name(&name)?;
    Ok(name)
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("Connector name is empty"));
    }
    if name.chars().any(char::is_control) || name.contains('/') {
        return Err(ApiError::bad_request(format!(
            "Connector name {name:?} contains a control character or '/'"
        )));
    }
    Ok(())
}

/// A JSON request body; a missing, oversized or malformed body is a 4xx with a message.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>) -> ApiResult<Value> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("Request body is not valid JSON: {e}")))
}

/// `key=value&…` of the query string, last value of a key winning; `expand` may repeat.
fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn query_bool(pairs: &[(String, String)], key: &str, default: bool) -> ApiResult<bool> {
    match pairs.iter().rev().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "" => Ok(true),
            "false" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "Query parameter {key} must be true or false, not {v:?}"
            ))),
        },
    }
}

#[utoipa::path(get, path = "/", tag = "server",
    responses((status = 200, description = "The worker's version", body = ServerInfo)))]
async fn root(State(state): State<ApiState>) -> Json<ServerInfo> {
    Json(ServerInfo {
        version: state.version.clone(),
        commit: option_env!("SLUICE_COMMIT")
            .unwrap_or("unknown")
            .to_string(),
        kafka_cluster_id: state.cluster_id.clone(),
    })
}

/// KIP-1017: healthy when the worker carries out a request within a few seconds (it runs
/// commands one at a time, so a stuck one shows here); 500 with the reason otherwise.
#[utoipa::path(get, path = "/health", tag = "server", security(()),
    responses(
        (status = 200, description = "The worker carries out requests", body = Health),
        (status = 500, description = "The worker is shutting down, or did not answer within 5 s",
         body = Health),
    ))]
async fn health(State(state): State<ApiState>) -> Response {
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), state.worker.ping()).await;
    let (code, status, message) = match answer {
        Ok(Ok(())) => (
            StatusCode::OK,
            HealthStatus::Healthy,
            "Worker has completed startup and is ready to handle requests.",
        ),
        Ok(Err(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            HealthStatus::Unhealthy,
            "The worker is shutting down.",
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            HealthStatus::Unhealthy,
            "The worker did not answer within 5 s: it is busy stopping or starting a connector.",
        ),
    };
    let message = message.to_string();
    (code, Json(Health { status, message })).into_response()
}

/// Keys whose values are never shown: passwords, secrets, and `config.secret.keys`.
fn is_secret(key: &str, extra: &[String]) -> bool {
    let key_lower = key.to_ascii_lowercase();
    key_lower.ends_with("password")
        || key_lower.ends_with(".secret")
        || key_lower.ends_with("secret.key")
        || extra.iter().any(|k| k == key)
}

/// The config as shown: secret values `[hidden]`, unless they are placeholders
/// (`${env:…}`, `${file:…}`), which show where the secret comes from, not the secret.
pub fn shown_config(config: &ConfigMap) -> ShownConfig {
    let extra: Vec<String> = match config.get("config.secret.keys") {
        Some(Value::String(list)) => list.split(',').map(|k| k.trim().to_string()).collect(),
        _ => Vec::new(),
    };
    config
        .iter()
        .map(|(k, v)| {
            let placeholder = v.as_str().is_some_and(|s| s.trim_start().starts_with("${"));
            let value = if is_secret(k, &extra) && !placeholder && !v.is_null() {
                "[hidden]".to_string()
            } else {
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            };
            (k.clone(), value)
        })
        .collect()
}

fn info_json(c: &ConnectorState) -> ConnectorInfo {
    let name = &c.definition.name;
    ConnectorInfo {
        name: name.clone(),
        config: shown_config(&config_with_name(&c.definition)),
        tasks: (0..c.tasks)
            .map(|task| TaskId {
                connector: name.clone(),
                task,
            })
            .collect(),
        kind: if c.is_source {
            ConnectorType::Source
        } else {
            ConnectorType::Sink
        },
    }
}

/// Kafka Connect's configs carry the name too.
fn config_with_name(definition: &ConnectorDefinition) -> ConfigMap {
    let mut config = definition.config.clone();
    config.insert("name".into(), Value::String(definition.name.clone()));
    config
}

async fn find(state: &ApiState, name: &str) -> ApiResult<ConnectorState> {
    state
        .worker
        .list()
        .await?
        .into_iter()
        .find(|c| c.definition.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Connector {name} not found")))
}

#[utoipa::path(get, path = "/connectors", tag = "connectors",
    params(("expand" = inline(Option<Vec<Expand>>), Query, style = Form, explode,
        description = "Answer an object by name with each connector's `status` and/or `info`")),
    responses(
        (status = 200, description = "The connectors' names, or with `expand` an object by name",
         body = ConnectorList),
        (status = 400, description = "An unknown `expand`", body = ErrorBody),
        (status = 503, response = ShuttingDown),
    ))]
async fn list_connectors(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ConnectorList>> {
    let pairs = query_pairs(&query);
    let mut expand_status = false;
    let mut expand_info = false;
    for (k, v) in &pairs {
        if k == "expand" {
            match v.as_str() {
                "status" => expand_status = true,
                "info" => expand_info = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "expand must be status or info, not {other:?}"
                    )));
                }
            }
        }
    }
    let connectors = state.worker.list().await?;
    if !expand_status && !expand_info {
        let names = connectors.into_iter().map(|c| c.definition.name).collect();
        return Ok(Json(ConnectorList::Names(names)));
    }
    let expanded = connectors
        .iter()
        .map(|c| {
            let entry = ConnectorExpanded {
                info: expand_info.then(|| info_json(c)),
                status: expand_status.then(|| {
                    state
                        .status
                        .connector(&c.definition.name)
                        .unwrap_or(Value::Null)
                }),
            };
            (c.definition.name.clone(), entry)
        })
        .collect();
    Ok(Json(ConnectorList::Expanded(expanded)))
}

/// Validates a definition as `sluice validate` does; errors answer 400 with every message.
fn validated(state: &ApiState, definition: &ConnectorDefinition) -> ApiResult<ValidatedConnector> {
    let (problems, connector) = validate(definition, &state.registry);
    let errors: Vec<&ConnectorProblem> = problems.iter().filter(|p| p.is_error()).collect();
    match connector {
        Some(c) if errors.is_empty() && c.common.tasks_max > MAX_TASKS => {
            Err(ApiError::bad_request(format!(
                "Connector configuration is invalid: tasks.max is {}, more than the {MAX_TASKS} \
                 tasks a connector may have on this worker",
                c.common.tasks_max
            )))
        }
        Some(c) if errors.is_empty() => Ok(c),
        _ => {
            let class = definition
                .config
                .get("connector.class")
                .and_then(Value::as_str)
                .unwrap_or("<connector.class>");
            let list: Vec<String> = errors.iter().map(|p| p.issue.to_string()).collect();
            Err(ApiError::bad_request(format!(
                "Connector configuration is invalid and contains the following {} error(s):\n{}\n\
                 You can also find the above list of errors at the endpoint \
                 `/connector-plugins/{class}/config/validate`",
                list.len(),
                list.join("\n")
            )))
        }
    }
}

fn definition_from(name: &str, config: Value, origin: &str) -> ApiResult<ConnectorDefinition> {
    let Value::Object(mut config) = config else {
        return Err(ApiError::bad_request("The config must be a JSON object"));
    };
    match config.remove("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Connector name configuration ({other}) doesn't match connector name in the URL ({name})"
            )));
        }
    }
    ConnectorDefinition::from_document(origin, json!({"name": name, "config": config}))
        .map_err(|p| ApiError::bad_request(p.issue.to_string()))
}

#[utoipa::path(post, path = "/connectors", tag = "connectors",
    request_body(content = CreateConnector, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (and started, unless `initial_state` says otherwise)",
         body = ConnectorInfo),
        (status = 400,
         description = "The body is not such an object, or the config is invalid (every problem listed)",
         body = ErrorBody),
        (status = 409, description = "A connector of that name exists", body = ErrorBody),
        StoreErrors,
    ))]
async fn create_connector(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object",
        ));
    };
    let target = match body.remove("initial_state") {
        None | Some(Value::Null) => TargetState::Started,
        Some(Value::String(s)) => match s.to_ascii_uppercase().as_str() {
            "RUNNING" => TargetState::Started,
            "PAUSED" => TargetState::Paused,
            "STOPPED" => TargetState::Stopped,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "initial_state must be RUNNING, PAUSED or STOPPED, not {s:?}"
                )));
            }
        },
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "initial_state must be a string, not {other}"
            )));
        }
    };
    let config = body.remove("config").unwrap_or(Value::Null);
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "The request needs a \"config\" object",
        ));
    }
    let name = match (body.remove("name"), config.get("name")) {
        (Some(Value::String(n)), _) => n,
        (None | Some(Value::Null), Some(Value::String(n))) => n.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "The request needs a connector \"name\"",
            ));
        }
    };
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Unrecognized field \"{unknown}\" in the request"
        )));
    }
    check_name(&name)?;
    let definition = definition_from(&name, config, "POST /connectors")?;
    let connector = validated(&state, &definition)?;
    state.worker.create(connector, target).await?;
    let created = find(&state, &name).await?;
    Ok((StatusCode::CREATED, Json(info_json(&created))).into_response())
}

#[utoipa::path(get, path = "/connectors/{name}", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200, description = "The connector", body = ConnectorInfo),
        ConnectorErrors,
    ))]
async fn get_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ConnectorInfo>> {
    let name = name_of(path)?;
    Ok(Json(info_json(&find(&state, &name).await?)))
}

#[utoipa::path(get, path = "/connectors/{name}/config", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200, description = "The config, secrets hidden", body = BTreeMap<String, String>),
        ConnectorErrors,
    ))]
async fn get_config(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<ShownConfig>> {
    let name = name_of(path)?;
    let c = find(&state, &name).await?;
    Ok(Json(shown_config(&config_with_name(&c.definition))))
}

#[utoipa::path(put, path = "/connectors/{name}/config", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    request_body(content = ConnectorConfig, content_type = "application/json"),
    responses(
        (status = 200, description = "The config was replaced; the tasks restart with it",
         body = ConnectorInfo),
        (status = 201, description = "A new connector was created with it", body = ConnectorInfo),
        (status = 400, description = "The body is not an object, its name differs, or the config is invalid",
         body = ErrorBody),
        StoreErrors,
    ))]
async fn put_config(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let name = name_of(path)?;
    let config = json_body(body)?;
    let definition = definition_from(&name, config, "PUT /connectors/{name}/config")?;
    let connector = validated(&state, &definition)?;
    let existed = find(&state, &name).await.is_ok();
    state.worker.replace(connector).await?;
    let info = info_json(&find(&state, &name).await?);
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

/// Merges the body into the config; a null value removes its key.
#[utoipa::path(patch, path = "/connectors/{name}/config", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    request_body(content = ConfigPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The merged config is in force", body = ConnectorInfo),
        (status = 400, description = "The body is not an object, or the merged config is invalid",
         body = ErrorBody),
        (status = 404, response = NoConnector),
        StoreErrors,
    ))]
async fn patch_config(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let name = name_of(path)?;
    let Value::Object(patch) = json_body(body)? else {
        return Err(ApiError::bad_request("The patch must be a JSON object"));
    };
    let current = find(&state, &name).await?;
    let mut config: Map<String, Value> = current.definition.config.into_iter().collect();
    for (k, v) in patch {
        if v.is_null() {
            config.remove(&k);
        } else {
            config.insert(k, v);
        }
    }
    let definition = definition_from(
        &name,
        Value::Object(config),
        "PATCH /connectors/{name}/config",
    )?;
    let connector = validated(&state, &definition)?;
    state.worker.replace(connector).await?;
    Ok(Json(info_json(&find(&state, &name).await?)).into_response())
}

#[utoipa::path(delete, path = "/connectors/{name}", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 204, description = "Stopped and deleted, with its stored config and active topics"),
        ConnectorChangeErrors,
    ))]
async fn delete_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let name = name_of(path)?;
    state.worker.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/connectors/{name}/status", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200, description = "The connector's and its tasks' states",
         body = ConnectorStatus),
        ConnectorErrors,
    ))]
async fn connector_status(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = name_of(path)?;
    find(&state, &name).await?;
    state
        .status
        .connector(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("No status found for connector {name}")))
}

/// KIP-745: without `includeTasks`/`onlyFailed`, 204; with them, 202 and the status.
#[utoipa::path(post, path = "/connectors/{name}/restart", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name"),
        ("includeTasks" = Option<bool>, Query,
            description = "KIP-745: restart the tasks too and answer the status"),
        ("onlyFailed" = Option<bool>, Query, description = "KIP-745: restart only failed tasks"),
    ),
    responses(
        (status = 202, description = "With `includeTasks` or `onlyFailed`: restarting, and the status",
         body = ConnectorStatus),
        (status = 204, description = "Restarted"),
        (status = 400, description = "A bad name, or a flag neither true nor false",
         body = ErrorBody),
        (status = 404, response = NoConnector),
        (status = 503, response = ShuttingDown),
    ))]
async fn restart_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let name = name_of(path)?;
    let pairs = query_pairs(&query);
    let include_tasks = query_bool(&pairs, "includeTasks", false)?;
    let only_failed = query_bool(&pairs, "onlyFailed", false)?;
    find(&state, &name).await?;
    state.worker.restart(&name, only_failed).await?;
    if !include_tasks && !only_failed {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let status = state.status.connector(&name).unwrap_or(Value::Null);
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

async fn set_target(
    state: &ApiState,
    path: Result<Path<String>, PathRejection>,
    target: TargetState,
) -> ApiResult<()> {
    let name = name_of(path)?;
    state.worker.set_target(&name, target).await?;
    Ok(())
}

#[utoipa::path(put, path = "/connectors/{name}/pause", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 202, description = "Pausing: tasks stay assigned, records stop"),
        ConnectorChangeErrors,
    ))]
async fn pause_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    set_target(&state, path, TargetState::Paused).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(put, path = "/connectors/{name}/resume", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 202, description = "Resuming a paused or stopped connector"),
        ConnectorChangeErrors,
    ))]
async fn resume_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    set_target(&state, path, TargetState::Started).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(put, path = "/connectors/{name}/stop", tag = "connectors",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 204, description = "Stopped: its tasks are shut down (its offsets may now change)"),
        ConnectorChangeErrors,
    ))]
async fn stop_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    set_target(&state, path, TargetState::Stopped).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tasks' configs, from the stored (unresolved) config: secrets stay placeholders.
#[utoipa::path(get, path = "/connectors/{name}/tasks", tag = "tasks",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200, description = "The tasks and their configs, secrets hidden",
         body = Vec<TaskInfo>),
        ConnectorErrors,
    ))]
async fn list_tasks(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<TaskInfo>>> {
    let name = name_of(path)?;
    let c = find(&state, &name).await?;
    let config = config_with_name(&c.definition);
    let plugin = state.registry.connector(
        c.definition
            .config
            .get("connector.class")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let tasks_max = c
        .definition
        .config
        .get("tasks.max")
        .and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or(v.as_u64().map(|n| n.to_string()))
        })
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    let task_configs = plugin
        .and_then(|p| p.task_configs(&config, tasks_max).ok())
        .unwrap_or_else(|| vec![config.clone()]);
    let tasks = task_configs
        .iter()
        .take(c.tasks as usize)
        .zip(0..)
        .map(|(tc, task)| TaskInfo {
            id: TaskId {
                connector: name.clone(),
                task,
            },
            config: shown_config(tc),
        })
        .collect();
    Ok(Json(tasks))
}

fn task_id(path: Result<Path<(String, String)>, PathRejection>) -> ApiResult<(String, u32)> {
    let Path((name, task)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name(&name)?;
    let task = task
        .parse::<u32>()
        .map_err(|_| ApiError::bad_request(format!("Task id {task:?} is not a number")))?;
    Ok((name, task))
}

#[utoipa::path(get, path = "/connectors/{name}/tasks/{task}/status", tag = "tasks",
    params(
        ("name" = ConnectorName, Path, description = "The connector's name"),
        ("task" = u32, Path, description = "The task's id, from 0"),
    ),
    responses(
        (status = 200, description = "The task's state", body = TaskStatus),
        TaskErrors,
    ))]
async fn task_status(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, task) = task_id(path)?;
    find(&state, &name).await?;
    let status = state.status.connector(&name).unwrap_or(Value::Null);
    status["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == json!(task)))
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("Task {name}-{task} not found")))
}

/// Restarts one task; the connector's other tasks keep running.
#[utoipa::path(post, path = "/connectors/{name}/tasks/{task}/restart", tag = "tasks",
    params(
        ("name" = ConnectorName, Path, description = "The connector's name"),
        ("task" = u32, Path, description = "The task's id, from 0"),
    ),
    responses(
        (status = 204, description = "Restarted"),
        TaskErrors,
    ))]
async fn restart_task(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (name, task) = task_id(path)?;
    let c = find(&state, &name).await?;
    if task >= c.tasks {
        return Err(ApiError::not_found(format!("Task {name}-{task} not found")));
    }
    state.worker.restart_task(&name, task).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/connector-plugins", tag = "plugins",
    params(("connectorsOnly" = Option<bool>, Query,
        description = "false: transforms, predicates and converters too (default true)")),
    responses(
        (status = 200, description = "The plugins", body = Vec<PluginInfo>),
        (status = 400, description = "`connectorsOnly` neither true nor false", body = ErrorBody),
    ))]
async fn list_plugins(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<PluginInfo>>> {
    let connectors_only = query_bool(&query_pairs(&query), "connectorsOnly", true)?;
    let plugins = state
        .registry
        .all()
        .into_iter()
        .filter(|(info, _)| !connectors_only || matches!(info.kind.as_str(), "source" | "sink"))
        .map(|(info, _)| PluginInfo {
            kind: info.kind.as_str().to_string(),
            class: info.class,
            version: info.version,
        })
        .collect();
    Ok(Json(plugins))
}

/// The plugin of the path (its class or an alias): its class and config schema, or 404.
fn plugin_schema(
    state: &ApiState,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<(String, Value)> {
    let Path(plugin) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state
        .registry
        .all()
        .into_iter()
        .find(|(info, _)| info.class == plugin || info.aliases.contains(&plugin))
        .map(|(info, schema)| (info.class, schema))
        .ok_or_else(|| ApiError::not_found(format!("Unknown plugin {plugin}")))
}

#[utoipa::path(get, path = "/connector-plugins/{plugin}/config", tag = "plugins",
    params(("plugin" = String, Path, description = "A plugin's class name or alias")),
    responses(
        (status = 200, description = "The plugin's config keys", body = Vec<ConfigKeyInfo>),
        (status = 404, response = NoPlugin),
    ))]
async fn plugin_config(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Vec<ConfigKeyInfo>>> {
    let (_, schema) = plugin_schema(&state, path)?;
    Ok(Json(validate::definitions(&schema, "Connector")))
}

#[utoipa::path(put, path = "/connector-plugins/{plugin}/config/validate", tag = "plugins",
    params(("plugin" = String, Path, description = "A connector plugin's class name or alias")),
    request_body(content = ConnectorConfig, content_type = "application/json"),
    responses(
        (status = 200, description = "Every key, with its errors (none when `error_count` is 0)",
         body = ConfigInfos),
        (status = 400, description = "The body is not an object, or its connector.class is another plugin",
         body = ErrorBody),
        (status = 404, response = NoPlugin),
    ))]
async fn validate_config(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ConfigInfos>> {
    let (class, _) = plugin_schema(&state, path)?;
    let Value::Object(config) = json_body(body)? else {
        return Err(ApiError::bad_request("The config must be a JSON object"));
    };
    let config: BTreeMap<String, Value> = config.into_iter().collect();
    if let Some(given) = config.get("connector.class").and_then(Value::as_str) {
        let known = state
            .registry
            .connector(given)
            .map(|p| p.as_plugin().info().class);
        if known.as_deref() != Some(class.as_str()) {
            return Err(ApiError::bad_request(format!(
                "connector.class {given} does not match the plugin in the URL ({class})"
            )));
        }
    }
    Ok(Json(validate::validate_response(
        &state.registry,
        &class,
        config,
    )))
}
