//! `SimulatorSource`: a seeded, replayable source of synthetic events (e-commerce,
//! sensors, user activity, clickstream), for trying pipelines out and for testing them.
//!
//! Every event is a pure function of (`seed`, task id, sequence number): a fresh PRNG is
//! seeded for each event from a hash of those three, and no random state is carried from
//! one event to the next. So a replay from any committed offset produces exactly the
//! records the first run produced, byte for byte (with `timestamp.mode=simulated`).
//!
//! * `max.events` is the total over all tasks; [`SimulatorPlugin`]'s `task_configs`
//!   rewrites it to each task's share.
//! * A task's source partition is `{"scenario": "<scenario>", "task": <id>}` and its offset
//!   `{"seq": <last sequence number sent>}`; it resumes at `seq + 1`.
//! * `malformed.rate` breaks a fraction of the records on purpose (unparsable bytes, a
//!   missing field, a field of the wrong type), to exercise dead-letter handling.

mod generate;
mod task;

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Plugin, PluginInfo, PluginKind, Severity,
    SourceConnector, SourceTask, parse_config, schema_of,
};

/// The source connector plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatorPlugin;

/// The keys of a `SimulatorSource` connector. Events are a pure function of (seed, task
/// id, sequence number), so a run can be replayed exactly.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SimulatorConfig {
    /// Topic every record is written to.
    pub topic: String,
    /// Which kind of events to generate: `ecommerce`, `sensors`, `user-activity` or
    /// `clickstream`.
    #[serde(default)]
    pub scenario: Scenario,
    /// Seed of the generator. The same seed (with the same scenario and number of tasks)
    /// always produces the same events.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Events per second per task. 0 generates as fast as the pipeline takes them.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub rate: f64,
    /// Total number of events over all tasks, after which the source is exhausted
    /// (`--drain` then ends the run). 0 = endless.
    #[serde(rename = "max.events", default)]
    pub max_events: u64,
    /// Event field whose value (as JSON) becomes the record key. Unset: the scenario's
    /// natural key (`user_id`, `sensor_id`, `user_id`, `userid`). Empty: records have no key.
    #[serde(rename = "key.field", default)]
    pub key_field: Option<String>,
    /// Fraction of records (0 to 1) deliberately broken, for testing dead-letter handling.
    /// Broken records carry the header `sluice.simulator.malformed` naming how.
    #[serde(rename = "malformed.rate", default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub malformed_rate: f64,
    /// How records are broken, chosen evenly among those listed: `invalid_json` (the value
    /// is the event's JSON text cut short, as bytes), `missing_field` (a required field
    /// removed), `wrong_type` (a number field as a non-numeric string).
    #[serde(rename = "malformed.kinds", default = "all_malformed_kinds")]
    #[schemars(with = "Vec<MalformedKind>")]
    pub malformed_kinds: Vec<String>,
    /// Where event times come from: `simulated` (a clock starting at `timestamp.start`
    /// and advancing `timestamp.interval.ms` per event on average; replays are
    /// byte-identical) or `wallclock` (the time each event is generated; replays then
    /// differ in their timestamps).
    #[serde(rename = "timestamp.mode", default)]
    pub timestamp_mode: TimestampMode,
    /// Time of each task's first event on the simulated clock, ISO-8601 / RFC 3339
    /// (`2024-01-01T00:00:00Z`; without an offset, UTC is assumed).
    #[serde(rename = "timestamp.start", default = "default_timestamp_start")]
    pub timestamp_start: String,
    /// Mean interval in milliseconds between one task's events on the simulated clock.
    /// Event n of a task falls at a random point in [start + n·interval, start + (n+1)·interval).
    #[serde(rename = "timestamp.interval.ms", default = "default_interval_ms")]
    pub timestamp_interval_ms: u64,
    /// Most records returned by one poll.
    #[serde(rename = "batch.size", default = "default_batch_size")]
    #[schemars(range(min = 1, max = 100_000))]
    pub batch_size: u32,
    /// `ecommerce` only: the event types generated (`view`, `add_to_cart`, `purchase`),
    /// keeping their relative weights. Every other field of an event is the same as with
    /// all types, so `purchase` alone yields the purchases of a much longer stream without
    /// generating its views and carts.
    #[serde(rename = "event.types", default = "all_event_types")]
    #[schemars(with = "Vec<EventType>")]
    pub event_types: Vec<String>,
}

