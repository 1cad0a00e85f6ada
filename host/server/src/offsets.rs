//! KIP-875: `GET|PATCH|DELETE /connectors/{name}/offsets`. Changes need the connector to
//! be STOPPED (400 otherwise). Extension: for a sink, `PATCH {"timestamp": …}` (epoch ms or
//! RFC 3339) moves every partition to its first record at or after that time.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use serde_json::Value;
use sluice_runtime::worker::{ConnectorOffset, OffsetChange};

use crate::responses::{BadName, OffsetErrors};
use crate::types::{ConnectorName, ErrorBody, Message, Offsets, OffsetsChange, PartitionOffset};
use crate::{ApiError, ApiResult, ApiState, json_body, name_of};

#[utoipa::path(get, path = "/connectors/{name}/offsets", tag = "offsets",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200,
         description = "The committed offsets: a source's own, a sink's consumer-group positions",
         body = Offsets),
        (status = 400, response = BadName),
        OffsetErrors,
    ))]
pub async fn get_offsets(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Offsets>> {
    let name = name_of(path)?;
    let offsets = state.worker.offsets(&name).await?;
    let offsets = offsets
        .into_iter()
        .map(|o| PartitionOffset {
            partition: o.partition,
            offset: o.offset.unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(Offsets { offsets }))
}

fn parse_timestamp(value: &Value) -> ApiResult<i64> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("timestamp {n} is not epoch milliseconds"))
        }),
        Value::String(s) => s.trim().parse::<i64>().or_else(|_| {
            chrono_like_rfc3339(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "timestamp {s:?} is neither epoch milliseconds nor RFC 3339"
                ))
            })
        }),
        other => Err(ApiError::bad_request(format!(
            "timestamp must be epoch milliseconds or an RFC 3339 string, not {other}"
        ))),
    }
}

/// RFC 3339 → epoch ms, through the Kafka crate's parser (the one `consumer.start.timestamp`
/// uses), so both places accept the same texts.
fn chrono_like_rfc3339(text: &str) -> Option<i64> {
    sluice_runtime::timestamps::parse_epoch_ms(text).ok()
}

fn parse_change(body: Value) -> ApiResult<OffsetChange> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object",
        ));
    };
    if let Some(ts) = body.remove("timestamp") {
        if !body.is_empty() {
            return Err(ApiError::bad_request(
                "Give either \"timestamp\" or \"offsets\", not both",
            ));
        }
        return Ok(OffsetChange::ToTimestamp(parse_timestamp(&ts)?));
    }
    let Some(Value::Array(items)) = body.remove("offsets") else {
        return Err(ApiError::bad_request(
            "The request body must have an \"offsets\" array (or, for a sink, a \"timestamp\")",
        ));
    };
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::bad_request(format!(
            "Unrecognized field \"{unknown}\""
        )));
    }
    if items.is_empty() {
        return Err(ApiError::bad_request("The \"offsets\" array is empty"));
    }
    let mut offsets = Vec::with_capacity(items.len());
    for item in items {
        let partition = match item.get("partition") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Each offset needs a \"partition\" object: {item}"
                )));
            }
        };
        let offset = match item.get("offset") {
            None | Some(Value::Null) => None,
            Some(o @ Value::Object(_)) => Some(o.clone()),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "An offset must be an object or null, not {other}"
                )));
            }
        };
        offsets.push(ConnectorOffset { partition, offset });
    }
    Ok(OffsetChange::Alter(offsets))
}

#[utoipa::path(patch, path = "/connectors/{name}/offsets", tag = "offsets",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    request_body(content = OffsetsChange, content_type = "application/json"),
    responses(
        (status = 200, description = "Altered", body = Message),
        (status = 400,
         description = "The connector is not STOPPED, the body is not such an object, or the \
            offsets cannot change (a sink on the embedded bus)",
         body = ErrorBody),
        OffsetErrors,
    ))]
pub async fn patch_offsets(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Message>> {
    let name = name_of(path)?;
    let change = parse_change(json_body(body)?)?;
    state.worker.change_offsets(&name, change).await?;
    Ok(Json(Message {
        message: "The offsets for this connector have been altered successfully".into(),
    }))
}

#[utoipa::path(delete, path = "/connectors/{name}/offsets", tag = "offsets",
    params(("name" = ConnectorName, Path, description = "The connector's name")),
    responses(
        (status = 200, description = "Reset", body = Message),
        (status = 400,
         description = "The connector is not STOPPED, or its offsets cannot change (a sink on \
            the embedded bus)",
         body = ErrorBody),
        OffsetErrors,
    ))]
pub async fn delete_offsets(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Message>> {
    let name = name_of(path)?;
    state
        .worker
        .change_offsets(&name, OffsetChange::Reset)
        .await?;
    Ok(Json(Message {
        message: "The offsets for this connector have been reset successfully".into(),
    }))
}
