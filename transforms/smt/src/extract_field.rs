//! `ExtractField$Key` / `ExtractField$Value`: replaces the key or value with one of its
//! fields (a nested one with `field.syntax.version=V2`, KIP-821).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt, non_blank, not_an_object};

/// How `field` names a field (KIP-821).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum FieldSyntaxVersion {
    /// `field` is one top-level field name, dots included.
    #[default]
    V1,
    /// `field` is a dotted path to a nested field; a name containing dots is written in
    /// backticks (`` `a.b`.c ``).
    V2,
}

/// Keys of `ExtractField$Key` / `ExtractField$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ExtractFieldConfig {
    /// Field name to extract (a dotted path with `field.syntax.version=V2`).
    pub field: String,
    /// `V1` (default): `field` is a top-level name. `V2`: `field` is a dotted path.
    #[serde(rename = "field.syntax.version", default)]
    pub field_syntax_version: FieldSyntaxVersion,
    /// Accepted for compatibility and ignored: schemaless JSON has no defaults.
    #[serde(rename = "replace.null.with.default", default)]
    pub replace_null_with_default: Option<bool>,
}

pub(crate) struct ExtractField {
    side: Side,
    path: Vec<String>,
}

/// Splits a KIP-821 V2 path: dots separate names; backticks quote a name with dots.
pub(crate) fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '`' if !quoted && current.is_empty() => quoted = true,
            '`' if quoted => {
                if chars.peek() == Some(&'`') {
                    chars.next();
                    current.push('`');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some('.')) {
                        return Err(format!("text after a closing backtick in \"{path}\""));
                    }
                }
            }
            '.' if !quoted => parts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    if quoted {
        return Err(format!("unterminated backtick in \"{path}\""));
    }
    parts.push(current);
    if parts.iter().any(String::is_empty) {
        return Err(format!("empty field name in \"{path}\""));
    }
    Ok(parts)
}

impl Smt for ExtractField {
    type Config = ExtractFieldConfig;
    const NAME: &'static str = "ExtractField";
    const DESCRIPTION: &'static str = "Replaces the key or value with one of its fields.";

    fn build(
        config: ExtractFieldConfig,
        side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        non_blank("field", &config.field, issues);
        let path = match config.field_syntax_version {
            FieldSyntaxVersion::V1 => vec![config.field],
            FieldSyntaxVersion::V2 => match parse_path(&config.field) {
                Ok(path) => path,
                Err(message) => {
                    issues.push(ConfigIssue::error("field", message));
                    return None;
                }
            },
        };
        Some(ExtractField { side, path })
    }
}

/// Removes and returns the value at `path`, or null when there is none.
fn take_path(map: &mut Map<String, Value>, path: &[String]) -> Value {
    match path {
        [] => Value::Null,
        [last] => map.remove(last).unwrap_or(Value::Null),
        [first, rest @ ..] => match map.get_mut(first) {
            Some(Value::Object(inner)) => take_path(inner, rest),
            _ => Value::Null,
        },
    }
}

impl Transform for ExtractField {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let side = self.side.name();
        if let Some(json) = self.side.json_mut(&mut record, "ExtractField")? {
            let Value::Object(map) = json else {
                return Err(not_an_object("ExtractField", side, json));
            };
            // As Kafka Connect: a missing field (or a path through a non-object) gives null.
            let extracted = take_path(map, &self.path);
            self.side.set(&mut record, extracted);
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
    fn extracts_a_field() {
        // KC docs: field=id turns {"id": 42, "cost": 4000} into 42.
        let mut t = build::<ExtractField>(Some(Side::Key), &[("field", "id")]);
        let r = one(&mut t, record(json!({"id": 42, "cost": 4000}), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!(42));
        let mut t = build::<ExtractField>(Some(Side::Value), &[("field", "a.b")]);
        let r = one(&mut t, record(json!(1), json!({"a.b": 1, "a": {"b": 2}})));
        assert_eq!(r.value_json().unwrap(), &json!(1));
    }

    #[test]
    fn nested_paths_with_v2() {
        let cfg = [("field", "a.`b.c`.d"), ("field.syntax.version", "V2")];
        let mut t = build::<ExtractField>(Some(Side::Value), &cfg);
        let r = one(
            &mut t,
            record(json!(1), json!({"a": {"b.c": {"d": [1, 2]}}})),
        );
        assert_eq!(r.value_json().unwrap(), &json!([1, 2]));
        // Missing: null, i.e. a tombstone.
        let r = one(&mut t, record(json!(1), json!({"a": 5})));
        assert_eq!(r.value, None);
        assert_eq!(
            issues::<ExtractField>(
                Some(Side::Value),
                &[("field", "a..b"), ("field.syntax.version", "V2")]
            ),
            vec!["field: empty field name in \"a..b\""]
        );
        assert_eq!(
            issues::<ExtractField>(
                Some(Side::Value),
                &[("field", "x"), ("field.syntax.version", "V3")]
            )
            .len(),
            1
        );
    }

    #[test]
    fn errors_and_tombstones() {
        let mut t = build::<ExtractField>(Some(Side::Value), &[("field", "id")]);
        let err = fail(&mut t, record(json!(1), json!("text")));
        assert!(err.message().contains("a string"), "{err}");
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        assert_eq!(one(&mut t, tomb.clone()), tomb);
        assert_eq!(
            issues::<ExtractField>(Some(Side::Value), &[]),
            vec!["field: is required but missing"]
        );
    }
}
