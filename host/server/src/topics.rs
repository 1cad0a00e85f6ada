//! KIP-558: `GET /connectors/{name}/topics` (the topics a connector produced to or consumed
//! from since its last reset) and `PUT /connectors/{name}/topics/reset`, with Kafka
//! Connect's `topic.tracking.enable` / `topic.tracking.allow.reset` (403 when off).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sluice_runtime::metrics::ConnectorMetrics;
use std::sync::Arc;

use std::collections::BTreeMap;

use crate::responses::ConnectorErrors;
use crate::types::{ActiveTopics, ConnectorName, ErrorBody};
use crate::{ApiError, ApiState, name_of};

/// The connector's counters (where its active topics are), or 404.
async fn connector_metrics(
    state: &ApiState,
    path: Result<Path<String>, PathRejection>,
) -> Result<(String, Arc<ConnectorMetrics>), ApiError> {
    if !state.topic_tracking.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Topic tracking is disabled.",
        ));
    }
    let name = name_of(path)?;
    let connector = state
        .worker
        .list()
        .await?
        .into_iter()
        .find(|c| c.definition.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Connector {name} not found")))?;
    let metrics = state.metrics.connector(&name, connector.is_source);
    Ok((name, metrics))
}

/// `GET /connectors/{name}/topics` → `{"<name>": {"topics": [...]}}`, topics sorted.
#[utoipa::path(get, path = "/connectors/{name}/topics", tag = "topics",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200, description = "The topics, sorted, under the connector's name",
         body = BTreeMap<String, ActiveTopics>),
        (status = 403, description = "topic.tracking.enable is false", body = ErrorBody),
        ConnectorErrors,
    ))]
pub async fn get_topics(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<BTreeMap<String, ActiveTopics>>, ApiError> {
    let (name, metrics) = connector_metrics(&state, path).await?;
    let topics = ActiveTopics {
        topics: metrics.topics.list(),
    };
    Ok(Json(BTreeMap::from([(name, topics)])))
}

/// `PUT /connectors/{name}/topics/reset` → 202 without a body, as Kafka Connect answers.
#[utoipa::path(put, path = "/connectors/{name}/topics/reset", tag = "topics",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 202, description = "The set was emptied"),
        (status = 403, description = "topic.tracking.enable or topic.tracking.allow.reset is false",
         body = ErrorBody),
        ConnectorErrors,
    ))]
pub async fn reset_topics(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    if state.topic_tracking.enabled && !state.topic_tracking.allow_reset {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Topic tracking reset is disabled.",
        ));
    }
    let (_, metrics) = connector_metrics(&state, path).await?;
    metrics.topics.reset();
    Ok(StatusCode::ACCEPTED)
}

/// `topic.tracking.enable` and `topic.tracking.allow.reset`.
#[derive(Debug, Clone, Copy)]
pub struct TopicTracking {
    pub enabled: bool,
    pub allow_reset: bool,
}

impl Default for TopicTracking {
    fn default() -> Self {
        TopicTracking {
            enabled: true,
            allow_reset: true,
        }
    }
}

impl TopicTracking {
    pub fn from_config(config: &sluice_runtime::WorkerConfig) -> TopicTracking {
        TopicTracking {
            enabled: config.topic_tracking_enable,
            allow_reset: config.topic_tracking_allow_reset,
        }
    }
}
