//! What every transform and predicate of this crate shares: the generic plugin wrappers
//! (one implementation of `Plugin` for all of them), the Key/Value selection, and the
//! helpers that reach into a record's key or value.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Payload, Plugin, PluginInfo, PluginKind,
    Predicate, PredicatePlugin, Record, Severity, Transform, TransformPlugin, parse_config,
    schema_of,
};

/// The package of Kafka Connect's transforms; class names are built under it.
pub(crate) const TRANSFORMS_PACKAGE: &str = "org.apache.kafka.connect.transforms";
/// The package of Kafka Connect's predicates.
pub(crate) const PREDICATES_PACKAGE: &str = "org.apache.kafka.connect.transforms.predicates";

/// Which part of the record a `$Key` / `$Value` variant operates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Key,
    Value,
}

impl Side {
    /// `key` or `value`, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Key => "key",
            Side::Value => "value",
        }
    }

    /// `Key` or `Value`, for class names.
    fn suffix(self) -> &'static str {
        match self {
            Side::Key => "Key",
            Side::Value => "Value",
        }
    }

    pub(crate) fn slot(self, record: &mut Record) -> &mut Option<Payload> {
        match self {
            Side::Key => &mut record.key,
            Side::Value => &mut record.value,
        }
    }

    /// The side's JSON, `None` when it is null (absent, or JSON `null`): Kafka Connect
    /// makes no difference between the two. Bytes are an error: these transforms work on
    /// schemaless JSON only.
    pub(crate) fn json_mut<'r>(
        self,
        record: &'r mut Record,
        purpose: &str,
    ) -> Result<Option<&'r mut Value>, ConnectError> {
        match self.slot(record) {
            None | Some(Payload::Json(Value::Null)) => Ok(None),
            Some(Payload::Json(v)) => Ok(Some(v)),
            Some(Payload::Bytes(_)) => Err(ConnectError::data(format!(
                "{purpose}: the record {} is raw bytes, not JSON",
                self.name()
            ))),
        }
    }

    /// The side as a JSON object, `None` when it is null; any other JSON is an error (Kafka
    /// Connect's `requireMap` in schemaless mode).
    pub(crate) fn object_mut<'r>(
        self,
        record: &'r mut Record,
        purpose: &str,
    ) -> Result<Option<&'r mut Map<String, Value>>, ConnectError> {
        let side = self.name();
        match self.json_mut(record, purpose)? {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(not_an_object(purpose, side, other)),
        }
    }

    /// Like [`Side::object_mut`], but a null side is an error too.
    pub(crate) fn require_object<'r>(
        self,
        record: &'r mut Record,
        purpose: &str,
    ) -> Result<&'r mut Map<String, Value>, ConnectError> {
        let side = self.name();
        self.object_mut(record, purpose)?.ok_or_else(|| {
            ConnectError::data(format!(
                "{purpose}: only JSON objects are supported, the record {side} is null"
            ))
        })
    }

    /// Replaces the side; JSON `null` becomes an absent key / a tombstone value.
    pub(crate) fn set(self, record: &mut Record, value: Value) {
        *self.slot(record) = match value {
            Value::Null => None,
            v => Some(Payload::Json(v)),
        };
    }
}

pub(crate) fn not_an_object(purpose: &str, side: &str, value: &Value) -> ConnectError {
    ConnectError::data(format!(
        "{purpose}: only JSON objects are supported, the record {side} is {}",
        type_name(value)
    ))
}

pub(crate) use sluice_api::json_type_name as type_name;

/// True when the record has no value or a JSON `null` one.
pub(crate) fn is_tombstone(record: &Record) -> bool {
    matches!(record.value, None | Some(Payload::Json(Value::Null)))
}

/// Checks that a required list is not empty.
pub(crate) fn non_empty(key: &str, list: &[String], issues: &mut Vec<ConfigIssue>) {
    if list.is_empty() {
        issues.push(ConfigIssue::error(key, "must list at least one item"));
    }
}

