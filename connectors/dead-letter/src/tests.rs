//! Tests against a real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each in its own schema, and a real file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_api::{Header, Payload, Record, SinkTaskContext};

use super::*;
use crate::letter::*;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn map(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

fn context() -> SinkTaskContext {
    SinkTaskContext {
        connector: "dlq-sink".into(),
        task_id: 0,
        durable_offsets: true,
    }
}

/// A schema of its own for one test, dropped by `drop_schema`.
struct TestDb {
    client: tokio_postgres::Client,
    schema: String,
}

impl TestDb {
    async fn new() -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "dlt_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        TestDb { client, schema }
    }

    fn table(&self) -> String {
        format!("{}.dead_letters", self.schema)
    }

    fn config(&self) -> ConfigMap {
        map(json!({
            "connector.class": "DeadLetterSink",
            "topics": "dlq",
            "store": "postgres",
            "connection.url": database_url(),
            "table": self.table(),
        }))
    }

    async fn rows(&self) -> Vec<tokio_postgres::Row> {
        self.client
            .query(
                &format!(
                    "SELECT *, extract(epoch from failed_at)::float8 * 1000 AS failed_ms \
                     FROM {} ORDER BY id",
                    sluice_pg::quote_ident(&self.schema) + ".dead_letters"
                ),
                &[],
            )
            .await
            .unwrap()
    }

    async fn drop_schema(self) {
        self.client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                sluice_pg::quote_ident(&self.schema)
            ))
            .await
            .unwrap();
    }
}

fn full_headers(record: &mut Record) {
    let h = |k: &str, v: &str| Header::new(k, Value::String(v.to_string()));
    record.headers.extend([
        Header::new("trace", "abc"),
        h(H_TOPIC, "orders"),
        h(H_PARTITION, "2"),
        h(H_OFFSET, "41"),
        h(H_CONNECTOR, "orders-sink"),
        h(H_TASK, "3"),
        h(H_STAGE, "VALUE_CONVERTER"),
        h(H_CLASS, "org.apache.kafka.connect.json.JsonConverter"),
        h(
            H_EXCEPTION_CLASS,
            "org.apache.kafka.connect.errors.DataException",
        ),
        h(H_MESSAGE, "value is not JSON"),
        h(H_STACKTRACE, "DataException: value is not JSON\n\tat stage"),
        h(H_ATTEMPTS, "1"),
        h(H_TIMESTAMP, "1700000000123"),
    ]);
}

fn dead_letter(offset: i64, value: Payload) -> Record {
    let mut record = Record::new("dlq", Value::Null);
    record.partition = Some(0);
    record.offset = Some(offset);
    record.timestamp = Some(1_700_000_000_000);
    record.key = Some(Payload::Bytes(b"order-7".to_vec()));
    record.value = Some(value);
    full_headers(&mut record);
    record
}

const NOT_JSON: &[u8] = &[b'{', 0xff, 0x00, b'x', 0x80, b'\n'];

