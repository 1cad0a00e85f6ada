//! Connector definitions in Kafka Connect's JSON format, and the keys the runtime itself
//! reads from every connector config.

use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use sluice_api::{ConfigIssue, ConfigMap, Severity};

/// A connector as submitted: its name and its config (placeholders unresolved).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorDefinition {
    pub name: String,
    pub config: ConfigMap,
    /// Where it came from (a file path), for messages.
    pub origin: String,
}

/// A problem with a connector definition, located by file, connector and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorProblem {
    pub origin: String,
    pub connector: Option<String>,
    pub issue: ConfigIssue,
}

impl ConnectorProblem {
    pub fn is_error(&self) -> bool {
        self.issue.severity == Severity::Error
    }
}

impl fmt::Display for ConnectorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if self.issue.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(name) = &self.connector {
            write!(f, "connector \"{name}\": ")?;
        }
        write!(f, "{}", self.issue)
    }
}

impl ConnectorDefinition {
    /// Parses `{"name": ..., "config": {...}}` or a bare config map holding `name`.
    /// Values may be strings (as Kafka Connect sends them), numbers or booleans; a list
    /// of strings is accepted for list keys and kept as a comma-separated string.
    pub fn parse(origin: &str, text: &str) -> Result<ConnectorDefinition, ConnectorProblem> {
        let document: Value = serde_json::from_str(text).map_err(|e| ConnectorProblem {
            origin: origin.to_string(),
            connector: None,
            issue: ConfigIssue {
                severity: Severity::Error,
                key: None,
                message: format!("invalid JSON: {e}"),
            },
        })?;
        Self::from_document(origin, document)
    }

    /// Builds a definition from an already parsed document (either form).
    pub fn from_document(
        origin: &str,
        document: Value,
    ) -> Result<ConnectorDefinition, ConnectorProblem> {
        let problem =
            |connector: Option<&str>, key: Option<&str>, message: String| ConnectorProblem {
                origin: origin.to_string(),
                connector: connector.map(str::to_string),
                issue: ConfigIssue {
                    severity: Severity::Error,
                    key: key.map(str::to_string),
                    message,
                },
            };
        let Value::Object(mut top) = document else {
            return Err(problem(
                None,
                None,
                "expected a JSON object with \"name\" and \"config\"".into(),
            ));
        };
        let (outer_name, raw_config) = match top.remove("config") {
            Some(Value::Object(config)) => {
                let name = match top.remove("name") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return Err(problem(None, Some("name"), "must be a string".into())),
                };
                (name, config)
            }
            Some(_) => {
                return Err(problem(
                    None,
                    Some("config"),
                    "must be a JSON object of keys to values".into(),
                ));
            }
            None => (None, top),
        };
        let inner_name = match raw_config.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(problem(None, Some("name"), "must be a string".into())),
        };
        let name = match (outer_name, inner_name) {
            (Some(outer), Some(inner)) if outer != inner => {
                return Err(problem(
                    Some(&outer),
                    Some("name"),
                    format!(
                        "the config's name \"{inner}\" differs from the connector's name \"{outer}\""
                    ),
                ));
            }
            (Some(name), _) | (None, Some(name)) => name,
            (None, None) => {
                return Err(problem(
                    None,
                    Some("name"),
                    "is required but missing".into(),
                ));
            }
        };
        if let Some(message) = name_problem(&name) {
            return Err(problem(Some(&name), Some("name"), message));
        }
        let mut config = ConfigMap::new();
        for (key, value) in raw_config {
            let value = match value {
                Value::Array(items) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Value::String(s) => parts.push(s),
                            Value::Number(n) => parts.push(n.to_string()),
                            _ => {
                                return Err(problem(
                                    Some(&name),
                                    Some(&key),
                                    "a list may hold only strings".into(),
                                ));
                            }
                        }
                    }
                    Value::String(parts.join(","))
                }
                Value::Object(_) => {
                    return Err(problem(
                        Some(&name),
                        Some(&key),
                        "must be a string, number or boolean, not an object".into(),
                    ));
                }
                other => other,
            };
            config.insert(key, value);
        }
        config.insert("name".into(), Value::String(name.clone()));
        Ok(ConnectorDefinition {
            name,
            config,
            origin: origin.to_string(),
        })
    }

    /// Reads and parses a connector file: JSON, or a Java `.properties` file as Kafka
    /// Connect's `connect-standalone` takes (keys and string values, `name` among them).
    pub fn load(path: &std::path::Path) -> Result<ConnectorDefinition, ConnectorProblem> {
        let origin = path.display().to_string();
        let problem = |message: String| ConnectorProblem {
            origin: origin.clone(),
            connector: None,
            issue: ConfigIssue {
                severity: Severity::Error,
                key: None,
                message,
            },
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read: {e}")))?;
        if path.extension().is_some_and(|e| e == "properties") {
            let properties = crate::placeholders::parse_properties(&text).map_err(problem)?;
            let document = properties
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<serde_json::Map<_, _>>();
            return Self::from_document(&origin, Value::Object(document));
        }
        Self::parse(&origin, &text)
    }
}

