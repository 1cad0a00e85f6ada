//! KIP-875: `GET|PATCH|DELETE /connectors/{name}/offsets`. Changes need the connector to
//! be STOPPED (400 otherwise). Extension: for a sink, `PATCH {"timestamp": …}` (epoch ms or
//! RFC 3339) moves every partition to its first record at or after that time.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use serde_json::{Value, json};
use sluice_runtime::worker::{ConnectorOffset, OffsetChange};

use crate::{ApiError, ApiResult, ApiState, json_body, name_of};

pub async fn get_offsets(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = name_of(path)?;
    let offsets = state.worker.offsets(&name).await?;
    let offsets: Vec<Value> = offsets
        .into_iter()
        .map(|o| json!({"partition": o.partition, "offset": o.offset}))
        .collect();
    Ok(Json(json!({ "offsets": offsets })))
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

pub async fn patch_offsets(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let name = name_of(path)?;
    let change = parse_change(json_body(body)?)?;
    state.worker.change_offsets(&name, change).await?;
    Ok(Json(
        json!({"message": "The offsets for this connector have been altered successfully"}),
    ))
}

pub async fn delete_offsets(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = name_of(path)?;
    state
        .worker
        .change_offsets(&name, OffsetChange::Reset)
        .await?;
    Ok(Json(
        json!({"message": "The offsets for this connector have been reset successfully"}),
    ))
}
