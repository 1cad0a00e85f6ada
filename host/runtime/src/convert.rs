//! Converters: between what travels on the bus and what connectors see, by Kafka
//! Connect's converter classes.
//!
//! On the embedded bus structured JSON stays structured (serializing and parsing it again
//! would change nothing); bytes a source produced stay bytes until a sink's converter
//! reads them, exactly where Kafka Connect would fail on them too.

use serde_json::Value;
use sluice_api::{ConnectError, Payload};

use crate::connector::ConverterClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converter {
    pub class: ConverterClass,
    pub schemas_enable: bool,
}

impl Converter {
    pub fn new(class: ConverterClass, schemas_enable: bool) -> Self {
        Converter {
            class,
            schemas_enable,
        }
    }

    /// Whether `to_connect` would hand this payload back unchanged, so a record made only
    /// of such payloads can be passed to the sink as it sits on the bus, without a copy.
    pub fn passes_through(&self, payload: &Option<Payload>) -> bool {
        match (self.class, payload) {
            (_, None) => true,
            (ConverterClass::Json, Some(Payload::Json(_))) => !self.schemas_enable,
            (ConverterClass::String, Some(Payload::Json(Value::String(_)))) => true,
            (ConverterClass::ByteArray, Some(Payload::Bytes(_))) => true,
            _ => false,
        }
    }

    /// Whether `from_connect` hands every payload back unchanged (and so never fails):
    /// a source record may then go to the bus as the task produced it.
    pub fn leaves_source_payloads(&self) -> bool {
        self.class == ConverterClass::Json && !self.schemas_enable
    }

    /// Sink side: what the bus carried → what the sink task is given.
    pub fn to_connect(&self, payload: Option<Payload>) -> Result<Option<Payload>, ConnectError> {
        let Some(payload) = payload else {
            return Ok(None);
        };
        match self.class {
            ConverterClass::Json => {
                let value = match payload {
                    Payload::Json(v) => v,
                    Payload::Bytes(bytes) if bytes.is_empty() => return Ok(None),
                    Payload::Bytes(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        ConnectError::data(format!("Converting byte[] to Kafka Connect data failed due to serialization error: {e}"))
                    })?,
                };
                if self.schemas_enable {
                    unwrap_envelope(value).map(|v| Some(Payload::Json(v)))
                } else {
                    Ok(Some(Payload::Json(value)))
                }
            }
            ConverterClass::String => match payload {
                Payload::Json(Value::String(s)) => Ok(Some(Payload::Json(Value::String(s)))),
                Payload::Json(other) => Ok(Some(Payload::Json(Value::String(other.to_string())))),
                Payload::Bytes(bytes) => String::from_utf8(bytes)
                    .map(|s| Some(Payload::Json(Value::String(s))))
                    .map_err(|e| ConnectError::data(format!("value is not valid UTF-8: {e}"))),
            },
            ConverterClass::ByteArray => Ok(Some(Payload::Bytes(payload.to_bytes()))),
        }
    }

    /// Source side: what the source task produced → what goes on the bus.
    pub fn from_connect(&self, payload: Option<Payload>) -> Result<Option<Payload>, ConnectError> {
        let Some(payload) = payload else {
            return Ok(None);
        };
        match (self.class, payload) {
            (ConverterClass::Json, Payload::Json(value)) if self.schemas_enable => {
                Ok(Some(Payload::Json(envelope(value))))
            }
            (ConverterClass::Json, payload) => Ok(Some(payload)),
            (ConverterClass::String, Payload::Json(Value::String(s))) => {
                Ok(Some(Payload::Bytes(s.into_bytes())))
            }
            (ConverterClass::String, Payload::Bytes(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(_) => Ok(Some(Payload::Bytes(bytes))),
                Err(e) => Err(ConnectError::data(format!("value is not valid UTF-8: {e}"))),
            },
            (ConverterClass::String | ConverterClass::ByteArray, payload) => {
                Ok(Some(Payload::Bytes(payload.to_bytes())))
            }
        }
    }
}

/// Kafka Connect's JsonConverter envelope, `{"schema": …, "payload": …}`, with the schema
/// inferred from the value (sources here produce schemaless JSON): objects become structs
/// with their fields in order, integers `int64`, other numbers `double`; a null is an
/// optional string, and an empty array an array of optional strings, as nothing says more.
fn envelope(value: Value) -> Value {
    let schema = infer_schema(&value, None);
    serde_json::json!({"schema": schema, "payload": value})
}

fn infer_schema(value: &Value, field: Option<&str>) -> Value {
    let mut schema = match value {
        Value::Null => serde_json::json!({"type": "string", "optional": true}),
        Value::Bool(_) => serde_json::json!({"type": "boolean", "optional": false}),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            serde_json::json!({"type": "int64", "optional": false})
        }
        Value::Number(_) => serde_json::json!({"type": "double", "optional": false}),
        Value::String(_) => serde_json::json!({"type": "string", "optional": false}),
        Value::Array(items) => {
            let item = items.iter().find(|i| !i.is_null()).map_or_else(
                || infer_schema(&Value::Null, None),
                |i| infer_schema(i, None),
            );
            serde_json::json!({"type": "array", "items": item, "optional": false})
        }
        Value::Object(map) => {
            let fields: Vec<Value> = map.iter().map(|(k, v)| infer_schema(v, Some(k))).collect();
            serde_json::json!({"type": "struct", "fields": fields, "optional": false})
        }
    };
    if let (Some(name), Value::Object(obj)) = (field, &mut schema) {
        obj.insert("field".to_string(), Value::String(name.to_string()));
    }
    schema
}