async fn put_all(task: &mut Box<dyn SinkTask>, records: Vec<Record>) {
    let records: Vec<Arc<Record>> = records.into_iter().map(Arc::new).collect();
    let result = task.put(&records).await.unwrap();
    assert!(result.failed.is_empty(), "{result:?}");
    task.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stores_full_context_and_raw_bytes() {
    let db = TestDb::new().await;
    let mut task = DeadLetterSinkPlugin.create_task(&db.config()).unwrap();
    task.start(context()).await.unwrap();
    put_all(
        &mut task,
        vec![dead_letter(5, Payload::Bytes(NOT_JSON.to_vec()))],
    )
    .await;
    task.stop().await.unwrap();

    let rows = db.rows().await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.get::<_, String>("dlq_topic"), "dlq");
    assert_eq!(r.get::<_, i32>("dlq_partition"), 0);
    assert_eq!(r.get::<_, i64>("dlq_offset"), 5);
    assert_eq!(
        r.get::<_, Option<String>>("original_topic").as_deref(),
        Some("orders")
    );
    assert_eq!(r.get::<_, Option<i32>>("original_partition"), Some(2));
    assert_eq!(r.get::<_, Option<i64>>("original_offset"), Some(41));
    assert_eq!(
        r.get::<_, Option<String>>("connector").as_deref(),
        Some("orders-sink")
    );
    assert_eq!(r.get::<_, Option<i32>>("task_id"), Some(3));
    assert_eq!(
        r.get::<_, Option<String>>("stage").as_deref(),
        Some("VALUE_CONVERTER")
    );
    assert_eq!(
        r.get::<_, Option<String>>("class_name").as_deref(),
        Some("org.apache.kafka.connect.json.JsonConverter")
    );
    assert_eq!(
        r.get::<_, Option<String>>("exception_class").as_deref(),
        Some("org.apache.kafka.connect.errors.DataException")
    );
    assert_eq!(
        r.get::<_, Option<String>>("error_message").as_deref(),
        Some("value is not JSON")
    );
    assert!(
        r.get::<_, Option<String>>("stacktrace")
            .unwrap()
            .contains("\tat stage")
    );
    assert_eq!(r.get::<_, Option<i32>>("attempts"), Some(1));
    assert_eq!(
        r.get::<_, Option<f64>>("failed_ms"),
        Some(1_700_000_000_123.0)
    );
    assert_eq!(
        r.get::<_, Option<Vec<u8>>>("value_bytes").unwrap(),
        NOT_JSON
    );
    assert_eq!(r.get::<_, Option<String>>("value_text"), None);
    assert_eq!(r.get::<_, Option<Value>>("value_json"), None);
    assert_eq!(
        r.get::<_, Option<Vec<u8>>>("key_bytes").unwrap(),
        b"order-7"
    );
    assert_eq!(
        r.get::<_, Option<String>>("key_text").as_deref(),
        Some("order-7")
    );
    assert_eq!(r.get::<_, Value>("headers"), json!({"trace": "abc"}));
    assert_eq!(
        r.get::<_, Option<std::time::SystemTime>>("replayed_at"),
        None
    );
    assert!(r.get::<_, i64>("id") > 0);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_json_value_gets_jsonb_view_and_redelivery_does_not_duplicate() {
    let db = TestDb::new().await;
    let mut task = DeadLetterSinkPlugin.create_task(&db.config()).unwrap();
    task.start(context()).await.unwrap();
    let json_bytes = dead_letter(1, Payload::Bytes(br#"{"total": 9.5}"#.to_vec()));
    let json_value = dead_letter(2, Payload::Json(json!({"items": [1, 2]})));
    put_all(&mut task, vec![json_bytes.clone(), json_value.clone()]).await;
    // Redelivered (same position), also by a freshly started task.
    put_all(&mut task, vec![json_bytes.clone()]).await;
    task.stop().await.unwrap();
    let mut again = DeadLetterSinkPlugin.create_task(&db.config()).unwrap();
    again.start(context()).await.unwrap();
    put_all(&mut again, vec![json_value, json_bytes]).await;
    again.stop().await.unwrap();

    let rows = db.rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].get::<_, Option<Value>>("value_json"),
        Some(json!({"total": 9.5}))
    );
    assert_eq!(
        rows[0].get::<_, Option<String>>("value_text").as_deref(),
        Some(r#"{"total": 9.5}"#)
    );
    assert_eq!(
        rows[1].get::<_, Option<Value>>("value_json"),
        Some(json!({"items": [1, 2]}))
    );
    assert_eq!(
        rows[1].get::<_, Option<Vec<u8>>>("value_bytes").unwrap(),
        br#"{"items":[1,2]}"#
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_missing_headers_are_nulls() {
    let db = TestDb::new().await;
    let mut task = DeadLetterSinkPlugin.create_task(&db.config()).unwrap();
    task.start(context()).await.unwrap();
    let mut record = Record::new("dlq", Value::Null);
    record.partition = Some(1);
    record.offset = Some(0);
    record.value = None;
    put_all(&mut task, vec![record]).await;
    task.stop().await.unwrap();

    let rows = db.rows().await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    for col in [
        "original_topic",
        "connector",
        "stage",
        "class_name",
        "exception_class",
        "error_message",
        "stacktrace",
    ] {
        assert_eq!(r.get::<_, Option<String>>(col), None, "{col}");
    }
    assert_eq!(r.get::<_, Option<i32>>("original_partition"), None);
    assert_eq!(r.get::<_, Option<i64>>("original_offset"), None);
    assert_eq!(r.get::<_, Option<i32>>("attempts"), None);
    assert_eq!(r.get::<_, Option<f64>>("failed_ms"), None);
    assert_eq!(r.get::<_, Option<Vec<u8>>>("value_bytes"), None);
    assert_eq!(r.get::<_, Option<Vec<u8>>>("key_bytes"), None);
    assert_eq!(r.get::<_, Value>("headers"), json!({}));
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_unreachable_is_retriable() {
    let config = map(json!({
        "store": "postgres",
        "connection.url": "postgres://postgres@127.0.0.1:1/test",
        "connection.password": "hunter2",
    }));
    let mut task = DeadLetterSinkPlugin.create_task(&config).unwrap();
    let err = task.start(context()).await.unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    assert!(!err.message().contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn file_store_writes_lines_and_repairs_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("dlq.jsonl");
    let config = map(json!({"store": "file", "file": path.to_string_lossy()}));

    let mut task = DeadLetterSinkPlugin.create_task(&config).unwrap();
    task.start(context()).await.unwrap();
    let first = dead_letter(5, Payload::Bytes(NOT_JSON.to_vec()));
    let second = dead_letter(6, Payload::Bytes(b"[1,2]".to_vec()));
    put_all(&mut task, vec![first.clone(), second]).await;
    task.stop().await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let l = &lines[0];
    assert_eq!(l["id"], json!("dlq/0/5"));
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(l["value_base64"].as_str().unwrap())
            .unwrap(),
        NOT_JSON
    );
    assert_eq!(l["value_text"], Value::Null);
    assert_eq!(l["original_offset"], json!(41));
    assert_eq!(l["stage"], json!("VALUE_CONVERTER"));
    assert_eq!(l["error_message"], json!("value is not JSON"));
    assert_eq!(l["failed_at"], json!("2023-11-14T22:13:20.123Z"));
    assert_eq!(l["headers"], json!({"trace": "abc"}));
    assert_eq!(lines[1]["value_json"], json!([1, 2]));

    // A torn last line (a writer killed mid-write) is cut off at the next start, and a
    // redelivered dead letter is not appended again.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"id\":\"dlq/0/7\",\"dlq_to").unwrap();
    }
    let mut task = DeadLetterSinkPlugin.create_task(&config).unwrap();
    task.start(context()).await.unwrap();
    put_all(
        &mut task,
        vec![first, dead_letter(7, Payload::Bytes(b"x".to_vec()))],
    )
    .await;
    task.stop().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["dlq/0/5", "dlq/0/6", "dlq/0/7"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_without_position_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dlq.jsonl");
    let config = map(json!({"store": "file", "file": path.to_string_lossy()}));
    let mut task = DeadLetterSinkPlugin.create_task(&config).unwrap();
    task.start(context()).await.unwrap();
    let records = vec![
        Arc::new(Record::new("dlq", json!(1))),
        Arc::new(dead_letter(0, Payload::Json(json!(2)))),
    ];
    let result = task.put(&records).await.unwrap();
    assert_eq!(result.failed.len(), 1);
    assert_eq!(result.failed[0].index, 0);
    task.flush().await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
}

fn issue_keys(config: Value) -> Vec<(String, sluice_api::Severity)> {
    DeadLetterSinkPlugin
        .validate(&map(config))
        .into_iter()
        .map(|i| (i.key.unwrap_or_default(), i.severity))
        .collect()
}

#[test]
fn validation_names_keys() {
    use sluice_api::Severity::{Error, Warning};
    assert_eq!(issue_keys(json!({})), [("store".to_string(), Error)]);
    assert_eq!(
        issue_keys(json!({"store": "postgres"})),
        [("connection.url".to_string(), Error)]
    );
    assert_eq!(
        issue_keys(json!({"store": "postgres", "connection.url": "mysql://x/y"})),
        [("connection.url".to_string(), Error)]
    );
    assert_eq!(
        issue_keys(json!({
            "store": "postgres", "connection.url": "jdbc:postgresql://db/app",
            "connection.user": "u", "table": "a.b.c"
        })),
        [("table".to_string(), Error)]
    );
    assert_eq!(
        issue_keys(json!({
            "store": "postgres", "connection.url": "postgres://u@db/app",
            "connection.sslmode": "verify"
        })),
        [("connection.sslmode".to_string(), Error)]
    );
    assert_eq!(
        issue_keys(json!({
            "store": "postgres", "connection.url": "postgres://u@db/app?sslmode=verify"
        })),
        [("connection.url".to_string(), Error)]
    );
    assert!(
        issue_keys(json!({
            "store": "postgres", "connection.url": "postgres://u@db/app",
            "connection.sslmode": "verify-full", "connection.sslrootcert": "/ca.pem"
        }))
        .is_empty()
    );
    assert_eq!(
        issue_keys(json!({"store": "file"})),
        [("file".to_string(), Error)]
    );
    assert_eq!(
        issue_keys(
            json!({"store": "file", "file": "/tmp/x", "connection.url": "postgres://a@b/c"})
        ),
        [("connection.url".to_string(), Warning)]
    );
    assert_eq!(issue_keys(json!({"store": "s3"}))[0].0, "store");
    assert!(
        issue_keys(json!({
            "store": "postgres", "connection.url": "jdbc:postgresql://db:5432/app",
            "connection.user": "u", "connection.password": "p", "table": "ops.dlq"
        }))
        .is_empty()
    );
    let err = DeadLetterSinkPlugin
        .create_task(&map(json!({"store": "postgres"})))
        .err()
        .unwrap();
    assert!(err.message().contains("connection.url"), "{err}");
}

#[test]
fn plugin_info_and_task_counts() {
    let info = DeadLetterSinkPlugin.info();
    assert_eq!(info.class, "DeadLetterSink");
    assert_eq!(info.aliases, ["sluice.DeadLetterSink"]);
    assert_eq!(info.kind, PluginKind::Sink);
    let file = map(json!({"store": "file", "file": "/tmp/x"}));
    assert_eq!(
        DeadLetterSinkPlugin.task_configs(&file, 4).unwrap().len(),
        1
    );
    let pg = map(json!({"store": "postgres", "connection.url": "postgres://u@h/d"}));
    assert_eq!(DeadLetterSinkPlugin.task_configs(&pg, 4).unwrap().len(), 4);
    let config = parse_config::<DeadLetterSinkConfig>(&map(json!({
        "store": "postgres", "connection.url": "postgres://u@h/d", "connection.password": "hunter2"
    })))
    .unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    let config = parse_config::<DeadLetterSinkConfig>(&map(json!({
        "store": "postgres", "connection.url": "postgres://u:hunter2@h/d"
    })))
    .unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}
