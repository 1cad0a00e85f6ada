//! What a plugin offers the worker: a description, a config schema, and factories for
//! tasks, transforms and predicates.

use crate::{ConfigIssue, ConfigMap, ConnectError, Record, SinkTask, SourceTask, Transform};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PluginKind {
    Source,
    Sink,
    Transform,
    Predicate,
}

impl PluginKind {
    /// The lowercase name Kafka Connect uses in `/connector-plugins`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Source => "source",
            PluginKind::Sink => "sink",
            PluginKind::Transform => "transformation",
            PluginKind::Predicate => "predicate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The canonical name, used in `connector.class` / `type` and for the schema file.
    pub class: String,
    /// Other names that select this plugin (Kafka Connect class names, short names).
    pub aliases: Vec<String>,
    pub kind: PluginKind,
    pub version: String,
    pub description: String,
}

/// Common to every plugin: who it is and what configuration it takes.
pub trait Plugin: Send + Sync {
    fn info(&self) -> PluginInfo;

    /// The JSON Schema of the plugin's own keys (from its config struct).
    fn config_schema(&self) -> serde_json::Value;

    /// Every problem with `config` (the plugin's own keys; unknown keys are the runtime's
    /// business). An empty list means a task can be created from it.
    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue>;
}

pub trait SourceConnector: Plugin {
    /// Splits the connector's config into at most `max_tasks` task configs.
    fn task_configs(
        &self,
        config: &ConfigMap,
        max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        let _ = max_tasks;
        Ok(vec![config.clone()])
    }

    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SourceTask>, ConnectError>;
}

pub trait SinkConnector: Plugin {
    fn task_configs(
        &self,
        config: &ConfigMap,
        max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        Ok((0..max_tasks.max(1)).map(|_| config.clone()).collect())
    }

    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SinkTask>, ConnectError>;
}

pub trait TransformPlugin: Plugin {
    /// `config` holds the transform's own keys, the `transforms.<alias>.` prefix removed.
    fn create(&self, config: &ConfigMap) -> Result<Box<dyn Transform>, ConnectError>;
}

/// A condition a transform can be made to depend on (`transforms.<alias>.predicate`).
pub trait Predicate: Send {
    fn test(&self, record: &Record) -> Result<bool, ConnectError>;
}

pub trait PredicatePlugin: Plugin {
    fn create(&self, config: &ConfigMap) -> Result<Box<dyn Predicate>, ConnectError>;
}
