//! `PostgresSink`: writes records into PostgreSQL tables, configured like Confluent's JDBC
//! sink (`connection.url`, `insert.mode`, `pk.mode`, `auto.create`, ...).
//!
//! * On first use of a table its columns and types are read from `pg_catalog` (cached per
//!   table). Every JSON value is converted to its column's type in Rust; a value that
//!   cannot be converted fails only its own record (a `Data` error in `PutResult::failed`).
//! * Each `put` is one transaction, committed before `put` returns; `flush` has nothing
//!   left to do. Rows go in with one statement per chunk of `batch.size` rows:
//!   `INSERT INTO t (cols) SELECT u.c1::type, ... FROM unnest($1::text[], ...) AS u(...)`
//!   (plus `ON CONFLICT (pk) DO UPDATE` for upsert). Values are always bound parameters;
//!   identifiers are always quoted; casts name types read from the catalog.
//! * When a statement fails on data (SQLSTATE class 21, 22 or 23) its rows are rolled back
//!   to a savepoint and split in halves, recursively, so the good rows land exactly once
//!   (in the same transaction) and each bad row is reported with PostgreSQL's reason.
//! * Connection loss, pool timeouts, serialization failures, deadlocks, shutdowns and lack
//!   of resources are `Retriable`: the whole transaction is rolled back and the runtime puts
//!   the batch again.

mod url;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, ErrorKind, Payload, Plugin, PluginInfo,
    PluginKind, PutResult, Record, RecordFailure, SinkConnector, SinkTask, SinkTaskContext,
    parse_config, schema_of,
};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

pub use url::parse_connection_url;

/// The sink connector plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresSinkPlugin;

/// The keys of a `PostgresSink` connector (named as in Confluent's JDBC sink).
#[derive(Clone, Deserialize, JsonSchema)]
pub struct PostgresSinkConfig {
    /// The database: `postgres://user@host:port/db?...`, `postgresql://...`,
    /// `jdbc:postgresql://host:port/db?...` (converted; `user`, `password`, `sslmode`,
    /// `ApplicationName`, `currentSchema`, `connectTimeout` are understood) or a libpq
    /// `key=value` string. TLS is not supported yet.
    #[serde(rename = "connection.url")]
    pub connection_url: String,
    /// The user to connect as (overrides a user in the URL).
    #[serde(rename = "connection.user", default)]
    pub connection_user: Option<String>,
    /// The password (overrides one in the URL). Never logged nor shown in errors.
    #[serde(rename = "connection.password", default)]
    pub connection_password: Option<String>,
    /// The maximum number of connections each task keeps open.
    #[serde(rename = "connection.pool.size", default = "default_pool_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub connection_pool_size: u32,
    /// The destination table; `${topic}` is replaced by the record's topic. May name a
    /// schema: `schema.table` (split at the first dot).
    #[serde(rename = "table.name.format", default = "default_table_format")]
    pub table_name_format: String,
    /// The maximum number of rows written by one statement. A `put` larger than this is
    /// written in several statements, still in one transaction.
    #[serde(rename = "batch.size", default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// `insert` (plain INSERT), `upsert` (INSERT ... ON CONFLICT (pk) DO UPDATE) or
    /// `update` (UPDATE ... WHERE pk matches; rows that do not exist are not created).
    #[serde(rename = "insert.mode", default)]
    pub insert_mode: InsertMode,
    /// Where the primary key comes from: `none`, `kafka` (`__connect_topic`,
    /// `__connect_partition`, `__connect_offset`), `record_key` or `record_value`.
    #[serde(rename = "pk.mode", default)]
    pub pk_mode: PkMode,
    /// The primary key fields. `record_value`: value fields (required). `record_key`: key
    /// fields (empty = all fields of an object key; a primitive key needs exactly one
    /// name). `kafka`: three column names replacing the `__connect_*` defaults.
    #[serde(rename = "pk.fields", default)]
    pub pk_fields: Vec<String>,
    /// When not empty, only these value fields are written (plus the primary key).
    #[serde(rename = "fields.whitelist", default)]
    pub fields_whitelist: Vec<String>,
    /// The newer name of `fields.whitelist`; both lists are combined.
    #[serde(rename = "fields.include", default)]
    pub fields_include: Vec<String>,
    /// A tombstone (null value) deletes the row with the record key's primary key.
    /// Requires `pk.mode=record_key`. When false, tombstones are skipped.
    #[serde(rename = "delete.enabled", default)]
    pub delete_enabled: bool,
    /// Create a missing table (CREATE TABLE IF NOT EXISTS) from the records' fields.
    #[serde(rename = "auto.create", default)]
    pub auto_create: bool,
    /// Add columns for record fields the table lacks (ALTER TABLE ADD COLUMN; never drops).
    #[serde(rename = "auto.evolve", default)]
    pub auto_evolve: bool,
    /// Store the consumed offsets in a table, in the same transaction as the rows, and
    /// skip records at or below the stored offset of their topic partition: redelivered
    /// records (after a crash) are never written twice, even in `insert` mode.
    #[serde(rename = "exactly.once", default)]
    pub exactly_once: bool,
    /// The table `exactly.once` keeps offsets in (created when missing; may name a schema).
    #[serde(rename = "exactly.once.table", default = "default_offsets_table")]
    pub exactly_once_table: String,
    /// Accepted for JDBC-sink compatibility; retries follow the runtime's retry policy.
    #[serde(rename = "max.retries", default = "default_max_retries")]
    pub max_retries: u32,
    /// Accepted for JDBC-sink compatibility; retries follow the runtime's retry policy.
    #[serde(rename = "retry.backoff.ms", default = "default_retry_backoff")]
    pub retry_backoff_ms: u64,
}