/// The kind of events generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Shop events: `event_id`, `user_id`, `event_type`, `product_id`, `timestamp`, `price`.
    #[default]
    Ecommerce,
    /// Metric readings: `sensor_id`, `value`, `timestamp`, `location`.
    Sensors,
    /// Web-site activity: `user_id`, `action`, `page`, `timestamp`, `ip`, `device`.
    UserActivity,
    /// Page views and ratings: `timestamp`, `userid`, `page`, `action`.
    Clickstream,
}

impl Scenario {
    /// The name used in configs and in the source partition.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Ecommerce => "ecommerce",
            Scenario::Sensors => "sensors",
            Scenario::UserActivity => "user-activity",
            Scenario::Clickstream => "clickstream",
        }
    }

    /// The fields of this scenario's events, in the order they are generated.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Scenario::Ecommerce => &[
                "event_id",
                "user_id",
                "event_type",
                "product_id",
                "timestamp",
                "price",
            ],
            Scenario::Sensors => &["sensor_id", "value", "timestamp", "location"],
            Scenario::UserActivity => &["user_id", "action", "page", "timestamp", "ip", "device"],
            Scenario::Clickstream => &["timestamp", "userid", "page", "action"],
        }
    }

    /// The field records are keyed by unless `key.field` says otherwise.
    pub fn default_key_field(self) -> &'static str {
        match self {
            Scenario::Ecommerce | Scenario::UserActivity => "user_id",
            Scenario::Sensors => "sensor_id",
            Scenario::Clickstream => "userid",
        }
    }
}

/// One way of breaking a record on purpose.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// The value is the event's JSON text cut short (as bytes), so it does not parse.
    InvalidJson,
    /// A required field is removed (`event_type`, `sensor_id`, `action`, `action`).
    MissingField,
    /// A numeric field holds a non-numeric string (`user_id`, `value`, `user_id`, `userid`).
    WrongType,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 3] = [
        MalformedKind::InvalidJson,
        MalformedKind::MissingField,
        MalformedKind::WrongType,
    ];

    /// The name used in `malformed.kinds` and in the `sluice.simulator.malformed` header.
    pub fn as_str(self) -> &'static str {
        match self {
            MalformedKind::InvalidJson => "invalid_json",
            MalformedKind::MissingField => "missing_field",
            MalformedKind::WrongType => "wrong_type",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name.trim())
    }
}

/// An `ecommerce` event type.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A product page seen (weight 70).
    View,
    /// A product put into the cart (weight 20).
    AddToCart,
    /// A product bought (weight 10).
    Purchase,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::View, EventType::AddToCart, EventType::Purchase];

    /// The name used in `event.types` and in the events' `event_type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// How often this type is drawn relative to the others.
    pub(crate) fn weight(self) -> u64 {
        match self {
            EventType::View => 70,
            EventType::AddToCart => 20,
            EventType::Purchase => 10,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name.trim())
    }
}

/// Where event times come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimestampMode {
    /// A simulated clock: `timestamp.start` plus about `timestamp.interval.ms` per event.
    /// Replays are byte-identical.
    #[default]
    Simulated,
    /// The current time when the event is generated. Replays differ in their timestamps.
    Wallclock,
}

fn default_seed() -> u64 {
    42
}

fn all_malformed_kinds() -> Vec<String> {
    MalformedKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect()
}

fn all_event_types() -> Vec<String> {
    EventType::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect()
}

fn default_timestamp_start() -> String {
    "2024-01-01T00:00:00Z".to_string()
}

fn default_interval_ms() -> u64 {
    1000
}

fn default_batch_size() -> u32 {
    500
}

