//! The header transforms: `HeaderFrom$Key` / `HeaderFrom$Value`, `InsertHeader` and
//! `DropHeaders`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use sluice_api::{ConfigIssue, ConnectError, Header, Record, Transform};

use crate::common::{Side, Smt, non_blank, non_empty};

/// Whether `HeaderFrom` keeps the fields it copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Copy the fields to headers, keeping them.
    Copy,
    /// Move the fields to headers, removing them.
    Move,
}

/// Keys of `HeaderFrom$Key` / `HeaderFrom$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HeaderFromConfig {
    /// Field names in the record whose values are to be copied or moved to headers.
    pub fields: Vec<String>,
    /// Header names, in the same order as the field names listed in `fields`.
    pub headers: Vec<String>,
    /// `copy` or `move`: whether the fields are kept or removed.
    pub operation: Operation,
    /// Accepted for compatibility and ignored: schemaless JSON has no defaults.
    #[serde(rename = "replace.null.with.default", default)]
    pub replace_null_with_default: Option<bool>,
}

pub(crate) struct HeaderFrom {
    side: Side,
    pairs: Vec<(String, String)>,
    operation: Operation,
}

impl Smt for HeaderFrom {
    type Config = HeaderFromConfig;
    const NAME: &'static str = "HeaderFrom";
    const DESCRIPTION: &'static str = "Copies or moves fields of the key or value into headers.";

    fn build(config: HeaderFromConfig, side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        non_empty("fields", &config.fields, issues);
        non_empty("headers", &config.headers, issues);
        if config.fields.len() != config.headers.len() {
            issues.push(ConfigIssue::error(
                "headers",
                format!(
                    "must have as many items as \"fields\" ({} headers, {} fields)",
                    config.headers.len(),
                    config.fields.len()
                ),
            ));
        }
        Some(HeaderFrom {
            side,
            pairs: config.fields.into_iter().zip(config.headers).collect(),
            operation: config.operation,
        })
    }
}

impl Transform for HeaderFrom {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        if let Some(map) = self.side.object_mut(&mut record, "HeaderFrom")? {
            let mut headers = Vec::with_capacity(self.pairs.len());
            for (field, header) in &self.pairs {
                // As Kafka Connect (schemaless): a missing field gives a null header.
                let value = match self.operation {
                    Operation::Copy => map.get(field).cloned(),
                    Operation::Move => map.remove(field),
                };
                headers.push(Header::new(header.clone(), value.unwrap_or(Value::Null)));
            }
            record.headers.append(&mut headers);
        }
        out.push(record);
        Ok(())
    }
}

/// Keys of `InsertHeader`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct InsertHeaderConfig {
    /// The name of the header.
    pub header: String,
    /// The literal value of the header, parsed as Kafka Connect's `Values.parseString`
    /// would for JSON: `true`/`false` become booleans, numbers numbers, `[..]`/`{..}`
    /// JSON arrays/objects; anything else stays a string.
    #[serde(rename = "value.literal")]
    pub value_literal: String,
}

pub(crate) struct InsertHeader {
    header: Header,
}

/// The typed value of a header literal.
fn parse_literal(text: &str) -> Value {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if trimmed.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    let structured = trimmed.starts_with('[') || trimmed.starts_with('{');
    let numeric = trimmed
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '-');
    if (structured || numeric)
        && let Ok(v) = serde_json::from_str::<Value>(trimmed)
    {
        return v;
    }
    Value::String(text.to_string())
}

impl Smt for InsertHeader {
    type Config = InsertHeaderConfig;
    const NAME: &'static str = "InsertHeader";
    const DESCRIPTION: &'static str = "Adds a header with a literal value to every record.";

    fn build(
        config: InsertHeaderConfig,
        _side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        non_blank("header", &config.header, issues);
        Some(InsertHeader {
            header: Header::new(config.header, parse_literal(&config.value_literal)),
        })
    }
}

impl Transform for InsertHeader {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        record.headers.push(self.header.clone());
        out.push(record);
        Ok(())
    }
}

/// Keys of `DropHeaders`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct DropHeadersConfig {
    /// The names of the headers to remove (every header with one of these names).
    pub headers: Vec<String>,
}

pub(crate) struct DropHeaders {
    headers: Vec<String>,
}

impl Smt for DropHeaders {
    type Config = DropHeadersConfig;
    const NAME: &'static str = "DropHeaders";
    const DESCRIPTION: &'static str = "Removes headers by name.";

    fn build(
        config: DropHeadersConfig,
        _side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        non_empty("headers", &config.headers, issues);
        Some(DropHeaders {
            headers: config.headers,
        })
    }
}

impl Transform for DropHeaders {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        record.headers.retain(|h| !self.headers.contains(&h.key));
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
    fn header_from_copy_and_move() {
        let cfg = [
            ("fields", "id,missing"),
            ("headers", "h_id,h_missing"),
            ("operation", "copy"),
        ];
        let mut t = build::<HeaderFrom>(Some(Side::Value), &cfg);
        let r = one(&mut t, record(json!(1), json!({"id": 7, "x": 1})));
        assert_eq!(r.value_json().unwrap(), &json!({"id": 7, "x": 1}));
        assert_eq!(
            r.headers,
            vec![
                Header::new("h_id", 7),
                Header::new("h_missing", Value::Null)
            ]
        );
        let cfg = [
            ("fields", "id"),
            ("headers", "key_id"),
            ("operation", "move"),
        ];
        let mut t = build::<HeaderFrom>(Some(Side::Key), &cfg);
        let r = one(&mut t, record(json!({"id": "a", "y": 2}), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!({"y": 2}));
        assert_eq!(r.header("key_id"), Some(&json!("a")));
        fail(&mut t, record(json!("k"), json!(1)));
    }

    #[test]
    fn header_from_config_errors() {
        let bad = issues::<HeaderFrom>(
            Some(Side::Value),
            &[("fields", "a,b"), ("headers", "h"), ("operation", "copy")],
        );
        assert!(
            bad[0].starts_with("headers: must have as many items"),
            "{bad:?}"
        );
        let bad = issues::<HeaderFrom>(
            Some(Side::Value),
            &[("fields", "a"), ("headers", "h"), ("operation", "swap")],
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("operation:"), "{bad:?}");
    }

    #[test]
    fn insert_and_drop_headers() {
        let mut t =
            build::<InsertHeader>(None, &[("header", "source"), ("value.literal", "sluice")]);
        let r = one(&mut t, record(json!(1), json!(1)));
        assert_eq!(r.headers, vec![Header::new("source", "sluice")]);
        let mut n = build::<InsertHeader>(None, &[("header", "n"), ("value.literal", "42")]);
        let r = one(&mut n, r);
        assert_eq!(r.header("n"), Some(&json!(42)));
        let mut d = build::<DropHeaders>(None, &[("headers", "source, other")]);
        let r = one(&mut d, r);
        assert_eq!(r.headers, vec![Header::new("n", 42)]);
        assert_eq!(
            issues::<InsertHeader>(None, &[("header", "h")]),
            vec!["value.literal: is required but missing"]
        );
        assert_eq!(
            issues::<DropHeaders>(None, &[("headers", "")]),
            vec!["headers: must list at least one item"]
        );
        assert_eq!(parse_literal("1.5"), json!(1.5));
        assert_eq!(parse_literal("[1, \"a\"]"), json!([1, "a"]));
        assert_eq!(parse_literal("-x"), json!("-x"));
        assert_eq!(parse_literal("TRUE"), json!(true));
    }
}