/// Why a connector name is unusable (it becomes part of REST paths, group ids and keys).
pub fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("must not be empty".into())
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters".into())
    } else if name.contains('/') {
        Some("must not contain '/'".into())
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    /// Any error fails the task.
    #[default]
    None,
    /// Errors are logged and the record is skipped or dead-lettered; processing goes on.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// A FAILED task stays failed until restarted by hand (Kafka Connect's behaviour).
    #[default]
    Never,
    /// A FAILED task is restarted by the worker with capped exponential backoff.
    Backoff,
}

/// How keys and values are turned from and into bytes, by Kafka Connect class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
pub enum ConverterClass {
    #[default]
    #[serde(
        rename = "org.apache.kafka.connect.json.JsonConverter",
        alias = "JsonConverter",
        alias = "json"
    )]
    Json,
    #[serde(
        rename = "org.apache.kafka.connect.storage.StringConverter",
        alias = "StringConverter",
        alias = "string"
    )]
    String,
    #[serde(
        rename = "org.apache.kafka.connect.converters.ByteArrayConverter",
        alias = "ByteArrayConverter",
        alias = "bytes"
    )]
    ByteArray,
}

/// The keys every connector config may hold, read by the runtime rather than the plugin.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CommonConfig {
    /// Unique name of the connector.
    pub name: String,
    /// The plugin to run: its class name or an alias (see `sluice plugins`).
    #[serde(rename = "connector.class")]
    pub connector_class: String,
    /// Most tasks to run (at most 10,000: each task is a configuration the connector builds
    /// and a runtime task). A connector may use fewer.
    #[serde(rename = "tasks.max", default = "one")]
    #[schemars(range(min = 1, max = 10000))]
    pub tasks_max: u32,
    /// Sink connectors: topics to consume (comma-separated).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Sink connectors: a regular expression; every topic it matches (in full) is consumed.
    #[serde(rename = "topics.regex", default)]
    pub topics_regex: Option<String>,
    /// Aliases of the transforms to apply, in order (comma-separated).
    #[serde(default)]
    pub transforms: Vec<String>,
    /// Aliases of the predicates transforms may refer to (comma-separated).
    #[serde(default)]
    pub predicates: Vec<String>,
    /// Converter for record keys.
    #[serde(rename = "key.converter", default)]
    pub key_converter: ConverterClass,
    /// Whether the JSON key converter reads and writes `{"schema":…,"payload":…}` envelopes.
    #[serde(rename = "key.converter.schemas.enable", default)]
    pub key_schemas_enable: bool,
    /// Converter for record values.
    #[serde(rename = "value.converter", default)]
    pub value_converter: ConverterClass,
    /// Whether the JSON value converter reads and writes `{"schema":…,"payload":…}` envelopes.
    /// Defaults to false (Kafka Connect defaults to true, which rejects plain JSON).
    #[serde(rename = "value.converter.schemas.enable", default)]
    pub value_schemas_enable: bool,
    /// How long a failing operation is retried, in ms (0 = not at all, -1 = forever).
    #[serde(rename = "errors.retry.timeout", default)]
    #[schemars(range(min = -1))]
    pub retry_timeout_ms: i64,
    /// The longest wait between two retries, in ms.
    #[serde(rename = "errors.retry.delay.max.ms", default = "sixty_seconds")]
    pub retry_delay_max_ms: u64,
    /// `none`: an error fails the task. `all`: the record is skipped (and dead-lettered
    /// when a dead-letter topic is set) and processing goes on.
    #[serde(rename = "errors.tolerance", default)]
    pub tolerance: Tolerance,
    /// Topic that receives records that failed, with `errors.tolerance=all`.
    #[serde(rename = "errors.deadletterqueue.topic.name", default)]
    pub dlq_topic: Option<String>,
    /// Whether dead letters carry `__connect.errors.*` context headers. Defaults to true
    /// (Kafka Connect defaults to false, which leaves dead letters without their reason).
    #[serde(
        rename = "errors.deadletterqueue.context.headers.enable",
        default = "yes"
    )]
    pub dlq_context_headers: bool,
    /// Log every failed operation.
    #[serde(rename = "errors.log.enable", default)]
    pub log_errors: bool,
    /// Include the record's key and value in those log lines.
    #[serde(rename = "errors.log.include.messages", default)]
    pub log_include_messages: bool,
    /// `never` (Kafka Connect's behaviour) or `backoff`: restart FAILED tasks automatically.
    #[serde(rename = "task.restart.policy", default)]
    pub restart_policy: RestartPolicy,
    /// The longest wait between two automatic restarts of a task, in ms.
    #[serde(rename = "task.restart.backoff.max.ms", default = "sixty_seconds")]
    pub restart_backoff_max_ms: u64,
    /// Source connectors: partitions of topics they create.
    #[serde(rename = "topic.creation.default.partitions", default)]
    #[schemars(range(min = 1))]
    pub topic_creation_partitions: Option<u32>,
    /// Source connectors, Kafka: replication factor of topics they create; unset takes
    /// the broker's default.
    #[serde(rename = "topic.creation.default.replication.factor", default)]
    #[schemars(range(min = -1))]
    pub topic_creation_replication: Option<i32>,
    /// Kafka: replication factor of the dead-letter topic when sluice creates it; unset
    /// takes the broker's default (Kafka Connect's default is 3).
    #[serde(rename = "errors.deadletterqueue.topic.replication.factor", default)]
    #[schemars(range(min = -1))]
    pub dlq_replication: Option<i32>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn sixty_seconds() -> u64 {
    60_000
}