fn default_pool_size() -> u32 {
    2
}
fn default_table_format() -> String {
    "${topic}".to_string()
}
fn default_batch_size() -> u32 {
    3000
}
fn default_offsets_table() -> String {
    "__sluice_sink_offsets".to_string()
}
fn default_max_retries() -> u32 {
    10
}
fn default_retry_backoff() -> u64 {
    3000
}

impl fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("connection.url", &url::redact(&self.connection_url))
            .field("connection.user", &self.connection_user)
            .field(
                "connection.password",
                &self.connection_password.as_ref().map(|_| "********"),
            )
            .field("table.name.format", &self.table_name_format)
            .field("insert.mode", &self.insert_mode)
            .field("pk.mode", &self.pk_mode)
            .field("pk.fields", &self.pk_fields)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InsertMode {
    #[default]
    #[serde(alias = "INSERT")]
    Insert,
    #[serde(alias = "UPSERT")]
    Upsert,
    #[serde(alias = "UPDATE")]
    Update,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PkMode {
    #[default]
    #[serde(alias = "NONE")]
    None,
    #[serde(alias = "KAFKA")]
    Kafka,
    #[serde(alias = "RECORD_KEY")]
    RecordKey,
    #[serde(alias = "RECORD_VALUE")]
    RecordValue,
}

const KAFKA_COLUMNS: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

impl PostgresSinkConfig {
    /// Checks beyond what the schema says.
    fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(message) = parse_connection_url(&self.connection_url) {
            issues.push(ConfigIssue::error("connection.url", message));
        }
        if self.table_name_format.trim().is_empty() {
            issues.push(ConfigIssue::error("table.name.format", "must not be empty"));
        }
        if self.insert_mode != InsertMode::Insert && self.pk_mode == PkMode::None {
            issues.push(ConfigIssue::error(
                "pk.mode",
                "insert.mode upsert and update need a primary key: set pk.mode to kafka, \
                 record_key or record_value",
            ));
        }
        if self.delete_enabled && self.pk_mode != PkMode::RecordKey {
            issues.push(ConfigIssue::error(
                "delete.enabled",
                "requires pk.mode=record_key (a tombstone has only its key)",
            ));
        }
        if self.pk_mode == PkMode::RecordValue && self.pk_fields.is_empty() {
            issues.push(ConfigIssue::error(
                "pk.fields",
                "pk.mode=record_value needs the value fields that form the primary key",
            ));
        }
        if self.pk_mode == PkMode::Kafka && !matches!(self.pk_fields.len(), 0 | 3) {
            issues.push(ConfigIssue::error(
                "pk.fields",
                "pk.mode=kafka takes either no names or exactly three (topic, partition, offset)",
            ));
        }
        issues
    }

    pub fn parse(config: &ConfigMap) -> Result<Self, Vec<ConfigIssue>> {
        let parsed = parse_config::<PostgresSinkConfig>(config)?;
        let issues = parsed.issues();
        if issues.is_empty() {
            Ok(parsed)
        } else {
            Err(issues)
        }
    }

    fn whitelist(&self) -> HashSet<String> {
        self.fields_whitelist
            .iter()
            .chain(&self.fields_include)
            .cloned()
            .collect()
    }
}

impl Plugin for PostgresSinkPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "PostgresSink".to_string(),
            aliases: vec![
                "JdbcSink".to_string(),
                "io.confluent.connect.jdbc.JdbcSinkConnector".to_string(),
            ],
            kind: PluginKind::Sink,
            version: API_VERSION.to_string(),
            description: "Writes records into PostgreSQL tables (insert, upsert, update), \
                          configured like Confluent's JDBC sink."
                .to_string(),
        }
    }

    fn config_schema(&self) -> Value {
        schema_of::<PostgresSinkConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        match PostgresSinkConfig::parse(config) {
            Ok(_) => Vec::new(),
            Err(issues) => issues,
        }
    }
}

impl SinkConnector for PostgresSinkPlugin {
    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SinkTask>, ConnectError> {
        let config = PostgresSinkConfig::parse(task_config).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            ConnectError::config(format!("invalid PostgresSink config: {}", text.join("; ")))
        })?;
        Ok(Box::new(PostgresSinkTask::new(config)?))
    }
}

// ---------------------------------------------------------------------------------------
// Tables and types
// ---------------------------------------------------------------------------------------

/// How a JSON value is converted for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeKind {
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Text,
    Timestamptz,
    Timestamp,
    Date,
    Uuid,
    Json,
    /// Anything else: strings are passed to the type's input function as they are.
    Other,
}

impl TypeKind {
    fn from_typname(name: &str) -> TypeKind {
        match name {
            "int2" => TypeKind::Int2,
            "int4" => TypeKind::Int4,
            "int8" => TypeKind::Int8,
            "numeric" => TypeKind::Numeric,
            "float4" => TypeKind::Float4,
            "float8" => TypeKind::Float8,
            "bool" => TypeKind::Bool,
            "text" | "varchar" | "bpchar" | "name" | "citext" => TypeKind::Text,
            "timestamptz" => TypeKind::Timestamptz,
            "timestamp" => TypeKind::Timestamp,
            "date" => TypeKind::Date,
            "uuid" => TypeKind::Uuid,
            "json" | "jsonb" => TypeKind::Json,
            _ => TypeKind::Other,
        }
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// The type as SQL, without modifiers (`numeric`, `character varying`), from
    /// `format_type`; the column's own modifiers are checked on assignment.
    cast: String,
    kind: TypeKind,
}

#[derive(Debug)]
struct TableInfo {
    /// `"schema"."table"` or `"table"`.
    quoted: String,
    display: String,
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
}

/// Quotes an identifier for SQL (`"` doubled).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table a topic goes to: `(schema, table)`.
fn table_for(format: &str, topic: &str) -> (Option<String>, String) {
    let name = format.replace("${topic}", topic);
    match name.split_once('.') {
        Some((schema, table)) if !schema.is_empty() && !table.is_empty() => {
            (Some(schema.to_string()), table.to_string())
        }
        _ => (None, name),
    }
}

fn quoted_table(schema: &Option<String>, table: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(table)),
        None => quote_ident(table),
    }
}

