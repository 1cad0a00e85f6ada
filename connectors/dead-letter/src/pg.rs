//! The PostgreSQL store: one row per dead letter, idempotent by (dlq topic, partition, offset).

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sluice_api::{ConnectError, PutResult, Record, RecordFailure, SinkTask, SinkTaskContext};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::letter::DeadLetter;

/// A table name, optionally schema-qualified, as quoted identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

/// PostgreSQL truncates identifiers longer than this.
const MAX_IDENTIFIER: usize = 63;

impl TableName {
    /// `table` or `schema.table`; each part non-empty, at most 63 bytes, without NUL.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let check = |part: &str| -> Result<String, String> {
            if part.is_empty() {
                return Err(format!("\"{text}\" has an empty name part"));
            }
            if part.len() > MAX_IDENTIFIER {
                return Err(format!(
                    "\"{part}\" is longer than PostgreSQL's {MAX_IDENTIFIER}-byte identifier limit"
                ));
            }
            if part.contains('\0') {
                return Err("must not contain NUL".to_string());
            }
            Ok(part.to_string())
        };
        match parts.as_slice() {
            [table] => Ok(TableName {
                schema: None,
                table: check(table)?,
            }),
            [schema, table] => Ok(TableName {
                schema: Some(check(schema)?),
                table: check(table)?,
            }),
            _ => Err(format!(
                "\"{text}\" must be a table name or schema.table (names containing dots are not supported)"
            )),
        }
    }

    /// The name as SQL: quoted identifiers.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.table)),
            None => quote(&self.table),
        }
    }

    fn constraint(&self) -> String {
        let mut name = format!("{}_dlq_position_key", self.table);
        while name.len() > MAX_IDENTIFIER {
            name.pop();
        }
        quote(&name)
    }
}

/// A quoted SQL identifier.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Builds the driver config from `connection.url` (`postgres://`, `postgresql://` or
/// `jdbc:postgresql://`) and the optional user and password keys.
pub fn pg_config(
    url: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<tokio_postgres::Config, String> {
    let url = url.trim();
    let url = url.strip_prefix("jdbc:").unwrap_or(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must start with postgres://, postgresql:// or jdbc:postgresql://".to_string());
    }
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|err| format!("is not a valid PostgreSQL URL: {err}"))?;
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        config.user(user);
    }
    if let Some(password) = password {
        config.password(password);
    }
    if config.get_user().is_none() {
        return Err("names no user: set connection.user or put it in the URL".to_string());
    }
    if config.get_dbname().is_none() {
        // Like libpq: the database defaults to the user's name.
        if let Some(user) = config.get_user().map(str::to_string) {
            config.dbname(&user);
        }
    }
    config.application_name("sluice-dead-letter");
    Ok(config)
}

/// How a PostgreSQL error is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection trouble, serialization failure, deadlock: the whole put is retried.
    Retriable,
    /// The table is gone or not ours to write: no record can be stored.
    Fatal,
    /// Something about this one record.
    Record,
}

pub fn classify(err: &tokio_postgres::Error) -> ErrorClass {
    let Some(code) = err.code() else {
        // No SQLSTATE: the connection broke or could not be made.
        return ErrorClass::Retriable;
    };
    let code = code.code();
    if code.starts_with("08")
        || code.starts_with("57P0")
        || code == "40001"
        || code == "40P01"
        || code == "53300"
    {
        ErrorClass::Retriable
    } else if code.starts_with("42") || code == "3F000" || code.starts_with("28") {
        // Undefined table/column, privileges, invalid schema, authentication.
        ErrorClass::Fatal
    } else {
        ErrorClass::Record
    }
}

fn to_connect(context: &str, err: &tokio_postgres::Error) -> ConnectError {
    // The driver's messages never carry the password.
    let message = match err.as_db_error() {
        Some(db) => format!(
            "{context}: {} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => format!("{context}: {err}"),
    };
    match classify(err) {
        ErrorClass::Retriable => ConnectError::retriable(message),
        ErrorClass::Fatal => ConnectError::fatal(message),
        ErrorClass::Record => ConnectError::data(message),
    }
}

fn pool_error(err: deadpool_postgres::PoolError) -> ConnectError {
    match err {
        deadpool_postgres::PoolError::Backend(e) => to_connect("dead-letter sink: connecting", &e),
        other => ConnectError::retriable(format!("dead-letter sink: connecting: {other}")),
    }
}

/// The DDL creating the table (and its schema is created separately when missing).
pub fn create_table_sql(table: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    id                 bigserial PRIMARY KEY,
    dlq_topic          text        NOT NULL,
    dlq_partition      integer     NOT NULL,
    dlq_offset         bigint      NOT NULL,
    record_timestamp   timestamptz,
    original_topic     text,
    original_partition integer,
    original_offset    bigint,
    connector          text,
    task_id            integer,
    stage              text,
    class_name         text,
    exception_class    text,
    error_message      text,
    stacktrace         text,
    attempts           integer,
    failed_at          timestamptz,
    key_bytes          bytea,
    key_text           text,
    key_json           jsonb,
    value_bytes        bytea,
    value_text         text,
    value_json         jsonb,
    headers            jsonb       NOT NULL DEFAULT '{{}}'::jsonb,
    stored_at          timestamptz NOT NULL DEFAULT now(),
    replayed_at        timestamptz,
    CONSTRAINT {constraint} UNIQUE (dlq_topic, dlq_partition, dlq_offset)
)",
        name = table.sql(),
        constraint = table.constraint(),
    )
}

