//! Connector configuration: Kafka Connect's string maps, parsed into typed structs.
//!
//! Kafka Connect sends every value as a string (`"tasks.max": "10"`); people writing JSON
//! by hand write numbers and booleans. Each component describes its keys once, as a struct
//! deriving `Deserialize` and `JsonSchema`; [`parse_config`] uses that struct's JSON Schema
//! to coerce strings to the types it declares (and comma lists to arrays), checks the
//! bounds it declares, and then deserializes. The same schema documents the component and
//! answers validation, so there is no second list of keys to keep in step.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A connector's configuration as written: key → JSON value (often a string).
pub type ConfigMap = BTreeMap<String, Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found in a configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub severity: Severity,
    /// The configuration key, when the problem belongs to one.
    pub key: Option<String>,
    pub message: String,
}

impl ConfigIssue {
    pub fn error(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            severity: Severity::Error,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    pub fn warning(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            severity: Severity::Warning,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// The same issue for a key that lives under a prefix (`transforms.a.` + `field`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        if let Some(key) = self.key.take() {
            self.key = Some(format!("{prefix}{key}"));
        }
        self
    }
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key \"{key}\": {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The JSON Schema of a config struct, as a plain JSON value.
pub fn schema_of<T: JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

/// Parses `config` into `T`, coercing Kafka Connect's string values by `T`'s schema.
/// Keys `T` does not declare are ignored here (the runtime warns about them once it knows
/// every component's keys). Returns every problem it can find, not only the first.
pub fn parse_config<T: DeserializeOwned + JsonSchema>(
    config: &ConfigMap,
) -> Result<T, Vec<ConfigIssue>> {
    let schema = schema_of::<T>();
    let (object, mut issues) = coerce(&schema, config);
    if !issues.is_empty() {
        return Err(issues);
    }
    let deserializer = Value::Object(object);
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(parsed) => Ok(parsed),
        Err(err) => {
            let path = err.path().to_string();
            let message = strip_position(err.inner().to_string());
            issues.push(if path == "." || path.is_empty() {
                ConfigIssue {
                    severity: Severity::Error,
                    key: None,
                    message,
                }
            } else {
                ConfigIssue::error(path, message)
            });
            Err(issues)
        }
    }
}

/// Only the problems [`parse_config`] would report, for validation without building `T`.
pub fn validate_config<T: DeserializeOwned + JsonSchema>(config: &ConfigMap) -> Vec<ConfigIssue> {
    match parse_config::<T>(config) {
        Ok(_) => Vec::new(),
        Err(issues) => issues,
    }
}

fn strip_position(message: String) -> String {
    // serde_json appends " at line 1 column N" for values built in memory; it means nothing here.
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}

/// Builds the object to deserialize: declared keys only, nulls dropped, values coerced to
/// the declared types; plus the problems found (missing required keys, unparsable values,
/// values out of the declared bounds).
fn coerce(schema: &Value, config: &ConfigMap) -> (Map<String, Value>, Vec<ConfigIssue>) {
    let mut issues = Vec::new();
    let mut object = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object);
    let empty = Map::new();
    let properties = properties.unwrap_or(&empty);

    for (key, prop) in properties {
        let Some(value) = config.get(key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let prop = resolve(schema, prop);
        match coerce_value(schema, prop, value) {
            Ok(coerced) => {
                if let Some(problem) = check_bounds(prop, &coerced) {
                    issues.push(ConfigIssue::error(key.clone(), problem));
                }
                object.insert(key.clone(), coerced);
            }
            Err(problem) => issues.push(ConfigIssue::error(key.clone(), problem)),
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if config.get(key).is_none_or(Value::is_null) {
                issues.push(ConfigIssue::error(key, "is required but missing"));
            }
        }
    }
    (object, issues)
}

/// Follows a local `$ref` (schemars puts enums and nested structs under `$defs`).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
        return schema;
    };
    let Some(pointer) = reference.strip_prefix('#') else {
        return schema;
    };
    root.pointer(pointer).unwrap_or(schema)
}