/// Converts one JSON value to the text PostgreSQL's input function for `kind` accepts.
/// `Ok(None)` is SQL NULL.
fn convert(kind: TypeKind, value: &Value) -> Result<Option<String>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let text = match kind {
        TypeKind::Int2 | TypeKind::Int4 | TypeKind::Int8 => {
            let n = to_i64(value)?;
            let (min, max) = match kind {
                TypeKind::Int2 => (i16::MIN as i64, i16::MAX as i64),
                TypeKind::Int4 => (i32::MIN as i64, i32::MAX as i64),
                _ => (i64::MIN, i64::MAX),
            };
            if n < min || n > max {
                return Err(format!("{n} is out of range for the column type"));
            }
            n.to_string()
        }
        TypeKind::Numeric | TypeKind::Float4 | TypeKind::Float8 => match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) if s.trim().parse::<f64>().is_ok() => s.trim().to_string(),
            other => return Err(format!("expected a number, got {}", describe(other))),
        },
        TypeKind::Bool => match value {
            Value::Bool(b) => b.to_string(),
            Value::Number(n) if n.as_i64() == Some(0) => "false".to_string(),
            Value::Number(n) if n.as_i64() == Some(1) => "true".to_string(),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "on" => "true".to_string(),
                "false" | "f" | "no" | "n" | "0" | "off" => "false".to_string(),
                _ => return Err(format!("expected a boolean, got {}", describe(value))),
            },
            other => return Err(format!("expected a boolean, got {}", describe(other))),
        },
        TypeKind::Text | TypeKind::Other => match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        TypeKind::Json => value.to_string(),
        TypeKind::Uuid => match value {
            Value::String(s) => uuid::Uuid::parse_str(s.trim())
                .map_err(|e| format!("invalid uuid {}: {e}", describe(value)))?
                .hyphenated()
                .to_string(),
            other => return Err(format!("expected a uuid string, got {}", describe(other))),
        },
        TypeKind::Timestamptz | TypeKind::Timestamp | TypeKind::Date => convert_time(kind, value)?,
    };
    if text.contains('\0') {
        return Err("text contains a NUL character, which PostgreSQL cannot store".to_string());
    }
    Ok(Some(text))
}

fn to_i64(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) => Ok(f as i64),
                _ => Err(format!("expected an integer, got {n}")),
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, got {}", describe(value))),
        other => Err(format!("expected an integer, got {}", describe(other))),
    }
}

fn convert_time(kind: TypeKind, value: &Value) -> Result<String, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    match value {
        Value::Number(n) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("expected epoch milliseconds, got {n}"))?;
            let dt = DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| format!("epoch milliseconds {ms} out of range"))?;
            Ok(match kind {
                TypeKind::Date => dt.format("%Y-%m-%d").to_string(),
                TypeKind::Timestamp => dt.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
                _ => dt.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
            })
        }
        Value::String(s) => {
            let t = s.trim();
            let ok = DateTime::parse_from_rfc3339(t).is_ok()
                || DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z").is_ok()
                || DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%#z").is_ok()
                || NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                || NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").is_ok()
                || NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok();
            if ok {
                Ok(t.to_string())
            } else {
                Err(format!(
                    "expected an ISO-8601 date/time or epoch milliseconds, got {}",
                    describe(value)
                ))
            }
        }
        other => Err(format!(
            "expected an ISO-8601 date/time or epoch milliseconds, got {}",
            describe(other)
        )),
    }
}

/// A value for an error message, shortened.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let short: String = text.chars().take(77).collect();
        format!("{short}...")
    } else {
        text
    }
}

/// The column type `auto.create` / `auto.evolve` give a field, from a sample value.
fn sql_type_for(value: &Value) -> &'static str {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => "bigint",
        Value::Number(_) => "double precision",
        Value::Bool(_) => "boolean",
        Value::Object(_) | Value::Array(_) => "jsonb",
        Value::String(_) | Value::Null => "text",
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

fn is_retriable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "57014" | "55P03"
        )
}

fn is_data_code(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23") || code.starts_with("21")
}

/// True when the statement failed because of the rows it was given.
fn is_data_error(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|c| is_data_code(c.code()))
}

/// Classifies a driver error: retriable (connection, resources, conflicts), data, or fatal.
fn classify(context: &str, err: &tokio_postgres::Error) -> ConnectError {
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        let kind = if is_retriable_code(code) {
            ErrorKind::Retriable
        } else if is_data_code(code) {
            ErrorKind::Data
        } else {
            ErrorKind::Fatal
        };
        return ConnectError::new(kind, format!("{context}: {}", describe_db(db)));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    let mut io = false;
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            io = true;
        }
        source = s.source();
    }
    let text = err.to_string();
    let retriable = io
        || err.is_closed()
        || text.starts_with("error connecting")
        || text.starts_with("error communicating")
        || text.starts_with("timeout")
        || text.starts_with("unexpected message");
    let kind = if retriable {
        ErrorKind::Retriable
    } else {
        ErrorKind::Fatal
    };
    ConnectError::new(kind, format!("{context}: {text}"))
}

fn describe_db(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!("{} (SQLSTATE {}", db.message(), db.code().code());
    if let Some(c) = db.column() {
        text.push_str(&format!(", column \"{c}\""));
    }
    if let Some(c) = db.constraint() {
        text.push_str(&format!(", constraint \"{c}\""));
    }
    text.push(')');
    if let Some(d) = db.detail() {
        text.push_str(&format!(": {d}"));
    }
    text
}

