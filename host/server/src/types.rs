//! The bodies the API reads and writes, as types: handlers build their answers from them,
//! and `GET /openapi.json` describes them from the same types (their `ToSchema`).
//!
//! Handlers parse request bodies themselves (from bytes, to answer every malformed body
//! with a 400 in the error shape), so the request types here only describe; each handler's
//! `#[utoipa::path]` names its body type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Every error: Kafka Connect's shape, `error_code` repeating the HTTP status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    #[schema(example = 404)]
    pub error_code: u16,
    #[schema(example = "Connector sim not found")]
    pub message: String,
}

/// `GET /`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    pub version: String,
    /// The source revision the binary was built from, or `unknown`.
    pub commit: String,
    /// The Kafka cluster's id, or null without Kafka.
    pub kafka_cluster_id: Option<String>,
}

/// `GET /health` (KIP-1017).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
}

/// A connector's name: not blank, without control characters or `/`.
#[derive(Debug, ToSchema)]
#[schema(
    pattern = r"^[^\u0000-\u001F\u007F-\u009F/]*[^\s\u0000-\u001F\u007F-\u009F/][^\u0000-\u001F\u007F-\u009F/]*$",
    example = "sim"
)]
pub struct ConnectorName(pub String);

/// A connector's config as given: keys to values. Kafka Connect's values are strings;
/// sluice also takes numbers, booleans and lists (of strings or numbers, joined with
/// commas). Every connector needs `connector.class`; the other keys are the plugin's
/// (`GET /connector-plugins/{plugin}/config`) and the common ones.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[schema(
    example = json!({"connector.class": "SimulatorSource", "topic": "fuzz", "max.events": "10"})
)]
pub struct ConnectorConfig {
    /// The plugin's class name or alias (`GET /connector-plugins`).
    #[serde(rename = "connector.class")]
    #[schema(example = "SimulatorSource", nullable = false)]
    pub connector_class: Option<String>,
    /// The connector's name; when given, it must be the name of the URL (or of the request).
    pub name: Option<String>,
    /// How many tasks to run, at most.
    #[serde(rename = "tasks.max")]
    #[schema(example = "1", nullable = false)]
    pub tasks_max: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, ConfigValue>,
}

/// One config value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ConfigValue {
    String(String),
    Number(f64),
    Boolean(bool),
    /// Joined with commas.
    List(Vec<ListItem>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ListItem {
    String(String),
    Number(f64),
}

/// `PATCH /connectors/{name}/config`: keys to change; a null value removes its key.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"max.events": "20", "key.field": null}))]
#[allow(dead_code)]
pub struct ConfigPatch {
    #[serde(flatten)]
    pub keys: BTreeMap<String, PatchValue>,
}

/// A value to set, or null to remove the key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PatchValue {
    Remove,
    Set(ConfigValue),
}

/// A connector's config as shown: every value a string, secrets `[hidden]` (unless they
/// are `${env:…}`/`${file:…}` placeholders), and `name`.
pub type ShownConfig = BTreeMap<String, String>;

/// `POST /connectors`. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateConnector {
    /// Taken from `config.name` when absent.
    #[schema(example = "sim-2")]
    pub name: Option<String>,
    pub config: ConnectorConfig,
    /// The state the connector starts in (KIP-980); `RUNNING` when absent.
    pub initial_state: Option<InitialState>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum InitialState {
    Running,
    Paused,
    Stopped,
}

/// One task of a connector.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskId {
    pub connector: String,
    pub task: u32,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorType {
    Source,
    Sink,
}

/// `GET /connectors/{name}`, and the answer to a create or config change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorInfo {
    pub name: String,
    #[schema(value_type = BTreeMap<String, String>)]
    pub config: ShownConfig,
    pub tasks: Vec<TaskId>,
    #[serde(rename = "type")]
    pub kind: ConnectorType,
}

/// `GET /connectors`: the names; with `expand`, an object by name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ConnectorList {
    Names(Vec<String>),
    Expanded(BTreeMap<String, ConnectorExpanded>),
}

/// One connector of `GET /connectors?expand=…`: what was asked for.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ConnectorExpanded {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ConnectorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ConnectorStatus>)]
    pub status: Option<Value>,
}

