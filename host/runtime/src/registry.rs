//! The plugins a worker knows, looked up by class name or alias.

use std::sync::Arc;

use sluice_api::{
    ConfigMap, ConnectError, Plugin, PluginInfo, PredicatePlugin, SinkConnector, SourceConnector,
    TransformPlugin,
};

/// A connector plugin of either direction.
#[derive(Clone)]
pub enum ConnectorPlugin {
    Source(Arc<dyn SourceConnector>),
    Sink(Arc<dyn SinkConnector>),
}

impl ConnectorPlugin {
    pub fn task_configs(
        &self,
        config: &ConfigMap,
        max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        match self {
            ConnectorPlugin::Source(p) => p.task_configs(config, max_tasks),
            ConnectorPlugin::Sink(p) => p.task_configs(config, max_tasks),
        }
    }

    pub fn as_plugin(&self) -> &dyn Plugin {
        match self {
            ConnectorPlugin::Source(p) => p.as_ref(),
            ConnectorPlugin::Sink(p) => p.as_ref(),
        }
    }
}

#[derive(Default, Clone)]
pub struct PluginRegistry {
    sources: Vec<Arc<dyn SourceConnector>>,
    sinks: Vec<Arc<dyn SinkConnector>>,
    transforms: Vec<Arc<dyn TransformPlugin>>,
    predicates: Vec<Arc<dyn PredicatePlugin>>,
}

fn answers_to(plugin: &dyn Plugin, name: &str) -> bool {
    let info = plugin.info();
    info.class == name || info.aliases.iter().any(|a| a == name)
}

impl PluginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_source(&mut self, plugin: Arc<dyn SourceConnector>) -> &mut Self {
        self.sources.push(plugin);
        self
    }

    pub fn add_sink(&mut self, plugin: Arc<dyn SinkConnector>) -> &mut Self {
        self.sinks.push(plugin);
        self
    }

    pub fn add_transform(&mut self, plugin: Arc<dyn TransformPlugin>) -> &mut Self {
        self.transforms.push(plugin);
        self
    }

    pub fn add_predicate(&mut self, plugin: Arc<dyn PredicatePlugin>) -> &mut Self {
        self.predicates.push(plugin);
        self
    }

    pub fn connector(&self, class: &str) -> Option<ConnectorPlugin> {
        if let Some(p) = self.sources.iter().find(|p| answers_to(p.as_ref(), class)) {
            return Some(ConnectorPlugin::Source(p.clone()));
        }
        self.sinks
            .iter()
            .find(|p| answers_to(p.as_ref(), class))
            .map(|p| ConnectorPlugin::Sink(p.clone()))
    }

    pub fn transform(&self, name: &str) -> Option<Arc<dyn TransformPlugin>> {
        self.transforms
            .iter()
            .find(|p| answers_to(p.as_ref(), name))
            .cloned()
    }

    pub fn predicate(&self, name: &str) -> Option<Arc<dyn PredicatePlugin>> {
        self.predicates
            .iter()
            .find(|p| answers_to(p.as_ref(), name))
            .cloned()
    }

    /// Every plugin: its description and config schema, sorted by kind then class.
    pub fn all(&self) -> Vec<(PluginInfo, serde_json::Value)> {
        let mut all: Vec<(PluginInfo, serde_json::Value)> = Vec::new();
        let mut push = |p: &dyn Plugin| all.push((p.info(), p.config_schema()));
        self.sources.iter().for_each(|p| push(p.as_ref()));
        self.sinks.iter().for_each(|p| push(p.as_ref()));
        self.transforms.iter().for_each(|p| push(p.as_ref()));
        self.predicates.iter().for_each(|p| push(p.as_ref()));
        all.sort_by(|a, b| (a.0.kind, &a.0.class).cmp(&(b.0.kind, &b.0.class)));
        all
    }

    /// The names `connector.class` accepts, for "unknown class" messages.
    pub fn connector_classes(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sources
            .iter()
            .map(|p| p.info().class)
            .chain(self.sinks.iter().map(|p| p.info().class))
            .collect();
        names.sort();
        names
    }

    pub fn transform_types(&self) -> Vec<String> {
        let mut names: Vec<String> = self.transforms.iter().map(|p| p.info().class).collect();
        names.sort();
        names
    }

    pub fn predicate_types(&self) -> Vec<String> {
        let mut names: Vec<String> = self.predicates.iter().map(|p| p.info().class).collect();
        names.sort();
        names
    }
}
