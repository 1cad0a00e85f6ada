//! `/admin/loggers`: log levels read and changed at runtime, as Kafka Connect's (KIP-495,
//! with KIP-976's `last_modified`).
//!
//! Kafka Connect's loggers are log4j loggers named by class; sluice's are tracing targets
//! (`sluice_runtime::sink_driver`, `axum::serve`, …) plus `root`, the level of every target
//! no other logger covers. A logger covers the targets its name is a prefix of, as in
//! `RUST_LOG` (and as log4j's namespaces in Kafka Connect's `PUT`). The levels start from
//! `RUST_LOG` (`info` when unset); each change rebuilds the `EnvFilter` the process logs
//! through and swaps it in (a `tracing_subscriber::reload` layer), so it takes effect at once
//! and lasts until the process ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::EnvFilter;

use crate::types::{ErrorBody, LoggerLevel, SetLevel};
use crate::{ApiError, ApiState};

/// Kafka Connect's name of the root logger.
pub const ROOT: &str = "root";

/// The level used when `RUST_LOG` is unset or invalid.
const DEFAULT_SPEC: &str = "info";

type Reloader = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The log levels of this process, and the means to change them. Cheap to clone.
#[derive(Clone, Default)]
pub struct LogLevels {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<Levels>,
    /// Targets of the callsites registered so far (the "current loggers"). Its own lock:
    /// callsites register while a new filter is swapped in.
    known: Arc<Mutex<BTreeSet<String>>>,
    /// Swaps the process's filter; unset (tests, or logging not set up), changes are only
    /// recorded.
    reload: OnceLock<Reloader>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    level: LevelFilter,
    /// Milliseconds since the epoch of the last change through the API; `None` for a level
    /// that comes from `RUST_LOG`.
    last_modified: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Levels {
    root: Option<Level>,
    /// Loggers whose level is set: from `RUST_LOG` (`target=level`) or through the API.
    explicit: BTreeMap<String, Level>,
    /// `RUST_LOG` directives that name spans or fields, kept as they are.
    other: Vec<String>,
}

impl Levels {
    /// Reads a `RUST_LOG` specification (already known to parse).
    fn parse(spec: &str) -> Levels {
        let mut levels = Levels::default();
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            if directive.contains(['[', '{']) {
                levels.other.push(directive.to_string());
                continue;
            }
            let (target, level) = match directive.split_once('=') {
                Some((target, level)) => (Some(target), level.parse().ok()),
                None => match directive.parse::<LevelFilter>() {
                    Ok(level) => (None, Some(level)),
                    // A target alone enables every level of it.
                    Err(_) => (Some(directive), Some(LevelFilter::TRACE)),
                },
            };
            let level = Level {
                level: level.unwrap_or(LevelFilter::TRACE),
                last_modified: None,
            };
            match target {
                None => levels.root = Some(level),
                Some(target) => {
                    levels.explicit.insert(target.to_string(), level);
                }
            }
        }
        levels
    }

    /// The filter directives: the root level, every explicit level, the directives kept.
    fn spec(&self) -> String {
        let mut directives: Vec<String> = Vec::new();
        if let Some(root) = self.root {
            directives.push(root.level.to_string().to_ascii_lowercase());
        }
        for (target, level) in &self.explicit {
            directives.push(format!(
                "{target}={}",
                level.level.to_string().to_ascii_lowercase()
            ));
        }
        directives.extend(self.other.iter().cloned());
        directives.join(",")
    }

    fn root_level(&self) -> Level {
        // Without a bare level, `EnvFilter` enables nothing that no directive names.
        self.root.unwrap_or(Level {
            level: LevelFilter::OFF,
            last_modified: None,
        })
    }

    /// The level a logger has: its own, or that of the longest logger name it starts with
    /// (`EnvFilter`'s rule), or root's.
    fn effective(&self, name: &str) -> Level {
        if let Some(level) = self.explicit.get(name) {
            return *level;
        }
        let inherited = self
            .explicit
            .iter()
            .filter(|(target, _)| name.starts_with(target.as_str()))
            .max_by_key(|(target, _)| target.len())
            .map(|(_, level)| Level {
                level: level.level,
                last_modified: None,
            });
        inherited.unwrap_or(Level {
            level: self.root_level().level,
            last_modified: None,
        })
    }
}

