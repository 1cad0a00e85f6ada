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

/// A key or value as it goes to Kafka (JSON as compact JSON text, bytes as they are), in
/// a buffer of its own. The producer path writes into reused buffers instead
/// ([`write_payload`]); this is the same bytes.
#[cfg(test)]
pub fn payload_bytes(payload: &Option<Payload>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    write_payload(&mut out, payload.as_ref()?);
    Some(out)
}

/// Appends a key or value as it goes to Kafka: JSON as compact JSON text (the bytes
/// `serde_json::to_vec` writes), bytes as they are.
pub fn write_payload(out: &mut Vec<u8>, payload: &Payload) {
    match payload {
        Payload::Bytes(b) => out.extend_from_slice(b),
        Payload::Json(v) => write_json(out, v),
    }
}

/// Appends `value` as compact JSON text (serde_json writing into the reused buffer).
pub fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends a header value as it goes to Kafka and says whether there is one (a JSON null
/// is a header without a value): strings as their text, arrays of byte values as those
/// bytes, other JSON as its compact text.
fn write_header_value(out: &mut Vec<u8>, value: &Value) -> bool {
    match value {
        Value::Null => return false,
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.as_u64().is_some_and(|b| b < 256)) =>
        {
            out.extend(items.iter().filter_map(Value::as_u64).map(|b| b as u8));
        }
        other => write_json(out, other),
    }
    true
}

#[cfg(test)]
fn header_bytes(value: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    write_header_value(&mut out, value).then_some(out)
}

/// The record's headers as Kafka headers, their values rendered into `scratch` (cleared
/// first, reused between records) and copied by librdkafka.
pub fn headers_of(record: &Record, scratch: &mut Vec<u8>) -> Option<OwnedHeaders> {
    if record.headers.is_empty() {
        return None;
    }
    scratch.clear();
    // Where each header's value ends in `scratch`; `None` for a header without a value.
    let mut ends: Vec<Option<usize>> = Vec::with_capacity(record.headers.len());
    for h in &record.headers {
        let present = write_header_value(scratch, &h.value);
        ends.push(present.then_some(scratch.len()));
    }
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    let mut start = 0;
    for (h, end) in record.headers.iter().zip(ends) {
        let value = end.map(|end| &scratch[start..end]);
        start = end.unwrap_or(start);
        headers = headers.insert(KafkaHeader { key: &h.key, value });
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
    let headers = match message.headers() {
        None => Vec::new(),
        Some(hs) => {
            let mut headers = Vec::with_capacity(hs.count());
            headers.extend(hs.iter().map(|h| Header {
                key: h.key.to_string(),
                value: header_value(h.value),
            }));
            headers
        }
    };
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

    #[test]
    fn headers_are_rendered_in_order_with_their_values() {
        let mut record = Record::new("t", json!(1));
        record.headers = vec![
            Header::new("task", 0),
            Header::new("none", Value::Null),
            Header::new("seq", 12345),
            Header::new("text", "a\"b"),
            Header::new("bytes", json!([0, 255])),
            Header::new("empty", ""),
        ];
        let mut scratch = b"left over".to_vec();
        let headers = headers_of(&record, &mut scratch).unwrap();
        let got: Vec<(String, Option<Vec<u8>>)> = headers
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        let want: Vec<(String, Option<Vec<u8>>)> = [
            ("task", Some(&b"0"[..])),
            ("none", None),
            ("seq", Some(b"12345")),
            ("text", Some(b"a\"b")),
            ("bytes", Some(&[0, 255])),
            ("empty", Some(b"")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
        .collect();
        assert_eq!(got, want);
        assert!(headers_of(&Record::new("t", json!(1)), &mut scratch).is_none());
    }
}
