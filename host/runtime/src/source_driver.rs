//! Runs one source task: poll → transforms → converters → bus, committing source offsets
//! once the records they cover are durable on the bus.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_api::{
    ConnectError, Record, SourceOffset, SourcePoll, SourceRecord, SourceTask, SourceTaskContext,
};

use crate::bus::Ticket;
use crate::chain::TransformChain;
use crate::connector::ConverterClass;
use crate::convert::Converter;
use crate::metrics::ConnectorMetrics;
use crate::registry::ConnectorPlugin;
use crate::stop::StopSignal;
use crate::tolerance::{Disposition, ErrorPolicy, Failure, RetryOperator, Stage};
use crate::worker::{TaskEnv, TaskSetup};

/// What a source task has shown the worker, for `--drain`.
#[derive(Debug, Default)]
pub struct SourceProgress {
    /// The source said it has nothing more.
    pub exhausted: AtomicBool,
    /// Exhausted, and every record it sent is durable and its offset committed.
    pub settled: AtomicBool,
}

/// Records sent but not yet durable, in send order, with the source offsets they carry.
#[derive(Default)]
struct PendingOffsets {
    queue: VecDeque<(Option<Ticket>, Option<SourceOffset>)>,
    /// The newest durable offset of each source partition, not yet committed.
    ready: Vec<SourceOffset>,
    dirty: bool,
}

impl PendingOffsets {
    fn push(&mut self, ticket: Option<Ticket>, offset: Option<SourceOffset>) {
        self.queue.push_back((ticket, offset));
    }

