//! `HoistField$Key` / `HoistField$Value`: wraps the key or value in an object under a
//! field name.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ConfigIssue, ConnectError, Payload, Record, Transform};

use crate::common::{Side, Smt, non_blank};

/// Keys of `HoistField$Key` / `HoistField$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HoistFieldConfig {
    /// Field name for the single field of the object that wraps the key or value.
    pub field: String,
}

pub(crate) struct HoistField {
    side: Side,
    field: String,
}

impl Smt for HoistField {
    type Config = HoistFieldConfig;
    const NAME: &'static str = "HoistField";
    const DESCRIPTION: &'static str = "Wraps the key or value in an object with one field.";

    fn build(config: HoistFieldConfig, side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        non_blank("field", &config.field, issues);
        Some(HoistField {
            side,
            field: config.field,
        })
    }
}

impl Transform for HoistField {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let slot = self.side.slot(&mut record);
        let inner = match slot.take() {
            None => Value::Null,
            Some(Payload::Json(v)) => v,
            Some(bytes @ Payload::Bytes(_)) => {
                *slot = Some(bytes);
                return Err(ConnectError::data(format!(
                    "HoistField: field \"{}\": the record {} is raw bytes, not JSON",
                    self.field,
                    self.side.name()
                )));
            }
        };
        let mut map = Map::with_capacity(1);
        map.insert(self.field.clone(), inner);
        *slot = Some(Payload::Json(Value::Object(map)));
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
    fn hoists() {
        // KC docs: field=line turns 42 into {"line": 42}.
        let mut t = build::<HoistField>(Some(Side::Value), &[("field", "line")]);
        let r = one(&mut t, record(json!(1), json!(42)));
        assert_eq!(r.value_json().unwrap(), &json!({"line": 42}));
        let mut t = build::<HoistField>(Some(Side::Key), &[("field", "k")]);
        let r = one(&mut t, record(json!({"a": 1}), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!({"k": {"a": 1}}));
        let mut bytes = record(json!(1), json!(1));
        bytes.key = Some(Payload::Bytes(vec![1]));
        let err = fail(&mut t, bytes);
        assert!(err.message().contains("\"k\""), "{err}");
        assert_eq!(
            issues::<HoistField>(Some(Side::Key), &[("field", " ")]),
            vec!["field: must not be empty"]
        );
    }
}
