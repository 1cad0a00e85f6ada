//! The file store: one JSON line per dead letter, appended, fsynced in `flush`.
//!
//! At start a torn last line (written by a process that died mid-write, so never
//! acknowledged) is cut off, and the ids already in the file are read, so a dead letter
//! redelivered after a restart is not written twice.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Map, Value};
use sluice_api::{ConnectError, PutResult, Record, RecordFailure, SinkTask, SinkTaskContext};
use sluice_line_file::LineFile;
use sluice_line_file::{blocking, lock};

/// Who writes the file, in messages.
const LABEL: &str = "dead-letter sink";

use crate::letter::{DeadLetter, PayloadView};

/// One line of the file. Field names follow the PostgreSQL columns.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    dlq_topic: &'a str,
    dlq_partition: i32,
    dlq_offset: i64,
    record_timestamp: Option<String>,
    original_topic: Option<&'a str>,
    original_partition: Option<i32>,
    original_offset: Option<i64>,
    connector: Option<&'a str>,
    task_id: Option<i32>,
    stage: Option<&'a str>,
    class_name: Option<&'a str>,
    exception_class: Option<&'a str>,
    error_message: Option<&'a str>,
    stacktrace: Option<&'a str>,
    attempts: Option<i32>,
    failed_at: Option<String>,
    key_base64: Option<String>,
    key_text: Option<&'a str>,
    key_json: Option<&'a Value>,
    value_base64: Option<String>,
    value_text: Option<&'a str>,
    value_json: Option<&'a Value>,
    headers: &'a Map<String, Value>,
    stored_at: String,
}

/// Epoch ms as RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn base64_of(view: Option<&PayloadView>) -> Option<String> {
    view.map(|v| STANDARD.encode(&v.bytes))
}

fn render(buf: &mut Vec<u8>, letter: &DeadLetter, now: &str) -> serde_json::Result<()> {
    let key = letter.key.as_ref();
    let value = letter.value.as_ref();
    let line = Line {
        id: &letter.id,
        dlq_topic: &letter.dlq_topic,
        dlq_partition: letter.dlq_partition,
        dlq_offset: letter.dlq_offset,
        record_timestamp: letter.record_timestamp.and_then(rfc3339),
        original_topic: letter.original_topic.as_deref(),
        original_partition: letter.original_partition,
        original_offset: letter.original_offset,
        connector: letter.connector.as_deref(),
        task_id: letter.task_id,
        stage: letter.stage.as_deref(),
        class_name: letter.class_name.as_deref(),
        exception_class: letter.exception_class.as_deref(),
        error_message: letter.error_message.as_deref(),
        stacktrace: letter.stacktrace.as_deref(),
        attempts: letter.attempts,
        failed_at: letter.failed_at.and_then(rfc3339),
        key_base64: base64_of(key),
        key_text: key.and_then(|k| k.text.as_deref()),
        key_json: key.and_then(|k| k.json.as_ref()),
        value_base64: base64_of(value),
        value_text: value.and_then(|v| v.text.as_deref()),
        value_json: value.and_then(|v| v.json.as_ref()),
        headers: &letter.headers,
        stored_at: now.to_string(),
    };
    serde_json::to_writer(&mut *buf, &line)?;
    buf.push(b'\n');
    Ok(())
}

pub struct FileTask {
    path: PathBuf,
    writer: Option<Arc<Mutex<Writer>>>,
}

impl FileTask {
    pub fn new(path: PathBuf) -> FileTask {
        FileTask { path, writer: None }
    }
}

#[async_trait]
impl SinkTask for FileTask {
    async fn start(&mut self, context: SinkTaskContext) -> Result<(), ConnectError> {
        let path = self.path.clone();
        let writer = blocking(LABEL, move || Writer::open(path)).await??;
        tracing::info!(
            connector = %context.connector,
            task = context.task_id,
            file = %self.path.display(),
            known = writer.seen.len(),
            "dead-letter sink: appending dead letters to a file"
        );
        self.writer = Some(Arc::new(Mutex::new(writer)));
        Ok(())
    }

    async fn put(&mut self, records: &[Arc<Record>]) -> Result<PutResult, ConnectError> {
        let mut result = PutResult::default();
        if records.is_empty() {
            return Ok(result);
        }
        let writer = self.writer.clone().ok_or_else(|| {
            ConnectError::fatal("dead-letter sink: the task is not started".to_string())
        })?;
        let now = rfc3339(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        let mut letters = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match DeadLetter::from_record(record) {
                Ok(letter) => letters.push((index, letter)),
                Err(error) => result.failed.push(RecordFailure { index, error }),
            }
        }
        let failed = blocking(
            LABEL,
            move || -> Result<Vec<RecordFailure>, ConnectError> {
                let mut w = lock(LABEL, &writer)?;
                let mut buf = Vec::new();
                let mut ids = Vec::new();
                let mut failed = Vec::new();
                for (index, letter) in &letters {
                    if w.seen.contains(&letter.id) || ids.contains(&&letter.id) {
                        continue;
                    }
                    let start = buf.len();
                    match render(&mut buf, letter, &now) {
                        Ok(()) => ids.push(&letter.id),
                        Err(err) => {
                            buf.truncate(start);
                            failed.push(RecordFailure {
                                index: *index,
                                error: ConnectError::data(format!(
                                    "cannot render dead letter {}: {err}",
                                    letter.id
                                )),
                            });
                        }
                    }
                }
                w.append(&buf)?;
                for id in ids {
                    w.seen.insert(id.clone());
                }
                Ok(failed)
            },
        )
        .await??;
        result.failed.extend(failed);
        result.failed.sort_by_key(|f| f.index);
        Ok(result)
    }

    async fn flush(&mut self) -> Result<(), ConnectError> {
        let Some(writer) = self.writer.clone() else {
            return Ok(());
        };
        blocking(LABEL, move || lock(LABEL, &writer)?.sync()).await?
    }

    async fn stop(&mut self) -> Result<(), ConnectError> {
        let result = self.flush().await;
        self.writer = None;
        result
    }
}

/// The dead-letter file and the ids of the dead letters already in it.
struct Writer {
    file: LineFile,
    seen: HashSet<String>,
}

impl Writer {
    fn open(path: PathBuf) -> Result<Writer, ConnectError> {
        let shown = path.display().to_string();
        let mut file = LineFile::open(path, LABEL)?;
        let seen = read_ids(file.file_mut()).map_err(|err| {
            ConnectError::from_io(
                format!("dead-letter sink {shown}: reading stored ids"),
                &err,
            )
        })?;
        Ok(Writer { file, seen })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), ConnectError> {
        self.file.append(bytes)
    }

    fn sync(&mut self) -> Result<(), ConnectError> {
        self.file.sync()
    }
}

/// The `id` of every line; lines that are not JSON objects with a string id are skipped.
fn read_ids(file: &mut File) -> io::Result<HashSet<String>> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    file.seek(SeekFrom::Start(0))?;
    let mut ids = HashSet::new();
    for line in BufReader::new(&*file).split(b'\n') {
        if let Ok(parsed) = serde_json::from_slice::<IdOnly>(&line?) {
            ids.insert(parsed.id);
        }
    }
    Ok(ids)
}
