//! `FileSink`: appends records as JSON lines to a file, like Kafka Connect's
//! `FileStreamSink`, and makes them durable (fsync) before the runtime acknowledges them.
//!
//! * `put` renders the whole batch into one reused buffer and appends it with one write.
//! * `flush` calls `sync_data` (fsync) and only then returns `Ok`; the runtime commits the
//!   offsets of the records put so far only after that.
//! * `start` repairs a torn tail: bytes after the last `\n` were written by a process that
//!   died mid-write, so they were never acknowledged and are cut off before appending.
//!
//! All blocking file I/O runs on tokio's blocking pool (`spawn_blocking`).
//!
//! The connector always runs exactly one task, whatever `tasks.max` says: several writers
//! appending to one file would interleave their lines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Header, Payload, Plugin, PluginInfo,
    PluginKind, PutResult, Record, RecordFailure, SinkConnector, SinkTask, SinkTaskContext,
    parse_config, schema_of,
};
use sluice_line_file::LineFile as Writer;
use sluice_line_file::{blocking, lock};

/// Who writes the file, in messages.
const LABEL: &str = "file sink";

/// The sink connector plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSinkPlugin;

/// The keys of a `FileSink` connector. It always runs one task, whatever `tasks.max`
/// says: several writers appending to one file would interleave their lines.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FileSinkConfig {
    /// Path of the file records are appended to, one JSON document per line. The file
    /// and its parent directories are created when missing; an existing file is appended
    /// to (after cutting off a partial last line left by a crash).
    pub file: String,
    /// How each record is written: `value` (the record value as compact JSON, like Kafka
    /// Connect's FileStreamSink) or `envelope` (an object with topic, partition, offset,
    /// timestamp, key, value and headers).
    #[serde(default)]
    pub format: FileSinkFormat,
}

/// What one line of the file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileSinkFormat {
    /// The record value as compact JSON; a tombstone is `null`; bytes that are UTF-8 are
    /// a JSON string, other bytes `{"base64": "..."}`.
    #[default]
    Value,
    /// `{"topic", "partition", "offset", "timestamp", "key", "value", "headers"}`, headers
    /// as an object (the last header with a key wins).
    Envelope,
}

impl FileSinkConfig {
    /// Checks beyond what the schema says.
    fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.file.trim().is_empty() {
            issues.push(ConfigIssue::error("file", "must not be empty"));
        }
        issues
    }

    fn parse(config: &ConfigMap) -> Result<Self, Vec<ConfigIssue>> {
        let parsed = parse_config::<FileSinkConfig>(config)?;
        let issues = parsed.issues();
        if issues.is_empty() {
            Ok(parsed)
        } else {
            Err(issues)
        }
    }
}

impl Plugin for FileSinkPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "FileSink".to_string(),
            aliases: vec![
                "FileStreamSink".to_string(),
                "FileStreamSinkConnector".to_string(),
                "org.apache.kafka.connect.file.FileStreamSinkConnector".to_string(),
            ],
            kind: PluginKind::Sink,
            version: API_VERSION.to_string(),
            description: "Appends records as JSON lines to a file, fsynced before the offsets \
                          are committed (one task)."
                .to_string(),
        }
    }

    fn config_schema(&self) -> serde_json::Value {
        schema_of::<FileSinkConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        // What `validate_config` reports, plus the checks the schema cannot express.
        match FileSinkConfig::parse(config) {
            Ok(_) => Vec::new(),
            Err(issues) => issues,
        }
    }
}

impl SinkConnector for FileSinkPlugin {
    /// Always one task: several writers on one file would interleave their lines.
    fn task_configs(
        &self,
        config: &ConfigMap,
        _max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        Ok(vec![config.clone()])
    }

    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SinkTask>, ConnectError> {
        let config = FileSinkConfig::parse(task_config).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            ConnectError::config(format!("invalid FileSink config: {}", text.join("; ")))
        })?;
        Ok(Box::new(FileSinkTask::new(config)))
    }
}

/// The running task: one file, one writer.
struct FileSinkTask {
    path: PathBuf,
    format: FileSinkFormat,
    writer: Option<Arc<Mutex<Writer>>>,
    /// Reused between batches; lent to the blocking write and handed back.
    buf: Vec<u8>,
}

impl FileSinkTask {
    fn new(config: FileSinkConfig) -> Self {
        FileSinkTask {
            path: PathBuf::from(config.file),
            format: config.format,
            writer: None,
            buf: Vec::new(),
        }
    }

