//! `PostgresSink`: writes records into PostgreSQL tables, configured like Confluent's JDBC
//! sink (`connection.url`, `insert.mode`, `pk.mode`, `auto.create`, ...).
//!
//! * On first use of a table its columns and types are read from `pg_catalog` (cached per
//!   table). Every JSON value is converted to its column's type in Rust; a value that
//!   cannot be converted fails only its own record (a `Data` error in `PutResult::failed`).
//! * Each `put` is one transaction, committed before `put` returns; `flush` has nothing
//!   left to do. Rows go in with one statement per chunk of `batch.size` rows: binary
//!   `COPY` for `insert` (64 rows and more), else
//!   `INSERT INTO t (cols) SELECT u.c1::type, ... FROM unnest($1::int8[], ...) AS u(...)`
//!   (plus `ON CONFLICT (pk) DO UPDATE` for upsert). Values travel in PostgreSQL's binary
//!   format where it means exactly what their text means, else as text (see `cell`);
//!   identifiers are always quoted; casts name types read from the catalog.
//! * When a statement fails on data (SQLSTATE class 21, 22 or 23) its rows are rolled back
//!   to a savepoint and split in halves, recursively, so the good rows land exactly once
//!   (in the same transaction) and each bad row is reported with PostgreSQL's reason.
//! * Connection loss, pool timeouts, serialization failures, deadlocks, shutdowns and lack
//!   of resources are `Retriable`: the whole transaction is rolled back and the runtime puts
//!   the batch again.

mod cell;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, ErrorKind, Payload, Plugin, PluginInfo,
    PluginKind, PutResult, Record, RecordFailure, SinkConnector, SinkTask, SinkTaskContext,
    parse_config, schema_of,
};
use sluice_pg::{
    ConnectOptions, SslMode, classify, describe_db, is_data_error, pool_error, quote_ident,
};
use tokio_postgres::types::{Kind, ToSql, Type};

use cell::{Cell, CellRef, ColumnArray, TypeKind};

/// The sink connector plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresSinkPlugin;

