//! `Filter`: keeps the records for which a condition holds.
//!
//! The condition is an expression of the Common Expression Language (CEL), evaluated by
//! the [`cel`] crate (cel-rust) against the record: `value`, `key`, `topic`, `headers`
//! and `timestamp`, e.g. `value.event_type == "purchase" && value.price != null`.
//!
//! * The expression is compiled once per task, in [`TransformPlugin::create`]; an invalid
//!   one is a validation error on `condition` that gives the parser's reason and position.
//! * Nothing is converted up front. The record is handed to the interpreter through a
//!   variable resolver that answers qualified names (`value.event_type`) straight from the
//!   record's JSON, borrowing its strings, so a record costs only the fields the
//!   expression reads. A `value` object the expression uses as a whole (`value == {...}`,
//!   `size(value)`, `value.exists(...)`) is converted entirely, as it must be.
//! * A result that is not a boolean, a failed evaluation (missing field, wrong type) and a
//!   value that is bytes rather than JSON are handled per `on.error`: a record error
//!   (`fail`, the default, routed by `errors.tolerance`), or the record is dropped or kept.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Plugin, PluginInfo, PluginKind, Record,
    Transform, TransformPlugin, parse_config, schema_of,
};
use sluice_condition::Condition;

/// The `Filter` transform plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilterPlugin;

/// The keys of a `Filter` transform (under `transforms.<alias>.`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FilterConfig {
    /// The condition a record must meet to be kept: a Common Expression Language (CEL)
    /// expression over `value` (the record value, JSON), `key` (the record key: JSON, or
    /// bytes), `topic` (string), `headers` (map of header key to value; the last header
    /// with a key wins) and `timestamp` (epoch milliseconds, or null). It must evaluate
    /// to a boolean, e.g. `value.event_type == "purchase" && value.price != null`.
    pub condition: String,
    /// What happens to a record the condition cannot be evaluated on (a missing field, a
    /// wrong type, a result that is not a boolean, a value that is bytes rather than
    /// JSON): `fail` (a record error, handled by `errors.tolerance`: dead letter or task
    /// failure), `drop` (the record is dropped) or `keep` (the record is kept).
    #[serde(rename = "on.error", default)]
    pub on_error: OnError,
}

/// What to do with a record the condition cannot be evaluated on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// A record error (`DataException`): dead-lettered or failing the task, per
    /// `errors.tolerance`.
    #[default]
    Fail,
    /// The record is dropped.
    Drop,
    /// The record is kept.
    Keep,
}

impl FilterConfig {
    /// Parses the config and compiles its condition: every problem as an issue.
    fn compile(config: &ConfigMap) -> Result<(FilterConfig, Condition), Vec<ConfigIssue>> {
        let parsed = parse_config::<FilterConfig>(config)?;
        match Condition::compile(&parsed.condition) {
            Ok(condition) => Ok((parsed, condition)),
            Err(reason) => Err(vec![ConfigIssue::error("condition", reason)]),
        }
    }
}

impl Plugin for FilterPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "Filter".to_string(),
            aliases: vec!["sluice.Filter".to_string()],
            kind: PluginKind::Transform,
            version: API_VERSION.to_string(),
            description: "Keeps the records for which a CEL condition over value, key, topic, \
                          headers and timestamp holds; drops the others."
                .to_string(),
        }
    }

    fn config_schema(&self) -> serde_json::Value {
        schema_of::<FilterConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        match FilterConfig::compile(config) {
            Ok(_) => Vec::new(),
            Err(issues) => issues,
        }
    }
}

impl TransformPlugin for FilterPlugin {
    fn create(&self, config: &ConfigMap) -> Result<Box<dyn Transform>, ConnectError> {
        let (parsed, condition) = FilterConfig::compile(config).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            ConnectError::config(format!("invalid Filter config: {}", text.join("; ")))
        })?;
        Ok(Box::new(Filter {
            condition,
            on_error: parsed.on_error,
        }))
    }
}

/// A running filter: the compiled condition and what to do when it cannot be evaluated.
pub struct Filter {
    condition: Condition,
    on_error: OnError,
}

impl Filter {
    /// Compiles `condition` into a filter, for use without the plugin registry.
    pub fn new(condition: &str, on_error: OnError) -> Result<Filter, ConnectError> {
        let condition = Condition::compile(condition)
            .map_err(|reason| ConnectError::config(format!("invalid condition: {reason}")))?;
        Ok(Filter {
            condition,
            on_error,
        })
    }

    /// Whether `record` meets the condition; an error when it cannot be evaluated on it.
    pub fn matches(&self, record: &Record) -> Result<bool, ConnectError> {
        self.condition.evaluate(record)
    }
}

impl Transform for Filter {
    fn apply(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        if self.keeps(&record)? {
            out.push(record);
        }
        Ok(())
    }

    fn is_filter(&self) -> bool {
        true
    }

    fn keeps(&mut self, record: &Record) -> Result<bool, ConnectError> {
        match self.condition.evaluate(record) {
            Ok(keep) => Ok(keep),
            Err(err) => match self.on_error {
                OnError::Fail => Err(err),
                OnError::Drop => Ok(false),
                OnError::Keep => Ok(true),
            },
        }
    }
}

#[cfg(test)]
mod tests;