fn level_json(level: Level) -> Value {
    json!({"level": kc_name(level.level), "last_modified": level.last_modified})
}

/// Kafka Connect's (log4j's) name of a level.
fn kc_name(level: LevelFilter) -> &'static str {
    match level.into_level() {
        None => "OFF",
        Some(tracing::Level::ERROR) => "ERROR",
        Some(tracing::Level::WARN) => "WARN",
        Some(tracing::Level::INFO) => "INFO",
        Some(tracing::Level::DEBUG) => "DEBUG",
        Some(tracing::Level::TRACE) => "TRACE",
    }
}

/// A level named as Kafka Connect names them, in any case.
fn parse_kc_level(text: &str) -> Option<LevelFilter> {
    match text.to_ascii_uppercase().as_str() {
        "ERROR" => Some(LevelFilter::ERROR),
        "WARN" => Some(LevelFilter::WARN),
        "INFO" => Some(LevelFilter::INFO),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "TRACE" => Some(LevelFilter::TRACE),
        "OFF" => Some(LevelFilter::OFF),
        _ => None,
    }
}

fn is_root(name: &str) -> bool {
    name.eq_ignore_ascii_case(ROOT)
}

/// A logger name that can be written into a filter directive: letters, digits, `_`, `-`,
/// `.` and `:`, starting with no `.`.
fn check_logger_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Logger name {name:?} is not a tracing target: use letters, digits, '_', '-', '.' and ':'"
        )))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogLevels {
    /// The levels `RUST_LOG` asks for (`info` when unset or invalid), and the filter that
    /// applies them; wrap the filter in a reload layer and hand its handle to
    /// [`LogLevels::set_reloader`].
    pub fn from_env() -> (LogLevels, EnvFilter) {
        Self::from_spec(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref())
    }

    pub fn from_spec(spec: Option<&str>) -> (LogLevels, EnvFilter) {
        let parsed = spec.and_then(|s| EnvFilter::builder().parse(s).ok().map(|f| (s, f)));
        let (spec, filter) = parsed.unwrap_or_else(|| (DEFAULT_SPEC, EnvFilter::new(DEFAULT_SPEC)));
        let levels = LogLevels::default();
        *lock(&levels.inner.state) = Levels::parse(spec);
        (levels, filter)
    }

    /// How a new filter is put in place (`reload::Handle::reload`). Set once.
    pub fn set_reloader(
        &self,
        reload: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static,
    ) {
        let _ = self.inner.reload.set(Box::new(reload));
    }

    /// A layer that learns the target of every callsite, so loggers can be listed and
    /// found; put it outermost (after the filter) so it sees every callsite.
    pub fn recorder(&self) -> TargetRecorder {
        TargetRecorder {
            known: self.inner.known.clone(),
        }
    }

    /// Every logger with a level of its own, and root: `{name: {level, last_modified}}`.
    pub fn all(&self) -> Map<String, Value> {
        let state = lock(&self.inner.state);
        let mut all: Map<String, Value> = state
            .explicit
            .iter()
            .map(|(name, level)| (name.clone(), level_json(*level)))
            .collect();
        all.insert(ROOT.to_string(), level_json(state.root_level()));
        all
    }

    /// One logger's level (inherited when it has none of its own); `None` for a logger
    /// no callsite has and no level names.
    pub fn level(&self, name: &str) -> Option<Value> {
        let state = lock(&self.inner.state);
        if is_root(name) {
            return Some(level_json(state.root_level()));
        }
        let known = state.explicit.contains_key(name) || lock(&self.inner.known).contains(name);
        known.then(|| level_json(state.effective(name)))
    }

    /// Sets `namespace` and every logger under it (every logger, for root) to `level`;
    /// returns their names, sorted, as Kafka Connect does.
    pub fn set(&self, namespace: &str, level: LevelFilter) -> Result<Vec<String>, String> {
        let now = now_ms();
        let mut current = lock(&self.inner.state);
        // Changed on a copy, kept only once the new filter is in place.
        let mut state = current.clone();
        let known: Vec<String> = lock(&self.inner.known).iter().cloned().collect();
        let mut names: BTreeSet<String> = state
            .explicit
            .keys()
            .cloned()
            .chain(known)
            .filter(|name| is_root(namespace) || name.starts_with(namespace))
            .collect();
        if !is_root(namespace) {
            names.insert(namespace.to_string());
        }
        // Levels before the change (a child's may be inherited from root).
        let before: Vec<(String, Level, bool)> = names
            .iter()
            .map(|name| {
                let explicit = state.explicit.contains_key(name);
                (name.clone(), state.effective(name), explicit)
            })
            .collect();
        if is_root(namespace) && state.root_level().level != level {
            state.root = Some(Level {
                level,
                last_modified: Some(now),
            });
        }
        for (name, current, explicit) in before {
            if explicit && current.level == level {
                continue;
            }
            let last_modified = if current.level != level {
                Some(now)
            } else {
                current.last_modified
            };
            state.explicit.insert(
                name,
                Level {
                    level,
                    last_modified,
                },
            );
        }
        let spec = state.spec();
        let filter = EnvFilter::builder()
            .parse(&spec)
            .map_err(|e| format!("the log filter {spec:?} does not parse: {e}"))?;
        if let Some(reload) = self.inner.reload.get() {
            // Not under the `known` lock: swapping the filter registers callsites again.
            reload(filter)?;
        }
        *current = state;
        drop(current);
        let mut names: Vec<String> = names.into_iter().collect();
        if is_root(namespace) {
            names.push(ROOT.to_string());
            names.sort();
        }
        Ok(names)
    }
}

