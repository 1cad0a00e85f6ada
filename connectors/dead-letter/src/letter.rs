//! A dead-letter record taken apart: where it sits, the error context from its headers,
//! and its original key and value as raw bytes plus text/JSON views.

use serde_json::{Map, Value};
use sluice_api::{ConnectError, Payload, Record};

pub const H_TOPIC: &str = "__connect.errors.topic";
pub const H_PARTITION: &str = "__connect.errors.partition";
pub const H_OFFSET: &str = "__connect.errors.offset";
pub const H_CONNECTOR: &str = "__connect.errors.connector.name";
pub const H_TASK: &str = "__connect.errors.task.id";
pub const H_STAGE: &str = "__connect.errors.stage";
pub const H_CLASS: &str = "__connect.errors.class.name";
pub const H_EXCEPTION_CLASS: &str = "__connect.errors.exception.class.name";
pub const H_MESSAGE: &str = "__connect.errors.exception.message";
pub const H_STACKTRACE: &str = "__connect.errors.exception.stacktrace";
pub const H_ATTEMPTS: &str = "sluice.errors.attempts";
pub const H_TIMESTAMP: &str = "sluice.errors.timestamp";

/// A key or value: the raw bytes, and views of them when they are text / JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadView {
    pub bytes: Vec<u8>,
    /// The bytes as text, when they are valid UTF-8 without NUL characters.
    pub text: Option<String>,
    /// The bytes parsed as JSON, when they are JSON that PostgreSQL's jsonb can hold.
    pub json: Option<Value>,
}

impl PayloadView {
    pub fn of(payload: &Payload) -> PayloadView {
        match payload {
            Payload::Bytes(bytes) => {
                let text = std::str::from_utf8(bytes)
                    .ok()
                    .filter(|t| !t.contains('\0'))
                    .map(str::to_string);
                let json = serde_json::from_slice::<Value>(bytes)
                    .ok()
                    .filter(jsonb_safe);
                PayloadView {
                    bytes: bytes.clone(),
                    text,
                    json,
                }
            }
            // A string converter's value: its bytes were the string itself.
            Payload::Json(Value::String(s)) => PayloadView {
                bytes: s.as_bytes().to_vec(),
                text: Some(s.clone()).filter(|t| !t.contains('\0')),
                json: serde_json::from_str::<Value>(s).ok().filter(jsonb_safe),
            },
            Payload::Json(value) => {
                let text = value.to_string();
                PayloadView {
                    bytes: text.as_bytes().to_vec(),
                    json: Some(value.clone()).filter(jsonb_safe),
                    text: Some(text).filter(|t| !t.contains('\0')),
                }
            }
        }
    }
}

/// PostgreSQL's jsonb (and text) cannot hold the NUL character.
fn jsonb_safe(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(jsonb_safe),
        Value::Object(map) => map.iter().all(|(k, v)| !k.contains('\0') && jsonb_safe(v)),
        _ => true,
    }
}

/// Replaces NUL characters (which PostgreSQL text cannot hold) with U+FFFD.
fn clean_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}

