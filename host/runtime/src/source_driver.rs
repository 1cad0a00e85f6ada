//! Runs one source task: poll → transforms → converters → bus, committing source offsets
//! once the records they cover are durable on the bus.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_api::{
    ConnectError, Record, SourceOffset, SourcePoll, SourceRecord, SourceTask, SourceTaskContext,
};

use crate::active_topics::TopicTracker;
use crate::bus::{Receipt, Ticket};
use crate::chain::TransformChain;
use crate::connector::ConverterClass;
use crate::convert::Converter;
use crate::metrics::TaskMetrics;
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

/// What a pending entry carries for the offset store once it is durable.
enum Carried {
    /// The source offsets of a run of records: the last one of each source partition.
    Offsets(RunOffsets),
    /// A checkpoint of the chain's state, taken after every record before it was applied;
    /// saved under partitions `{"sluice.transform": alias, "task": id}`.
    State(Vec<SourceOffset>),
}

/// The newest source offset of each source partition of a run of records, in the order
/// the partitions first appeared.
#[derive(Debug, Default)]
struct RunOffsets(Vec<(Arc<serde_json::Value>, serde_json::Value)>);

impl RunOffsets {
    /// Notes the offset of the next record. Records of one partition usually come in
    /// long runs sharing one `Arc`, which a pointer comparison recognises; other
    /// partitions are compared by value, so equal partitions in separate `Arc`s still
    /// keep one offset.
    fn note(&mut self, partition: Arc<serde_json::Value>, offset: serde_json::Value) {
        if let Some(last) = self.0.last_mut()
            && Arc::ptr_eq(&last.0, &partition)
        {
            last.1 = offset;
            return;
        }
        match self.0.iter_mut().find(|(p, _)| *p == partition) {
            Some(slot) => slot.1 = offset,
            None => self.0.push((partition, offset)),
        }
    }

    fn into_offsets(self) -> impl Iterator<Item = SourceOffset> {
        self.0.into_iter().map(|(partition, offset)| SourceOffset {
            partition: Arc::unwrap_or_clone(partition),
            offset,
        })
    }
}

/// Records sent but not yet durable, in send order, a run of records (one polled batch)
/// per entry, with what they carry.
///
/// Without stateful transforms a run's offsets are ready once every record of it and of
/// the runs before it is durable. With them, offsets wait (staged) for the next state
/// checkpoint to become durable, and both are committed together: a restart then resumes
/// the source exactly where the restored state left off, so no record is counted twice or
/// lost.
#[derive(Default)]
struct PendingOffsets {
    queue: VecDeque<(Receipt, Carried)>,
    stateful: bool,
    /// Durable offsets waiting for the checkpoint that covers them.
    staged: Vec<SourceOffset>,
    /// The newest durable offset of each source partition (and state), not yet committed.
    ready: Vec<SourceOffset>,
    dirty: bool,
}

fn upsert(list: &mut Vec<SourceOffset>, offset: SourceOffset) {
    match list.iter_mut().find(|o| o.partition == offset.partition) {
        Some(slot) => slot.offset = offset.offset,
        None => list.push(offset),
    }
}

impl PendingOffsets {
    fn push(&mut self, receipt: Receipt, carried: Carried) {
        self.queue.push_back((receipt, carried));
    }

