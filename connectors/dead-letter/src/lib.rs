//! `DeadLetterSink`: consumes a dead-letter queue topic and persists every dead letter
//! with its full error context, to PostgreSQL (one row each) or a JSON-lines file.
//!
//! The original key and value are kept as raw bytes, with text and JSON views when they
//! are valid UTF-8 / JSON. The `__connect.errors.*` and `sluice.errors.*` headers the
//! runtime puts on dead letters become columns; all other headers are kept as JSON.
//! Storing is idempotent by the dead letter's own position (topic, partition, offset):
//! a redelivered dead letter is not stored twice.

mod file;
mod letter;
mod pg;
mod replay;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Plugin, PluginInfo, PluginKind,
    SinkConnector, SinkTask, parse_config, schema_of,
};
use sluice_pg::{ConnectOptions, SslMode};

pub use letter::DeadLetter;
pub use pg::create_table_sql;
pub use replay::{FileReplayStore, PgReplayStore, ReplayStore, Selection, StoredLetter};

/// The sink connector plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadLetterSinkPlugin;

/// Where dead letters are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// One row per dead letter in a PostgreSQL table (created when missing).
    Postgres,
    /// One JSON line per dead letter appended to a file (one task).
    File,
}

/// The keys of a `DeadLetterSink` connector.
#[derive(Clone, Deserialize, JsonSchema)]
pub struct DeadLetterSinkConfig {
    /// Where dead letters go: `postgres` (a table) or `file` (a JSON-lines file).
    pub store: Store,
    /// For `store=postgres`: the database, as `postgres://user@host:port/db`,
    /// `jdbc:postgresql://host:port/db` or a libpq `key=value` string; `sslmode` and
    /// `sslrootcert` may be given in its query string.
    #[serde(rename = "connection.url", default)]
    pub connection_url: Option<String>,
    /// For `store=postgres`: the user to connect as (overrides a user in the URL).
    #[serde(rename = "connection.user", default)]
    pub connection_user: Option<String>,
    /// For `store=postgres`: the password (never logged).
    #[serde(rename = "connection.password", default)]
    pub connection_password: Option<String>,
    /// For `store=postgres`: TLS, as libpq's `sslmode` (overrides one in the URL):
    /// `disable`, `prefer` (the default: TLS when the server offers it), `require` (TLS,
    /// certificate not checked), `verify-ca` (the certificate must chain to
    /// `connection.sslrootcert`, or to the system's roots when it is not set) or
    /// `verify-full` (and must name the host).
    #[serde(rename = "connection.sslmode", default)]
    pub connection_sslmode: Option<SslMode>,
    /// For `store=postgres`: a PEM file of the root certificates that sign the server's
    /// certificate (overrides `sslrootcert` in the URL); `system` means the system's roots.
    /// With it, `require` checks the chain as `verify-ca` does (as libpq).
    #[serde(rename = "connection.sslrootcert", default)]
    pub connection_sslrootcert: Option<String>,
    /// For `store=postgres`: the table, `name` or `schema.name`; the table (and the
    /// schema) are created when missing.
    #[serde(default = "default_table")]
    pub table: String,
    /// For `store=file`: path of the JSON-lines file dead letters are appended to. The
    /// file and its parent directories are created when missing.
    #[serde(default)]
    pub file: Option<String>,
}

fn default_table() -> String {
    "dead_letters".to_string()
}

impl std::fmt::Debug for DeadLetterSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterSinkConfig")
            .field("store", &self.store)
            .field(
                "connection_url",
                &self.connection_url.as_deref().map(sluice_pg::redact),
            )
            .field("connection_user", &self.connection_user)
            .field(
                "connection_password",
                &self.connection_password.as_ref().map(|_| "<redacted>"),
            )
            .field("connection_sslmode", &self.connection_sslmode)
            .field("connection_sslrootcert", &self.connection_sslrootcert)
            .field("table", &self.table)
            .field("file", &self.file)
            .finish()
    }
}

/// A validated configuration, ready to build a task from.
enum Target {
    Postgres(Box<sluice_pg::Connection>, pg::TableName),
    File(PathBuf),
}

