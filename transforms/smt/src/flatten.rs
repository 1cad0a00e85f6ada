//! `Flatten$Key` / `Flatten$Value`: flattens nested objects into one level, joining the
//! field names with a delimiter.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt};

/// Keys of `Flatten$Key` / `Flatten$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FlattenConfig {
    /// Delimiter inserted between the field names of the outer and inner objects.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
}

fn default_delimiter() -> String {
    ".".into()
}

pub(crate) struct Flatten {
    side: Side,
    delimiter: String,
}

impl Smt for Flatten {
    type Config = FlattenConfig;
    const NAME: &'static str = "Flatten";
    const DESCRIPTION: &'static str =
        "Flattens nested objects, joining field names with a delimiter.";

    fn build(config: FlattenConfig, side: Side, _issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        Some(Flatten {
            side,
            delimiter: config.delimiter,
        })
    }
}

impl Flatten {
    fn flatten_into(&self, prefix: &str, map: Map<String, Value>, out: &mut Map<String, Value>) {
        for (key, value) in map {
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}{}{key}", self.delimiter)
            };
            match value {
                Value::Object(inner) => self.flatten_into(&name, inner, out),
                other => {
                    out.insert(name, other);
                }
            }
        }
    }
}

impl Transform for Flatten {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        if let Some(map) = self.side.object_mut(&mut record, "Flatten")?
            && map.values().any(Value::is_object)
        {
            let nested = std::mem::take(map);
            let mut flat = Map::with_capacity(nested.len());
            self.flatten_into("", nested, &mut flat);
            *map = flat;
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
    fn flattens_nested_objects() {
        // KC docs: {"content": {"id": 42, "name": {"first": "David", "middle": null,
        // "last": "Wong"}}} → content.id, content.name.first, ...
        let mut t = build::<Flatten>(Some(Side::Value), &[]);
        let v = json!({"content": {"id": 42, "name": {"first": "David", "middle": null, "last": "Wong"}}, "tags": [{"a": 1}], "empty": {}});
        let r = one(&mut t, record(json!(1), v));
        assert_eq!(
            r.value_json().unwrap(),
            &json!({"content.id": 42, "content.name.first": "David", "content.name.middle": null, "content.name.last": "Wong", "tags": [{"a": 1}]})
        );
        let mut t = build::<Flatten>(Some(Side::Key), &[("delimiter", "_")]);
        let r = one(&mut t, record(json!({"a": {"b": 1}}), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!({"a_b": 1}));
    }

    #[test]
    fn errors_and_tombstones() {
        let mut t = build::<Flatten>(Some(Side::Value), &[]);
        fail(&mut t, record(json!(1), json!(3)));
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        assert_eq!(one(&mut t, tomb.clone()), tomb);
    }
}