/// Records the target of every callsite tracing registers.
pub struct TargetRecorder {
    known: Arc<Mutex<BTreeSet<String>>>,
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for TargetRecorder {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        let target = metadata.target();
        let mut known = lock(&self.known);
        if !known.contains(target) {
            known.insert(target.to_string());
        }
        // No opinion: the filter decides.
        Interest::always()
    }
}

fn logger_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(name)
}

/// `GET /admin/loggers`
#[utoipa::path(get, path = "/admin/loggers", tag = "admin",
    responses((status = 200, description = "Every logger with a level of its own, and root",
        body = BTreeMap<String, LoggerLevel>)))]
pub async fn list_loggers(State(state): State<ApiState>) -> Json<Value> {
    Json(Value::Object(state.loggers.all()))
}

/// `GET /admin/loggers/`, as Kafka Connect also answers it.
#[utoipa::path(get, path = "/admin/loggers/", tag = "admin",
    responses((status = 200, description = "As `GET /admin/loggers`", body = BTreeMap<String, LoggerLevel>)))]
pub async fn list_loggers_slash(state: State<ApiState>) -> Json<Value> {
    list_loggers(state).await
}

/// `GET /admin/loggers/{logger}`
#[utoipa::path(get, path = "/admin/loggers/{logger}", tag = "admin",
    params(("logger" = String, Path, description = "A tracing target (`sluice_runtime::worker`) or `root`")),
    responses(
        (status = 200, description = "Its level, own or inherited", body = LoggerLevel),
        (status = 404, description = "No callsite has this target and no level names it",
         body = ErrorBody),
    ))]
pub async fn get_logger(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = logger_of(path)?;
    state
        .loggers
        .level(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("Logger {name} not found.")))
}

/// `PUT /admin/loggers/{logger}` with `{"level": "DEBUG"}`; `?scope=worker` (the default)
/// answers the loggers changed, `?scope=cluster` 204 (a standalone worker is its cluster).
#[utoipa::path(put, path = "/admin/loggers/{logger}", tag = "admin",
    params(("logger" = String, Path, description = "A tracing target (`sluice_runtime::worker`) or `root`"),
        ("scope" = Option<String>, Query, example = "worker",
            description = "`worker` (the default) or `cluster`, which answers 204; \
                other values are taken as `worker`")),
    request_body(content = SetLevel, content_type = "application/json"),
    responses(
        (status = 200, description = "The loggers set: this one and every known one under it",
         body = Vec<String>),
        (status = 204, description = "`scope=cluster`: set"),
        (status = 400,
         description = "No or an unknown level, a body that is not an object, or a name a filter cannot hold",
         body = ErrorBody),
        (status = 500, description = "The new filter could not be installed", body = ErrorBody),
    ))]