/// Checks that a required string is not empty.
pub(crate) fn non_blank(key: &str, text: &str, issues: &mut Vec<ConfigIssue>) {
    if text.trim().is_empty() {
        issues.push(ConfigIssue::error(key, "must not be empty"));
    }
}

/// A transform of this crate: its config struct, its Kafka Connect name, and how it is
/// built from its parsed config.
pub(crate) trait Smt: Transform + Sized + 'static {
    type Config: DeserializeOwned + JsonSchema;
    /// The simple class name, e.g. `InsertField` (without `$Key` / `$Value`).
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// Whether the simple name is also registered as an alias.
    const SHORT_ALIAS: bool = true;

    /// Builds the transform from its config (compiling patterns and formats once), adding
    /// every problem found to `issues`. Returns `None` only when it cannot be built; an
    /// error in `issues` stops the plugin from creating it either way.
    fn build(config: Self::Config, side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self>;
}

/// The plugin of an [`Smt`]: either one `$Key` / `$Value` variant, or the single plugin of a
/// transform without variants.
pub(crate) struct SmtPlugin<T> {
    side: Option<Side>,
    _transform: PhantomData<fn() -> T>,
}

impl<T: Smt> SmtPlugin<T> {
    /// The plugin of a transform without Key/Value variants.
    pub(crate) fn single() -> Self {
        SmtPlugin {
            side: None,
            _transform: PhantomData,
        }
    }

    /// The `$Key` and `$Value` plugins of a transform.
    pub(crate) fn sided() -> [Self; 2] {
        [Side::Key, Side::Value].map(|side| SmtPlugin {
            side: Some(side),
            _transform: PhantomData,
        })
    }

    fn build(&self, config: &ConfigMap) -> (Option<T>, Vec<ConfigIssue>) {
        match parse_config::<T::Config>(config) {
            Ok(parsed) => {
                let mut issues = Vec::new();
                let built = T::build(parsed, self.side.unwrap_or(Side::Value), &mut issues);
                (built, issues)
            }
            Err(issues) => (None, issues),
        }
    }
}

/// Names a plugin: `package.Name[$Variant]`, plus the simple name as an alias.
fn plugin_info(
    package: &str,
    name: &str,
    variant: Option<&str>,
    short_alias: bool,
    kind: PluginKind,
    description: &str,
) -> PluginInfo {
    let simple = match variant {
        Some(v) => format!("{name}${v}"),
        None => name.to_string(),
    };
    PluginInfo {
        class: format!("{package}.{simple}"),
        aliases: if short_alias { vec![simple] } else { vec![] },
        kind,
        version: API_VERSION.to_string(),
        description: description.to_string(),
    }
}

/// The config error `create` returns for the issues found.
fn config_error(what: &str, issues: &[ConfigIssue]) -> ConnectError {
    let text: Vec<String> = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    ConnectError::config(format!("invalid {what} config: {}", text.join("; ")))
}

impl<T: Smt> Plugin for SmtPlugin<T> {
    fn info(&self) -> PluginInfo {
        plugin_info(
            TRANSFORMS_PACKAGE,
            T::NAME,
            self.side.map(Side::suffix),
            T::SHORT_ALIAS,
            PluginKind::Transform,
            T::DESCRIPTION,
        )
    }

    fn config_schema(&self) -> Value {
        schema_of::<T::Config>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        self.build(config).1
    }
}

impl<T: Smt> TransformPlugin for SmtPlugin<T> {
    fn create(&self, config: &ConfigMap) -> Result<Box<dyn Transform>, ConnectError> {
        match self.build(config) {
            (Some(transform), issues) if !issues.iter().any(|i| i.severity == Severity::Error) => {
                Ok(Box::new(transform))
            }
            (_, issues) => Err(config_error(T::NAME, &issues)),
        }
    }
}

