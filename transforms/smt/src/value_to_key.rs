//! `ValueToKey`: replaces the record key with an object of fields of the value.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ConfigIssue, ConnectError, Payload, Record, Transform};

use crate::common::{Side, Smt, non_empty};

/// Keys of `ValueToKey`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ValueToKeyConfig {
    /// Field names of the value to copy into the key, which becomes an object of them.
    pub fields: Vec<String>,
    /// Accepted for compatibility and ignored: schemaless JSON has no defaults.
    #[serde(rename = "replace.null.with.default", default)]
    pub replace_null_with_default: Option<bool>,
}

pub(crate) struct ValueToKey {
    fields: Vec<String>,
}

impl Smt for ValueToKey {
    type Config = ValueToKeyConfig;
    const NAME: &'static str = "ValueToKey";
    const DESCRIPTION: &'static str = "Replaces the key with an object of fields of the value.";

    fn build(config: ValueToKeyConfig, _side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        non_empty("fields", &config.fields, issues);
        Some(ValueToKey {
            fields: config.fields,
        })
    }
}

impl Transform for ValueToKey {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let value = Side::Value.require_object(&mut record, "ValueToKey")?;
        let mut key = Map::with_capacity(self.fields.len());
        for field in &self.fields {
            // As Kafka Connect (schemaless): a missing field is null in the key.
            key.insert(
                field.clone(),
                value.get(field).cloned().unwrap_or(Value::Null),
            );
        }
        record.key = Some(Payload::Json(Value::Object(key)));
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
    fn key_from_value_fields() {
        // KC docs: fields=userId,city,state
        let mut t = build::<ValueToKey>(None, &[("fields", "userId,city,state")]);
        let v = json!({"userId": 7, "city": "Oslo", "state": "NO", "other": 1});
        let r = one(&mut t, record(json!("old"), v.clone()));
        assert_eq!(
            r.key_json().unwrap(),
            &json!({"userId": 7, "city": "Oslo", "state": "NO"})
        );
        assert_eq!(r.value_json().unwrap(), &v);
    }

    #[test]
    fn errors() {
        let mut t = build::<ValueToKey>(None, &[("fields", "id")]);
        fail(&mut t, record(json!(1), json!([1])));
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        fail(&mut t, tomb);
        assert_eq!(
            issues::<ValueToKey>(None, &[]),
            vec!["fields: is required but missing"]
        );
    }
}