impl DeadLetterSinkConfig {
    fn target(&self) -> Result<Target, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        match self.store {
            Store::Postgres => {
                let table = pg::TableName::parse(&self.table)
                    .map_err(|m| issues.push(ConfigIssue::error("table", m)))
                    .ok();
                let config = match self.connection_url.as_deref().map(str::trim) {
                    None | Some("") => {
                        issues.push(ConfigIssue::error(
                            "connection.url",
                            "is required when store=postgres",
                        ));
                        None
                    }
                    Some(url) => ConnectOptions {
                        url,
                        user: self.connection_user.as_deref(),
                        password: self.connection_password.as_deref(),
                        sslmode: self.connection_sslmode,
                        sslrootcert: self.connection_sslrootcert.as_deref(),
                        application_name: Some("sluice-dead-letter"),
                    }
                    .resolve()
                    .map_err(|problems| issues.extend(problems))
                    .ok(),
                };
                match (config, table) {
                    (Some(c), Some(t)) if !has_errors(&issues) => {
                        Ok(Target::Postgres(Box::new(c), t))
                    }
                    _ => Err(issues),
                }
            }
            Store::File => match self.file.as_deref().map(str::trim) {
                None | Some("") => {
                    issues.push(ConfigIssue::error("file", "is required when store=file"));
                    Err(issues)
                }
                Some(path) => Ok(Target::File(PathBuf::from(path))),
            },
        }
    }

    /// Every problem, warnings included.
    fn issues(&self) -> Vec<ConfigIssue> {
        match self.target() {
            Err(issues) => issues,
            Ok(_) => {
                // Warnings only (errors would have failed `target`).
                let mut warnings = Vec::new();
                if self.store == Store::Postgres && self.file.is_some() {
                    warnings.push(ConfigIssue::warning(
                        "file",
                        "is ignored when store=postgres",
                    ));
                }
                if self.store == Store::File && self.connection_url.is_some() {
                    warnings.push(ConfigIssue::warning(
                        "connection.url",
                        "is ignored when store=file",
                    ));
                }
                warnings
            }
        }
    }
}

fn has_errors(issues: &[ConfigIssue]) -> bool {
    issues
        .iter()
        .any(|i| i.severity == sluice_api::Severity::Error)
}

fn parse(config: &ConfigMap) -> Result<Target, ConnectError> {
    let invalid = |issues: Vec<ConfigIssue>| {
        let text: Vec<String> = issues
            .iter()
            .filter(|i| i.severity == sluice_api::Severity::Error)
            .map(ToString::to_string)
            .collect();
        ConnectError::config(format!(
            "invalid DeadLetterSink config: {}",
            text.join("; ")
        ))
    };
    let parsed = parse_config::<DeadLetterSinkConfig>(config).map_err(invalid)?;
    parsed.target().map_err(invalid)
}

impl Plugin for DeadLetterSinkPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "DeadLetterSink".to_string(),
            aliases: vec!["sluice.DeadLetterSink".to_string()],
            kind: PluginKind::Sink,
            version: API_VERSION.to_string(),
            description: "Persists dead letters with their error context (headers), original \
                          key and value bytes, to a PostgreSQL table or a JSON-lines file; \
                          idempotent by dead-letter position."
                .to_string(),
        }
    }

    fn config_schema(&self) -> serde_json::Value {
        schema_of::<DeadLetterSinkConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        match parse_config::<DeadLetterSinkConfig>(config) {
            Ok(parsed) => parsed.issues(),
            Err(issues) => issues,
        }
    }
}

impl SinkConnector for DeadLetterSinkPlugin {
    /// PostgreSQL: up to `max_tasks` tasks. File: always one (appenders would interleave).
    fn task_configs(
        &self,
        config: &ConfigMap,
        max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        let tasks = match parse(config)? {
            Target::Postgres(..) => max_tasks.max(1),
            Target::File(_) => 1,
        };
        Ok((0..tasks).map(|_| config.clone()).collect())
    }

    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SinkTask>, ConnectError> {
        Ok(match parse(task_config)? {
            Target::Postgres(connection, table) => Box::new(pg::PgTask::new(&connection, table)?),
            Target::File(path) => Box::new(file::FileTask::new(path)),
        })
    }
}

/// The store a `DeadLetterSink` with this config writes to, read back by `sluice dlq`.
pub fn open_replay_store(config: &ConfigMap) -> Result<Box<dyn ReplayStore>, ConnectError> {
    Ok(match parse(config)? {
        Target::Postgres(connection, table) => {
            Box::new(PgReplayStore::new(connection.pool(1)?, table.sql()))
        }
        Target::File(path) => Box::new(FileReplayStore::new(path)),
    })
}

#[cfg(test)]
mod tests;
