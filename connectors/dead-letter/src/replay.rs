//! Reading dead letters back for `sluice dlq replay`, and marking them replayed.
//!
//! A replay claims the dead letters it selected, redelivers them, then marks the ones
//! that were delivered. In PostgreSQL the claim is a row lock (`FOR UPDATE SKIP LOCKED`)
//! held until the marks are committed, so two replays running at once never deliver the
//! same dead letter twice; a replayed dead letter is never selected again. In a file the
//! marks are appended to `<file>.replayed`, and replays must not run concurrently.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ConnectError, Header, Payload, Record};
use sluice_line_file::{LineFile, blocking};

/// Which dead letters to replay. Every given criterion must hold.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The connector the records failed in.
    pub connector: Option<String>,
    /// Their original topic.
    pub topic: Option<String>,
    /// Failed at or after this time, epoch ms.
    pub since_ms: Option<i64>,
    /// Failed before this time, epoch ms.
    pub until_ms: Option<i64>,
    /// Only these dead letters (the store's ids), when not empty.
    pub ids: Vec<String>,
    /// At most this many, oldest first.
    pub limit: Option<usize>,
}

/// A stored dead letter, with its original record rebuilt as it was on its topic.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    /// The store's id: the row id in PostgreSQL, `<dlq topic>/<partition>/<offset>` in a file.
    pub id: String,
    pub connector: Option<String>,
    /// Why it failed the first time.
    pub error: Option<String>,
    /// `None` when the dead letter does not say which topic the record came from.
    pub original: Option<Record>,
}

#[async_trait]
pub trait ReplayStore: Send {
    /// The dead letters that match and were not replayed yet, oldest first, held until
    /// [`ReplayStore::finish`].
    async fn claim(&mut self, selection: &Selection) -> Result<Vec<StoredLetter>, ConnectError>;
    /// Marks `replayed` (claimed ids) as replayed, durably, and releases the claim.
    async fn finish(&mut self, replayed: &[String]) -> Result<(), ConnectError>;
}

/// The original record of a dead letter, or `None` without an original topic. Keys and
/// values are the raw bytes, which the target connector's converters read as they would
/// from the topic; headers other than the error context come back as they were.
fn original_record(
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Option<Map<String, Value>>,
) -> Option<Record> {
    Some(Record {
        topic: topic?,
        partition,
        offset,
        timestamp,
        key: key.map(Payload::Bytes),
        value: value.map(Payload::Bytes),
        headers: headers
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| Header { key, value })
            .collect(),
    })
}

/// The PostgreSQL store: `table` as the DeadLetterSink creates it.
pub struct PgReplayStore {
    pool: deadpool_postgres::Pool,
    table: String,
    claimed: Option<deadpool_postgres::Object>,
}

impl PgReplayStore {
    /// `table` is the table's SQL name (quoted identifiers).
    pub fn new(pool: deadpool_postgres::Pool, table: String) -> PgReplayStore {
        PgReplayStore {
            pool,
            table,
            claimed: None,
        }
    }
}

fn pg_error(context: &str, err: tokio_postgres::Error) -> ConnectError {
    sluice_pg::classify(&format!("dlq replay: {context}"), &err)
}

#[async_trait]
impl ReplayStore for PgReplayStore {
    async fn claim(&mut self, selection: &Selection) -> Result<Vec<StoredLetter>, ConnectError> {
        let client = self.pool.get().await.map_err(sluice_pg::pool_error)?;
        let ids = selection
            .ids
            .iter()
            .map(|id| {
                id.parse::<i64>().map_err(|_| {
                    ConnectError::config(format!("\"{id}\" is not a dead letter id (a row id)"))
                })
            })
            .collect::<Result<Vec<i64>, _>>()?;
        let limit = selection.limit.map(|l| l.min(i64::MAX as usize) as i64);
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| pg_error("BEGIN", e))?;
        // NULL parameters mean "any": one statement, and no SQL built from the criteria.
        let sql = format!(
            "SELECT id, connector, error_message, original_topic, original_partition, \
             original_offset, (extract(epoch FROM record_timestamp) * 1000)::bigint, \
             key_bytes, value_bytes, headers \
             FROM {} WHERE replayed_at IS NULL \
             AND ($1::text IS NULL OR connector = $1) \
             AND ($2::text IS NULL OR original_topic = $2) \
             AND ($3::bigint IS NULL OR coalesce(failed_at, stored_at) >= to_timestamp($3::float8 / 1000)) \
             AND ($4::bigint IS NULL OR coalesce(failed_at, stored_at) < to_timestamp($4::float8 / 1000)) \
             AND (cardinality($5::bigint[]) = 0 OR id = ANY($5)) \
             ORDER BY id LIMIT $6 FOR UPDATE SKIP LOCKED",
            self.table
        );
        let rows = client
            .query(
                &sql,
                &[
                    &selection.connector,
                    &selection.topic,
                    &selection.since_ms,
                    &selection.until_ms,
                    &ids,
                    &limit,
                ],
            )
            .await
            .map_err(|e| pg_error("selecting dead letters", e))?;
        let letters = rows
            .iter()
            .map(|row| {
                let id: i64 = row.get(0);
                StoredLetter {
                    id: id.to_string(),
                    connector: row.get(1),
                    error: row.get(2),
                    original: original_record(
                        row.get(3),
                        row.get(4),
                        row.get(5),
                        row.get(6),
                        row.get(7),
                        row.get(8),
                        row.get::<_, Option<Value>>(9).and_then(|h| match h {
                            Value::Object(map) => Some(map),
                            _ => None,
                        }),
                    ),
                }
            })
            .collect();
        self.claimed = Some(client);
        Ok(letters)
    }

    async fn finish(&mut self, replayed: &[String]) -> Result<(), ConnectError> {
        let Some(client) = self.claimed.take() else {
            return Ok(());
        };
        let ids: Vec<i64> = replayed.iter().filter_map(|id| id.parse().ok()).collect();
        let sql = format!(
            "UPDATE {} SET replayed_at = now() WHERE id = ANY($1)",
            self.table
        );
        client
            .execute(&sql, &[&ids])
            .await
            .map_err(|e| pg_error("marking dead letters replayed", e))?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error("COMMIT", e))
    }
}

