//! Records as they move source → transforms → bus → transforms → sink.

use std::sync::Arc;

use serde_json::Value;

/// A key or value as it travels. Most records carry structured JSON; a record whose bytes
/// have not been (or cannot be) parsed keeps them as they were, so a dead letter can
/// preserve the original bytes exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Bytes(Vec<u8>),
}

impl Payload {
    /// The JSON form, when this payload is structured.
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            Payload::Json(v) => Some(v),
            Payload::Bytes(_) => None,
        }
    }

    /// The serialized form: JSON text for structured payloads, the bytes themselves otherwise.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            // Serializing a `Value` cannot fail: its map keys are always strings.
            Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
            Payload::Bytes(b) => b.clone(),
        }
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload::Json(v)
    }
}

/// The JSON type of a value as words ("a string", "an object"), for error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A record header. Values are JSON so transforms can copy fields into headers and back;
/// a bus that stores bytes (Kafka) writes strings raw and everything else as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub key: String,
    pub value: Value,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Header {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One record. On the source side `partition` may be left to the bus (chosen from the key)
/// and `offset` is unset; on the sink side both say where the record sits on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    pub key: Option<Payload>,
    /// `None` is a tombstone.
    pub value: Option<Payload>,
    pub headers: Vec<Header>,
}

impl Record {
    /// A record for `topic` with a JSON value and nothing else set.
    pub fn new(topic: impl Into<String>, value: Value) -> Self {
        Record {
            topic: topic.into(),
            partition: None,
            offset: None,
            timestamp: None,
            key: None,
            value: Some(Payload::Json(value)),
            headers: Vec::new(),
        }
    }

    pub fn value_json(&self) -> Option<&Value> {
        self.value.as_ref().and_then(Payload::as_json)
    }

    pub fn value_json_mut(&mut self) -> Option<&mut Value> {
        match self.value.as_mut() {
            Some(Payload::Json(v)) => Some(v),
            _ => None,
        }
    }

    pub fn key_json(&self) -> Option<&Value> {
        self.key.as_ref().and_then(Payload::as_json)
    }

    /// The last header with this key, as Kafka Connect's `lastWithName`.
    pub fn header(&self, key: &str) -> Option<&Value> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.key == key)
            .map(|h| &h.value)
    }
}

/// Where a source is, in Kafka Connect's terms: a JSON map naming the source partition
/// (a file, a table, a simulator task) and a JSON map with the position within it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOffset {
    pub partition: Value,
    pub offset: Value,
}

/// A record from a source task together with the source position it came from. The
/// runtime commits `source_offset` only once the record is durable downstream.
///
/// The source partition is shared: a task hands the same `Arc` to every record of a
/// partition, so records cost no copy of it and the runtime tells runs of one partition
/// apart by pointer (partitions that are equal but not shared are still compared by value).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub record: Record,
    pub source_partition: Arc<Value>,
    pub source_offset: Value,
}
