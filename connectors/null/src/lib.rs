//! `NullSink`: takes every record, acknowledges it, and writes it nowhere.
//!
//! For load tests and benchmarks: with it, what a pipeline costs is the bus, the
//! converters and the transforms alone. Offsets are committed as for any sink (after
//! `flush`, which has nothing to do), so a consumer group with a `NullSink` moves on as if
//! the records had been delivered.

use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Plugin, PluginInfo, PluginKind, PutResult,
    Record, SinkConnector, SinkTask, parse_config, schema_of,
};

/// The sink connector plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSinkPlugin;

/// A `NullSink` has no keys of its own; it takes the keys every sink takes.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct NullSinkConfig {}

fn parse(config: &ConfigMap) -> Result<NullSinkConfig, ConnectError> {
    parse_config::<NullSinkConfig>(config).map_err(|issues| {
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        ConnectError::config(format!("invalid NullSink config: {}", text.join("; ")))
    })
}

impl Plugin for NullSinkPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "NullSink".to_string(),
            aliases: Vec::new(),
            kind: PluginKind::Sink,
            version: API_VERSION.to_string(),
            description: "Accepts and acknowledges every record and keeps none (load tests, \
                          benchmarks)."
                .to_string(),
        }
    }

    fn config_schema(&self) -> serde_json::Value {
        schema_of::<NullSinkConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        match parse_config::<NullSinkConfig>(config) {
            Ok(_) => Vec::new(),
            Err(issues) => issues,
        }
    }
}

impl SinkConnector for NullSinkPlugin {
    /// `tasks.max` tasks: they share nothing, so any number can run.
    fn task_configs(
        &self,
        config: &ConfigMap,
        max_tasks: u32,
    ) -> Result<Vec<ConfigMap>, ConnectError> {
        parse(config)?;
        Ok(vec![config.clone(); max_tasks.max(1) as usize])
    }

    fn create_task(&self, task_config: &ConfigMap) -> Result<Box<dyn SinkTask>, ConnectError> {
        parse(task_config)?;
        Ok(Box::new(NullSinkTask))
    }
}

struct NullSinkTask;

#[async_trait]
impl SinkTask for NullSinkTask {
    async fn put(&mut self, _records: &[Arc<Record>]) -> Result<PutResult, ConnectError> {
        Ok(PutResult::default())
    }

    async fn flush(&mut self) -> Result<(), ConnectError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_api::SinkTaskContext;

    fn config(extra: serde_json::Value) -> ConfigMap {
        let mut config = json!({"connector.class": "NullSink", "topics": "t"});
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        serde_json::from_value(config).unwrap()
    }

    #[tokio::test]
    async fn accepts_every_record_and_flushes() {
        let mut task = NullSinkPlugin.create_task(&config(json!({}))).unwrap();
        task.start(SinkTaskContext {
            connector: "null".into(),
            task_id: 0,
            durable_offsets: true,
        })
        .await
        .unwrap();
        let records: Vec<Arc<Record>> = (0..3)
            .map(|i| Arc::new(Record::new("t", json!({ "i": i }))))
            .collect();
        let result = task.put(&records).await.unwrap();
        assert!(result.failed.is_empty());
        task.flush().await.unwrap();
        task.stop().await.unwrap();
    }

    #[test]
    fn runs_as_many_tasks_as_asked() {
        let configs = NullSinkPlugin.task_configs(&config(json!({})), 3).unwrap();
        assert_eq!(configs.len(), 3);
        assert!(NullSinkPlugin.validate(&config(json!({}))).is_empty());
    }
}