    /// Moves the durable prefix of the queue into `ready`. Only a prefix: an offset may be
    /// committed only when every record before it is durable too.
    fn collect(&mut self) {
        while let Some((ticket, _)) = self.queue.front() {
            if ticket.as_ref().is_some_and(|t| !t.is_durable()) {
                break;
            }
            let Some((_, offset)) = self.queue.pop_front() else {
                break;
            };
            if let Some(offset) = offset {
                match self
                    .ready
                    .iter_mut()
                    .find(|o| o.partition == offset.partition)
                {
                    Some(slot) => slot.offset = offset.offset,
                    None => self.ready.push(offset),
                }
                self.dirty = true;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

struct SourceRun {
    env: TaskEnv,
    task: Box<dyn SourceTask>,
    chain: TransformChain,
    key_converter: Converter,
    value_converter: Converter,
    operator: RetryOperator,
    partitions: Option<u32>,
    pending: PendingOffsets,
    last_commit: Instant,
    outputs: Vec<Record>,
}

fn config_failure(env: &TaskEnv, error: ConnectError) -> Failure {
    Failure::new(
        Stage::TaskPoll,
        env.connector.common.connector_class.clone(),
        error,
        1,
    )
}

/// Runs the task until `stop` or a failure. Offsets of what became durable are committed
/// either way before it returns.
pub async fn run(
    env: TaskEnv,
    progress: Arc<SourceProgress>,
    mut stop: StopSignal,
) -> Result<(), Failure> {
    let mut run = start(&env).await.map_err(|e| config_failure(&env, e))?;
    let result = run.pump(&progress, &mut stop).await;
    run.finish(&mut stop).await;
    if let Err(e) = run.task.stop().await {
        tracing::warn!(connector = %env.connector.name(), task = env.task_id, error = %e, "source task did not stop cleanly");
    }
    result
}

async fn start(env: &TaskEnv) -> Result<SourceRun, ConnectError> {
    let ConnectorPlugin::Source(plugin) = &env.connector.plugin else {
        return Err(ConnectError::fatal("not a source connector"));
    };
    let TaskSetup {
        resolved,
        common,
        task_config,
        ..
    } = env.setup()?;
    let mut task = plugin.create_task(&task_config)?;
    let chain = TransformChain::build(&resolved, &env.registry)?;
    let committed = env
        .offsets
        .load(env.connector.name())
        .await
        .map_err(|e| ConnectError::fatal(e.to_string()))?;
    task.start(SourceTaskContext {
        connector: env.connector.name().to_string(),
        task_id: env.task_id,
        offsets: committed,
    })
    .await?;
    Ok(SourceRun {
        env: env.clone(),
        task,
        chain,
        key_converter: Converter::new(common.key_converter, false),
        value_converter: Converter::new(common.value_converter, false),
        operator: RetryOperator::new(
            ErrorPolicy::from_config(&common),
            env.connector.name(),
            env.task_id,
        ),
        partitions: common.topic_creation_partitions,
        pending: PendingOffsets::default(),
        last_commit: Instant::now(),
        outputs: Vec::new(),
    })
}

impl SourceRun {
    fn metrics(&self) -> &ConnectorMetrics {
        &self.env.metrics
    }

    fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.env.worker.offset_flush_interval_ms)
    }

    async fn pump(
        &mut self,
        progress: &SourceProgress,
        stop: &mut StopSignal,
    ) -> Result<(), Failure> {
        let component = self.env.connector.common.connector_class.clone();
        while !stop.is_stopped() {
            if progress.exhausted.load(Ordering::Acquire) {
                // Nothing more to poll: keep committing as the last records become durable.
                self.pending.collect();
                if self.pending.is_empty() {
                    self.commit().await;
                    progress.settled.store(true, Ordering::Release);
                    stop.stopped().await;
                } else {
                    if self.last_commit.elapsed() >= self.flush_interval() {
                        self.commit().await;
                    }
                    stop.sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
            let started = Instant::now();
            let mut attempt = 1;
            let polled = loop {
                match self.task.poll().await {
                    Ok(p) => break p,
                    Err(e)
                        if self
                            .operator
                            .should_retry(&e, started, attempt, false, stop)
                            .await =>
                    {
                        attempt += 1
                    }
                    Err(e) => return Err(Failure::new(Stage::TaskPoll, component, e, attempt)),
                }
            };
            match polled {
                SourcePoll::Exhausted => {
                    tracing::info!(connector = %self.env.connector.name(), task = self.env.task_id, "source exhausted");
                    progress.exhausted.store(true, Ordering::Release);
                }
                SourcePoll::Records(batch) => self.send_batch(batch, stop).await?,
            }
            self.pending.collect();
            if self.last_commit.elapsed() >= self.flush_interval() {
                self.commit().await;
            }
        }
        Ok(())
    }

    /// Whether a record can fail between poll and bus; if not, no copy is kept for dead letters.
    fn may_fail(&self) -> bool {
        !self.chain.is_empty()
            || self.key_converter.class != ConverterClass::Json
            || self.value_converter.class != ConverterClass::Json
    }

    async fn send_batch(
        &mut self,
        batch: Vec<SourceRecord>,
        stop: &mut StopSignal,
    ) -> Result<(), Failure> {
        ConnectorMetrics::add(&self.metrics().records_in, batch.len() as u64);
        let may_fail = self.may_fail();
        for source_record in batch {
            let SourceRecord {
                record,
                source_partition,
                source_offset,
            } = source_record;
            let offset = SourceOffset {
                partition: source_partition,
                offset: source_offset,
            };
            self.outputs.clear();
            let failure = if may_fail {
                let original = record;
                let (chain, key_conv, value_conv, outputs) = (
                    &mut self.chain,
                    self.key_converter,
                    self.value_converter,
                    &mut self.outputs,
                );
                let result = self
                    .operator
                    .run(stop, || {
                        outputs.clear();
                        process(original.clone(), chain, key_conv, value_conv, outputs)
                    })
                    .await;
                result.err().map(|(mut f, attempts)| {
                    f.attempts = attempts;
                    (f, original)
                })
            } else {
                self.outputs.push(record);
                None
            };
            if let Some((failure, original)) = failure {
                ConnectorMetrics::add(&self.metrics().errors, 1);
                match self.operator.dispose(failure, &original) {
                    Disposition::Fail(f) => return Err(f),
                    Disposition::Skip(None) => self.pending.push(None, Some(offset)),
                    Disposition::Skip(Some(dead)) => {
                        let ticket = self.send(dead).await?;
                        ConnectorMetrics::add(&self.metrics().dead_lettered, 1);
                        self.pending.push(Some(ticket), Some(offset));
                    }
                }
                continue;
            }
            let outputs = std::mem::take(&mut self.outputs);
            let count = outputs.len();
            let mut offset = Some(offset);
            if count == 0 {
                self.pending.push(None, offset.take());
            }
            for (i, out) in outputs.into_iter().enumerate() {
                let ticket = self.send(out).await?;
                // The offset rides on the record's last output: it is durable when all are.
                let carries = if i + 1 == count { offset.take() } else { None };
                self.pending.push(Some(ticket), carries);
            }
            ConnectorMetrics::add(&self.metrics().records_out, count as u64);
        }
        Ok(())
    }

    async fn send(&mut self, record: Record) -> Result<Ticket, Failure> {
        self.env
            .bus
            .send(record, self.partitions)
            .await
            .map_err(|e| Failure::new(Stage::Produce, "bus", ConnectError::fatal(e.to_string()), 1))
    }

    async fn commit(&mut self) {
        self.last_commit = Instant::now();
        if !self.pending.dirty {
            return;
        }
        let name = self.env.connector.name();
        match self.env.offsets.commit(name, &self.pending.ready).await {
            Ok(()) => {
                self.pending.dirty = false;
                ConnectorMetrics::add(&self.metrics().commits, 1);
                tracing::debug!(connector = %name, task = self.env.task_id, offsets = ?self.pending.ready, "offsets committed");
                if let Err(e) = self.task.commit(&self.pending.ready).await {
                    tracing::warn!(connector = %name, task = self.env.task_id, error = %e, "source task commit callback failed");
                }
            }
            // Not fatal: the offsets stay pending and the next commit writes them.
            Err(e) => {
                tracing::error!(connector = %name, task = self.env.task_id, error = %e, "offset commit failed")
            }
        }
    }

    /// Waits (up to the graceful timeout) for what was sent to become durable, then commits.
    async fn finish(&mut self, _stop: &mut StopSignal) {
        let deadline = Instant::now() + Duration::from_millis(self.env.worker.shutdown_timeout_ms);
        loop {
            self.pending.collect();
            if self.pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !self.pending.is_empty() {
            tracing::warn!(
                connector = %self.env.connector.name(), task = self.env.task_id, in_flight = self.pending.queue.len(),
                "stopping with records not yet durable; they will be sent again on restart"
            );
        }
        self.commit().await;
    }
}

/// Transforms and converts one record; the failure says which stage failed.
fn process(
    record: Record,
    chain: &mut TransformChain,
    key_converter: Converter,
    value_converter: Converter,
    outputs: &mut Vec<Record>,
) -> Result<(), Failure> {
    chain.apply(record, outputs).map_err(|e| {
        Failure::new(
            Stage::Transformation,
            format!("transforms.{}", e.alias),
            e.error,
            1,
        )
    })?;
    for out in outputs.iter_mut() {
        out.key = key_converter
            .from_connect(out.key.take())
            .map_err(|e| Failure::new(Stage::KeyConverter, converter_name(key_converter), e, 1))?;
        out.value = value_converter
            .from_connect(out.value.take())
            .map_err(|e| {
                Failure::new(Stage::ValueConverter, converter_name(value_converter), e, 1)
            })?;
    }
    Ok(())
}

pub(crate) fn converter_name(converter: Converter) -> &'static str {
    match converter.class {
        ConverterClass::Json => "org.apache.kafka.connect.json.JsonConverter",
        ConverterClass::String => "org.apache.kafka.connect.storage.StringConverter",
        ConverterClass::ByteArray => "org.apache.kafka.connect.converters.ByteArrayConverter",
    }
}