fn clean_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(clean_text(s)),
        Value::Array(items) => Value::Array(items.iter().map(clean_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (clean_text(k), clean_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One dead letter, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// `<dlq topic>/<partition>/<offset>`: the same dead letter always gets the same id.
    pub id: String,
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    /// The dead letter's own timestamp (the original record's), epoch ms.
    pub record_timestamp: Option<i64>,
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub connector: Option<String>,
    pub task_id: Option<i32>,
    pub stage: Option<String>,
    pub class_name: Option<String>,
    pub exception_class: Option<String>,
    pub error_message: Option<String>,
    pub stacktrace: Option<String>,
    pub attempts: Option<i32>,
    /// When the record failed, epoch ms.
    pub failed_at: Option<i64>,
    pub key: Option<PayloadView>,
    pub value: Option<PayloadView>,
    /// Every header not read into a column above (the last header with a key wins).
    pub headers: Map<String, Value>,
}

/// A header's text: a JSON string as is, a number or boolean as its JSON text.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(clean_text(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn header_number<T: std::str::FromStr>(value: &Value) -> Option<T> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

impl DeadLetter {
    /// Takes a dead-letter record apart. Fails (a data error) only when the record does
    /// not say where it sits on the bus, which every record given to a sink does.
    pub fn from_record(record: &Record) -> Result<DeadLetter, ConnectError> {
        let (Some(dlq_partition), Some(dlq_offset)) = (record.partition, record.offset) else {
            return Err(ConnectError::data(format!(
                "dead letter on topic {} has no partition/offset: it cannot be stored idempotently",
                record.topic
            )));
        };
        // All headers, last wins; the ones read into columns are removed below.
        let mut headers = Map::new();
        for h in &record.headers {
            headers.insert(clean_text(&h.key), clean_json(&h.value));
        }
        fn take<T>(
            headers: &mut Map<String, Value>,
            key: &str,
            read: impl Fn(&Value) -> Option<T>,
        ) -> Option<T> {
            let parsed = headers.get(key).and_then(read);
            // A header that cannot be read stays among the other headers, so nothing is lost.
            if parsed.is_some() {
                headers.remove(key);
            }
            parsed
        }
        let letter = DeadLetter {
            id: format!("{}/{}/{}", record.topic, dlq_partition, dlq_offset),
            dlq_topic: clean_text(&record.topic),
            dlq_partition,
            dlq_offset,
            record_timestamp: record.timestamp,
            original_topic: take(&mut headers, H_TOPIC, header_text),
            original_partition: take(&mut headers, H_PARTITION, header_number::<i32>),
            original_offset: take(&mut headers, H_OFFSET, header_number::<i64>),
            connector: take(&mut headers, H_CONNECTOR, header_text),
            task_id: take(&mut headers, H_TASK, header_number::<i32>),
            stage: take(&mut headers, H_STAGE, header_text),
            class_name: take(&mut headers, H_CLASS, header_text),
            exception_class: take(&mut headers, H_EXCEPTION_CLASS, header_text),
            error_message: take(&mut headers, H_MESSAGE, header_text),
            stacktrace: take(&mut headers, H_STACKTRACE, header_text),
            attempts: take(&mut headers, H_ATTEMPTS, header_number::<i32>),
            failed_at: take(&mut headers, H_TIMESTAMP, header_number::<i64>),
            key: record.key.as_ref().map(PayloadView::of),
            value: record.value.as_ref().map(PayloadView::of),
            headers,
        };
        Ok(letter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_api::Header;

    #[test]
    fn views_of_payloads() {
        let v = PayloadView::of(&Payload::Bytes(vec![0xff, b'{']));
        assert_eq!((v.text, v.json), (None, None));
        let v = PayloadView::of(&Payload::Bytes(b"{\"a\":1}".to_vec()));
        assert_eq!(v.json, Some(json!({"a": 1})));
        assert_eq!(v.text.as_deref(), Some("{\"a\":1}"));
        // jsonb cannot hold NUL; the text view has it escaped.
        let v = PayloadView::of(&Payload::Json(json!({"a": "x\u{0}"})));
        assert_eq!(v.text.as_deref(), Some("{\"a\":\"x\\u0000\"}"));
        assert_eq!(v.json, None);
        let v = PayloadView::of(&Payload::Json(json!("plain")));
        assert_eq!(v.bytes, b"plain");
        assert_eq!(v.json, None);
    }

    #[test]
    fn unreadable_context_headers_stay_in_headers() {
        let mut record = Record::new("dlq", json!(1));
        record.partition = Some(0);
        record.offset = Some(9);
        record
            .headers
            .push(Header::new(H_PARTITION, "not a number"));
        record.headers.push(Header::new(H_OFFSET, "12"));
        record.headers.push(Header::new("x", json!({"k": 1})));
        let letter = DeadLetter::from_record(&record).unwrap();
        assert_eq!(letter.id, "dlq/0/9");
        assert_eq!(letter.original_partition, None);
        assert_eq!(letter.original_offset, Some(12));
        assert_eq!(
            Value::Object(letter.headers),
            json!({H_PARTITION: "not a number", "x": {"k": 1}})
        );
    }

    #[test]
    fn a_record_without_offset_is_a_data_error() {
        let err = DeadLetter::from_record(&Record::new("dlq", json!(1))).unwrap_err();
        assert_eq!(err.kind(), sluice_api::ErrorKind::Data);
    }
}
