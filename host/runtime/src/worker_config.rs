//! The worker's own configuration (`--worker FILE`), as Kafka Connect's worker properties.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use sluice_api::{ConfigMap, parse_config};

/// Worker configuration. Accepted as a JSON object or a Java `.properties` file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct WorkerConfig {
    /// File that stores source offsets in standalone mode. Written atomically (temp file,
    /// fsync, rename) every `offset.flush.interval.ms` and at shutdown.
    #[serde(
        rename = "offset.storage.file.filename",
        default = "default_offset_file"
    )]
    pub offset_file: PathBuf,
    /// How often committed source offsets are written, and how long a sink may hold
    /// unflushed records before it is flushed (milliseconds).
    #[serde(
        rename = "offset.flush.interval.ms",
        default = "default_flush_interval"
    )]
    #[schemars(range(min = 1))]
    pub offset_flush_interval_ms: u64,
    /// How long shutdown waits for in-flight records to become durable (milliseconds).
    #[serde(
        rename = "task.shutdown.graceful.timeout.ms",
        default = "default_graceful"
    )]
    pub shutdown_timeout_ms: u64,
    /// Embedded bus: the most records one topic partition holds that some subscribed sink
    /// has not yet acknowledged. A source writing to a full partition waits (backpressure).
    #[serde(rename = "embedded.partition.capacity", default = "default_capacity")]
    #[schemars(range(min = 1))]
    pub partition_capacity: usize,
    /// Embedded bus: partitions of a topic created without `topic.creation.default.partitions`.
    #[serde(rename = "embedded.default.partitions", default = "default_partitions")]
    #[schemars(range(min = 1))]
    pub default_partitions: u32,
    /// Most records handed to one sink `put`.
    #[serde(rename = "consumer.max.poll.records", default = "default_poll_records")]
    #[schemars(range(min = 1))]
    pub max_poll_records: usize,
    /// This worker's id in statuses (`host:port` in Kafka Connect).
    #[serde(rename = "worker.id", default = "default_worker_id")]
    pub worker_id: String,
    /// Kafka brokers (`host:port,…`). When set, topics are Kafka topics: sources produce
    /// to them, sinks consume them in consumer groups, and source offsets go to
    /// `offset.storage.topic` instead of the file. Client settings come from `producer.*`,
    /// `consumer.*` and `admin.*` keys (librdkafka's property names, prefix removed).
    #[serde(rename = "bootstrap.servers", default)]
    pub bootstrap_servers: Option<String>,
    /// With Kafka: the compacted topic holding source offsets, keyed as Kafka Connect's.
    #[serde(rename = "offset.storage.topic", default = "default_offset_topic")]
    pub offset_storage_topic: String,
    /// With Kafka: partitions of `offset.storage.topic` when sluice creates it.
    #[serde(
        rename = "offset.storage.partitions",
        default = "default_offset_partitions"
    )]
    #[schemars(range(min = 1))]
    pub offset_storage_partitions: u32,
    /// With Kafka: replication factor of `offset.storage.topic` when sluice creates it;
    /// -1 takes the broker's default.
    #[serde(
        rename = "offset.storage.replication.factor",
        default = "default_replication"
    )]
    pub offset_storage_replication_factor: i32,
    /// Standalone: the directory where connectors created or changed over REST are kept
    /// (one JSON file each, written atomically), so they come back after a restart.
    /// Default: `connectors/` beside the offset file (`data/connectors`).
    #[serde(rename = "connector.storage.dir", default)]
    pub connector_dir: Option<PathBuf>,
    /// Where the REST API listens, as Kafka Connect's `listeners`
    /// (`http://host:port`, the first of a comma-separated list is used). Unset: the API
    /// listens on `http://0.0.0.0:8083` unless the run is a `--drain` batch job, and a
    /// port already taken then only warns.
    #[serde(default)]
    pub listeners: Option<String>,
    /// Kafka Connect's older key for the REST port (with host 0.0.0.0).
    #[serde(rename = "rest.port", default)]
    pub rest_port: Option<u16>,
    /// Who may use the REST API: `none` (anyone who reaches the port), `basic` (HTTP Basic
    /// with a user and password from `rest.auth.credentials.file`) or `bearer` (a token from
    /// `rest.auth.token.file`). Requests without valid credentials answer 401; `/health`
    /// stays open.
    #[serde(rename = "rest.auth", default)]
    pub rest_auth: RestAuth,
    /// With `rest.auth=basic`: a file of `user:password` lines (the password is everything
    /// after the first colon; empty lines and lines starting with `#` are skipped). Read
    /// when the worker starts.
    #[serde(rename = "rest.auth.credentials.file", default)]
    pub rest_auth_credentials_file: Option<PathBuf>,
    /// With `rest.auth=bearer`: a file of accepted tokens, one per line (empty lines and
    /// lines starting with `#` are skipped). Read when the worker starts.
    #[serde(rename = "rest.auth.token.file", default)]
    pub rest_auth_token_file: Option<PathBuf>,
    /// KIP-558: remember the topics each connector produces to or consumes from, shown by
    /// `GET /connectors/{name}/topics`. When false, that endpoint answers 403.
    #[serde(rename = "topic.tracking.enable", default = "default_true")]
    pub topic_tracking_enable: bool,
    /// KIP-558: whether `PUT /connectors/{name}/topics/reset` may clear them (403 if not).
    #[serde(rename = "topic.tracking.allow.reset", default = "default_true")]
    pub topic_tracking_allow_reset: bool,
    /// Every key of the file as given, for the client settings (`producer.*`, …).
    #[serde(skip)]
    #[schemars(skip)]
    pub raw: ConfigMap,
}