fn insert_sql(table: &TableName) -> String {
    format!(
        "INSERT INTO {} (dlq_topic, dlq_partition, dlq_offset, record_timestamp, \
         original_topic, original_partition, original_offset, connector, task_id, stage, \
         class_name, exception_class, error_message, stacktrace, attempts, failed_at, \
         key_bytes, key_text, key_json, value_bytes, value_text, value_json, headers) \
         VALUES ($1, $2, $3, to_timestamp(($4::bigint)::float8 / 1000.0), $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14, $15, to_timestamp(($16::bigint)::float8 / 1000.0), \
         $17, $18, $19, $20, $21, $22, $23) \
         ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO NOTHING",
        table.sql()
    )
}

pub struct PgTask {
    pool: Pool,
    table: TableName,
    insert: String,
}

impl PgTask {
    pub fn new(config: tokio_postgres::Config, table: TableName) -> Result<PgTask, ConnectError> {
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(2).build().map_err(|err| {
            ConnectError::fatal(format!("dead-letter sink: building the pool: {err}"))
        })?;
        let insert = insert_sql(&table);
        Ok(PgTask {
            pool,
            table,
            insert,
        })
    }

    async fn ensure_table(&self) -> Result<(), ConnectError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        if let Some(schema) = &self.table.schema {
            // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
            // schema exists, so only try it when it is missing.
            let exists = client
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])
                .await
                .map_err(|e| to_connect("dead-letter sink: looking up the schema", &e))?
                .is_some();
            if !exists {
                let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema));
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| to_connect("dead-letter sink: creating the schema", &e))?;
            }
        }
        client
            .batch_execute(&create_table_sql(&self.table))
            .await
            .map_err(|e| to_connect("dead-letter sink: creating the table", &e))?;
        Ok(())
    }
}

#[async_trait]
impl SinkTask for PgTask {
    async fn start(&mut self, context: SinkTaskContext) -> Result<(), ConnectError> {
        self.ensure_table().await?;
        tracing::info!(
            connector = %context.connector,
            task = context.task_id,
            table = %self.table.sql(),
            "dead-letter sink: storing dead letters in PostgreSQL"
        );
        Ok(())
    }

    async fn put(&mut self, records: &[Arc<Record>]) -> Result<PutResult, ConnectError> {
        let mut result = PutResult::default();
        if records.is_empty() {
            return Ok(result);
        }
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&self.insert)
            .await
            .map_err(|e| to_connect("dead-letter sink: preparing the insert", &e))?;
        for (index, record) in records.iter().enumerate() {
            let letter = match DeadLetter::from_record(record) {
                Ok(letter) => letter,
                Err(error) => {
                    result.failed.push(RecordFailure { index, error });
                    continue;
                }
            };
            let headers = serde_json::Value::Object(letter.headers.clone());
            let key = letter.key.as_ref();
            let value = letter.value.as_ref();
            let params: [&(dyn ToSql + Sync); 23] = [
                &letter.dlq_topic,
                &letter.dlq_partition,
                &letter.dlq_offset,
                &letter.record_timestamp,
                &letter.original_topic,
                &letter.original_partition,
                &letter.original_offset,
                &letter.connector,
                &letter.task_id,
                &letter.stage,
                &letter.class_name,
                &letter.exception_class,
                &letter.error_message,
                &letter.stacktrace,
                &letter.attempts,
                &letter.failed_at,
                &key.map(|k| k.bytes.as_slice()),
                &key.and_then(|k| k.text.as_deref()),
                &key.and_then(|k| k.json.as_ref()),
                &value.map(|v| v.bytes.as_slice()),
                &value.and_then(|v| v.text.as_deref()),
                &value.and_then(|v| v.json.as_ref()),
                &headers,
            ];
            if let Err(err) = client.execute(&statement, &params).await {
                let error = to_connect(
                    &format!("dead-letter sink: storing dead letter {}", letter.id),
                    &err,
                );
                match classify(&err) {
                    // Rows already inserted are kept; the retried put skips them.
                    ErrorClass::Retriable | ErrorClass::Fatal => return Err(error),
                    ErrorClass::Record => result.failed.push(RecordFailure { index, error }),
                }
            }
        }
        Ok(result)
    }

    /// Every row is committed when `put` returns, so there is nothing left to flush.
    async fn flush(&mut self) -> Result<(), ConnectError> {
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectError> {
        self.pool.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(
            TableName::parse("dead_letters").unwrap().sql(),
            "\"dead_letters\""
        );
        assert_eq!(
            TableName::parse("ops.Dead\"L").unwrap().sql(),
            "\"ops\".\"Dead\"\"L\""
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse(".b").is_err());
        assert!(TableName::parse(&"x".repeat(64)).is_err());
    }

    #[test]
    fn urls() {
        let c = pg_config("jdbc:postgresql://db:5433/app", Some("u"), Some("secret")).unwrap();
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_dbname(), Some("app"));
        assert_eq!(c.get_ports(), &[5433]);
        assert!(pg_config("mysql://x/y", Some("u"), None).is_err());
        assert!(pg_config("postgres://db/app", None, None).is_err());
        let c = pg_config("postgres://me@db", None, None).unwrap();
        assert_eq!(c.get_dbname(), Some("me"));
    }
}
