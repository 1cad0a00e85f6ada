//! `InsertField$Key` / `InsertField$Value`: adds the record's topic, partition, offset,
//! timestamp and a static value as fields.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt};

/// Keys of `InsertField$Key` / `InsertField$Value`. Every field name may end in `!`
/// (required) or `?` (optional, the default); for schemaless JSON both insert the same way.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct InsertFieldConfig {
    /// Field name for the Kafka topic.
    #[serde(rename = "topic.field", default)]
    pub topic_field: Option<String>,
    /// Field name for the Kafka partition (inserted only when the record has one).
    #[serde(rename = "partition.field", default)]
    pub partition_field: Option<String>,
    /// Field name for the Kafka offset; only applicable to sink connectors (a record
    /// without an offset is a data error).
    #[serde(rename = "offset.field", default)]
    pub offset_field: Option<String>,
    /// Field name for the record timestamp, inserted as epoch milliseconds (only when the
    /// record has one).
    #[serde(rename = "timestamp.field", default)]
    pub timestamp_field: Option<String>,
    /// Field name for a static data field.
    #[serde(rename = "static.field", default)]
    pub static_field: Option<String>,
    /// Static field value (a string), if `static.field` is configured.
    #[serde(rename = "static.value", default)]
    pub static_value: Option<String>,
}

pub(crate) struct InsertField {
    side: Side,
    topic: Option<String>,
    partition: Option<String>,
    offset: Option<String>,
    timestamp: Option<String>,
    static_field: Option<(String, Value)>,
}

/// Strips Kafka Connect's `!` / `?` optionality suffix.
fn field_name(key: &str, spec: Option<String>, issues: &mut Vec<ConfigIssue>) -> Option<String> {
    let spec = spec?;
    let name = spec
        .strip_suffix('!')
        .or_else(|| spec.strip_suffix('?'))
        .unwrap_or(&spec);
    if name.is_empty() {
        issues.push(ConfigIssue::error(key, "the field name must not be empty"));
        return None;
    }
    Some(name.to_string())
}

impl Smt for InsertField {
    type Config = InsertFieldConfig;
    const NAME: &'static str = "InsertField";
    const DESCRIPTION: &'static str =
        "Inserts the topic, partition, offset, timestamp or a static value as fields.";

    fn build(config: InsertFieldConfig, side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        let static_name = field_name("static.field", config.static_field, issues);
        if static_name.is_some() && config.static_value.is_none() {
            issues.push(ConfigIssue::warning(
                "static.value",
                "static.field is set without static.value: nothing is inserted",
            ));
        }
        let transform = InsertField {
            side,
            topic: field_name("topic.field", config.topic_field, issues),
            partition: field_name("partition.field", config.partition_field, issues),
            offset: field_name("offset.field", config.offset_field, issues),
            timestamp: field_name("timestamp.field", config.timestamp_field, issues),
            static_field: static_name
                .zip(config.static_value)
                .map(|(name, value)| (name, Value::String(value))),
        };
        // Errors pushed above make the plugin refuse to create it.
        Some(transform)
    }
}

impl Transform for InsertField {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let (topic, partition, offset, timestamp) = (
            record.topic.clone(),
            record.partition,
            record.offset,
            record.timestamp,
        );
        let offset = match (&self.offset, offset) {
            (Some(field), None) => {
                return Err(ConnectError::data(format!(
                    "InsertField: offset.field \"{field}\": offset insertion is only supported \
                     for sink connectors, the record has no offset"
                )));
            }
            (_, offset) => offset,
        };
        // Tombstones pass through unchanged.
        if let Some(map) = self.side.object_mut(&mut record, "InsertField")? {
            if let Some(field) = &self.topic {
                map.insert(field.clone(), Value::String(topic));
            }
            if let (Some(field), Some(p)) = (&self.partition, partition) {
                map.insert(field.clone(), Value::from(p));
            }
            if let (Some(field), Some(o)) = (&self.offset, offset) {
                map.insert(field.clone(), Value::from(o));
            }
            if let (Some(field), Some(t)) = (&self.timestamp, timestamp) {
                map.insert(field.clone(), Value::from(t));
            }
            if let Some((field, value)) = &self.static_field {
                map.insert(field.clone(), value.clone());
            }
        }
        out.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::*;
    use serde_json::json;

    #[test]
    fn kafka_connect_static_field_example() {
        // KC docs: static.field=MessageSource, static.value=Kafka Connect framework
        let mut t = build::<InsertField>(
            Some(Side::Value),
            &[
                ("static.field", "MessageSource"),
                ("static.value", "Kafka Connect framework"),
            ],
        );
        let r = one(&mut t, record(json!(1), json!({"id": 42})));
        assert_eq!(
            r.value_json().unwrap(),
            &json!({"id": 42, "MessageSource": "Kafka Connect framework"})
        );
    }

    #[test]
    fn metadata_fields_with_optionality_suffixes() {
        let mut t = build::<InsertField>(
            Some(Side::Key),
            &[
                ("topic.field", "topic!"),
                ("partition.field", "partition?"),
                ("offset.field", "offset"),
                ("timestamp.field", "ts"),
            ],
        );
        let mut r = record(json!({"id": 1}), json!({}));
        r.partition = Some(3);
        r.offset = Some(99);
        r.timestamp = Some(1_700_000_000_000);
        let r = one(&mut t, r);
        assert_eq!(
            r.key_json().unwrap(),
            &json!({"id": 1, "topic": "orders", "partition": 3, "offset": 99, "ts": 1_700_000_000_000i64})
        );
        // No offset (a source record) is a data error naming the key.
        let err = fail(&mut t, record(json!({}), json!({})));
        assert!(err.message().contains("offset.field"), "{err}");
    }

    #[test]
    fn tombstones_pass_and_non_objects_fail() {
        let mut t = build::<InsertField>(Some(Side::Value), &[("topic.field", "t")]);
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        assert_eq!(one(&mut t, tomb.clone()), tomb);
        let err = fail(&mut t, record(json!(1), json!([1, 2])));
        assert!(err.message().contains("an array"), "{err}");
        let mut bytes = record(json!(1), json!(1));
        bytes.value = Some(sluice_api::Payload::Bytes(b"x".to_vec()));
        fail(&mut t, bytes);
        assert_eq!(
            issues::<InsertField>(Some(Side::Value), &[("topic.field", "!")]),
            vec!["topic.field: the field name must not be empty"]
        );
    }
}