    fn writer(&self) -> Result<Arc<Mutex<Writer>>, ConnectError> {
        self.writer.clone().ok_or_else(|| {
            ConnectError::fatal(format!(
                "file sink {}: the task is not started",
                self.path.display()
            ))
        })
    }
}

#[async_trait]
impl SinkTask for FileSinkTask {
    async fn start(&mut self, _context: SinkTaskContext) -> Result<(), ConnectError> {
        let path = self.path.clone();
        let writer = blocking(LABEL, move || Writer::open(path, LABEL)).await??;
        self.writer = Some(Arc::new(Mutex::new(writer)));
        Ok(())
    }

    async fn put(&mut self, records: &[Arc<Record>]) -> Result<PutResult, ConnectError> {
        if records.is_empty() {
            return Ok(PutResult::default());
        }
        let writer = self.writer()?;
        // The batch is lent, so it is rendered here (CPU only) and the bytes go to the
        // blocking pool.
        let mut buf = std::mem::take(&mut self.buf);
        let result = render_batch(&mut buf, self.format, records);
        let (mut buf, written) = blocking(LABEL, move || {
            let written = lock(LABEL, &writer).and_then(|mut w| w.append(&buf));
            (buf, written)
        })
        .await?;
        if buf.capacity() <= MAX_RETAINED_BUFFER {
            buf.clear();
            self.buf = buf;
        }
        written.map(|()| result)
    }

    async fn flush(&mut self) -> Result<(), ConnectError> {
        // Nothing can have been accepted before `start`, so there is nothing to make durable.
        let Some(writer) = self.writer.clone() else {
            return Ok(());
        };
        blocking(LABEL, move || lock(LABEL, &writer)?.sync()).await?
    }

    async fn stop(&mut self) -> Result<(), ConnectError> {
        let result = self.flush().await;
        // The file is closed when the last reference to the writer goes.
        self.writer = None;
        self.buf = Vec::new();
        result
    }
}

/// Renders every record as one line into `buf` (cleared first). A record that cannot be
/// rendered is left out and reported; with JSON values that does not happen.
fn render_batch(buf: &mut Vec<u8>, format: FileSinkFormat, records: &[Arc<Record>]) -> PutResult {
    let mut result = PutResult::default();
    buf.clear();
    for (index, record) in records.iter().enumerate() {
        let start = buf.len();
        if let Err(err) = render(buf, format, record) {
            buf.truncate(start);
            result.failed.push(RecordFailure {
                index,
                error: ConnectError::data(format!("cannot render record as JSON: {err}")),
            });
        }
    }
    result
}

/// A batch buffer larger than this is not kept between batches.
const MAX_RETAINED_BUFFER: usize = 16 * 1024 * 1024;
/// Appends one line for `record` to `buf`.
fn render(buf: &mut Vec<u8>, format: FileSinkFormat, record: &Record) -> serde_json::Result<()> {
    match format {
        FileSinkFormat::Value => {
            serde_json::to_writer(&mut *buf, &Rendered(record.value.as_ref()))?;
        }
        FileSinkFormat::Envelope => {
            let envelope = Envelope {
                topic: &record.topic,
                partition: record.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: Rendered(record.key.as_ref()),
                value: Rendered(record.value.as_ref()),
                headers: Headers(&record.headers),
            };
            serde_json::to_writer(&mut *buf, &envelope)?;
        }
    }
    buf.push(b'\n');
    Ok(())
}

#[derive(Serialize)]
struct Envelope<'a> {
    topic: &'a str,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp: Option<i64>,
    key: Rendered<'a>,
    value: Rendered<'a>,
    headers: Headers<'a>,
}

/// A key or value as JSON: JSON as is, UTF-8 bytes as a string, other bytes as
/// `{"base64": "..."}`, absent as `null`.
struct Rendered<'a>(Option<&'a Payload>);

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.serialize_none(),
            Some(Payload::Json(v)) => v.serialize(serializer),
            Some(Payload::Bytes(b)) => match std::str::from_utf8(b) {
                Ok(text) => serializer.serialize_str(text),
                Err(_) => {
                    let mut map = serializer.serialize_map(Some(1))?;
                    map.serialize_entry("base64", &Base64(b))?;
                    map.end()
                }
            },
        }
    }
}

/// Standard base64, written straight into the output.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