fn pool_error(err: PoolError) -> ConnectError {
    match err {
        PoolError::Backend(e) => classify("PostgreSQL connection", &e),
        PoolError::Closed => ConnectError::fatal("PostgreSQL connection pool is closed"),
        PoolError::NoRuntimeSpecified => {
            ConnectError::fatal("PostgreSQL connection pool has no runtime")
        }
        other => ConnectError::retriable(format!("PostgreSQL connection pool: {other}")),
    }
}

// ---------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------

/// One record, its fields picked out, before conversion.
struct Extracted {
    index: usize,
    table: (Option<String>, String),
    delete: bool,
    /// Field name → value, primary key fields included.
    fields: Vec<(String, Value)>,
    pk: Vec<String>,
}

/// One record converted for its table.
struct Row {
    index: usize,
    table: Arc<TableInfo>,
    delete: bool,
    /// Column indices (ascending) and their values as text.
    cols: Vec<usize>,
    vals: Vec<Option<String>>,
    /// Primary key column indices (in pk order).
    pk: Vec<usize>,
    /// The primary key values joined, to keep repeated keys out of one statement.
    key: Option<String>,
}

impl Row {
    fn same_shape(&self, other: &Row) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
            && self.delete == other.delete
            && self.cols == other.cols
            && self.pk == other.pk
    }
}

struct PostgresSinkTask {
    config: PostgresSinkConfig,
    whitelist: HashSet<String>,
    pool: Pool,
    tables: HashMap<String, Arc<TableInfo>>,
    /// The connector name (from `start`), the key of the stored offsets.
    connector: String,
    /// `exactly.once`: the stored offset per (topic, partition), once loaded.
    offsets: Option<HashMap<(String, i32), i64>>,
}

