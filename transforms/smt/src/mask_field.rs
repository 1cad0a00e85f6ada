//! `MaskField$Key` / `MaskField$Value`: replaces fields with an empty value of their type,
//! or with a configured replacement.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt, non_empty, type_name};

/// Keys of `MaskField$Key` / `MaskField$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct MaskFieldConfig {
    /// Names of fields to mask.
    pub fields: Vec<String>,
    /// Custom replacement applied to every masked field (numeric or string fields only;
    /// converted to the field's type). Without it, numbers become 0, strings "", booleans
    /// false, arrays [] and objects {}.
    #[serde(default)]
    pub replacement: Option<String>,
}

pub(crate) struct MaskField {
    side: Side,
    fields: Vec<String>,
    replacement: Option<Replacement>,
}

/// The replacement in each form it can take, converted once.
struct Replacement {
    text: String,
    integer: Option<i64>,
    float: Option<f64>,
}

impl Smt for MaskField {
    type Config = MaskFieldConfig;
    const NAME: &'static str = "MaskField";
    const DESCRIPTION: &'static str =
        "Masks fields with an empty value of their type, or with a replacement.";

    fn build(config: MaskFieldConfig, side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        non_empty("fields", &config.fields, issues);
        if config.replacement.as_deref() == Some("") {
            issues.push(ConfigIssue::error("replacement", "must not be empty"));
        }
        let replacement = config.replacement.map(|text| {
            let trimmed = text.trim();
            let float = trimmed.parse::<f64>().ok().filter(|f| f.is_finite());
            Replacement {
                integer: trimmed
                    .parse::<i64>()
                    .ok()
                    .or_else(|| float.filter(|f| f.fract() == 0.0).map(|f| f as i64)),
                float,
                text,
            }
        });
        Some(MaskField {
            side,
            fields: config.fields,
            replacement,
        })
    }
}

impl MaskField {
    fn mask(&self, field: &str, value: &mut Value) -> Result<(), ConnectError> {
        let Some(r) = &self.replacement else {
            *value = match value {
                Value::Null => Value::Null,
                Value::Bool(_) => Value::Bool(false),
                Value::Number(n) if n.is_f64() => Value::from(0.0),
                Value::Number(_) => Value::from(0),
                Value::String(_) => Value::String(String::new()),
                Value::Array(_) => Value::Array(Vec::new()),
                Value::Object(_) => Value::Object(Map::new()),
            };
            return Ok(());
        };
        let unconvertible = || {
            ConnectError::data(format!(
                "MaskField: field \"{field}\": unable to convert replacement \"{}\" to a number",
                r.text
            ))
        };
        *value = match value {
            Value::Null => Value::Null,
            Value::String(_) => Value::String(r.text.clone()),
            Value::Number(n) if n.is_f64() => Value::from(r.float.ok_or_else(unconvertible)?),
            Value::Number(_) => Value::from(r.integer.ok_or_else(unconvertible)?),
            other => {
                return Err(ConnectError::data(format!(
                    "MaskField: field \"{field}\": cannot mask {} with a custom replacement",
                    type_name(other)
                )));
            }
        };
        Ok(())
    }
}

impl Transform for MaskField {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let map = self.side.require_object(&mut record, "MaskField")?;
        for field in &self.fields {
            // As Kafka Connect (schemaless): a missing field is put as null.
            let value = map.entry(field.clone()).or_insert(Value::Null);
            self.mask(field, value)?;
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
    fn default_masks_by_type() {
        let mut t = build::<MaskField>(Some(Side::Value), &[("fields", "n,f,s,b,a,o,z,missing")]);
        let v = json!({"n": 7, "f": 2.5, "s": "secret", "b": true, "a": [1], "o": {"x": 1}, "z": null, "keep": 1});
        let r = one(&mut t, record(json!(1), v));
        assert_eq!(
            r.value_json().unwrap(),
            &json!({"n": 0, "f": 0.0, "s": "", "b": false, "a": [], "o": {}, "z": null, "keep": 1, "missing": null})
        );
    }

    #[test]
    fn custom_replacement() {
        let mut t = build::<MaskField>(
            Some(Side::Value),
            &[("fields", "ssn,n"), ("replacement", "****")],
        );
        let err = fail(&mut t, record(json!(1), json!({"ssn": "123", "n": 5})));
        assert!(err.message().contains("\"n\""), "{err}");
        let r = one(&mut t, record(json!(1), json!({"ssn": "123-45"})));
        assert_eq!(r.value_json().unwrap(), &json!({"ssn": "****", "n": null}));
        let mut t = build::<MaskField>(Some(Side::Key), &[("fields", "n,f"), ("replacement", "9")]);
        let r = one(&mut t, record(json!({"n": 5, "f": 1.5}), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!({"n": 9, "f": 9.0}));
        let err = fail(&mut t, record(json!({"n": true}), json!(1)));
        assert!(err.message().contains("a boolean"), "{err}");
    }

    #[test]
    fn config_and_type_errors() {
        assert_eq!(
            issues::<MaskField>(Some(Side::Value), &[("fields", "")]),
            vec!["fields: must list at least one item"]
        );
        assert_eq!(
            issues::<MaskField>(Some(Side::Value), &[]),
            vec!["fields: is required but missing"]
        );
        let mut t = build::<MaskField>(Some(Side::Value), &[("fields", "a")]);
        fail(&mut t, record(json!(1), json!(5)));
    }
}