fn unwrap_envelope(value: Value) -> Result<Value, ConnectError> {
    match value {
        Value::Object(mut map)
            if map.len() == 2 && map.contains_key("schema") && map.contains_key("payload") =>
        {
            Ok(map.remove("payload").unwrap_or(Value::Null))
        }
        _ => Err(ConnectError::data(
            "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. \
             If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn source_side_envelopes_carry_an_inferred_schema_and_round_trip() {
        let source = Converter::new(ConverterClass::Json, true);
        let value = json!({"id": 7, "price": 9.5, "ok": true, "name": "x", "tags": ["a"], "gone": null, "at": {"t": 1}});
        let Some(Payload::Json(out)) = source
            .from_connect(Some(Payload::Json(value.clone())))
            .unwrap()
        else {
            panic!("JSON expected")
        };
        assert_eq!(out["payload"], value);
        assert_eq!(
            out["schema"],
            json!({"type": "struct", "optional": false, "fields": [
                {"field": "at", "type": "struct", "optional": false, "fields": [
                    {"field": "t", "type": "int64", "optional": false}]},
                {"field": "gone", "type": "string", "optional": true},
                {"field": "id", "type": "int64", "optional": false},
                {"field": "name", "type": "string", "optional": false},
                {"field": "ok", "type": "boolean", "optional": false},
                {"field": "price", "type": "double", "optional": false},
                {"field": "tags", "type": "array", "optional": false,
                 "items": {"type": "string", "optional": false}},
            ]})
        );
        // A sink with schemas.enable reads it back as the plain value.
        let sink = Converter::new(ConverterClass::Json, true);
        let bytes = serde_json::to_vec(&out).unwrap();
        assert_eq!(
            sink.to_connect(Some(Payload::Bytes(bytes))).unwrap(),
            Some(Payload::Json(value))
        );
    }

    #[test]
    fn json_converter_parses_bytes_and_rejects_garbage() {
        let c = Converter::new(ConverterClass::Json, false);
        assert_eq!(
            c.to_connect(Some(Payload::Bytes(br#"{"a":1}"#.to_vec())))
                .unwrap(),
            Some(Payload::Json(json!({"a": 1})))
        );
        let err = c
            .to_connect(Some(Payload::Bytes(b"{\"a\":".to_vec())))
            .unwrap_err();
        assert_eq!(err.kind(), sluice_api::ErrorKind::Data);
        assert_eq!(c.to_connect(None).unwrap(), None);
    }

    #[test]
    fn pass_through_is_exactly_when_to_connect_changes_nothing() {
        let payloads = [
            None,
            Some(Payload::Json(json!({"a": 1}))),
            Some(Payload::Json(json!("s"))),
            Some(Payload::Bytes(b"{}".to_vec())),
        ];
        for class in [
            ConverterClass::Json,
            ConverterClass::String,
            ConverterClass::ByteArray,
        ] {
            for schemas in [false, true] {
                let c = Converter::new(class, schemas);
                for p in &payloads {
                    if c.passes_through(p) {
                        assert_eq!(
                            c.to_connect(p.clone()).ok(),
                            Some(p.clone()),
                            "{class:?} {schemas} {p:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn json_converter_with_schemas_unwraps_envelopes() {
        let c = Converter::new(ConverterClass::Json, true);
        let enveloped = json!({"schema": {"type": "int32"}, "payload": 5});
        assert_eq!(
            c.to_connect(Some(Payload::Json(enveloped))).unwrap(),
            Some(Payload::Json(json!(5)))
        );
        assert!(c.to_connect(Some(Payload::Json(json!({"a": 1})))).is_err());
    }

    #[test]
    fn string_and_bytes_converters() {
        let s = Converter::new(ConverterClass::String, false);
        assert_eq!(
            s.to_connect(Some(Payload::Bytes(b"{oops".to_vec())))
                .unwrap(),
            Some(Payload::Json(json!("{oops")))
        );
        assert!(
            s.to_connect(Some(Payload::Bytes(vec![0xff, 0xfe])))
                .is_err()
        );
        let b = Converter::new(ConverterClass::ByteArray, false);
        assert_eq!(
            b.to_connect(Some(Payload::Json(json!({"a": 1})))).unwrap(),
            Some(Payload::Bytes(br#"{"a":1}"#.to_vec()))
        );
        assert_eq!(
            s.from_connect(Some(Payload::Json(json!("hi")))).unwrap(),
            Some(Payload::Bytes(b"hi".to_vec()))
        );
    }
}
