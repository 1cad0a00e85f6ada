//! Checking connector definitions before anything runs: the same checks serve
//! `sluice validate`, the standalone start-up and (later) the REST validate endpoint.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;
use sluice_api::{ConfigIssue, ConfigMap, Severity, parse_config, schema_of};

use crate::bus::{ConnectorBusSettings, TopicFilter};
use crate::connector::{
    CommonConfig, ConnectorDefinition, ConnectorProblem, PASS_THROUGH_PREFIXES,
};
use crate::registry::{ConnectorPlugin, PluginRegistry};
use crate::{chain, placeholders};

/// A connector that passed validation, ready to run.
#[derive(Clone)]
pub struct ValidatedConnector {
    pub definition: ConnectorDefinition,
    pub common: CommonConfig,
    pub plugin: ConnectorPlugin,
}

impl ValidatedConnector {
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    pub fn is_source(&self) -> bool {
        matches!(self.plugin, ConnectorPlugin::Source(_))
    }

    /// The topics a sink consumes (meaningless for sources).
    pub fn topic_filter(&self) -> TopicFilter {
        topic_filter(&self.common).unwrap_or(TopicFilter::Names(Vec::new()))
    }

    /// The connector's client overrides and topic-creation settings.
    pub fn bus_settings(&self) -> ConnectorBusSettings {
        let mut overrides = ConnectorBusSettings {
            topic_replication: self.common.topic_creation_replication,
            dlq_topic: self.common.dlq_topic.clone(),
            dlq_replication: self.common.dlq_replication,
            ..ConnectorBusSettings::default()
        };
        for (key, value) in &self.definition.config {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some(k) = key.strip_prefix("producer.override.") {
                overrides.producer.push((k.to_string(), value));
            } else if let Some(k) = key.strip_prefix("consumer.override.") {
                overrides.consumer.push((k.to_string(), value));
            }
        }
        overrides
    }

    /// A sink connector's consumer group: `connect-<name>`, as Kafka Connect, unless
    /// `consumer.override.group.id` names another.
    pub fn group_id(&self) -> String {
        match self.definition.config.get("consumer.override.group.id") {
            Some(serde_json::Value::String(group)) if !group.is_empty() => group.clone(),
            _ => crate::sink_driver::group_id(self.name()),
        }
    }
}

fn topic_filter(common: &CommonConfig) -> Option<TopicFilter> {
    match &common.topics_regex {
        Some(pattern) => Regex::new(pattern).ok().map(TopicFilter::Pattern),
        None => Some(TopicFilter::Names(common.topics.clone())),
    }
}

/// Validates one definition. Problems include warnings; the connector is returned when
/// there is no error.
pub fn validate(
    definition: &ConnectorDefinition,
    registry: &PluginRegistry,
) -> (Vec<ConnectorProblem>, Option<ValidatedConnector>) {
    let issues_to_problems = |issues: Vec<ConfigIssue>| -> Vec<ConnectorProblem> {
        issues
            .into_iter()
            .map(|issue| ConnectorProblem {
                origin: definition.origin.clone(),
                connector: Some(definition.name.clone()),
                issue,
            })
            .collect()
    };
    let (issues, validated) = check(definition, registry);
    let mut problems = issues_to_problems(issues);
    problems
        .sort_by(|a, b| (b.issue.severity, &a.issue.key).cmp(&(a.issue.severity, &b.issue.key)));
    let has_error = problems.iter().any(ConnectorProblem::is_error);
    (problems, if has_error { None } else { validated })
}

/// Resolves placeholders (into a copy) and parses the runtime's own keys.
pub fn resolve_common(config: &ConfigMap) -> Result<(ConfigMap, CommonConfig), Vec<ConfigIssue>> {
    let resolved = placeholders::resolve(config)?;
    let common = parse_config::<CommonConfig>(&resolved)?;
    Ok((resolved, common))
}