/// The file store: the DeadLetterSink's JSON-lines file, marks in `<file>.replayed`.
pub struct FileReplayStore {
    path: PathBuf,
}

impl FileReplayStore {
    pub fn new(path: PathBuf) -> FileReplayStore {
        FileReplayStore { path }
    }

    fn marks_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".replayed");
        PathBuf::from(name)
    }
}

/// The fields of a dead-letter line a replay needs.
#[derive(Deserialize)]
struct StoredLine {
    id: String,
    original_topic: Option<String>,
    original_partition: Option<i32>,
    original_offset: Option<i64>,
    connector: Option<String>,
    error_message: Option<String>,
    record_timestamp: Option<String>,
    failed_at: Option<String>,
    stored_at: Option<String>,
    key_base64: Option<String>,
    value_base64: Option<String>,
    #[serde(default)]
    headers: Map<String, Value>,
}

fn epoch_ms(text: &Option<String>) -> Option<i64> {
    text.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

fn io_error(path: &Path, context: &str, err: &std::io::Error) -> ConnectError {
    ConnectError::from_io(format!("dlq replay: {context} {}", path.display()), err)
}

fn read_marks(path: &Path) -> Result<HashSet<String>, ConnectError> {
    #[derive(Deserialize)]
    struct Mark {
        id: String,
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(io_error(path, "opening", &e)),
    };
    let mut marks = HashSet::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| io_error(path, "reading", &e))?;
        // A torn last line (a crash mid-append) is not a mark: that letter replays again.
        if let Ok(mark) = serde_json::from_slice::<Mark>(&line) {
            marks.insert(mark.id);
        }
    }
    Ok(marks)
}

fn decode(field: &str, id: &str, text: Option<String>) -> Result<Option<Vec<u8>>, ConnectError> {
    text.map(|t| {
        STANDARD.decode(t).map_err(|e| {
            ConnectError::data(format!("dead letter {id}: {field} is not base64: {e}"))
        })
    })
    .transpose()
}

fn select_from_file(
    path: &Path,
    marks: &HashSet<String>,
    selection: &Selection,
) -> Result<Vec<StoredLetter>, ConnectError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, "opening", &e))?;
    let mut letters = Vec::new();
    let mut seen = HashSet::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| io_error(path, "reading", &e))?;
        let Ok(stored) = serde_json::from_slice::<StoredLine>(&line) else {
            continue;
        };
        if marks.contains(&stored.id) || !seen.insert(stored.id.clone()) {
            continue;
        }
        let failed_at = epoch_ms(&stored.failed_at).or_else(|| epoch_ms(&stored.stored_at));
        let matches = selection
            .connector
            .as_ref()
            .is_none_or(|c| stored.connector.as_ref() == Some(c))
            && selection
                .topic
                .as_ref()
                .is_none_or(|t| stored.original_topic.as_ref() == Some(t))
            && selection
                .since_ms
                .is_none_or(|s| failed_at.is_some_and(|f| f >= s))
            && selection
                .until_ms
                .is_none_or(|u| failed_at.is_some_and(|f| f < u))
            && (selection.ids.is_empty() || selection.ids.contains(&stored.id));
        if !matches {
            continue;
        }
        let key = decode("key_base64", &stored.id, stored.key_base64)?;
        let value = decode("value_base64", &stored.id, stored.value_base64)?;
        letters.push(StoredLetter {
            original: original_record(
                stored.original_topic,
                stored.original_partition,
                stored.original_offset,
                epoch_ms(&stored.record_timestamp),
                key,
                value,
                Some(stored.headers),
            ),
            id: stored.id,
            connector: stored.connector,
            error: stored.error_message,
        });
        if selection.limit.is_some_and(|l| letters.len() >= l) {
            break;
        }
    }
    Ok(letters)
}

#[async_trait]
impl ReplayStore for FileReplayStore {
    async fn claim(&mut self, selection: &Selection) -> Result<Vec<StoredLetter>, ConnectError> {
        let path = self.path.clone();
        let marks_path = self.marks_path();
        let selection = selection.clone();
        blocking("dlq replay", move || {
            let marks = read_marks(&marks_path)?;
            select_from_file(&path, &marks, &selection)
        })
        .await?
    }

    async fn finish(&mut self, replayed: &[String]) -> Result<(), ConnectError> {
        if replayed.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut buf = Vec::new();
        for id in replayed {
            let mark = serde_json::json!({"id": id, "replayed_at": now});
            buf.extend_from_slice(mark.to_string().as_bytes());
            buf.push(b'\n');
        }
        let marks_path = self.marks_path();
        blocking("dlq replay", move || {
            let mut marks = LineFile::open(marks_path, "dlq replay")?;
            marks.append(&buf)?;
            marks.sync()
        })
        .await?
    }
}