    /// Moves the durable prefix of the queue into `ready`. Only a prefix: an offset may be
    /// committed only when every record before it is durable too. Returns why the first
    /// record that will never be durable failed, if one did.
    fn collect(&mut self) -> Option<String> {
        while let Some((receipt, _)) = self.queue.front_mut() {
            if !receipt.settle() {
                return receipt.failure().map(str::to_string);
            }
            let Some((_, carried)) = self.queue.pop_front() else {
                break;
            };
            match carried {
                Carried::Offsets(offsets) if self.stateful => {
                    for offset in offsets.into_offsets() {
                        upsert(&mut self.staged, offset);
                    }
                }
                Carried::Offsets(offsets) => {
                    for offset in offsets.into_offsets() {
                        upsert(&mut self.ready, offset);
                        self.dirty = true;
                    }
                }
                Carried::State(states) => {
                    for offset in self.staged.drain(..).chain(states) {
                        upsert(&mut self.ready, offset);
                    }
                    self.dirty = true;
                }
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// How a polled record gets from the task to the bus, fixed for a task's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordPath {
    /// No transforms, and converters that leave records as they are: nothing can fail.
    Direct,
    /// Only filters, and converters that leave records as they are: each record is judged
    /// by reference and moved on or dropped; a failing one is still whole for its dead
    /// letter.
    Filter,
    /// Transforms or converters that change records: each record is copied, so the
    /// original is at hand for the dead letter if a step fails.
    Transform,
}

impl RecordPath {
    fn of(chain: &TransformChain, key: Converter, value: Converter) -> RecordPath {
        if !(key.leaves_source_payloads() && value.leaves_source_payloads()) {
            RecordPath::Transform
        } else if chain.is_empty() {
            RecordPath::Direct
        } else if chain.is_filter() {
            RecordPath::Filter
        } else {
            RecordPath::Transform
        }
    }
}

/// A polled batch on its way: the tickets of what was sent for it (records and dead
/// letters) and the offsets it will commit once they are durable.
#[derive(Default)]
struct Run {
    receipt: Receipt,
    offsets: RunOffsets,
    filtered: u64,
}

/// A failure inside the transform chain, naming the step. (When it comes from records a
/// transform emitted on its own there is no record to blame: it fails the task whatever
/// the tolerance.)
fn chain_failure(e: crate::chain::ChainError) -> Failure {
    Failure::new(
        Stage::Transformation,
        format!("transforms.{}", e.alias),
        e.error,
        1,
    )
}

fn produce_failure(e: crate::bus::BusError) -> Failure {
    Failure::new(Stage::Produce, "bus", ConnectError::fatal(e.to_string()), 1)
}

/// How often stateful transforms are told the time (to close processing-time windows).
const TICK_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The offset-store partition under which a transform's state is saved.
fn state_partition(alias: &str, task: u32) -> serde_json::Value {
    serde_json::json!({"sluice.transform": alias, "task": task})
}

struct SourceRun {
    env: TaskEnv,
    /// This task's counters and histograms (`GET /metrics`).
    metrics: Arc<TaskMetrics>,
    task: Box<dyn SourceTask>,
    chain: TransformChain,
    key_converter: Converter,
    value_converter: Converter,
    operator: RetryOperator,
    partitions: Option<u32>,
    path: RecordPath,
    pending: PendingOffsets,
    last_commit: Instant,
    last_checkpoint: Instant,
    last_tick: Instant,
    outputs: Vec<Record>,
    /// Notes the topics sent to (KIP-558); `None` when `topic.tracking.enable` is false.
    topics: Option<TopicTracker>,
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
    let mut chain = TransformChain::build(&resolved, &env.registry)?;
    let stored = env
        .offsets
        .load(env.connector.name())
        .await
        .map_err(|e| ConnectError::fatal(e.to_string()))?;
    // Transform states share the store with source offsets; the task sees only its own.
    let (states, committed): (Vec<SourceOffset>, Vec<SourceOffset>) = stored
        .into_iter()
        .partition(|o| o.partition.get("sluice.transform").is_some());
    let stateful = chain.is_stateful();
    let mine: Vec<(String, serde_json::Value)> = states
        .into_iter()
        .filter(|o| o.partition["task"] == env.task_id)
        .filter_map(|o| {
            o.partition["sluice.transform"]
                .as_str()
                .map(|a| (a.to_string(), o.offset))
        })
        .collect();
    chain
        .restore(mine)
        .map_err(|e| e.error.context(format!("restoring transforms.{}", e.alias)))?;
    task.start(SourceTaskContext {
        connector: env.connector.name().to_string(),
        task_id: env.task_id,
        offsets: committed,
    })
    .await?;
    let metrics = env.metrics.task(env.task_id);
    let key_converter = Converter::new(common.key_converter, common.key_schemas_enable);
    let value_converter = Converter::new(common.value_converter, common.value_schemas_enable);
    Ok(SourceRun {
        env: env.clone(),
        task,
        path: RecordPath::of(&chain, key_converter, value_converter),
        chain,
        key_converter,
        value_converter,
        operator: RetryOperator::new(
            ErrorPolicy::from_config(&common),
            env.connector.name(),
            env.task_id,
        )
        .with_status(env.status.clone())
        .with_metrics(metrics.clone()),
        metrics,
        partitions: common.topic_creation_partitions,
        pending: PendingOffsets {
            stateful,
            ..PendingOffsets::default()
        },
        last_commit: Instant::now(),
        last_checkpoint: Instant::now(),
        last_tick: Instant::now(),
        outputs: Vec::new(),
        topics: env.worker.topic_tracking_enable.then(TopicTracker::default),
    })
}

impl SourceRun {
    fn metrics(&self) -> &TaskMetrics {
        &self.metrics
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
            if *self.env.paused.borrow() {
                // Paused: poll nothing, but keep committing what becomes durable.
                self.collect_durable().await?;
                self.commit().await;
                let mut paused = self.env.paused.clone();
                tokio::select! {
                    _ = paused.wait_for(|p| !*p) => {}
                    _ = stop.sleep(self.flush_interval()) => {}
                }
                continue;
            }
            if progress.exhausted.load(Ordering::Acquire) {
                // Nothing more to poll: keep committing as the last records become durable.
                self.collect_durable().await?;
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
                let call = Instant::now();
                let result = self.task.poll().await;
                self.metrics.poll_seconds.observe_duration(call.elapsed());
                match result {
                    Ok(p) => {
                        self.operator.recovered();
                        break p;
                    }
                    Err(e)
                        if self
                            .operator
                            .should_retry(Stage::TaskPoll, &e, started, attempt, false, stop)
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
                    // End of input: stateful transforms emit what they hold back.
                    let mut held = Vec::new();
                    self.chain.flush(&mut held).map_err(chain_failure)?;
                    self.send_held(held).await?;
                    self.checkpoint_marker();
                    progress.exhausted.store(true, Ordering::Release);
                }
                SourcePoll::Records(batch) => {
                    self.metrics.batch_size.observe(batch.len() as f64);
                    self.send_batch(batch, stop).await?;
                    if self.pending.stateful {
                        if self.last_tick.elapsed() >= TICK_INTERVAL {
                            self.last_tick = Instant::now();
                            let mut held = Vec::new();
                            self.chain
                                .tick(now_ms(), &mut held)
                                .map_err(chain_failure)?;
                            self.send_held(held).await?;
                        }
                        if self.last_checkpoint.elapsed() >= self.flush_interval() {
                            self.checkpoint_marker();
                        }
                    }
                }
            }
            self.collect_durable().await?;
            if self.last_commit.elapsed() >= self.flush_interval() {
                self.commit().await;
            }
        }
        Ok(())
    }

    /// Takes in what became durable. A record the bus failed to make durable fails the
    /// task, after committing the offsets before it: a restart resends from there.
    async fn collect_durable(&mut self) -> Result<(), Failure> {
        let Some(reason) = self.pending.collect() else {
            return Ok(());
        };
        self.commit().await;
        Err(Failure::new(
            Stage::Produce,
            "bus",
            ConnectError::retriable(reason),
            1,
        ))
    }

    /// Sends records a stateful transform emitted on its own (closed windows); they carry
    /// no source offset.
    async fn send_held(&mut self, held: Vec<Record>) -> Result<(), Failure> {
        if held.is_empty() {
            return Ok(());
        }
        let mut run = Run::default();
        let sent = self.send_out(held, &mut run).await;
        self.pending
            .push(run.receipt, Carried::Offsets(RunOffsets::default()));
        sent?;
        self.metrics().progressed();
        Ok(())
    }

    /// Queues a checkpoint of the chain's state behind everything sent so far.
    fn checkpoint_marker(&mut self) {
        self.last_checkpoint = Instant::now();
        if !self.pending.stateful {
            return;
        }
        let task = self.env.task_id;
        let states = self
            .chain
            .checkpoint()
            .into_iter()
            .map(|(alias, state)| SourceOffset {
                partition: state_partition(&alias, task),
                offset: state,
            })
            .collect();
        self.pending
            .push(Receipt::default(), Carried::State(states));
    }

    /// Transforms, converts and sends a polled batch. Its offsets are queued as one run,
    /// also when a record fails the task midway: what was sent before it is committed once
    /// durable.
    async fn send_batch(
        &mut self,
        batch: Vec<SourceRecord>,
        stop: &mut StopSignal,
    ) -> Result<(), Failure> {
        TaskMetrics::add(&self.metrics().polled, batch.len() as u64);
        self.metrics().progressed();
        let mut run = Run::default();
        let result = self.process_batch(batch, stop, &mut run).await;
        TaskMetrics::add(&self.metrics().filtered, run.filtered);
        self.pending
            .push(run.receipt, Carried::Offsets(run.offsets));
        result
    }

    async fn process_batch(
        &mut self,
        batch: Vec<SourceRecord>,
        stop: &mut StopSignal,
        run: &mut Run,
    ) -> Result<(), Failure> {
        let mut out = Vec::with_capacity(batch.len());
        for source_record in batch {
            let SourceRecord {
                record,
                source_partition,
                source_offset,
            } = source_record;
            let failure = match self.path {
                RecordPath::Direct => {
                    out.push(record);
                    None
                }
                RecordPath::Filter => {
                    let chain = &mut self.chain;
                    let kept = self
                        .operator
                        .run(stop, || chain.keeps(&record).map_err(chain_failure))
                        .await;
                    match kept {
                        Ok(true) => {
                            out.push(record);
                            None
                        }
                        Ok(false) => {
                            run.filtered += 1;
                            None
                        }
                        Err((failure, attempts)) => Some((failure, attempts, record)),
                    }
                }
                RecordPath::Transform => {
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
                            process(record.clone(), chain, key_conv, value_conv, outputs)
                        })
                        .await;
                    match result {
                        Ok(()) => {
                            run.filtered += u64::from(self.outputs.is_empty());
                            out.append(&mut self.outputs);
                            None
                        }
                        Err((failure, attempts)) => Some((failure, attempts, record)),
                    }
                }
            };
            if let Some((mut failure, attempts, original)) = failure {
                failure.attempts = attempts;
                TaskMetrics::add(&self.metrics().failed, 1);
                // What came before is sent first: a dead letter never overtakes it, and a
                // failing task has sent everything before the record that failed it.
                self.send_out(std::mem::take(&mut out), run).await?;
                match self.operator.dispose(failure, &original) {
                    Disposition::Fail(f) => return Err(f),
                    Disposition::Skip(None) => {}
                    Disposition::Skip(Some(mut dead)) => {
                        without_topic_context(&mut dead, original.headers.len());
                        // The offset is committed only once the dead letter (and everything
                        // sent before it) is durable: its ticket joins the run's.
                        let ticket = self.send(dead).await?;
                        run.receipt.add(ticket);
                        TaskMetrics::add(&self.metrics().dead_lettered, 1);
                    }
                }
            }
            run.offsets.note(source_partition, source_offset);
        }
        self.send_out(out, run).await
    }