/// A state, as Kafka Connect names them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Unassigned,
    Running,
    Paused,
    Stopped,
    Failed,
    Restarting,
}

/// `GET /connectors/{name}/status` (built by the worker's status view).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorStatus {
    pub name: String,
    pub connector: ConnectorState,
    pub tasks: Vec<TaskStatus>,
    #[serde(rename = "type")]
    pub kind: ConnectorType,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorState {
    pub state: State,
    #[schema(example = "standalone")]
    pub worker_id: String,
}

/// `GET /connectors/{name}/tasks/{task}/status`, and each task of a connector's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskStatus {
    pub id: u32,
    pub state: State,
    pub worker_id: String,
    /// Why a `FAILED` task failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// One task of `GET /connectors/{name}/tasks`: its config as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskInfo {
    pub id: TaskId,
    #[schema(value_type = BTreeMap<String, String>)]
    pub config: ShownConfig,
}

/// One plugin of `GET /connector-plugins`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginInfo {
    pub class: String,
    /// `source`, `sink`, `transformation`, `predicate`, … (only connectors unless
    /// `connectorsOnly=false`).
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
}

/// One key of a plugin's config (Kafka Connect's `ConfigKeyInfo`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigKeyInfo {
    pub name: String,
    /// `STRING`, `LONG`, `DOUBLE`, `BOOLEAN`, `LIST` or `PASSWORD`.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub default_value: Option<String>,
    /// `HIGH` for required keys, `MEDIUM` for the others.
    pub importance: String,
    pub documentation: String,
    pub group: String,
    pub width: String,
    pub display_name: String,
    pub dependents: Vec<String>,
    pub order: i64,
}

/// `PUT /connector-plugins/{plugin}/config/validate` (Kafka Connect's `ConfigInfos`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigInfos {
    /// The plugin's class.
    pub name: String,
    pub error_count: usize,
    pub groups: Vec<String>,
    pub configs: Vec<ConfigInfo>,
}

/// One key of a validation: its definition (null for a key no schema declares) and value.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigInfo {
    pub definition: Option<ConfigKeyInfo>,
    pub value: ConfigValueInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigValueInfo {
    /// The key (empty for problems of the config as a whole).
    pub name: String,
    pub value: Option<String>,
    pub recommended_values: Vec<String>,
    pub errors: Vec<String>,
    pub visible: bool,
}

/// `GET /connectors/{name}/offsets` (KIP-875).
#[derive(Debug, Serialize, ToSchema)]
pub struct Offsets {
    pub offsets: Vec<PartitionOffset>,
}

/// A partition and its offset: a source's own maps, or for a sink
/// `{"kafka_topic", "kafka_partition"}` → `{"kafka_offset"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionOffset {
    #[schema(value_type = Object, example = json!({"kafka_topic": "orders", "kafka_partition": 0}))]
    pub partition: Value,
    /// Null (in a `PATCH`) resets the partition.
    #[schema(value_type = Option<Object>, example = json!({"kafka_offset": 42}))]
    pub offset: Value,
}

/// `PATCH /connectors/{name}/offsets`: the offsets to write, or (sinks) a time to move
/// every partition to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum OffsetsChange {
    Alter {
        #[schema(min_items = 1)]
        offsets: Vec<PartitionOffset>,
    },
    ToTimestamp {
        timestamp: Timestamp,
    },
}

/// Epoch milliseconds, or an RFC 3339 time.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Timestamp {
    EpochMs(i64),
    #[schema(example = "2026-01-01T00:00:00Z")]
    Rfc3339(String),
}

/// The answer to an offsets change.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub message: String,
}

/// KIP-558: one connector's active topics, under its name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveTopics {
    pub topics: Vec<String>,
}

/// A logger's level (KIP-495, KIP-976).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggerLevel {
    pub level: LogLevel,
    /// Milliseconds since the epoch of the last change through the API; null for a level
    /// that comes from `RUST_LOG`.
    pub last_modified: Option<u64>,
}

/// Kafka Connect's level names (accepted in any case).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Off,
}

/// `PUT /admin/loggers/{logger}`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SetLevel {
    pub level: LogLevel,
}

/// What `GET /connectors?expand=…` adds to each connector.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Expand {
    Status,
    Info,
}
