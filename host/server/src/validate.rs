//! `PUT /connector-plugins/{plugin}/config/validate` and `GET …/config`: Kafka Connect's
//! `ConfigInfos` and `ConfigKeyInfo`, built from the same JSON Schemas (generated from the
//! config structs) and the same validation as `sluice validate`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_api::{Severity, schema_of};
use sluice_runtime::ConnectorDefinition;
use sluice_runtime::connector::CommonConfig;
use sluice_runtime::registry::PluginRegistry;
use sluice_runtime::validation::validate;

use crate::types::{ConfigInfo, ConfigInfos, ConfigKeyInfo, ConfigValueInfo};

fn kafka_type(name: &str, property: &Value) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with("password") || lower.ends_with(".secret") {
        return "PASSWORD";
    }
    let types: Vec<&str> = match &property["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"boolean") {
        "BOOLEAN"
    } else if types.contains(&"integer") {
        "LONG"
    } else if types.contains(&"number") {
        "DOUBLE"
    } else if types.contains(&"array") {
        "LIST"
    } else {
        "STRING"
    }
}

fn default_text(property: &Value) -> Option<String> {
    value_text(property.get("default"))
}

/// One `ConfigKeyInfo` per property of `schema`, in `group`.
pub fn definitions(schema: &Value, group: &str) -> Vec<ConfigKeyInfo> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .enumerate()
                .map(|(order, (name, p))| {
                    let required = required.contains(&name.as_str());
                    ConfigKeyInfo {
                        name: name.clone(),
                        kind: kafka_type(name, p).to_string(),
                        required,
                        default_value: default_text(p),
                        importance: if required { "HIGH" } else { "MEDIUM" }.to_string(),
                        documentation: p
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        group: group.to_string(),
                        width: "NONE".to_string(),
                        display_name: name.clone(),
                        dependents: Vec::new(),
                        order: order as i64,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn value_text(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// Kafka Connect's validation response: every key of the common and plugin schemas (and
/// every key given that neither knows, with a null definition), each with its errors.
pub fn validate_response(
    registry: &PluginRegistry,
    class: &str,
    config: BTreeMap<String, Value>,
) -> ConfigInfos {
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("validate")
        .to_string();
    let mut connector_config = config.clone();
    connector_config.remove("name");
    connector_config
        .entry("connector.class".to_string())
        .or_insert_with(|| json!(class));
    let document = json!({"name": name, "config": connector_config});
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut general: Vec<String> = Vec::new();
    match ConnectorDefinition::from_document("validate", document) {
        Ok(definition) => {
            let (problems, _) = validate(&definition, registry);
            for p in problems
                .into_iter()
                .filter(|p| p.issue.severity == Severity::Error)
            {
                match p.issue.key {
                    Some(key) => errors.entry(key).or_default().push(p.issue.message),
                    None => general.push(p.issue.message),
                }
            }
        }
        Err(p) => general.push(p.issue.message),
    }
    let plugin_schema = registry
        .all()
        .into_iter()
        .find(|(info, _)| info.class == class)
        .map(|(_, s)| s)
        .unwrap_or(Value::Null);
    let mut defs = definitions(&schema_of::<CommonConfig>(), "Common");
    defs.extend(definitions(&plugin_schema, class));
    let mut configs = Vec::new();
    let mut seen = Vec::new();
    let value = |key: &str, value: Option<String>, errors: Vec<String>| ConfigValueInfo {
        name: key.to_string(),
        value,
        recommended_values: Vec::new(),
        errors,
        visible: true,
    };
    for def in defs {
        let key = def.name.clone();
        if seen.contains(&key) {
            continue;
        }
        let key_errors = errors.remove(&key).unwrap_or_default();
        configs.push(ConfigInfo {
            value: value(&key, value_text(config.get(&key)), key_errors),
            definition: Some(def),
        });
        seen.push(key);
    }
    // Keys no schema declares (transforms.*, overrides, or unknown), and their errors.
    for (key, given) in &config {
        if seen.contains(key) {
            continue;
        }
        let key_errors = errors.remove(key).unwrap_or_default();
        configs.push(ConfigInfo {
            definition: None,
            value: value(key, value_text(Some(given)), key_errors),
        });
    }
    // Errors on keys that were not given (a required key missing) and general ones.
    for (key, key_errors) in errors {
        configs.push(ConfigInfo {
            definition: None,
            value: value(&key, None, key_errors),
        });
    }
    if !general.is_empty() {
        configs.push(ConfigInfo {
            definition: None,
            value: value("", None, general),
        });
    }
    ConfigInfos {
        name: class.to_string(),
        error_count: configs.iter().map(|c| c.value.errors.len()).sum(),
        groups: vec!["Common".to_string(), class.to_string()],
        configs,
    }
}