    /// Sends records in order, their tickets into the run's receipt.
    async fn send_out(&mut self, records: Vec<Record>, run: &mut Run) -> Result<(), Failure> {
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len() as u64;
        if let Some(tracker) = &mut self.topics {
            for record in &records {
                tracker.note(&self.env.metrics.topics, &record.topic);
            }
        }
        self.env
            .bus
            .send_all(records, self.partitions, &mut run.receipt)
            .await
            .map_err(produce_failure)?;
        TaskMetrics::add(&self.metrics().written, count);
        Ok(())
    }

    async fn send(&mut self, record: Record) -> Result<Ticket, Failure> {
        self.env
            .bus
            .send(record, self.partitions)
            .await
            .map_err(produce_failure)
    }

    async fn commit(&mut self) {
        self.last_commit = Instant::now();
        let covers_all = self.pending.is_empty() && self.pending.staged.is_empty();
        if !self.pending.dirty {
            if covers_all {
                // Nothing left to commit: as good as a commit, for the commit age.
                self.metrics.committed(true);
            }
            return;
        }
        let name = self.env.connector.name();
        match self.env.offsets.commit(name, &self.pending.ready).await {
            Ok(()) => {
                self.pending.dirty = false;
                TaskMetrics::add(&self.metrics().commits, 1);
                self.metrics.committed(covers_all);
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
        self.checkpoint_marker();
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
                connector = %self.env.connector.name(), task = self.env.task_id, batches_in_flight = self.pending.queue.len(),
                "stopping with records not yet durable; they will be sent again on restart"
            );
        }
        self.commit().await;
    }
}