/// The keys of a `PostgresSink` connector (named as in Confluent's JDBC sink).
#[derive(Clone, Deserialize, JsonSchema)]
pub struct PostgresSinkConfig {
    /// The database: `postgres://user@host:port/db?...`, `postgresql://...`,
    /// `jdbc:postgresql://host:port/db?...` (converted; `user`, `password`, `sslmode`,
    /// `ApplicationName`, `currentSchema`, `connectTimeout`, `sslrootcert` are understood;
    /// `ssl=true` means `sslmode=require`) or a libpq `key=value` string. `sslmode` and
    /// `sslrootcert` may be given in the URL's query string.
    #[serde(rename = "connection.url")]
    pub connection_url: String,
    /// The user to connect as (overrides a user in the URL).
    #[serde(rename = "connection.user", default)]
    pub connection_user: Option<String>,
    /// The password (overrides one in the URL). Never logged nor shown in errors.
    #[serde(rename = "connection.password", default)]
    pub connection_password: Option<String>,
    /// TLS, as libpq's `sslmode` (overrides one in the URL): `disable`, `prefer` (the
    /// default: TLS when the server offers it), `require` (TLS, certificate not checked),
    /// `verify-ca` (the certificate must chain to `connection.sslrootcert`, or to the
    /// system's roots when it is not set) or `verify-full` (and must name the host).
    #[serde(rename = "connection.sslmode", default)]
    pub connection_sslmode: Option<SslMode>,
    /// A PEM file of the root certificates that sign the server's certificate (overrides
    /// `sslrootcert` in the URL); `system` means the system's roots. With it, `require`
    /// checks the chain as `verify-ca` does (as libpq).
    #[serde(rename = "connection.sslrootcert", default)]
    pub connection_sslrootcert: Option<String>,
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
            .field("connection.url", &sluice_pg::redact(&self.connection_url))
            .field("connection.user", &self.connection_user)
            .field(
                "connection.password",
                &self.connection_password.as_ref().map(|_| "********"),
            )
            .field("connection.sslmode", &self.connection_sslmode)
            .field("connection.sslrootcert", &self.connection_sslrootcert)
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
        if let Err(problems) = self.connect_options().resolve() {
            issues.extend(problems);
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

    fn connect_options(&self) -> ConnectOptions<'_> {
        ConnectOptions {
            url: &self.connection_url,
            user: self.connection_user.as_deref(),
            password: self.connection_password.as_deref(),
            sslmode: self.connection_sslmode,
            sslrootcert: self.connection_sslrootcert.as_deref(),
            application_name: None,
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

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// The type as SQL, without modifiers (`numeric`, `character varying`), from
    /// `format_type`; the column's own modifiers are checked on assignment.
    cast: String,
    kind: TypeKind,
    /// The type (the base type of a domain) binary COPY is told about.
    oid: u32,
}

impl Column {
    fn pg_type(&self) -> Type {
        Type::from_oid(self.oid)
            .unwrap_or_else(|| Type::new(self.cast.clone(), self.oid, Kind::Simple, String::new()))
    }
}

#[derive(Debug)]
struct TableInfo {
    /// `"schema"."table"` or `"table"`.
    quoted: String,
    display: String,
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
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
// The task
// ---------------------------------------------------------------------------------------

/// One record, its fields picked out, before conversion. Names and values are borrowed
/// from the record (only Kafka coordinates and names from the config are owned).
struct Extracted<'r> {
    index: usize,
    /// The record's table: an index into the put's tables.
    table: usize,
    delete: bool,
    /// Field name → value, primary key fields included.
    fields: Vec<(Cow<'r, str>, Cow<'r, Value>)>,
    pk: Vec<Cow<'r, str>>,
}

/// The columns a row writes: column indices (ascending) and the primary key's columns
/// (in pk order). Consecutive rows with the same columns share one.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    cols: Vec<usize>,
    pk: Vec<usize>,
}

/// One record converted for its table.
struct Row<'a> {
    index: usize,
    table: Arc<TableInfo>,
    delete: bool,
    shape: Arc<Shape>,
    /// The values, in `shape.cols` order.
    vals: Vec<Cell<'a>>,
    /// The primary key values encoded, to keep repeated keys out of one statement.
    key: Option<Vec<u8>>,
}

impl Row<'_> {
    fn same_shape(&self, other: &Row) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
            && self.delete == other.delete
            && (Arc::ptr_eq(&self.shape, &other.shape) || self.shape == other.shape)
    }
}

/// Converts extracted records into rows. What consecutive records of one source share
/// (their field names, hence columns and shape) is looked up once.
#[derive(Default)]
struct RowConverter<'e> {
    table: Option<Arc<TableInfo>>,
    /// The last record's field and primary key names, and the columns they map to.
    names: Vec<&'e str>,
    columns: Vec<Option<usize>>,
    pk_names: Vec<&'e str>,
    pk: Vec<usize>,
    shape: Option<Arc<Shape>>,
    pairs: Vec<(usize, Cell<'e>)>,
}

