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
pub mod topics;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use sluice_api::ConfigMap;
use sluice_runtime::registry::PluginRegistry;
use sluice_runtime::status::StatusView;
use sluice_runtime::validation::{ValidatedConnector, validate};
use sluice_runtime::worker::{ConnectorState, TargetState, WorkerHandle};
use sluice_runtime::{ConnectorDefinition, ConnectorProblem};

pub use error::ApiError;

/// Request bodies larger than this are refused (413) before they are parsed.
pub const BODY_LIMIT: usize = 1024 * 1024;

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

pub fn router(state: ApiState) -> Router {
    let auth = state.auth.clone();
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/connectors", get(list_connectors).post(create_connector))
        .route(
            "/connectors/{name}",
            get(get_connector).delete(delete_connector),
        )
        .route(
            "/connectors/{name}/config",
            get(get_config).put(put_config).patch(patch_config),
        )
        .route("/connectors/{name}/status", get(connector_status))
        .route("/connectors/{name}/restart", post(restart_connector))
        .route("/connectors/{name}/pause", put(pause_connector))
        .route("/connectors/{name}/resume", put(resume_connector))
        .route("/connectors/{name}/stop", put(stop_connector))
        .route(
            "/connectors/{name}/offsets",
            get(offsets::get_offsets)
                .patch(offsets::patch_offsets)
                .delete(offsets::delete_offsets),
        )
        .route("/connectors/{name}/tasks", get(list_tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(restart_task),
        )
        .route("/connector-plugins", get(list_plugins))
        .route("/connector-plugins/{plugin}/config", get(plugin_config))
        .route(
            "/connector-plugins/{plugin}/config/validate",
            put(validate_config),
        )
        .route("/connectors/{name}/topics", get(topics::get_topics))
        .route("/connectors/{name}/topics/reset", put(topics::reset_topics))
        .route("/admin/loggers", get(loggers::list_loggers))
        .route("/admin/loggers/", get(loggers::list_loggers))
        .route(
            "/admin/loggers/{logger}",
            get(loggers::get_logger).put(loggers::put_logger),
        )
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .with_state(state)
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

async fn root(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({
        "version": state.version,
        "commit": option_env!("SLUICE_COMMIT").unwrap_or("unknown"),
        "kafka_cluster_id": state.cluster_id,
    }))
}

/// KIP-1017: healthy when the worker carries out a request within a few seconds (it runs
/// commands one at a time, so a stuck one shows here); 500 with the reason otherwise.
async fn health(State(state): State<ApiState>) -> Response {
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), state.worker.ping()).await;
    let (status, health, message) = match answer {
        Ok(Ok(())) => (
            StatusCode::OK,
            "healthy",
            "Worker has completed startup and is ready to handle requests.",
        ),
        Ok(Err(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unhealthy",
            "The worker is shutting down.",
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unhealthy",
            "The worker did not answer within 5 s: it is busy stopping or starting a connector.",
        ),
    };
    (status, Json(json!({"status": health, "message": message}))).into_response()
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
pub fn shown_config(config: &ConfigMap) -> Map<String, Value> {
    let extra: Vec<String> = match config.get("config.secret.keys") {
        Some(Value::String(list)) => list.split(',').map(|k| k.trim().to_string()).collect(),
        _ => Vec::new(),
    };
    config
        .iter()
        .map(|(k, v)| {
            let placeholder = v.as_str().is_some_and(|s| s.trim_start().starts_with("${"));
            let value = if is_secret(k, &extra) && !placeholder && !v.is_null() {
                json!("[hidden]")
            } else {
                match v {
                    Value::String(_) => v.clone(),
                    other => Value::String(other.to_string()),
                }
            };
            (k.clone(), value)
        })
        .collect()
}

fn info_json(c: &ConnectorState) -> Value {
    let name = &c.definition.name;
    let tasks: Vec<Value> = (0..c.tasks)
        .map(|t| json!({"connector": name, "task": t}))
        .collect();
    json!({
        "name": name,
        "config": shown_config(&config_with_name(&c.definition)),
        "tasks": tasks,
        "type": if c.is_source { "source" } else { "sink" },
    })
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

async fn list_connectors(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
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
        let names: Vec<&str> = connectors
            .iter()
            .map(|c| c.definition.name.as_str())
            .collect();
        return Ok(Json(json!(names)));
    }
    let mut out = Map::new();
    for c in &connectors {
        let mut entry = Map::new();
        if expand_info {
            entry.insert("info".into(), info_json(c));
        }
        if expand_status {
            entry.insert(
                "status".into(),
                state
                    .status
                    .connector(&c.definition.name)
                    .unwrap_or(Value::Null),
            );
        }
        out.insert(c.definition.name.clone(), Value::Object(entry));
    }
    Ok(Json(Value::Object(out)))
}

/// Validates a definition as `sluice validate` does; errors answer 400 with every message.
fn validated(state: &ApiState, definition: &ConnectorDefinition) -> ApiResult<ValidatedConnector> {
    let (problems, connector) = validate(definition, &state.registry);
    let errors: Vec<&ConnectorProblem> = problems.iter().filter(|p| p.is_error()).collect();
    match connector {
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

async fn get_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = name_of(path)?;
    Ok(Json(info_json(&find(&state, &name).await?)))
}

async fn get_config(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = name_of(path)?;
    let c = find(&state, &name).await?;
    Ok(Json(Value::Object(shown_config(&config_with_name(
        &c.definition,
    )))))
}

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

async fn delete_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let name = name_of(path)?;
    state.worker.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn pause_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    set_target(&state, path, TargetState::Paused).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    set_target(&state, path, TargetState::Started).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn stop_connector(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    set_target(&state, path, TargetState::Stopped).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tasks' configs, from the stored (unresolved) config: secrets stay placeholders.
async fn list_tasks(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
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
    let tasks: Vec<Value> = task_configs
        .iter()
        .take(c.tasks.max(1) as usize)
        .enumerate()
        .filter(|_| c.tasks > 0)
        .map(|(i, tc)| {
            json!({
                "id": {"connector": name, "task": i},
                "config": shown_config(tc),
            })
        })
        .collect();
    Ok(Json(json!(tasks)))
}

fn task_id(path: Result<Path<(String, String)>, PathRejection>) -> ApiResult<(String, u32)> {
    let Path((name, task)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_name(&name)?;
    let task = task
        .parse::<u32>()
        .map_err(|_| ApiError::bad_request(format!("Task id {task:?} is not a number")))?;
    Ok((name, task))
}

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

/// Restarts the connector's tasks (a single task cannot be restarted on its own yet).
async fn restart_task(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (name, task) = task_id(path)?;
    let c = find(&state, &name).await?;
    if task >= c.tasks {
        return Err(ApiError::not_found(format!("Task {name}-{task} not found")));
    }
    state.worker.restart(&name, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_plugins(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let connectors_only = query_bool(&query_pairs(&query), "connectorsOnly", true)?;
    let plugins: Vec<Value> = state
        .registry
        .all()
        .into_iter()
        .filter(|(info, _)| {
            !connectors_only || matches!(info.kind.as_str(), "source" | "sink")
        })
        .map(|(info, _)| {
            json!({"class": info.class, "type": info.kind.as_str(), "version": info.version})
        })
        .collect();
    Ok(Json(json!(plugins)))
}

fn plugin_schema(state: &ApiState, plugin: &str) -> ApiResult<(String, Value)> {
    state
        .registry
        .all()
        .into_iter()
        .find(|(info, _)| info.class == plugin || info.aliases.iter().any(|a| a == plugin))
        .map(|(info, schema)| (info.class, schema))
        .ok_or_else(|| ApiError::not_found(format!("Unknown plugin {plugin}")))
}

async fn plugin_config(
    State(state): State<ApiState>,
    Path(plugin): Path<String>,
) -> ApiResult<Json<Value>> {
    let (_, schema) = plugin_schema(&state, &plugin)?;
    Ok(Json(json!(validate::definitions(&schema, "Connector"))))
}

async fn validate_config(
    State(state): State<ApiState>,
    Path(plugin): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let (class, _) = plugin_schema(&state, &plugin)?;
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
                "connector.class {given} does not match the plugin in the URL ({plugin})"
            )));
        }
    }
    Ok(Json(validate::validate_response(
        &state.registry,
        &class,
        config,
    )))
}
