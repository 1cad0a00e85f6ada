//! The error answers that routes share, for `GET /openapi.json`: each is described once,
//! as a response component of the document (`#/components/responses/…`), and the usual
//! combinations are named as sets, so a route's `#[utoipa::path]` lists its set (and names
//! any other shared answer) instead of repeating the same blocks. A 400 that means more
//! than a bad name (a body or a query the route checks) stays written at its route.
//!
//! Handlers answer errors with [`crate::ApiError`]; these types only describe, so none is
//! ever built.
#![allow(dead_code)]

use utoipa::{IntoResponses, ToResponse};

use crate::types::ErrorBody;

#[derive(ToResponse)]
#[response(description = "The name is empty or has control characters")]
pub(crate) struct BadName(ErrorBody);

#[derive(ToResponse)]
#[response(description = "No such connector")]
pub(crate) struct NoConnector(ErrorBody);

#[derive(ToResponse)]
#[response(description = "A bad name, or a task id that is not a number")]
pub(crate) struct BadTaskId(ErrorBody);

#[derive(ToResponse)]
#[response(description = "No such connector or task")]
pub(crate) struct NoTask(ErrorBody);

#[derive(ToResponse)]
#[response(description = "No such plugin")]
pub(crate) struct NoPlugin(ErrorBody);

#[derive(ToResponse)]
#[response(description = "The change was made but could not be stored (connector.storage.dir)")]
pub(crate) struct NotStored(ErrorBody);

#[derive(ToResponse)]
#[response(description = "The offsets could not be read or written (offset store, or Kafka)")]
pub(crate) struct OffsetsFailed(ErrorBody);

#[derive(ToResponse)]
#[response(description = "The worker is shutting down")]
pub(crate) struct ShuttingDown(ErrorBody);

/// Reading one connector (or changing what is not stored).
#[derive(IntoResponses)]
pub(crate) enum ConnectorErrors {
    #[response(status = 400)]
    BadName(#[ref_response] BadName),
    #[response(status = 404)]
    NoConnector(#[ref_response] NoConnector),
    #[response(status = 503)]
    ShuttingDown(#[ref_response] ShuttingDown),
}

/// Changing one connector in a way the connector store keeps.
#[derive(IntoResponses)]
pub(crate) enum ConnectorChangeErrors {
    #[response(status = 400)]
    BadName(#[ref_response] BadName),
    #[response(status = 404)]
    NoConnector(#[ref_response] NoConnector),
    #[response(status = 500)]
    NotStored(#[ref_response] NotStored),
    #[response(status = 503)]
    ShuttingDown(#[ref_response] ShuttingDown),
}

/// A change whose 400 (its body) the route describes: the store may fail, the worker may
/// be shutting down.
#[derive(IntoResponses)]
pub(crate) enum StoreErrors {
    #[response(status = 500)]
    NotStored(#[ref_response] NotStored),
    #[response(status = 503)]
    ShuttingDown(#[ref_response] ShuttingDown),
}

/// One task of a connector.
#[derive(IntoResponses)]
pub(crate) enum TaskErrors {
    #[response(status = 400)]
    BadTaskId(#[ref_response] BadTaskId),
    #[response(status = 404)]
    NoTask(#[ref_response] NoTask),
    #[response(status = 503)]
    ShuttingDown(#[ref_response] ShuttingDown),
}

/// A connector's offsets (KIP-875), whose 400 the route describes.
#[derive(IntoResponses)]
pub(crate) enum OffsetErrors {
    #[response(status = 404)]
    NoConnector(#[ref_response] NoConnector),
    #[response(status = 500)]
    OffsetsFailed(#[ref_response] OffsetsFailed),
    #[response(status = 503)]
    ShuttingDown(#[ref_response] ShuttingDown),
}