pub async fn put_logger(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = logger_of(path)?;
    if !is_root(&name) {
        check_logger_name(&name)?;
    }
    let body = crate::json_body(body)?;
    let Some(body) = body.as_object() else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object such as {\"level\": \"DEBUG\"}",
        ));
    };
    let text = match body.get("level") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "Desired 'level' parameter was not specified in request.",
            ));
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let level = parse_kc_level(&text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid log level '{text}': use ERROR, WARN, INFO, DEBUG, TRACE or OFF."
        ))
    })?;
    let scope = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.strip_prefix("scope="))
        .next_back()
        .unwrap_or("worker")
        .to_ascii_lowercase();
    let changed = state
        .loggers
        .set(&name, level)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!(namespace = %name, level = kc_name(level), "log level set for the namespace and its children");
    match scope.as_str() {
        "cluster" => Ok(StatusCode::NO_CONTENT.into_response()),
        "worker" => Ok(Json(json!(changed)).into_response()),
        other => {
            tracing::warn!(
                scope = other,
                "unknown scope in a log level change; taken as worker"
            );
            Ok(Json(json!(changed)).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(spec: &str) -> LogLevels {
        LogLevels::from_spec(Some(spec)).0
    }

    #[test]
    fn rust_log_becomes_root_and_explicit_levels() {
        let l = levels("warn,sluice_runtime=debug,h2,[span{a=1}]=trace");
        let all = l.all();
        assert_eq!(all["root"], json!({"level": "WARN", "last_modified": null}));
        assert_eq!(all["sluice_runtime"]["level"], "DEBUG");
        assert_eq!(all["h2"]["level"], "TRACE");
        assert_eq!(all.len(), 3);
        let spec = lock(&l.inner.state).spec();
        assert_eq!(spec, "warn,h2=trace,sluice_runtime=debug,[span{a=1}]=trace");
        assert!(EnvFilter::builder().parse(&spec).is_ok());
    }

    #[test]
    fn unset_or_invalid_rust_log_is_info() {
        for spec in [None, Some("not a [valid spec")] {
            let l = LogLevels::from_spec(spec).0;
            assert_eq!(l.all()["root"]["level"], "INFO");
        }
        // Targets only: what no directive names is off.
        assert_eq!(levels("sluice=debug").all()["root"]["level"], "OFF");
    }

    #[test]
    fn set_changes_a_namespace_and_its_children() {
        let l = levels("info");
        for target in [
            "sluice_runtime::sink_driver",
            "sluice_runtime::source_driver",
            "hyper::proto",
        ] {
            lock(&l.inner.known).insert(target.to_string());
        }
        // Known but never set: the inherited level, not modified.
        assert_eq!(
            l.level("sluice_runtime::sink_driver"),
            Some(json!({"level": "INFO", "last_modified": null}))
        );
        assert_eq!(l.level("nobody::knows"), None);

        let changed = l.set("sluice_runtime", LevelFilter::DEBUG).unwrap();
        assert_eq!(
            changed,
            [
                "sluice_runtime",
                "sluice_runtime::sink_driver",
                "sluice_runtime::source_driver"
            ]
        );
        let sink = l.level("sluice_runtime::sink_driver").unwrap();
        assert_eq!(sink["level"], "DEBUG");
        assert!(sink["last_modified"].as_u64().unwrap() > 0);
        assert_eq!(l.level("hyper::proto").unwrap()["level"], "INFO");
        assert_eq!(l.all()["root"]["last_modified"], Value::Null);

        let changed = l.set("ROOT", LevelFilter::WARN).unwrap();
        assert_eq!(changed.len(), 5, "{changed:?}");
        assert!(changed.contains(&"root".to_string()));
        assert_eq!(l.all()["root"]["level"], "WARN");
        let hyper = l.level("hyper::proto").unwrap();
        assert_eq!(hyper["level"], "WARN");
        assert!(hyper["last_modified"].is_u64(), "{hyper}");
        let spec = lock(&l.inner.state).spec();
        assert!(spec.starts_with("warn,"), "{spec}");
        assert!(EnvFilter::builder().parse(&spec).is_ok());
    }

    #[test]
    fn kafka_connect_level_names() {
        assert_eq!(parse_kc_level("debug"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_kc_level("OFF"), Some(LevelFilter::OFF));
        assert_eq!(parse_kc_level("verbose"), None);
        assert_eq!(kc_name(LevelFilter::WARN), "WARN");
        assert!(check_logger_name("sluice_runtime::sink_driver").is_ok());
        assert!(check_logger_name("a=b").is_err());
        assert!(check_logger_name("a,b").is_err());
    }
}