/// How REST requests authenticate (`rest.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestAuth {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic: `Authorization: Basic base64(user:password)`.
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

fn default_true() -> bool {
    true
}

fn default_offset_topic() -> String {
    "connect-offsets".to_string()
}
fn default_offset_partitions() -> u32 {
    25
}
fn default_replication() -> i32 {
    -1
}

fn default_offset_file() -> PathBuf {
    PathBuf::from("data/connect.offsets")
}
fn default_flush_interval() -> u64 {
    10_000
}
fn default_graceful() -> u64 {
    5_000
}
fn default_capacity() -> usize {
    10_000
}
fn default_partitions() -> u32 {
    1
}
fn default_poll_records() -> usize {
    500
}
fn default_worker_id() -> String {
    "standalone".to_string()
}

impl Default for WorkerConfig {
    fn default() -> Self {
        // Parsing an empty map can only fail if a default were invalid, which tests pin.
        parse_config(&ConfigMap::new()).unwrap_or_else(|_| WorkerConfig {
            offset_file: default_offset_file(),
            offset_flush_interval_ms: default_flush_interval(),
            shutdown_timeout_ms: default_graceful(),
            partition_capacity: default_capacity(),
            default_partitions: default_partitions(),
            max_poll_records: default_poll_records(),
            worker_id: default_worker_id(),
            bootstrap_servers: None,
            offset_storage_topic: default_offset_topic(),
            offset_storage_partitions: default_offset_partitions(),
            offset_storage_replication_factor: default_replication(),
            connector_dir: None,
            listeners: None,
            rest_port: None,
            rest_auth: RestAuth::None,
            rest_auth_credentials_file: None,
            rest_auth_token_file: None,
            topic_tracking_enable: true,
            topic_tracking_allow_reset: true,
            raw: ConfigMap::new(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl WorkerConfig {
    /// `connector.storage.dir`, or `connectors/` beside the offset file.
    pub fn connector_dir(&self) -> PathBuf {
        self.connector_dir.clone().unwrap_or_else(|| {
            self.offset_file
                .parent()
                .map_or_else(|| PathBuf::from("connectors"), |p| p.join("connectors"))
        })
    }

    /// Reads a worker config file: `.properties` files as Java properties, anything else as JSON.
    pub fn load(path: &Path) -> Result<WorkerConfig, WorkerConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WorkerConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let map = if path.extension().is_some_and(|e| e == "properties") {
            crate::placeholders::parse_properties(&text)
                .map_err(|message| WorkerConfigError::Invalid {
                    path: shown.clone(),
                    message,
                })?
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect()
        } else {
            serde_json::from_str::<ConfigMap>(&text).map_err(|e| WorkerConfigError::Invalid {
                path: shown.clone(),
                message: format!("invalid JSON (an object of keys to values expected): {e}"),
            })?
        };
        let mut config: WorkerConfig =
            parse_config(&map).map_err(|issues| WorkerConfigError::Invalid {
                path: shown,
                message: issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
        config.raw = map;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let parsed: WorkerConfig = parse_config(&ConfigMap::new()).unwrap();
        assert_eq!(parsed.offset_flush_interval_ms, 10_000);
        assert_eq!(parsed.partition_capacity, 10_000);
    }

    #[test]
    fn properties_and_json_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let props = dir.path().join("w.properties");
        std::fs::write(&props, "# comment\noffset.flush.interval.ms=250\noffset.storage.file.filename = /tmp/x.offsets\n").unwrap();
        let w = WorkerConfig::load(&props).unwrap();
        assert_eq!(w.offset_flush_interval_ms, 250);
        assert_eq!(w.offset_file, PathBuf::from("/tmp/x.offsets"));

        let json = dir.path().join("w.json");
        std::fs::write(&json, r#"{"offset.flush.interval.ms": "nope"}"#).unwrap();
        let err = WorkerConfig::load(&json).unwrap_err().to_string();
        assert!(
            err.contains("w.json") && err.contains("offset.flush.interval.ms"),
            "{err}"
        );
    }
}