fn check(
    definition: &ConnectorDefinition,
    registry: &PluginRegistry,
) -> (Vec<ConfigIssue>, Option<ValidatedConnector>) {
    let (resolved, common) = match resolve_common(&definition.config) {
        Ok(ok) => ok,
        Err(issues) => return (issues, None),
    };
    let Some(plugin) = registry.connector(&common.connector_class) else {
        return (
            vec![ConfigIssue::error(
                "connector.class",
                format!(
                    "unknown connector class \"{}\" (known: {})",
                    common.connector_class,
                    registry.connector_classes().join(", ")
                ),
            )],
            None,
        );
    };
    let mut issues = plugin.as_plugin().validate(&resolved);
    issues.extend(chain::validate(&resolved, registry));

    match &plugin {
        ConnectorPlugin::Sink(_) => {
            check_sink(&common, &mut issues);
            if let Ok(chain) = chain::TransformChain::build(&resolved, registry) {
                for (alias, _) in chain.checkpoint() {
                    issues.push(ConfigIssue::warning(
                        format!("transforms.{alias}.type"),
                        "is stateful; in a sink connector its state lives in memory only (a restart \
                         starts it empty) and open windows are emitted only when --drain ends the input. \
                         In a source connector its state is checkpointed with the offsets",
                    ));
                }
            }
        }
        ConnectorPlugin::Source(_) => {
            for key in ["topics", "topics.regex"] {
                if resolved.contains_key(key) {
                    issues.push(ConfigIssue::warning(key, "is ignored by source connectors"));
                }
            }
        }
    }
    if common.dlq_topic.is_some() && common.tolerance == crate::connector::Tolerance::None {
        issues.push(ConfigIssue::warning(
            "errors.deadletterqueue.topic.name",
            "has no effect unless errors.tolerance=all",
        ));
    }
    issues.extend(unknown_keys(&resolved, &plugin));
    let validated = ValidatedConnector {
        definition: definition.clone(),
        common,
        plugin,
    };
    (issues, Some(validated))
}

fn check_sink(common: &CommonConfig, issues: &mut Vec<ConfigIssue>) {
    match (&common.topics_regex, common.topics.is_empty()) {
        (Some(_), false) => issues.push(ConfigIssue::error(
            "topics",
            "set either topics or topics.regex, not both",
        )),
        (None, true) => issues.push(ConfigIssue::error(
            "topics",
            "a sink connector needs topics or topics.regex",
        )),
        (Some(pattern), true) => {
            if let Err(e) = Regex::new(pattern) {
                issues.push(ConfigIssue::error(
                    "topics.regex",
                    format!("invalid regular expression: {e}"),
                ));
            }
        }
        (None, false) => {}
    }
    // A sink that consumes its own dead letters would wait on itself forever.
    if let (Some(dlq), Some(filter)) = (&common.dlq_topic, topic_filter(common))
        && filter.matches(dlq)
    {
        issues.push(ConfigIssue::error(
            "errors.deadletterqueue.topic.name",
            format!("\"{dlq}\" is one of the topics this connector consumes"),
        ));
    }
}

fn unknown_keys(config: &ConfigMap, plugin: &ConnectorPlugin) -> Vec<ConfigIssue> {
    let declared = |schema: Value| -> Vec<String> {
        schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut known = declared(schema_of::<CommonConfig>());
    known.extend(declared(plugin.as_plugin().config_schema()));
    config
        .keys()
        .filter(|k| !known.contains(k) && !PASS_THROUGH_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|k| {
            ConfigIssue::warning(
                k.clone(),
                "is not a known key of this connector; it is ignored",
            )
        })
        .collect()
}

/// Validates several definitions together: each on its own, plus names used twice.
pub fn validate_all(
    definitions: &[ConnectorDefinition],
    registry: &PluginRegistry,
) -> (Vec<ConnectorProblem>, Vec<ValidatedConnector>) {
    let mut problems = Vec::new();
    let mut valid = Vec::new();
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for definition in definitions {
        if let Some(first) = seen.insert(&definition.name, &definition.origin) {
            problems.push(ConnectorProblem {
                origin: definition.origin.clone(),
                connector: Some(definition.name.clone()),
                issue: ConfigIssue {
                    severity: Severity::Error,
                    key: Some("name".into()),
                    message: format!("is already used by the connector in {first}"),
                },
            });
            continue;
        }
        let (p, v) = validate(definition, registry);
        problems.extend(p);
        valid.extend(v);
    }
    (problems, valid)
}