/// Key prefixes the runtime accepts without knowing each key (passed to clients or
/// validated elsewhere).
pub const PASS_THROUGH_PREFIXES: &[&str] = &[
    "transforms.",
    "predicates.",
    "producer.override.",
    "consumer.override.",
    "admin.override.",
    "key.converter.",
    "value.converter.",
    "header.converter",
    "topic.creation.",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrapped_and_bare_forms_are_equivalent() {
        let wrapped = ConnectorDefinition::parse(
            "a.json",
            r#"{"name": "sim", "config": {"connector.class": "SimulatorSource", "tasks.max": "2"}}"#,
        )
        .unwrap();
        let bare = ConnectorDefinition::parse(
            "b.json",
            r#"{"name": "sim", "connector.class": "SimulatorSource", "tasks.max": "2"}"#,
        )
        .unwrap();
        assert_eq!(wrapped.name, "sim");
        assert_eq!(wrapped.config, bare.config);
        assert_eq!(wrapped.config["name"], json!("sim"));
    }

    #[test]
    fn bad_documents_are_located() {
        let err = ConnectorDefinition::parse("x.json", "{nope")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.json: invalid JSON"), "{err}");
        let err = ConnectorDefinition::parse("x.json", r#"{"config": {}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "x.json: key \"name\": is required but missing");
        let err = ConnectorDefinition::parse("x.json", r#"{"name": "a", "config": {"name": "b"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connector \"a\"") && err.contains("differs"),
            "{err}"
        );
        let err = ConnectorDefinition::parse("x.json", r#"{"name": "a/b"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'/'"), "{err}");
        let err = ConnectorDefinition::parse("x.json", r#"{"name": "a", "k": {"x": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key \"k\""), "{err}");
    }

    #[test]
    fn list_values_become_kafka_connect_lists() {
        let def = ConnectorDefinition::parse("x.json", r#"{"name": "a", "topics": ["t1", "t2"]}"#)
            .unwrap();
        assert_eq!(def.config["topics"], json!("t1,t2"));
    }
}