/// Parses an ISO-8601 time: RFC 3339 (`2024-01-01T00:00:00Z`, `…+02:00`), or a date and
/// time without an offset (taken as UTC), or a bare date (midnight UTC). Epoch ms.
pub(crate) fn parse_start(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

impl SimulatorConfig {
    /// Checks beyond what the schema says (errors and warnings).
    fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.topic.trim().is_empty() {
            issues.push(ConfigIssue::error("topic", "must not be empty"));
        }
        if parse_start(&self.timestamp_start).is_none() {
            issues.push(ConfigIssue::error(
                "timestamp.start",
                format!(
                    "\"{}\" is not an ISO-8601 time (expected e.g. 2024-01-01T00:00:00Z)",
                    self.timestamp_start
                ),
            ));
        }
        let unknown: Vec<&str> = self
            .malformed_kinds
            .iter()
            .filter(|k| MalformedKind::parse(k).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            issues.push(ConfigIssue::error(
                "malformed.kinds",
                format!(
                    "unknown kind(s) {}; expected any of invalid_json, missing_field, wrong_type",
                    unknown
                        .iter()
                        .map(|k| format!("\"{k}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        } else if self.malformed_kinds.is_empty() && self.malformed_rate > 0.0 {
            issues.push(ConfigIssue::error(
                "malformed.kinds",
                "must name at least one kind when malformed.rate is above 0",
            ));
        }
        let unknown: Vec<&str> = self
            .event_types
            .iter()
            .filter(|k| EventType::parse(k).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            issues.push(ConfigIssue::error(
                "event.types",
                format!(
                    "unknown event type(s) {}; expected any of view, add_to_cart, purchase",
                    unknown
                        .iter()
                        .map(|k| format!("\"{k}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        } else if self.event_types.is_empty() {
            issues.push(ConfigIssue::error(
                "event.types",
                "must name at least one event type",
            ));
        } else if self.scenario != Scenario::Ecommerce && self.types().len() < EventType::ALL.len()
        {
            issues.push(ConfigIssue::warning(
                "event.types",
                format!(
                    "only the ecommerce scenario has event types; ignored for scenario {}",
                    self.scenario.as_str()
                ),
            ));
        }
        if let Some(field) = &self.key_field
            && !field.is_empty()
            && !self.scenario.fields().contains(&field.as_str())
        {
            issues.push(ConfigIssue::warning(
                "key.field",
                format!(
                    "scenario {} has no field \"{field}\" (fields: {}); records will have no key",
                    self.scenario.as_str(),
                    self.scenario.fields().join(", ")
                ),
            ));
        }
        issues
    }

    /// Parses and checks a config: every problem found (warnings included) on failure.
    pub fn parse(config: &ConfigMap) -> Result<Self, Vec<ConfigIssue>> {
        let parsed = parse_config::<SimulatorConfig>(config)?;
        let issues = parsed.issues();
        if issues.iter().any(|i| i.severity == Severity::Error) {
            Err(issues)
        } else {
            Ok(parsed)
        }
    }

    /// The malformed kinds, parsed and deduplicated (unknown names skipped).
    pub(crate) fn kinds(&self) -> Vec<MalformedKind> {
        let set: BTreeSet<MalformedKind> = self
            .malformed_kinds
            .iter()
            .filter_map(|k| MalformedKind::parse(k))
            .collect();
        set.into_iter().collect()
    }

    /// The `ecommerce` event types, parsed and deduplicated (unknown names skipped).
    pub(crate) fn types(&self) -> Vec<EventType> {
        let set: BTreeSet<EventType> = self
            .event_types
            .iter()
            .filter_map(|k| EventType::parse(k))
            .collect();
        set.into_iter().collect()
    }

    /// The field records are keyed by; `None` = no key.
    pub(crate) fn resolved_key_field(&self) -> Option<String> {
        match &self.key_field {
            None => Some(self.scenario.default_key_field().to_string()),
            Some(f) if f.is_empty() => None,
            Some(f) => Some(f.clone()),
        }
    }
}

fn config_error(issues: &[ConfigIssue]) -> ConnectError {
    let text: Vec<String> = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    ConnectError::config(format!(
        "invalid SimulatorSource config: {}",
        text.join("; ")
    ))
}

impl Plugin for SimulatorPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "SimulatorSource".to_string(),
            aliases: vec!["Simulator".to_string(), "simulator".to_string()],
            kind: PluginKind::Source,
            version: API_VERSION.to_string(),
            description: "Seeded, replayable synthetic events (ecommerce, sensors, user-activity, \
                          clickstream), optionally rate-limited, bounded or partly malformed."
                .to_string(),
        }
    }

    fn config_schema(&self) -> Value {
        schema_of::<SimulatorConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        // What `validate_config` reports, plus the checks the schema cannot express.
        match parse_config::<SimulatorConfig>(config) {
            Ok(parsed) => parsed.issues(),
            Err(issues) => issues,
        }
    }
}

impl SourceConnector for SimulatorPlugin {
    /// `max_tasks` tasks (at least one; with a bounded `max.events`, no more tasks than
    /// events), each with `max.events` rewritten to its share of the total: task i gets
    /// total/N, plus one if i < total % N.
    fn task_configs(
        &self,
        config: &ConfigMap,
        max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        let parsed = SimulatorConfig::parse(config).map_err(|issues| config_error(&issues))?;
        let total = parsed.max_events;
        let mut tasks = u64::from(max_tasks.max(1));
        if total > 0 {
            tasks = tasks.min(total);
        }
        let configs = (0..tasks)
            .map(|i| {
                let mut task = config.clone();
                if total > 0 {
                    let share = total / tasks + u64::from(i < total % tasks);
                    task.insert("max.events".to_string(), Value::from(share.to_string()));
                }
                task
            })
            .collect();
        Ok(configs)
    }

    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SourceTask>, ConnectError> {
        let config = SimulatorConfig::parse(task_config).map_err(|issues| config_error(&issues))?;
        Ok(Box::new(task::SimulatorTask::new(&config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn start_times_parse_in_several_iso_forms() {
        let expected = Some(1_704_067_200_000);
        assert_eq!(parse_start("2024-01-01T00:00:00Z"), expected);
        assert_eq!(parse_start("2024-01-01T01:00:00+01:00"), expected);
        assert_eq!(parse_start("2024-01-01T00:00:00"), expected);
        assert_eq!(parse_start(" 2024-01-01 "), expected);
        assert_eq!(
            parse_start("2024-01-01T00:00:00.5Z"),
            Some(1_704_067_200_500)
        );
        assert_eq!(parse_start("yesterday"), None);
        assert_eq!(parse_start("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn kinds_are_deduplicated_and_key_field_resolved() {
        let c = SimulatorConfig::parse(&map(json!({
            "topic": "t", "malformed.kinds": "wrong_type, invalid_json,wrong_type",
            "scenario": "clickstream"
        })))
        .unwrap();
        assert_eq!(
            c.kinds(),
            vec![MalformedKind::InvalidJson, MalformedKind::WrongType]
        );
        assert_eq!(c.resolved_key_field().as_deref(), Some("userid"));
        let c = SimulatorConfig::parse(&map(json!({"topic": "t", "key.field": ""}))).unwrap();
        assert_eq!(c.resolved_key_field(), None);
    }

    #[test]
    fn schema_documents_every_key() {
        let schema = schema_of::<SimulatorConfig>();
        let props = schema["properties"].as_object().unwrap();
        for key in [
            "topic",
            "scenario",
            "seed",
            "rate",
            "max.events",
            "key.field",
            "malformed.rate",
            "malformed.kinds",
            "timestamp.mode",
            "timestamp.start",
            "timestamp.interval.ms",
            "batch.size",
            "event.types",
        ] {
            let prop = &props[key];
            assert!(
                prop["description"].as_str().is_some_and(|d| d.len() > 10),
                "{key}: {prop}"
            );
        }
        assert_eq!(schema["required"], json!(["topic"]));
        assert_eq!(props["malformed.rate"]["maximum"], json!(1.0));
    }
}