impl PostgresSinkTask {
    fn new(config: PostgresSinkConfig) -> Result<Self, ConnectError> {
        let mut pg = parse_connection_url(&config.connection_url)
            .map_err(|m| ConnectError::config(format!("connection.url: {m}")))?;
        if let Some(user) = &config.connection_user {
            pg.user(user);
        }
        if let Some(password) = &config.connection_password {
            pg.password(password);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.connection_pool_size.max(1) as usize)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(30)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ConnectError::fatal(format!("PostgreSQL connection pool: {e}")))?;
        Ok(PostgresSinkTask {
            whitelist: config.whitelist(),
            config,
            pool,
            tables: HashMap::new(),
            connector: String::new(),
            offsets: None,
        })
    }

    /// Picks out the fields of one record (primary key included).
    fn extract(&self, index: usize, record: &Record) -> Result<Option<Extracted>, ConnectError> {
        let table = table_for(&self.config.table_name_format, &record.topic);
        let mut fields: Vec<(String, Value)> = Vec::new();
        let mut pk: Vec<String> = Vec::new();
        let key_fields = |fields: &mut Vec<(String, Value)>,
                          pk: &mut Vec<String>|
         -> Result<(), ConnectError> {
            match record.key.as_ref() {
                Some(Payload::Json(Value::Object(key))) => {
                    let names: Vec<String> = if self.config.pk_fields.is_empty() {
                        key.keys().cloned().collect()
                    } else {
                        self.config.pk_fields.clone()
                    };
                    for name in names {
                        let v = key.get(&name).cloned().ok_or_else(|| {
                            ConnectError::data(format!("the record key has no field `{name}`"))
                        })?;
                        fields.push((name.clone(), v));
                        pk.push(name);
                    }
                    Ok(())
                }
                Some(Payload::Json(Value::Null)) | None => Err(ConnectError::data(
                    "pk.mode=record_key but the record has no key",
                )),
                Some(Payload::Json(v)) => match self.config.pk_fields.as_slice() {
                    [name] => {
                        fields.push((name.clone(), v.clone()));
                        pk.push(name.clone());
                        Ok(())
                    }
                    _ => Err(ConnectError::data(
                        "the record key is a primitive: pk.fields must name exactly one column",
                    )),
                },
                Some(Payload::Bytes(_)) => Err(ConnectError::data(
                    "the record key is not JSON (raw bytes); pk.mode=record_key needs a JSON key",
                )),
            }
        };

        let value = match record.value.as_ref() {
            None => {
                if !self.config.delete_enabled {
                    return Ok(None);
                }
                key_fields(&mut fields, &mut pk)?;
                return Ok(Some(Extracted {
                    index,
                    table,
                    delete: true,
                    fields,
                    pk,
                }));
            }
            Some(Payload::Bytes(_)) => {
                return Err(ConnectError::data(
                    "the record value is not JSON (raw bytes); PostgresSink needs a JSON object",
                ));
            }
            Some(Payload::Json(Value::Object(map))) => map,
            Some(Payload::Json(other)) => {
                return Err(ConnectError::data(format!(
                    "the record value must be a JSON object, got {}",
                    sluice_api::json_type_name(other)
                )));
            }
        };

        match self.config.pk_mode {
            PkMode::None => {}
            PkMode::Kafka => {
                let names: Vec<String> = if self.config.pk_fields.len() == 3 {
                    self.config.pk_fields.clone()
                } else {
                    KAFKA_COLUMNS.iter().map(|s| s.to_string()).collect()
                };
                let (Some(partition), Some(offset)) = (record.partition, record.offset) else {
                    return Err(ConnectError::data(
                        "pk.mode=kafka but the record has no partition or offset",
                    ));
                };
                let values = [
                    Value::from(record.topic.clone()),
                    Value::from(partition),
                    Value::from(offset),
                ];
                for (name, v) in names.into_iter().zip(values) {
                    fields.push((name.clone(), v));
                    pk.push(name);
                }
            }
            PkMode::RecordKey => key_fields(&mut fields, &mut pk)?,
            PkMode::RecordValue => {
                for name in &self.config.pk_fields {
                    if !value.contains_key(name) {
                        return Err(ConnectError::data(format!(
                            "the record value has no primary key field `{name}`"
                        )));
                    }
                    pk.push(name.clone());
                }
            }
        }
        let taken: HashSet<String> = fields.iter().map(|(n, _)| n.clone()).collect();
        for (name, v) in value {
            if taken.contains(name) {
                continue;
            }
            let wanted = self.whitelist.is_empty()
                || self.whitelist.contains(name)
                || (self.config.pk_mode == PkMode::RecordValue && pk.contains(name));
            if wanted {
                fields.push((name.clone(), v.clone()));
            }
        }
        Ok(Some(Extracted {
            index,
            table,
            delete: false,
            fields,
            pk,
        }))
    }

    /// `exactly.once`: true when the record's offset is at or below the stored one.
    fn already_written(&self, record: &Record) -> bool {
        let (Some(stored), Some(p), Some(o)) = (&self.offsets, record.partition, record.offset)
        else {
            return false;
        };
        stored
            .get(&(record.topic.clone(), p))
            .is_some_and(|&done| o <= done)
    }

    fn offsets_table(&self) -> String {
        let (schema, table) = table_for(&self.config.exactly_once_table, "");
        quoted_table(&schema, &table)
    }

    /// `exactly.once`: creates the offsets table if needed and reads this connector's rows.
    async fn load_offsets(
        &self,
        client: &deadpool_postgres::Client,
    ) -> Result<HashMap<(String, i32), i64>, ConnectError> {
        let table = self.offsets_table();
        let ctx = format!("reading stored offsets from {table}");
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (connector text NOT NULL, \
                 topic text NOT NULL, \"partition\" integer NOT NULL, \
                 \"offset\" bigint NOT NULL, PRIMARY KEY (connector, topic, \"partition\"))"
            ))
            .await
            .map_err(|e| classify(&ctx, &e))?;
        let rows = client
            .query(
                &format!(
                    "SELECT topic, \"partition\", \"offset\" FROM {table} WHERE connector = $1"
                ),
                &[&self.connector],
            )
            .await
            .map_err(|e| classify(&ctx, &e))?;
        let mut offsets = HashMap::new();
        for row in rows {
            let topic: String = row.try_get(0).map_err(|e| classify(&ctx, &e))?;
            let partition: i32 = row.try_get(1).map_err(|e| classify(&ctx, &e))?;
            let offset: i64 = row.try_get(2).map_err(|e| classify(&ctx, &e))?;
            offsets.insert((topic, partition), offset);
        }
        Ok(offsets)
    }

    /// `exactly.once`: records the highest offsets of the batch, in its transaction.
    async fn store_offsets(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        high: &HashMap<(String, i32), i64>,
    ) -> Result<(), ConnectError> {
        if high.is_empty() {
            return Ok(());
        }
        let table = self.offsets_table();
        let topics: Vec<&str> = high.keys().map(|(t, _)| t.as_str()).collect();
        let partitions: Vec<i32> = high.keys().map(|(_, p)| *p).collect();
        let offsets: Vec<i64> = high.values().copied().collect();
        let sql = format!(
            "INSERT INTO {table} AS o (connector, topic, \"partition\", \"offset\") \
             SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::int8[]) \
             ON CONFLICT (connector, topic, \"partition\") \
             DO UPDATE SET \"offset\" = GREATEST(o.\"offset\", EXCLUDED.\"offset\")"
        );
        tx.execute(&sql, &[&self.connector, &topics, &partitions, &offsets])
            .await
            .map_err(|e| classify(&format!("storing offsets in {table}"), &e))?;
        Ok(())
    }

    /// Reads a table's columns; `None` when the table does not exist.
    async fn load_table(
        client: &deadpool_postgres::Client,
        schema: &Option<String>,
        table: &str,
    ) -> Result<Option<TableInfo>, ConnectError> {
        let quoted = quoted_table(schema, table);
        let display = match schema {
            Some(s) => format!("{s}.{table}"),
            None => table.to_string(),
        };
        let ctx = format!("reading the columns of table {display}");
        let exists = client
            .query_one(
                "SELECT pg_catalog.to_regclass($1::text) IS NOT NULL",
                &[&quoted],
            )
            .await
            .map_err(|e| classify(&ctx, &e))?;
        let exists: bool = exists.try_get(0).map_err(|e| classify(&ctx, &e))?;
        if !exists {
            return Ok(None);
        }
        let rows = client
            .query(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL), \
                        b.typname::text \
                 FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                 JOIN pg_catalog.pg_type b ON b.oid = \
                      CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
                 WHERE a.attrelid = pg_catalog.to_regclass($1::text) AND a.attnum > 0 \
                   AND NOT a.attisdropped AND a.attgenerated = '' \
                 ORDER BY a.attnum",
                &[&quoted],
            )
            .await
            .map_err(|e| classify(&ctx, &e))?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut by_name = HashMap::new();
        for row in rows {
            let name: String = row.try_get(0).map_err(|e| classify(&ctx, &e))?;
            let cast: String = row.try_get(1).map_err(|e| classify(&ctx, &e))?;
            let typname: String = row.try_get(2).map_err(|e| classify(&ctx, &e))?;
            by_name.insert(name.clone(), columns.len());
            columns.push(Column {
                name,
                cast,
                kind: TypeKind::from_typname(&typname),
            });
        }
        Ok(Some(TableInfo {
            quoted,
            display,
            columns,
            by_name,
        }))
    }

    /// Makes sure the table exists (auto.create) and has every field's column
    /// (auto.evolve); returns its description. DDL runs outside the batch transaction.
    async fn ensure_table(
        &mut self,
        client: &deadpool_postgres::Client,
        schema: &Option<String>,
        table: &str,
        records: &[&Extracted],
    ) -> Result<Arc<TableInfo>, ConnectError> {
        let cache_key = quoted_table(schema, table);
        let mut info = match self.tables.get(&cache_key) {
            Some(info) => Some(info.clone()),
            None => Self::load_table(client, schema, table).await?.map(Arc::new),
        };
        // A sample value per field, first non-null wins, in first-seen order.
        let samples = || {
            let mut order: Vec<(String, Value)> = Vec::new();
            let mut seen: HashMap<String, usize> = HashMap::new();
            for r in records {
                for (name, v) in &r.fields {
                    match seen.get(name) {
                        Some(&i) => {
                            if order[i].1.is_null() {
                                order[i].1 = v.clone();
                            }
                        }
                        None => {
                            seen.insert(name.clone(), order.len());
                            order.push((name.clone(), v.clone()));
                        }
                    }
                }
            }
            order
        };
        if info.is_none() {
            if !self.config.auto_create {
                return Err(ConnectError::fatal(format!(
                    "table {} does not exist and auto.create is false",
                    cache_key
                )));
            }
            let fields = samples();
            let mut defs: Vec<String> = fields
                .iter()
                .map(|(n, v)| format!("{} {}", quote_ident(n), sql_type_for(v)))
                .collect();
            if let Some(first) = records.iter().find(|r| !r.pk.is_empty()) {
                let pk: Vec<String> = first.pk.iter().map(|n| quote_ident(n)).collect();
                defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
            }
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {cache_key} ({})",
                defs.join(", ")
            );
            tracing::info!(table = %cache_key, "PostgresSink: creating table (auto.create)");
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| classify(&format!("creating table {cache_key}"), &e))?;
            info = Self::load_table(client, schema, table).await?.map(Arc::new);
        } else if self.config.auto_evolve
            && let Some(existing) = &info
        {
            let missing: Vec<(String, Value)> = samples()
                .into_iter()
                .filter(|(n, _)| !existing.by_name.contains_key(n))
                .collect();
            if !missing.is_empty() {
                let adds: Vec<String> = missing
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "ADD COLUMN IF NOT EXISTS {} {}",
                            quote_ident(n),
                            sql_type_for(v)
                        )
                    })
                    .collect();
                let sql = format!("ALTER TABLE {cache_key} {}", adds.join(", "));
                tracing::info!(table = %cache_key, columns = missing.len(),
                    "PostgresSink: adding columns (auto.evolve)");
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| classify(&format!("altering table {cache_key}"), &e))?;
                info = Self::load_table(client, schema, table).await?.map(Arc::new);
            }
        }
        let info = info.ok_or_else(|| {
            ConnectError::fatal(format!(
                "table {cache_key} disappeared while being prepared"
            ))
        })?;
        self.tables.insert(cache_key, info.clone());
        Ok(info)
    }

    /// Converts one extracted record to a row of its table.
    fn convert_row(&self, e: &Extracted, table: &Arc<TableInfo>) -> Result<Row, ConnectError> {
        let mut pairs: Vec<(usize, Option<String>)> = Vec::with_capacity(e.fields.len());
        let mut pk = Vec::with_capacity(e.pk.len());
        for name in &e.pk {
            let idx = table.by_name.get(name).copied().ok_or_else(|| {
                ConnectError::data(format!(
                    "primary key field `{name}` has no column in table {}",
                    table.display
                ))
            })?;
            pk.push(idx);
        }
        for (name, value) in &e.fields {
            let Some(&idx) = table.by_name.get(name) else {
                continue; // Fields the table lacks are ignored (auto.evolve adds them).
            };
            if e.delete && !pk.contains(&idx) {
                continue;
            }
            let col = &table.columns[idx];
            let text = convert(col.kind, value).map_err(|m| {
                ConnectError::data(format!(
                    "field `{name}` cannot be written to column \"{}\" ({}) of table {}: {m}",
                    col.name, col.cast, table.display
                ))
            })?;
            if text.is_none() && pk.contains(&idx) {
                return Err(ConnectError::data(format!(
                    "primary key field `{name}` is null"
                )));
            }
            pairs.push((idx, text));
        }
        if pairs.is_empty() {
            return Err(ConnectError::data(format!(
                "the record has no field matching a column of table {}",
                table.display
            )));
        }
        pairs.sort_by_key(|(i, _)| *i);
        let key = if pk.is_empty() {
            None
        } else {
            let mut k = String::new();
            for idx in &pk {
                if let Some((_, Some(v))) = pairs.iter().find(|(i, _)| i == idx) {
                    k.push_str(v);
                }
                k.push('\0');
            }
            Some(k)
        };
        let (cols, vals) = pairs.into_iter().unzip();
        Ok(Row {
            index: e.index,
            table: table.clone(),
            delete: e.delete,
            cols,
            vals,
            pk,
            key,
        })
    }
}

