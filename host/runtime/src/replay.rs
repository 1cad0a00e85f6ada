//! Redelivery of dead letters to the sink connector they failed in (`sluice dlq replay`).
//!
//! Each record goes through the connector exactly as if it were consumed again from its
//! original topic: the connector's converters, its transforms, `put`, then `flush`. It
//! keeps its original topic, partition and offset, so sinks keyed by Kafka coordinates
//! (`pk.mode=kafka`, `exactly.once`) see the same record as the first time. Only this one
//! connector sees it again, unlike a re-publish to a shared topic that every consumer of
//! that topic would read twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::{ConnectError, Record, SinkTaskContext};

use crate::chain::TransformChain;
use crate::convert::Converter;
use crate::registry::{ConnectorPlugin, PluginRegistry};
use crate::sink_driver::process;
use crate::stop::stop_pair;
use crate::tolerance::{ErrorPolicy, RetryOperator, Stage};
use crate::validation::ValidatedConnector;
use crate::worker::{TaskSetup, task_setup};

/// How long a replay keeps retrying a retriable error (a database still down) before it
/// gives up and leaves every dead letter for the next replay, at least.
const MIN_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Records handed to `put` at once.
const PUT_BATCH: usize = 1000;

/// Delivers `records` (keys and values as the bytes or JSON the topic held) to a task of
/// `connector` and flushes it. Returns, per input record, `None` when it was delivered
/// (or dropped by a transform, which is delivery too) and `Some(reason)` when it failed
/// again. An error means nothing can be counted as delivered (start or flush failed).
pub async fn redeliver(
    connector: &ValidatedConnector,
    registry: &PluginRegistry,
    records: Vec<Record>,
) -> Result<Vec<Option<String>>, ConnectError> {
    let ConnectorPlugin::Sink(plugin) = &connector.plugin else {
        return Err(ConnectError::config(format!(
            "connector \"{}\" is a source; dead letters can only be replayed into a sink",
            connector.name()
        )));
    };
    let TaskSetup {
        resolved,
        common,
        task_config,
        ..
    } = task_setup(connector, 0)?;
    let mut chain = TransformChain::build(&resolved, registry)?;
    let key_converter = Converter::new(common.key_converter, common.key_schemas_enable);
    let value_converter = Converter::new(common.value_converter, common.value_schemas_enable);
    let mut policy = ErrorPolicy::from_config(&common);
    policy.retry_timeout = policy.retry_timeout.map(|t| t.max(MIN_RETRY_BUDGET));
    let operator = RetryOperator::new(policy, connector.name(), 0);
    let (_stop_handle, mut stop) = stop_pair();

    let mut outcome: Vec<Option<String>> = vec![None; records.len()];
    let mut good: Vec<Arc<Record>> = Vec::new();
    let mut origin: Vec<usize> = Vec::new();
    let mut outputs = Vec::new();
    for (index, record) in records.into_iter().enumerate() {
        outputs.clear();
        match process(
            record,
            &mut chain,
            key_converter,
            value_converter,
            &mut outputs,
        ) {
            Ok(()) => {
                origin.extend(std::iter::repeat_n(index, outputs.len()));
                good.extend(outputs.drain(..).map(Arc::new));
            }
            Err(failure) => outcome[index] = Some(failure.trace()),
        }
    }

    let mut task = plugin.create_task(&task_config)?;
    task.start(SinkTaskContext {
        connector: connector.name().to_string(),
        task_id: 0,
        // The replayed records' positions were already stored past by the first run.
        durable_offsets: false,
    })
    .await?;
    let result = async {
        for (batch, origins) in good.chunks(PUT_BATCH).zip(origin.chunks(PUT_BATCH)) {
            let started = Instant::now();
            let mut attempt = 1;
            let put = loop {
                match task.put(batch).await {
                    Ok(put) => break put,
                    Err(e)
                        if operator
                            .should_retry(Stage::TaskPut, &e, started, attempt, false, &mut stop)
                            .await =>
                    {
                        attempt += 1
                    }
                    Err(e) => return Err(e),
                }
            };
            for failure in put.failed {
                if let Some(index) = origins.get(failure.index) {
                    outcome[*index] =
                        Some(format!("{}: {}", Stage::TaskPut.as_str(), failure.error));
                }
            }
        }
        task.flush().await
    }
    .await;
    if let Err(e) = task.stop().await {
        tracing::warn!(connector = %connector.name(), error = %e, "sink task did not stop cleanly");
    }
    result.map(|()| outcome)
}