/// A source record was never on a topic: its dead letter has no
/// `__connect.errors.topic` / `.partition` / `.offset` context headers (the topic it was
/// bound for is not where it was read from). Only the context headers, appended after the
/// record's own `own` headers, are removed.
fn without_topic_context(dead: &mut Record, own: usize) {
    const WHERE_READ: [&str; 3] = [
        "__connect.errors.topic",
        "__connect.errors.partition",
        "__connect.errors.offset",
    ];
    let mut index = 0;
    dead.headers.retain(|h| {
        index += 1;
        index <= own || !WHERE_READ.contains(&h.key.as_str())
    });
}

/// Transforms and converts one record; the failure says which stage failed.
fn process(
    record: Record,
    chain: &mut TransformChain,
    key_converter: Converter,
    value_converter: Converter,
    outputs: &mut Vec<Record>,
) -> Result<(), Failure> {
    chain.apply(record, outputs).map_err(chain_failure)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::DurableMark;
    use serde_json::json;

    /// A run of records of source partition `{"task": 0}` sent as bus offsets `sent` of
    /// the partition `mark` tracks; the last record has source offset `{"seq": last}`.
    fn run(mark: &Arc<DurableMark>, sent: std::ops::Range<i64>, last: u64) -> (Receipt, Carried) {
        let partition = Arc::new(json!({"task": 0}));
        let mut receipt = Receipt::default();
        let mut run = RunOffsets::default();
        let first = last + 1 - sent.clone().count() as u64;
        for (seq, offset) in (first..).zip(sent) {
            receipt.add(Ticket::new(mark.clone(), offset));
            run.note(partition.clone(), json!({ "seq": seq }));
        }
        (receipt, Carried::Offsets(run))
    }

    fn ready_seqs(pending: &PendingOffsets) -> Vec<serde_json::Value> {
        pending
            .ready
            .iter()
            .map(|o| o.offset["seq"].clone())
            .collect()
    }

    #[test]
    fn a_run_keeps_the_last_offset_of_each_source_partition() {
        let a = Arc::new(json!({"file": "a"}));
        let b = Arc::new(json!({"file": "b"}));
        let mut run = RunOffsets::default();
        run.note(a.clone(), json!(1));
        run.note(a.clone(), json!(2));
        run.note(b.clone(), json!(10));
        run.note(a.clone(), json!(3));
        // Equal to `b` but another Arc: still the same source partition.
        run.note(Arc::new(json!({"file": "b"})), json!(11));
        let offsets: Vec<(serde_json::Value, serde_json::Value)> = run
            .into_offsets()
            .map(|o| (o.partition, o.offset))
            .collect();
        assert_eq!(
            offsets,
            vec![
                (json!({"file": "a"}), json!(3)),
                (json!({"file": "b"}), json!(11))
            ]
        );
    }

    #[test]
    fn offsets_become_ready_only_as_a_durable_prefix() {
        let mark = Arc::new(DurableMark::default());
        let mut pending = PendingOffsets::default();
        let (receipt, carried) = run(&mark, 0..3, 10);
        pending.push(receipt, carried);
        let (receipt, carried) = run(&mark, 3..5, 20);
        pending.push(receipt, carried);
        pending.collect();
        assert!(pending.ready.is_empty());
        mark.advance_to(2); // the first run's last record (offset 2) is not durable
        pending.collect();
        assert!(
            pending.ready.is_empty(),
            "no offset before its whole run is durable"
        );
        mark.advance_to(4);
        pending.collect();
        assert_eq!(ready_seqs(&pending), vec![json!(10)]);
        assert!(pending.dirty);
        mark.advance_to(5);
        pending.collect();
        assert_eq!(
            ready_seqs(&pending),
            vec![json!(20)],
            "one offset per partition"
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn a_rejected_records_offset_waits_for_its_dead_letter() {
        let data = Arc::new(DurableMark::default());
        let dlq = Arc::new(DurableMark::default());
        let mut pending = PendingOffsets::default();
        let (receipt, carried) = run(&data, 0..1, 1);
        pending.push(receipt, carried);
        // The next run's record 2 was rejected: its dead letter's ticket is in the run.
        let (mut receipt, carried) = run(&data, 1..2, 3);
        receipt.add(Ticket::new(dlq.clone(), 0));
        pending.push(receipt, carried);
        data.advance_to(2); // both good records durable, the dead letter not yet
        pending.collect();
        assert_eq!(ready_seqs(&pending), vec![json!(1)]);
        dlq.fail("broker said no".into());
        assert_eq!(pending.collect().as_deref(), Some("broker said no"));
        assert_eq!(ready_seqs(&pending), vec![json!(1)], "not past it");
        let dlq = Arc::new(DurableMark::default());
        let mut pending = PendingOffsets::default();
        let (mut receipt, carried) = run(&data, 2..2, 0);
        receipt.add(Ticket::new(dlq.clone(), 0));
        let Carried::Offsets(mut offsets) = carried else {
            unreachable!()
        };
        offsets.note(Arc::new(json!({"task": 0})), json!({"seq": 2}));
        pending.push(receipt, Carried::Offsets(offsets));
        pending.collect();
        assert!(pending.ready.is_empty());
        dlq.advance_to(1);
        pending.collect();
        assert_eq!(ready_seqs(&pending), vec![json!(2)]);
    }

    #[test]
    fn a_run_of_filtered_records_commits_after_the_runs_before_it() {
        let mark = Arc::new(DurableMark::default());
        let mut pending = PendingOffsets::default();
        let (receipt, carried) = run(&mark, 0..2, 5);
        pending.push(receipt, carried);
        // Every record of the next batch was filtered out: nothing sent, offsets only.
        let mut offsets = RunOffsets::default();
        offsets.note(Arc::new(json!({"task": 0})), json!({"seq": 9}));
        pending.push(Receipt::default(), Carried::Offsets(offsets));
        pending.collect();
        assert!(pending.ready.is_empty(), "behind records not yet durable");
        mark.advance_to(2);
        pending.collect();
        assert_eq!(ready_seqs(&pending), vec![json!(9)]);
    }

    #[test]
    fn source_dead_letters_have_no_topic_context_but_keep_their_own_headers() {
        let mut original = Record::new("orders", json!({"a": 1}));
        // A header of the record itself (say, replayed from an old dead letter) stays.
        original
            .headers
            .push(sluice_api::Header::new("__connect.errors.topic", "old"));
        let operator = RetryOperator::new(
            ErrorPolicy {
                retry_timeout: Some(Duration::ZERO),
                max_delay: Duration::from_millis(1),
                tolerance: crate::connector::Tolerance::All,
                dlq_topic: Some("dlq".into()),
                context_headers: true,
                log_errors: false,
                log_messages: false,
            },
            "sim",
            0,
        );
        let failure = Failure::new(
            Stage::Transformation,
            "transforms.f",
            ConnectError::data("no such key: event_type"),
            1,
        );
        let Disposition::Skip(Some(mut dead)) = operator.dispose(failure, &original) else {
            panic!("expected a dead letter");
        };
        without_topic_context(&mut dead, original.headers.len());
        let keys: Vec<&str> = dead.headers.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys[0], "__connect.errors.topic");
        assert_eq!(dead.headers[0].value, json!("old"));
        // The record's own header is the only one left of where-it-was-read headers.
        for key in ["__connect.errors.partition", "__connect.errors.offset"] {
            assert!(!keys.contains(&key), "{keys:?}");
        }
        assert_eq!(
            keys.iter()
                .filter(|k| **k == "__connect.errors.topic")
                .count(),
            1
        );
        for key in [
            "__connect.errors.connector.name",
            "__connect.errors.task.id",
            "__connect.errors.stage",
            "__connect.errors.class.name",
            "__connect.errors.exception.class.name",
            "__connect.errors.exception.message",
            "__connect.errors.exception.stacktrace",
        ] {
            assert!(keys.contains(&key), "{key} missing: {keys:?}");
        }
        assert_eq!(dead.topic, "dlq");
        assert_eq!(dead.value, original.value);
    }

    #[test]
    fn with_state_offsets_wait_for_the_checkpoint_that_covers_them() {
        let mark = Arc::new(DurableMark::default());
        let mut pending = PendingOffsets {
            stateful: true,
            ..PendingOffsets::default()
        };
        let (receipt, carried) = run(&mark, 0..1, 1);
        pending.push(receipt, carried);
        pending.push(
            Receipt::default(),
            Carried::State(vec![SourceOffset {
                partition: state_partition("agg", 0),
                offset: json!({"count": 1}),
            }]),
        );
        let (receipt, carried) = run(&mark, 1..2, 2);
        pending.push(receipt, carried);
        mark.advance_to(2); // everything durable
        pending.collect();
        // Offset 1 and the state committed together; offset 2 waits for the next checkpoint.
        assert_eq!(pending.ready.len(), 2);
        assert!(pending.ready.iter().any(|o| o.offset == json!({"seq": 1})));
        assert!(
            pending
                .ready
                .iter()
                .any(|o| o.offset == json!({"count": 1}))
        );
        assert!(!pending.ready.iter().any(|o| o.offset == json!({"seq": 2})));
        assert_eq!(pending.staged.len(), 1);
    }
}