fn declared_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn coerce_value(root: &Value, schema: &Value, value: &Value) -> Result<Value, String> {
    let types = declared_types(schema);
    let allows = |t: &str| types.contains(&t);
    match value {
        Value::String(text) if !allows("string") && !types.is_empty() => {
            let trimmed = text.trim();
            if allows("integer") {
                if let Ok(i) = trimmed.parse::<i64>() {
                    return Ok(Value::from(i));
                }
                if let Ok(u) = trimmed.parse::<u64>() {
                    return Ok(Value::from(u));
                }
            }
            if allows("number")
                && let Some(n) = trimmed
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
            {
                return Ok(Value::Number(n));
            }
            if allows("boolean") {
                if trimmed.eq_ignore_ascii_case("true") {
                    return Ok(Value::Bool(true));
                }
                if trimmed.eq_ignore_ascii_case("false") {
                    return Ok(Value::Bool(false));
                }
            }
            if allows("array") {
                let item = schema.get("items").map(|i| resolve(root, i));
                let items = split_list(text)
                    .into_iter()
                    .map(|part| match item {
                        Some(item) => coerce_value(root, item, &Value::String(part)),
                        None => Ok(Value::String(part)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Value::Array(items));
            }
            Err(format!("expected {}, got \"{text}\"", describe(&types)))
        }
        Value::Number(n) if allows("string") && !allows("number") && !allows("integer") => {
            Ok(Value::String(n.to_string()))
        }
        Value::Bool(b) if allows("string") && !allows("boolean") => {
            Ok(Value::String(b.to_string()))
        }
        other => Ok(other.clone()),
    }
}

/// Splits a Kafka Connect list value ("a, b,c") into its trimmed, non-empty items.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn describe(types: &[&str]) -> String {
    let names: Vec<&str> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "true or false",
            "array" => "a comma-separated list",
            "object" => "an object",
            other => other,
        })
        .collect();
    names.join(" or ")
}

fn check_bounds(schema: &Value, value: &Value) -> Option<String> {
    let n = value.as_f64()?;
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        return Some(format!("must be at least {min}, got {value}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        return Some(format!("must be at most {max}, got {value}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    struct Example {
        #[serde(rename = "tasks.max", default = "one")]
        tasks_max: u32,
        #[serde(rename = "enabled", default)]
        enabled: bool,
        #[schemars(range(min = 0.0, max = 1.0))]
        #[serde(default)]
        rate: f64,
        file: String,
        #[serde(default)]
        topics: Vec<String>,
        #[serde(default = "fast")]
        mode: Mode,
        #[serde(default)]
        limit: Option<u64>,
    }

    fn one() -> u32 {
        1
    }

    fn fast() -> Mode {
        Mode::Fast
    }

    fn map(v: Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn strings_are_coerced_to_declared_types() {
        let parsed: Example = parse_config(&map(json!({
            "tasks.max": "10", "enabled": "TRUE", "rate": "0.5", "file": 7,
            "topics": "a, b,,c", "mode": "slow", "limit": "42", "unknown": "x"
        })))
        .unwrap();
        assert_eq!(
            parsed,
            Example {
                tasks_max: 10,
                enabled: true,
                rate: 0.5,
                file: "7".into(),
                topics: vec!["a".into(), "b".into(), "c".into()],
                mode: Mode::Slow,
                limit: Some(42),
            }
        );
    }

    #[test]
    fn native_json_values_and_defaults_work() {
        let parsed: Example =
            parse_config(&map(json!({"file": "f", "tasks.max": 3, "limit": null}))).unwrap();
        assert_eq!(parsed.tasks_max, 3);
        assert_eq!(parsed.limit, None);
        assert_eq!(parsed.mode, Mode::Fast);
    }

    #[test]
    fn problems_name_their_keys() {
        let issues =
            parse_config::<Example>(&map(json!({"tasks.max": "many", "rate": 2}))).unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"key \"tasks.max\": expected an integer, got \"many\"".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"key \"rate\": must be at most 1, got 2".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"key \"file\": is required but missing".to_string()),
            "{text:?}"
        );
    }

    #[test]
    fn serde_errors_carry_the_key() {
        let issues =
            parse_config::<Example>(&map(json!({"file": "f", "mode": "medium"}))).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key.as_deref(), Some("mode"));
        assert!(
            issues[0].message.contains("unknown variant `medium`"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn negative_for_unsigned_is_an_error() {
        let issues =
            parse_config::<Example>(&map(json!({"file": "f", "tasks.max": "-1"}))).unwrap_err();
        assert_eq!(issues[0].key.as_deref(), Some("tasks.max"));
    }
}
