//! The PostgreSQL store: one row per dead letter, idempotent by (dlq topic, partition, offset).

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use sluice_api::{
    ConnectError, ErrorKind, PutResult, Record, RecordFailure, SinkTask, SinkTaskContext,
};
use sluice_pg::{classify, pool_error, quote_ident};
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
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        }
    }

    fn constraint(&self) -> String {
        let mut name = format!("{}_dlq_position_key", self.table);
        while name.len() > MAX_IDENTIFIER {
            name.pop();
        }
        quote_ident(&name)
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

/// How many connections a task keeps: one writes, one spare for a recycled connection.
const POOL_SIZE: usize = 2;

fn connecting(err: deadpool_postgres::PoolError) -> ConnectError {
    pool_error(err).context("dead-letter sink")
}

pub struct PgTask {
    pool: Pool,
    table: TableName,
    insert: String,
}

impl PgTask {
    pub fn new(
        connection: &sluice_pg::Connection,
        table: TableName,
    ) -> Result<PgTask, ConnectError> {
        let pool = connection.pool(POOL_SIZE)?;
        let insert = insert_sql(&table);
        Ok(PgTask {
            pool,
            table,
            insert,
        })
    }

    async fn ensure_table(&self) -> Result<(), ConnectError> {
        let client = self.pool.get().await.map_err(connecting)?;
        if let Some(schema) = &self.table.schema {
            // CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
            // schema exists, so only try it when it is missing.
            let exists = client
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])
                .await
                .map_err(|e| classify("dead-letter sink: looking up the schema", &e))?
                .is_some();
            if !exists {
                let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
                sluice_pg::run_ddl(&client, &format!("schema {schema}"), &sql)
                    .await
                    .map_err(|e| classify("dead-letter sink: creating the schema", &e))?;
            }
        }
        sluice_pg::run_ddl(&client, &self.table.sql(), &create_table_sql(&self.table))
            .await
            .map_err(|e| classify("dead-letter sink: creating the table", &e))?;
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
        let client = self.pool.get().await.map_err(connecting)?;
        let statement = client
            .prepare_cached(&self.insert)
            .await
            .map_err(|e| classify("dead-letter sink: preparing the insert", &e))?;
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
                let error = classify(
                    &format!("dead-letter sink: storing dead letter {}", letter.id),
                    &err,
                );
                if error.kind() != ErrorKind::Data {
                    // Rows already inserted are kept; the retried put skips them.
                    return Err(error);
                }
                result.failed.push(RecordFailure { index, error });
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
}