impl<'e> RowConverter<'e> {
    /// Converts one extracted record to a row of its table.
    fn convert(
        &mut self,
        e: &'e Extracted<'_>,
        table: &Arc<TableInfo>,
    ) -> Result<Row<'e>, ConnectError> {
        let same_table = self.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, table));
        if !same_table {
            self.table = Some(table.clone());
            self.names.clear();
            self.pk_names.clear();
            self.shape = None;
        }
        let same_pk = same_table
            && self.pk_names.len() == e.pk.len()
            && self
                .pk_names
                .iter()
                .zip(&e.pk)
                .all(|(a, b)| *a == b.as_ref());
        if !same_pk {
            self.pk_names.clear();
            self.pk.clear();
            for name in &e.pk {
                let idx = table.by_name.get(name.as_ref()).copied().ok_or_else(|| {
                    ConnectError::data(format!(
                        "primary key field `{name}` has no column in table {}",
                        table.display
                    ))
                })?;
                self.pk_names.push(name);
                self.pk.push(idx);
            }
        }
        let same_names = same_table
            && self.names.len() == e.fields.len()
            && self
                .names
                .iter()
                .zip(&e.fields)
                .all(|(a, (b, _))| *a == b.as_ref());
        if !same_names {
            self.names.clear();
            self.columns.clear();
            for (name, _) in &e.fields {
                self.names.push(name);
                self.columns.push(table.by_name.get(name.as_ref()).copied());
            }
        }
        self.pairs.clear();
        for ((name, value), column) in e.fields.iter().zip(&self.columns) {
            // Fields the table lacks are ignored (auto.evolve adds them).
            let Some(idx) = *column else {
                continue;
            };
            if e.delete && !self.pk.contains(&idx) {
                continue;
            }
            let col = &table.columns[idx];
            let value = cell::cell(col.kind, value).map_err(|m| {
                ConnectError::data(format!(
                    "field `{name}` cannot be written to column \"{}\" ({}) of table {}: {m}",
                    col.name, col.cast, table.display
                ))
            })?;
            if value == Cell::Null && self.pk.contains(&idx) {
                return Err(ConnectError::data(format!(
                    "primary key field `{name}` is null"
                )));
            }
            self.pairs.push((idx, value));
        }
        if self.pairs.is_empty() {
            return Err(ConnectError::data(format!(
                "the record has no field matching a column of table {}",
                table.display
            )));
        }
        self.pairs.sort_unstable_by_key(|(i, _)| *i);
        let key = if self.pk.is_empty() {
            None
        } else {
            let mut k = Vec::new();
            for idx in &self.pk {
                match self.pairs.iter().find(|(i, _)| i == idx) {
                    Some((_, v)) => v.push_key(&mut k),
                    None => Cell::Null.push_key(&mut k),
                }
            }
            Some(k)
        };
        let shape = match &self.shape {
            Some(shape)
                if shape.pk == self.pk
                    && shape.cols.iter().eq(self.pairs.iter().map(|(i, _)| i)) =>
            {
                shape.clone()
            }
            _ => {
                let shape = Arc::new(Shape {
                    cols: self.pairs.iter().map(|(i, _)| *i).collect(),
                    pk: self.pk.clone(),
                });
                self.shape = Some(shape.clone());
                shape
            }
        };
        Ok(Row {
            index: e.index,
            table: table.clone(),
            delete: e.delete,
            shape,
            vals: self.pairs.drain(..).map(|(_, v)| v).collect(),
            key,
        })
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
        let pool = config
            .connect_options()
            .resolve()
            .map_err(|issues| {
                let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
                ConnectError::config(text.join("; "))
            })?
            .pool(config.connection_pool_size as usize)?;
        Ok(PostgresSinkTask {
            whitelist: config.whitelist(),
            config,
            pool,
            tables: HashMap::new(),
            connector: String::new(),
            offsets: None,
        })
    }

    /// Picks out the fields of one record (primary key included), for table `table`.
    fn extract<'r>(
        &self,
        index: usize,
        record: &'r Record,
        table: usize,
    ) -> Result<Option<Extracted<'r>>, ConnectError> {
        type Fields<'r> = Vec<(Cow<'r, str>, Cow<'r, Value>)>;
        let mut fields: Fields<'r> = Vec::new();
        let mut pk: Vec<Cow<'r, str>> = Vec::new();
        let key_fields = |fields: &mut Fields<'r>,
                          pk: &mut Vec<Cow<'r, str>>|
         -> Result<(), ConnectError> {
            match record.key.as_ref() {
                Some(Payload::Json(Value::Object(key))) => {
                    let mut add = |name: &'r String, v: &'r Value| {
                        fields.push((Cow::Borrowed(name.as_str()), Cow::Borrowed(v)));
                        pk.push(Cow::Borrowed(name.as_str()));
                    };
                    if self.config.pk_fields.is_empty() {
                        key.iter().for_each(|(name, v)| add(name, v));
                    } else {
                        for name in &self.config.pk_fields {
                            let (name, v) = key.get_key_value(name).ok_or_else(|| {
                                ConnectError::data(format!("the record key has no field `{name}`"))
                            })?;
                            add(name, v);
                        }
                    }
                    Ok(())
                }
                Some(Payload::Json(Value::Null)) | None => Err(ConnectError::data(
                    "pk.mode=record_key but the record has no key",
                )),
                Some(Payload::Json(v)) => match self.config.pk_fields.as_slice() {
                    [name] => {
                        fields.push((Cow::Owned(name.clone()), Cow::Borrowed(v)));
                        pk.push(Cow::Owned(name.clone()));
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

        fields.reserve(value.len() + 3);
        match self.config.pk_mode {
            PkMode::None => {}
            PkMode::Kafka => {
                let (Some(partition), Some(offset)) = (record.partition, record.offset) else {
                    return Err(ConnectError::data(
                        "pk.mode=kafka but the record has no partition or offset",
                    ));
                };
                let values = [
                    Value::from(record.topic.as_str()),
                    Value::from(partition),
                    Value::from(offset),
                ];
                for (n, v) in values.into_iter().enumerate() {
                    let name = match self.config.pk_fields.get(n) {
                        Some(name) if self.config.pk_fields.len() == 3 => Cow::Owned(name.clone()),
                        _ => Cow::Borrowed(KAFKA_COLUMNS[n]),
                    };
                    fields.push((name.clone(), Cow::Owned(v)));
                    pk.push(name);
                }
            }
            PkMode::RecordKey => key_fields(&mut fields, &mut pk)?,
            PkMode::RecordValue => {
                for name in &self.config.pk_fields {
                    let Some((name, _)) = value.get_key_value(name) else {
                        return Err(ConnectError::data(format!(
                            "the record value has no primary key field `{name}`"
                        )));
                    };
                    pk.push(Cow::Borrowed(name.as_str()));
                }
            }
        }
        // Key fields take precedence over value fields of the same name.
        let from_key = fields.len();
        for (name, v) in value {
            if fields[..from_key].iter().any(|(n, _)| n == name) {
                continue;
            }
            let wanted = self.whitelist.is_empty()
                || self.whitelist.contains(name)
                || (self.config.pk_mode == PkMode::RecordValue && pk.iter().any(|p| p == name));
            if wanted {
                fields.push((Cow::Borrowed(name.as_str()), Cow::Borrowed(v)));
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
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (connector text NOT NULL, \
             topic text NOT NULL, \"partition\" integer NOT NULL, \
             \"offset\" bigint NOT NULL, PRIMARY KEY (connector, topic, \"partition\"))"
        );
        sluice_pg::run_ddl(client, &table, &ddl)
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
                        b.typname::text, b.oid \
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
            let oid: u32 = row.try_get(3).map_err(|e| classify(&ctx, &e))?;
            by_name.insert(name.clone(), columns.len());
            columns.push(Column {
                name,
                cast,
                kind: TypeKind::from_typname(&typname),
                oid,
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
        records: &[&Extracted<'_>],
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
                    match seen.get(name.as_ref()) {
                        Some(&i) => {
                            if order[i].1.is_null() {
                                order[i].1 = v.clone().into_owned();
                            }
                        }
                        None => {
                            seen.insert(name.to_string(), order.len());
                            order.push((name.to_string(), v.clone().into_owned()));
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
            sluice_pg::run_ddl(client, &cache_key, &sql)
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
                sluice_pg::run_ddl(client, &cache_key, &sql)
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
}

/// The statement that writes rows of one shape. Column `p` is bound as its binary array
/// type when `binary[p]`, else as `text[]`; either way the select casts it to the column's
/// type (a no-op for the binary ones, the type's input function for text).
fn build_sql(mode: InsertMode, row: &Row, binary: &[bool]) -> Option<String> {
    let t = &row.table;
    let name = |i: usize| quote_ident(&t.columns[i].name);
    let cast = |pos: usize, i: usize| format!("u.c{pos}::{}", t.columns[i].cast);
    let args: Vec<String> = row
        .shape
        .cols
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            let array = match binary.get(p) {
                Some(true) => t.columns[i].kind.array_type().unwrap_or("text[]"),
                _ => "text[]",
            };
            format!("${}::{array}", p + 1)
        })
        .collect();
    let aliases: Vec<String> = (1..=row.shape.cols.len())
        .map(|p| format!("c{p}"))
        .collect();
    let from = format!("unnest({}) AS u({})", args.join(", "), aliases.join(", "));
    let pos_of = |i: usize| row.shape.cols.iter().position(|c| *c == i).map(|p| p + 1);
    let pk_match = || -> Option<String> {
        let conds: Option<Vec<String>> = row
            .shape
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
        .shape
        .cols
        .iter()
        .enumerate()
        .filter(|(_, i)| !row.shape.pk.contains(i))
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
            let cols: Vec<String> = row.shape.cols.iter().map(|&i| name(i)).collect();
            let sel: Vec<String> = row
                .shape
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
            if mode == InsertMode::Upsert && !row.shape.pk.is_empty() {
                let pk: Vec<String> = row.shape.pk.iter().map(|&i| name(i)).collect();
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
    rows: &[&Row<'_>],
) -> Result<(), tokio_postgres::Error> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let kinds: Vec<TypeKind> = first
        .shape
        .cols
        .iter()
        .map(|&i| first.table.columns[i].kind)
        .collect();
    // Per column: binary when the type has a binary form here and every value has one.
    let binary: Vec<bool> = kinds
        .iter()
        .enumerate()
        .map(|(c, &kind)| {
            kind.array_type().is_some() && rows.iter().all(|r| r.vals[c].has_binary(kind))
        })
        .collect();
    if mode == InsertMode::Insert && !first.delete && rows.len() >= COPY_MIN_ROWS {
        // Binary COPY needs every column in binary; a column of a type we have no binary
        // encoding for (enums, intervals, arrays, ...), or a value whose meaning only the
        // server knows, sends the run as text COPY instead.
        return if BINARY_COPY && binary.iter().all(|b| *b) {
            copy_binary(tx, first, &kinds, rows).await
        } else {
            copy_text(tx, first, &kinds, rows).await
        };
    }
    let Some(sql) = build_sql(mode, first, &binary) else {
        return Ok(());
    };
    let columns: Vec<ColumnArray<'_>> = kinds
        .iter()
        .zip(&binary)
        .enumerate()
        .map(|(c, (&kind, &binary))| ColumnArray {
            kind,
            binary,
            cells: rows.iter().map(|r| &r.vals[c]).collect(),
        })
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> =
        columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    let statement = tx.prepare_cached(&sql).await?;
    tx.execute(&statement, &params).await?;
    Ok(())
}

/// From this many rows of one shape on, `insert` uses COPY instead of INSERT ... unnest.
const COPY_MIN_ROWS: usize = 64;

/// Whether `insert` runs use binary COPY when every value has a binary form (else text
/// COPY). Measured in BENCHMARKS.md (PostgresSink).
const BINARY_COPY: bool = true;

fn copy_sql(first: &Row<'_>, binary: bool) -> String {
    let t = &first.table;
    let cols: Vec<String> = first
        .shape
        .cols
        .iter()
        .map(|&i| quote_ident(&t.columns[i].name))
        .collect();
    let format = if binary { " (FORMAT binary)" } else { "" };
    format!("COPY {} ({}) FROM STDIN{format}", t.quoted, cols.join(", "))
}

/// Writes rows with `COPY table (cols) FROM STDIN (FORMAT binary)`: PostgreSQL stores
/// the values as sent, without parsing text.
async fn copy_binary(
    tx: &deadpool_postgres::Transaction<'_>,
    first: &Row<'_>,
    kinds: &[TypeKind],
    rows: &[&Row<'_>],
) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;

    let types: Vec<Type> = first
        .shape
        .cols
        .iter()
        .map(|&i| first.table.columns[i].pg_type())
        .collect();
    let sink = tx.copy_in(&copy_sql(first, true)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    // Filled before each await and passed as a slice: an iterator adapter with a closure
    // held across the await would make the future not `Send`.
    let mut values: Vec<CellRef<'_>> = Vec::with_capacity(kinds.len());
    for row in rows {
        values.clear();
        values.extend(
            kinds
                .iter()
                .zip(&row.vals)
                .map(|(&kind, cell)| CellRef { kind, cell }),
        );
        writer.as_mut().write_raw(values.iter()).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Writes rows with `COPY table (cols) FROM STDIN` (text format): the values' text forms
/// are what the columns' input functions take, so they only need COPY's escaping.
async fn copy_text(
    tx: &deadpool_postgres::Transaction<'_>,
    first: &Row<'_>,
    kinds: &[TypeKind],
    rows: &[&Row<'_>],
) -> Result<(), tokio_postgres::Error> {
    use bytes::BufMut;
    use futures_util::SinkExt;

    let mut buf = bytes::BytesMut::with_capacity(rows.len() * 64);
    for row in rows {
        for (n, (value, &kind)) in row.vals.iter().zip(kinds).enumerate() {
            if n > 0 {
                buf.put_u8(b'\t');
            }
            match value.text(kind) {
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
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&copy_sql(first, false))
        .await?;
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
    rows: &[Row<'_>],
) -> Result<(), tokio_postgres::Error> {
    let mut run: Vec<&Row> = Vec::new();
    let mut keys: HashSet<&[u8]> = HashSet::new();
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
    rows: &[Row<'_>],
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
        if self.config.exactly_once && !context.durable_offsets {
            // Recognising written records by (topic, partition, offset) needs offsets that
            // mean the same record after a restart; without them it would skip new records.
            return Err(ConnectError::config(
                "exactly.once needs a bus whose offsets survive restarts (Kafka: set \
                 bootstrap.servers in the worker config); the embedded bus starts its offsets \
                 over in every process, and `sluice dlq replay` redelivers records whose \
                 offsets were stored past. Use insert.mode=upsert on a key instead",
            ));
        }
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
        // Tables, in order of first use, and the table of each topic seen.
        let mut tables: Vec<(Option<String>, String)> = Vec::new();
        let mut topics: Vec<(&str, usize)> = Vec::new();
        let mut extracted = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            if self.already_written(record) {
                continue;
            }
            let table = match topics.iter().find(|(t, _)| *t == record.topic) {
                Some((_, table)) => *table,
                None => {
                    let name = table_for(&self.config.table_name_format, &record.topic);
                    let table = match tables.iter().position(|t| *t == name) {
                        Some(at) => at,
                        None => {
                            tables.push(name);
                            tables.len() - 1
                        }
                    };
                    topics.push((&record.topic, table));
                    table
                }
            };
            match self.extract(index, record, table) {
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

        // DDL (auto.create / auto.evolve) happens here, table by table.
        let mut infos: Vec<Arc<TableInfo>> = Vec::with_capacity(tables.len());
        for (at, (schema, table)) in tables.iter().enumerate() {
            let members: Vec<&Extracted<'_>> = extracted.iter().filter(|e| e.table == at).collect();
            infos.push(self.ensure_table(&client, schema, table, &members).await?);
        }

        let mut rows = Vec::with_capacity(extracted.len());
        let mut converter = RowConverter::default();
        for e in &extracted {
            let Some(info) = infos.get(e.table) else {
                continue;
            };
            match converter.convert(e, info) {
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