/// Headers as an object; when a key repeats, the last header with it wins.
struct Headers<'a>(&'a [Header]);

/// Up to this many headers, duplicates are found by scanning instead of hashing.
const HEADER_SCAN_LIMIT: usize = 16;

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let headers = self.0;
        let mut map = serializer.serialize_map(None)?;
        if headers.len() <= HEADER_SCAN_LIMIT {
            for (i, h) in headers.iter().enumerate() {
                if !headers[i + 1..].iter().any(|later| later.key == h.key) {
                    map.serialize_entry(&h.key, &h.value)?;
                }
            }
        } else {
            let last: HashMap<&str, usize> = headers
                .iter()
                .enumerate()
                .map(|(i, h)| (h.key.as_str(), i))
                .collect();
            for (i, h) in headers.iter().enumerate() {
                if last.get(h.key.as_str()) == Some(&i) {
                    map.serialize_entry(&h.key, &h.value)?;
                }
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::{Value, json};
    use std::path::Path;

    fn config(file: &Path, format: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "topics": "t",
            "file": file.to_string_lossy(),
            "format": format,
        }))
        .unwrap()
    }

    fn context() -> SinkTaskContext {
        SinkTaskContext {
            connector: "file".into(),
            task_id: 0,
            durable_offsets: true,
        }
    }

    async fn started(file: &Path, format: &str) -> Box<dyn SinkTask> {
        let mut task = FileSinkPlugin.create_task(&config(file, format)).unwrap();
        task.start(context()).await.unwrap();
        task
    }

    /// Starts a sink, puts `records`, flushes, stops, and returns the file's lines.
    async fn write(file: &Path, format: &str, records: Vec<Record>) -> Vec<String> {
        let mut task = started(file, format).await;
        let records: Vec<Arc<Record>> = records.into_iter().map(Arc::new).collect();
        let result = task.put(&records).await.unwrap();
        assert!(result.failed.is_empty(), "{result:?}");
        task.flush().await.unwrap();
        task.stop().await.unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines().map(str::to_string).collect()
    }

    fn parse_lines(lines: &[String]) -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn bytes_record(value: Vec<u8>) -> Record {
        Record {
            value: Some(Payload::Bytes(value)),
            ..Record::new("t", Value::Null)
        }
    }

    #[tokio::test]
    async fn value_format_writes_compact_json_of_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let values = [
            json!({"a": 1, "b": [true, null, "x\ny"], "c": {"d": 1.5}}),
            json!("a string"),
            json!(42),
            json!(null),
        ];
        let records = values.iter().map(|v| Record::new("t", v.clone())).collect();
        let lines = write(&file, "value", records).await;
        let expected: Vec<String> = values
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        assert_eq!(lines, expected);
        // The embedded newline was escaped, so the record stayed on one line.
        assert_eq!(lines[0], r#"{"a":1,"b":[true,null,"x\ny"],"c":{"d":1.5}}"#);
    }

    #[tokio::test]
    async fn format_defaults_to_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let mut cfg = config(&file, "value");
        cfg.remove("format");
        let mut task = FileSinkPlugin.create_task(&cfg).unwrap();
        task.start(context()).await.unwrap();
        task.put(&[Arc::new(Record::new("t", json!({"k": "v"})))])
            .await
            .unwrap();
        task.flush().await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"k\":\"v\"}\n");
    }

    #[tokio::test]
    async fn envelope_format_carries_all_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let record = Record {
            topic: "orders".into(),
            partition: Some(3),
            offset: Some(1234),
            timestamp: Some(1_700_000_000_000),
            key: Some(Payload::Json(json!({"id": 7}))),
            value: Some(Payload::Json(json!({"total": 9.5}))),
            headers: vec![
                Header::new("trace", "abc"),
                Header::new("n", 1),
                Header::new("trace", "def"),
            ],
        };
        let bare = Record {
            key: None,
            value: None,
            ..Record::new("other", Value::Null)
        };
        let lines = write(&file, "envelope", vec![record, bare]).await;
        let parsed = parse_lines(&lines);
        assert_eq!(
            parsed[0],
            json!({
                "topic": "orders",
                "partition": 3,
                "offset": 1234,
                "timestamp": 1_700_000_000_000i64,
                "key": {"id": 7},
                "value": {"total": 9.5},
                "headers": {"n": 1, "trace": "def"},
            })
        );
        // Last header wins, and each key appears once in the text.
        assert_eq!(lines[0].matches("\"trace\"").count(), 1, "{}", lines[0]);
        assert_eq!(
            parsed[1],
            json!({
                "topic": "other", "partition": null, "offset": null, "timestamp": null,
                "key": null, "value": null, "headers": {},
            })
        );
    }

    #[tokio::test]
    async fn many_duplicate_headers_keep_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let mut record = Record::new("t", json!(1));
        for i in 0..40 {
            record.headers.push(Header::new(format!("h{}", i % 5), i));
        }
        let lines = write(&file, "envelope", vec![record]).await;
        let parsed = parse_lines(&lines);
        assert_eq!(
            parsed[0]["headers"],
            json!({"h0": 35, "h1": 36, "h2": 37, "h3": 38, "h4": 39})
        );
    }

    #[tokio::test]
    async fn bytes_render_as_string_or_base64() {
        let invalid = vec![0xff, 0x00, 0xfe, b'\n', 0x80];
        for format in ["value", "envelope"] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("out.jsonl");
            let mut keyed = bytes_record(invalid.clone());
            keyed.key = Some(Payload::Bytes(b"k\"1".to_vec()));
            let records = vec![bytes_record("héllo\nworld".as_bytes().to_vec()), keyed];
            let lines = write(&file, format, records).await;
            assert_eq!(lines.len(), 2, "{lines:?}");
            let parsed = parse_lines(&lines);
            let value = |i: usize| match format {
                "value" => parsed[i].clone(),
                _ => parsed[i]["value"].clone(),
            };
            assert_eq!(value(0), json!("héllo\nworld"));
            let encoded = value(1)["base64"].as_str().unwrap().to_string();
            assert_eq!(value(1).as_object().unwrap().len(), 1);
            assert_eq!(STANDARD.decode(encoded).unwrap(), invalid);
            if format == "envelope" {
                assert_eq!(parsed[1]["key"], json!("k\"1"));
            }
        }
    }

    #[tokio::test]
    async fn tombstone_is_null() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let tombstone = Record {
            key: Some(Payload::Json(json!("k"))),
            value: None,
            ..Record::new("t", Value::Null)
        };
        let lines = write(&file, "value", vec![tombstone.clone()]).await;
        assert_eq!(lines, vec!["null".to_string()]);
        let file = dir.path().join("env.jsonl");
        let lines = write(&file, "envelope", vec![tombstone]).await;
        let parsed = parse_lines(&lines);
        assert_eq!(parsed[0]["value"], Value::Null);
        assert!(parsed[0].as_object().unwrap().contains_key("value"));
        assert_eq!(parsed[0]["key"], json!("k"));
    }

    #[tokio::test]
    async fn torn_tail_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        std::fs::write(&file, "a\n{\"x\":").unwrap();
        write(&file, "value", vec![Record::new("t", json!({"y": 2}))]).await;
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a\n{\"y\":2}\n");
    }

    #[tokio::test]
    async fn torn_only_line_is_truncated_to_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        // Longer than one scan chunk, with no newline at all.
        std::fs::write(&file, "x".repeat(200_000)).unwrap();
        write(&file, "value", vec![Record::new("t", json!(1))]).await;
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1\n");
    }

    #[tokio::test]
    async fn torn_tail_after_a_long_last_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let kept = format!("\"{}\"\n", "a".repeat(100_000));
        std::fs::write(&file, format!("{kept}{}", "b".repeat(150_000))).unwrap();
        write(&file, "value", vec![Record::new("t", json!(2))]).await;
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{kept}2\n")
        );
    }

    #[tokio::test]
    async fn appending_keeps_earlier_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        write(&file, "value", vec![Record::new("t", json!(1))]).await;
        let lines = write(&file, "value", vec![Record::new("t", json!(2))]).await;
        assert_eq!(lines, vec!["1", "2"]);
    }

    #[tokio::test]
    async fn parent_directories_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a").join("b").join("c").join("out.jsonl");
        let lines = write(&file, "value", vec![Record::new("t", json!("x"))]).await;
        assert_eq!(lines, vec!["\"x\""]);
    }

    #[tokio::test]
    async fn batches_accumulate_across_puts_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let mut task = started(&file, "value").await;
        task.put(&[
            Arc::new(Record::new("t", json!(1))),
            Arc::new(Record::new("t", json!(2))),
        ])
        .await
        .unwrap();
        task.flush().await.unwrap();
        task.put(&[]).await.unwrap();
        task.flush().await.unwrap();
        task.put(&[Arc::new(Record::new("t", json!(3)))])
            .await
            .unwrap();
        task.stop().await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1\n2\n3\n");
    }

    #[tokio::test]
    async fn put_before_start_is_an_error_and_flush_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let mut task = FileSinkPlugin.create_task(&config(&file, "value")).unwrap();
        task.flush().await.unwrap();
        let err = task
            .put(&[Arc::new(Record::new("t", json!(1)))])
            .await
            .unwrap_err();
        assert!(err.message().contains("not started"), "{err}");
        task.stop().await.unwrap();
    }

    #[tokio::test]
    async fn opening_a_directory_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = FileSinkPlugin
            .create_task(&config(dir.path(), "value"))
            .unwrap();
        let err = task.start(context()).await.unwrap_err();
        assert!(
            err.message().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn one_task_whatever_tasks_max() {
        let cfg = config(Path::new("/tmp/x"), "value");
        let tasks = FileSinkPlugin.task_configs(&cfg, 4).unwrap();
        assert_eq!(tasks, vec![cfg.clone()]);
        assert_eq!(FileSinkPlugin.task_configs(&cfg, 1).unwrap().len(), 1);
    }

    #[test]
    fn validation_names_the_file_key() {
        let mut cfg = config(Path::new("x"), "value");
        cfg.remove("file");
        let issues = FileSinkPlugin.validate(&cfg);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key.as_deref(), Some("file"));

        cfg.insert("file".into(), json!("  "));
        let issues = FileSinkPlugin.validate(&cfg);
        assert_eq!(issues[0].key.as_deref(), Some("file"));
        assert!(issues[0].message.contains("empty"), "{issues:?}");
        assert!(FileSinkPlugin.create_task(&cfg).is_err());

        let issues = FileSinkPlugin.validate(&config(Path::new("x"), "xml"));
        assert_eq!(issues[0].key.as_deref(), Some("format"), "{issues:?}");

        assert!(
            FileSinkPlugin
                .validate(&config(Path::new("x"), "envelope"))
                .is_empty()
        );
    }

    #[test]
    fn info_lists_kafka_connect_names() {
        let info = FileSinkPlugin.info();
        assert_eq!(info.class, "FileSink");
        assert_eq!(info.kind, PluginKind::Sink);
        assert_eq!(info.version, API_VERSION);
        for alias in [
            "FileStreamSink",
            "FileStreamSinkConnector",
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
        ] {
            assert!(info.aliases.iter().any(|a| a == alias), "{alias}");
        }
    }

    #[test]
    fn schema_describes_the_keys() {
        let schema = FileSinkPlugin.config_schema();
        let props = &schema["properties"];
        assert!(
            props["file"]["description"]
                .as_str()
                .unwrap()
                .contains("appended")
        );
        assert!(props["format"]["description"].is_string(), "{schema:#}");
        assert_eq!(props["format"]["default"], json!("value"));
        assert_eq!(schema["required"], json!(["file"]));
    }

    /// Polls a future once; without a tokio runtime the sink does its I/O inline, so
    /// every call completes on the first poll.
    fn now<T>(fut: impl std::future::Future<Output = T>) -> T {
        use std::task::{Context, Poll, Waker};
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("did not complete inline"),
        }
    }

    #[test]
    fn works_without_a_tokio_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let mut task = FileSinkPlugin.create_task(&config(&file, "value")).unwrap();
        now(task.start(context())).unwrap();
        now(task.put(&[Arc::new(Record::new("t", json!(5)))])).unwrap();
        now(task.flush()).unwrap();
        now(task.stop()).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "5\n");
    }

    #[tokio::test]
    async fn a_large_batch_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        let records: Vec<Record> = (0..100_000)
            .map(|i| {
                let mut r = Record::new("t", json!({"i": i, "name": "record", "ok": true}));
                r.offset = Some(i);
                r.partition = Some(0);
                r.headers.push(Header::new("h", "v"));
                r
            })
            .collect();
        let started_at = std::time::Instant::now();
        let lines = write(&file, "envelope", records).await;
        let elapsed = started_at.elapsed();
        assert_eq!(lines.len(), 100_000);
        let last: Value = serde_json::from_str(&lines[99_999]).unwrap();
        assert_eq!(last["offset"], json!(99_999));
        assert_eq!(last["value"]["i"], json!(99_999));
        eprintln!("100000 envelope records written and fsynced in {elapsed:?}");
    }
}