/// The statement that writes rows of one shape.
fn build_sql(mode: InsertMode, row: &Row) -> Option<String> {
    let t = &row.table;
    let name = |i: usize| quote_ident(&t.columns[i].name);
    let cast = |pos: usize, i: usize| format!("u.c{pos}::{}", t.columns[i].cast);
    let args: Vec<String> = (1..=row.cols.len())
        .map(|p| format!("${p}::text[]"))
        .collect();
    let aliases: Vec<String> = (1..=row.cols.len()).map(|p| format!("c{p}")).collect();
    let from = format!("unnest({}) AS u({})", args.join(", "), aliases.join(", "));
    let pos_of = |i: usize| row.cols.iter().position(|c| *c == i).map(|p| p + 1);
    let pk_match = || -> Option<String> {
        let conds: Option<Vec<String>> = row
            .pk
            .iter()
            .map(|&i| pos_of(i).map(|p| format!("t.{} = {}", name(i), cast(p, i))))
            .collect();
        conds.map(|c| c.join(" AND "))
    };
    if row.delete {
        return Some(format!(
            "DELETE FROM {} AS t USING {from} WHERE {}",
            t.quoted,
            pk_match()?
        ));
    }
    let non_pk: Vec<(usize, usize)> = row
        .cols
        .iter()
        .enumerate()
        .filter(|(_, i)| !row.pk.contains(i))
        .map(|(p, i)| (p + 1, *i))
        .collect();
    match mode {
        InsertMode::Update => {
            if non_pk.is_empty() {
                return None;
            }
            let sets: Vec<String> = non_pk
                .iter()
                .map(|&(p, i)| format!("{} = {}", name(i), cast(p, i)))
                .collect();
            Some(format!(
                "UPDATE {} AS t SET {} FROM {from} WHERE {}",
                t.quoted,
                sets.join(", "),
                pk_match()?
            ))
        }
        InsertMode::Insert | InsertMode::Upsert => {
            let cols: Vec<String> = row.cols.iter().map(|&i| name(i)).collect();
            let sel: Vec<String> = row
                .cols
                .iter()
                .enumerate()
                .map(|(p, &i)| cast(p + 1, i))
                .collect();
            let mut sql = format!(
                "INSERT INTO {} ({}) SELECT {} FROM {from}",
                t.quoted,
                cols.join(", "),
                sel.join(", ")
            );
            if mode == InsertMode::Upsert && !row.pk.is_empty() {
                let pk: Vec<String> = row.pk.iter().map(|&i| name(i)).collect();
                sql.push_str(&format!(" ON CONFLICT ({}) DO ", pk.join(", ")));
                if non_pk.is_empty() {
                    sql.push_str("NOTHING");
                } else {
                    let sets: Vec<String> = non_pk
                        .iter()
                        .map(|&(_, i)| format!("{} = EXCLUDED.{}", name(i), name(i)))
                        .collect();
                    sql.push_str(&format!("UPDATE SET {}", sets.join(", ")));
                }
            }
            Some(sql)
        }
    }
}

