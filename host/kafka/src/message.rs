//! Records to Kafka messages and back.
//!
//! Structured JSON is written as JSON text (Kafka Connect's JsonConverter with schemas
//! disabled writes the same bytes); bytes are written as they are. On the way back keys
//! and values stay bytes: the sink connector's converters read them, exactly as Kafka
//! Connect's. Header values are strings on the wire when they are strings (Kafka
//! Connect's `__connect.errors.*` headers are), other JSON as its text; a header whose
//! bytes are not UTF-8 comes back as an array of byte values, so nothing is lost.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, Headers, OwnedHeaders};
use serde_json::Value;
use sluice_api::{Header, Payload, Record};

pub fn payload_bytes(payload: &Option<Payload>) -> Option<Vec<u8>> {
    payload.as_ref().map(|p| match p {
        Payload::Bytes(b) => b.clone(),
        Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
    })
}

fn header_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.as_u64().is_some_and(|b| b < 256)) =>
        {
            Some(
                items
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|b| b as u8)
                    .collect(),
            )
        }
        other => Some(other.to_string().into_bytes()),
    }
}

pub fn headers_of(record: &Record) -> Option<OwnedHeaders> {
    if record.headers.is_empty() {
        return None;
    }
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for h in &record.headers {
        let bytes = header_bytes(&h.value);
        headers = headers.insert(KafkaHeader {
            key: &h.key,
            value: bytes.as_deref(),
        });
    }
    Some(headers)
}

fn header_value(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
        },
    }
}

pub fn record_of(message: &BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: header_value(h.value),
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_string(),
        partition: Some(message.partition()),
        offset: Some(message.offset()),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(|k| Payload::Bytes(k.to_vec())),
        value: message.payload().map(|v| Payload::Bytes(v.to_vec())),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_values_round_trip_as_kafka_connect_writes_them() {
        assert_eq!(header_bytes(&json!("orders")), Some(b"orders".to_vec()));
        assert_eq!(header_bytes(&json!(3)), Some(b"3".to_vec()));
        assert_eq!(header_bytes(&Value::Null), None);
        assert_eq!(header_value(Some(b"3")), json!("3"));
        let binary = [0xff_u8, 0x00, 0x10];
        let back = header_value(Some(&binary));
        assert_eq!(header_bytes(&back), Some(binary.to_vec()));
    }

    #[test]
    fn json_payloads_are_written_as_json_text_and_bytes_as_they_are() {
        assert_eq!(
            payload_bytes(&Some(Payload::Json(json!({"a": 1})))),
            Some(br#"{"a":1}"#.to_vec())
        );
        assert_eq!(
            payload_bytes(&Some(Payload::Bytes(vec![0, 1, 2]))),
            Some(vec![0, 1, 2])
        );
        assert_eq!(payload_bytes(&None), None);
    }
}