/// A predicate of this crate.
pub(crate) trait Pred: Predicate + Sized + 'static {
    type Config: DeserializeOwned + JsonSchema;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;

    fn build(config: Self::Config, issues: &mut Vec<ConfigIssue>) -> Option<Self>;
}

/// The plugin of a [`Pred`].
pub(crate) struct PredPlugin<P>(PhantomData<fn() -> P>);

impl<P: Pred> PredPlugin<P> {
    pub(crate) fn new() -> Self {
        PredPlugin(PhantomData)
    }

    fn build(&self, config: &ConfigMap) -> (Option<P>, Vec<ConfigIssue>) {
        match parse_config::<P::Config>(config) {
            Ok(parsed) => {
                let mut issues = Vec::new();
                let built = P::build(parsed, &mut issues);
                (built, issues)
            }
            Err(issues) => (None, issues),
        }
    }
}

impl<P: Pred> Plugin for PredPlugin<P> {
    fn info(&self) -> PluginInfo {
        plugin_info(
            PREDICATES_PACKAGE,
            P::NAME,
            None,
            true,
            PluginKind::Predicate,
            P::DESCRIPTION,
        )
    }

    fn config_schema(&self) -> Value {
        schema_of::<P::Config>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        self.build(config).1
    }
}

impl<P: Pred> PredicatePlugin for PredPlugin<P> {
    fn create(&self, config: &ConfigMap) -> Result<Box<dyn Predicate>, ConnectError> {
        match self.build(config) {
            (Some(predicate), issues) if !issues.iter().any(|i| i.severity == Severity::Error) => {
                Ok(Box::new(predicate))
            }
            (_, issues) => Err(config_error(P::NAME, &issues)),
        }
    }
}

/// Test helpers shared by the transform modules.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn config(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    /// Builds the `side` variant (or the single plugin when `side` is `None`).
    pub(crate) fn build<T: Smt>(side: Option<Side>, pairs: &[(&str, &str)]) -> Box<dyn Transform> {
        let plugin = plugin::<T>(side);
        let cfg = config(pairs);
        assert_eq!(plugin.validate(&cfg), vec![], "config {pairs:?}");
        plugin.create(&cfg).expect("valid config")
    }

    pub(crate) fn plugin<T: Smt>(side: Option<Side>) -> SmtPlugin<T> {
        SmtPlugin {
            side,
            _transform: PhantomData,
        }
    }

    /// The issues of a config, as `key: message` strings.
    pub(crate) fn issues<T: Smt>(side: Option<Side>, pairs: &[(&str, &str)]) -> Vec<String> {
        let plugin = plugin::<T>(side);
        let cfg = config(pairs);
        let issues = plugin.validate(&cfg);
        if issues.iter().any(|i| i.severity == Severity::Error) {
            assert!(plugin.create(&cfg).is_err());
        }
        issues
            .iter()
            .map(|i| format!("{}: {}", i.key.as_deref().unwrap_or(""), i.message))
            .collect()
    }

    /// Applies `t` to `record`, expecting exactly one output.
    pub(crate) fn one(t: &mut Box<dyn Transform>, record: Record) -> Record {
        let mut out = Vec::new();
        t.apply(record, &mut out).expect("transform succeeds");
        assert_eq!(out.len(), 1);
        out.pop().expect("one record")
    }

    pub(crate) fn fail(t: &mut Box<dyn Transform>, record: Record) -> ConnectError {
        let mut out = Vec::new();
        let err = t.apply(record, &mut out).expect_err("transform fails");
        assert_eq!(err.kind(), sluice_api::ErrorKind::Data, "{err}");
        err
    }

    /// A record with a JSON key and value.
    pub(crate) fn record(key: Value, value: Value) -> Record {
        let mut r = Record::new("orders", value);
        r.key = Some(Payload::Json(key));
        r
    }
}