/// Writes rows of one shape (and distinct keys) with one statement.
async fn exec_run(
    tx: &deadpool_postgres::Transaction<'_>,
    mode: InsertMode,
    rows: &[&Row],
) -> Result<(), tokio_postgres::Error> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let Some(sql) = build_sql(mode, first) else {
        return Ok(());
    };
    let columns: Vec<Vec<Option<&str>>> = (0..first.cols.len())
        .map(|c| rows.iter().map(|r| r.vals[c].as_deref()).collect())
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> =
        columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    if mode == InsertMode::Insert && !first.delete && rows.len() >= COPY_MIN_ROWS {
        return copy_run(tx, first, rows).await;
    }
    let statement = tx.prepare_cached(&sql).await?;
    tx.execute(&statement, &params).await?;
    Ok(())
}

/// From this many rows of one shape on, `insert` uses COPY instead of INSERT ... unnest.
const COPY_MIN_ROWS: usize = 64;

/// Writes rows with `COPY table (cols) FROM STDIN` (text format): the values are already
/// the text the columns' input functions take, so they only need COPY's escaping.
async fn copy_run(
    tx: &deadpool_postgres::Transaction<'_>,
    first: &Row,
    rows: &[&Row],
) -> Result<(), tokio_postgres::Error> {
    use bytes::BufMut;
    use futures_util::SinkExt;

    let t = &first.table;
    let cols: Vec<String> = first
        .cols
        .iter()
        .map(|&i| quote_ident(&t.columns[i].name))
        .collect();
    let sql = format!("COPY {} ({}) FROM STDIN", t.quoted, cols.join(", "));
    let mut buf = bytes::BytesMut::with_capacity(rows.len() * 64);
    for row in rows {
        for (n, value) in row.vals.iter().enumerate() {
            if n > 0 {
                buf.put_u8(b'\t');
            }
            match value {
                None => buf.put_slice(b"\\N"),
                Some(text) => {
                    for &b in text.as_bytes() {
                        match b {
                            b'\\' => buf.put_slice(b"\\\\"),
                            b'\n' => buf.put_slice(b"\\n"),
                            b'\r' => buf.put_slice(b"\\r"),
                            b'\t' => buf.put_slice(b"\\t"),
                            other => buf.put_u8(other),
                        }
                    }
                }
            }
        }
        buf.put_u8(b'\n');
    }
    let sink = tx.copy_in::<_, bytes::Bytes>(&sql).await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(buf.freeze()).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// Writes a range of rows: consecutive rows of the same shape and distinct keys share a
/// statement.
async fn exec_range(
    tx: &deadpool_postgres::Transaction<'_>,
    mode: InsertMode,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    let mut run: Vec<&Row> = Vec::new();
    let mut keys: HashSet<&str> = HashSet::new();
    for row in rows {
        let repeated = row.key.as_deref().is_some_and(|k| keys.contains(k));
        if run.first().is_some_and(|f| !f.same_shape(row)) || repeated {
            exec_run(tx, mode, &run).await?;
            run.clear();
            keys.clear();
        }
        if let Some(k) = row.key.as_deref() {
            keys.insert(k);
        }
        run.push(row);
    }
    exec_run(tx, mode, &run).await
}

/// Writes all rows in the transaction. A range that fails on data is rolled back to its
/// savepoint and split in halves until each bad row stands alone; those are returned.
async fn write_isolating(
    tx: &deadpool_postgres::Transaction<'_>,
    mode: InsertMode,
    rows: &[Row],
    chunk: usize,
) -> Result<Vec<RecordFailure>, ConnectError> {
    let mut failures = Vec::new();
    let mut stack: Vec<(usize, usize)> = (0..rows.len())
        .step_by(chunk.max(1))
        .map(|a| (a, (a + chunk.max(1)).min(rows.len())))
        .rev()
        .collect();
    let sp = |e: tokio_postgres::Error| classify("PostgreSQL savepoint", &e);
    while let Some((a, b)) = stack.pop() {
        tx.batch_execute("SAVEPOINT sluice_rows")
            .await
            .map_err(sp)?;
        match exec_range(tx, mode, &rows[a..b]).await {
            Ok(()) => tx
                .batch_execute("RELEASE SAVEPOINT sluice_rows")
                .await
                .map_err(sp)?,
            Err(err) if is_data_error(&err) => {
                tx.batch_execute(
                    "ROLLBACK TO SAVEPOINT sluice_rows; RELEASE SAVEPOINT sluice_rows",
                )
                .await
                .map_err(sp)?;
                if b - a == 1 {
                    let row = &rows[a];
                    let reason = err
                        .as_db_error()
                        .map(describe_db)
                        .unwrap_or_else(|| err.to_string());
                    failures.push(RecordFailure {
                        index: row.index,
                        error: ConnectError::data(format!(
                            "PostgreSQL rejected the record for table {}: {reason}",
                            row.table.display
                        )),
                    });
                } else {
                    let mid = a + (b - a) / 2;
                    stack.push((mid, b));
                    stack.push((a, mid));
                }
            }
            Err(err) => {
                return Err(classify(
                    &format!("writing to table {}", rows[a].table.display),
                    &err,
                ));
            }
        }
    }
    Ok(failures)
}

#[async_trait]
impl SinkTask for PostgresSinkTask {
    async fn start(&mut self, context: SinkTaskContext) -> Result<(), ConnectError> {
        self.connector = context.connector;
        self.offsets = None;
        Ok(())
    }

    async fn put(&mut self, records: &[Arc<Record>]) -> Result<PutResult, ConnectError> {
        let mut result = PutResult::default();
        if records.is_empty() {
            return Ok(result);
        }
        let exactly_once = self.config.exactly_once;
        let mut client = None;
        if exactly_once && self.offsets.is_none() {
            let c = self.pool.get().await.map_err(pool_error)?;
            self.offsets = Some(self.load_offsets(&c).await?);
            client = Some(c);
        }
        let mut extracted = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            if self.already_written(record) {
                continue;
            }
            match self.extract(index, record) {
                Ok(Some(e)) => extracted.push(e),
                Ok(None) => {}
                Err(error) => result.failed.push(RecordFailure { index, error }),
            }
        }
        if extracted.is_empty() && !exactly_once {
            return Ok(result);
        }
        let mut client = match client {
            Some(c) => c,
            None => self.pool.get().await.map_err(pool_error)?,
        };

        // Tables, in order of first use; DDL (auto.create / auto.evolve) happens here.
        let mut order: Vec<(Option<String>, String)> = Vec::new();
        for e in &extracted {
            if !order.contains(&e.table) {
                order.push(e.table.clone());
            }
        }
        let mut infos: HashMap<(Option<String>, String), Arc<TableInfo>> = HashMap::new();
        for t in order {
            let members: Vec<&Extracted> = extracted.iter().filter(|e| e.table == t).collect();
            let info = self.ensure_table(&client, &t.0, &t.1, &members).await?;
            infos.insert(t, info);
        }

        let mut rows = Vec::with_capacity(extracted.len());
        for e in &extracted {
            let Some(info) = infos.get(&e.table) else {
                continue;
            };
            match self.convert_row(e, info) {
                Ok(row) => rows.push(row),
                Err(error) => result.failed.push(RecordFailure {
                    index: e.index,
                    error,
                }),
            }
        }

        let tx = client
            .transaction()
            .await
            .map_err(|e| classify("PostgreSQL begin", &e))?;
        let written = write_isolating(
            &tx,
            self.config.insert_mode,
            &rows,
            self.config.batch_size as usize,
        )
        .await;
        let failures = match written {
            Ok(f) => f,
            Err(err) => {
                // The table may have changed under us: read it again next time.
                self.tables.clear();
                return Err(err);
            }
        };
        let mut high: HashMap<(String, i32), i64> = HashMap::new();
        if exactly_once {
            for record in records {
                if let (Some(p), Some(o)) = (record.partition, record.offset) {
                    let e = high.entry((record.topic.clone(), p)).or_insert(o);
                    *e = (*e).max(o);
                }
            }
            self.store_offsets(&tx, &high).await?;
        }
        if let Err(err) = tx.commit().await {
            let e = classify("PostgreSQL commit", &err);
            // A data error at commit (a deferred constraint) cannot be pinned to a record.
            return Err(if e.kind() == ErrorKind::Data {
                ConnectError::fatal(e.message().to_string())
            } else {
                e
            });
        }
        if let Some(stored) = self.offsets.as_mut() {
            for (tp, o) in high {
                let e = stored.entry(tp).or_insert(o);
                *e = (*e).max(o);
            }
        }
        if !failures.is_empty() {
            tracing::warn!(
                failed = failures.len(),
                written = rows.len() - failures.len(),
                "PostgresSink: records rejected by PostgreSQL were isolated"
            );
        }
        result.failed.extend(failures);
        result.failed.sort_by_key(|f| f.index);
        Ok(result)
    }

    async fn flush(&mut self) -> Result<(), ConnectError> {
        // Every put committed its own transaction before returning.
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectError> {
        self.pool.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
