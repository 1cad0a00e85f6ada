//! Runs one sink task: bus → converters → transforms → put, and after `flush` succeeds,
//! acknowledges the consumed positions (which is what makes them durable for sources).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::{ConnectError, Record, SinkTask, SinkTaskContext};

use crate::active_topics::TopicTracker;
use crate::bus::{BusConsumer, Position, Ticket};
use crate::chain::TransformChain;
use crate::convert::Converter;
use crate::metrics::TaskMetrics;
use crate::registry::ConnectorPlugin;
use crate::source_driver::converter_name;
use crate::stop::StopSignal;
use crate::tolerance::{Disposition, ErrorPolicy, Failure, RetryOperator, Stage};
use crate::worker::{TaskEnv, TaskSetup};

/// The consumer group of a sink connector, as in Kafka Connect.
pub fn group_id(connector: &str) -> String {
    format!("connect-{connector}")
}

struct SinkRun {
    env: TaskEnv,
    /// This task's counters and histograms (`GET /metrics`).
    metrics: Arc<TaskMetrics>,
    task: Box<dyn SinkTask>,
    consumer: Box<dyn BusConsumer>,
    chain: TransformChain,
    key_converter: Converter,
    value_converter: Converter,
    operator: RetryOperator,
    /// Next offset per partition consumed since the last acknowledgement.
    /// (A sink reads few partitions, so a list beats a map keyed by an owned topic name.)
    unacked: Vec<Position>,
    unacked_count: usize,
    /// Dead letters sent since the last acknowledgement; they must be durable first.
    dead_letters: Vec<Ticket>,
    last_flush: Instant,
    /// The chain holds state (windows); it is ticked, and flushed when the input ends.
    /// Its state is not checkpointed on the sink side (see docs/transforms/aggregate.md).
    stateful: bool,
    last_tick: Instant,
    /// Notes the topics consumed (KIP-558); `None` when `topic.tracking.enable` is false.
    topics: Option<TopicTracker>,
}

pub async fn run(env: TaskEnv, mut stop: StopSignal) -> Result<(), Failure> {
    let mut run = start(&env).await.map_err(|e| {
        Failure::new(
            Stage::TaskStart,
            env.connector.common.connector_class.clone(),
            e,
            1,
        )
    })?;
    let mut result = run.pump(&mut stop).await;
    if result.is_ok() && run.stateful && env.input_ended.load(std::sync::atomic::Ordering::Acquire)
    {
        // --drain: the input has ended, so windows still open are final now.
        result = run.deliver_held(true, &mut stop).await;
    }
    if result.is_ok() {
        // Stopping cleanly: make everything put so far durable and acknowledge it.
        if let Err(f) = run.flush_and_ack(&mut stop, true).await {
            tracing::error!(connector = %env.connector.name(), task = env.task_id, "final flush failed: {}", f.trace());
        }
    }
    if let Err(e) = run.task.stop().await {
        tracing::warn!(connector = %env.connector.name(), task = env.task_id, error = %e, "sink task did not stop cleanly");
    }
    run.metrics.set_lag_probe(None);
    result
}

async fn start(env: &TaskEnv) -> Result<SinkRun, ConnectError> {
    let ConnectorPlugin::Sink(plugin) = &env.connector.plugin else {
        return Err(ConnectError::fatal("not a sink connector"));
    };
    let TaskSetup {
        resolved,
        common,
        task_config,
        task_count,
    } = env.setup()?;
    let mut task = plugin.create_task(&task_config)?;
    let chain = TransformChain::build(&resolved, &env.registry)?;
    task.start(SinkTaskContext {
        connector: env.connector.name().to_string(),
        task_id: env.task_id,
        durable_offsets: env.bus.durable_offsets(),
    })
    .await?;
    let consumer = env.bus.subscribe(
        &env.connector.group_id(),
        &env.connector.topic_filter(),
        env.task_id,
        task_count as u32,
    );
    let metrics = env.metrics.task(env.task_id);
    metrics.set_lag_probe(consumer.lag_probe());
    Ok(SinkRun {
        env: env.clone(),
        task,
        consumer,
        key_converter: Converter::new(common.key_converter, common.key_schemas_enable),
        value_converter: Converter::new(common.value_converter, common.value_schemas_enable),
        operator: RetryOperator::new(
            ErrorPolicy::from_config(&common),
            env.connector.name(),
            env.task_id,
        )
        .with_status(env.status.clone())
        .with_metrics(metrics.clone()),
        metrics,
        unacked: Vec::new(),
        unacked_count: 0,
        dead_letters: Vec::new(),
        last_flush: Instant::now(),
        stateful: chain.is_stateful(),
        last_tick: Instant::now(),
        topics: env.worker.topic_tracking_enable.then(TopicTracker::default),
        chain,
    })
}

impl SinkRun {
    fn metrics(&self) -> &TaskMetrics {
        &self.metrics
    }

    async fn pump(&mut self, stop: &mut StopSignal) -> Result<(), Failure> {
        let max = self.env.worker.max_poll_records;
        let flush_interval = Duration::from_millis(self.env.worker.offset_flush_interval_ms);
        // Acknowledge before half the partition capacity is held, so sources never stall
        // waiting for a sink that waits for more records before flushing.
        let ack_threshold = (self.env.worker.partition_capacity / 2).max(1);
        while !stop.is_stopped() {
            if *self.env.paused.borrow() {
                // Paused: make what was given durable, then take nothing new.
                self.flush_and_ack(stop, false).await?;
                let mut paused = self.env.paused.clone();
                tokio::select! {
                    _ = paused.wait_for(|p| !*p) => {}
                    _ = stop.stopped() => {}
                }
                continue;
            }
            let batch = self
                .consumer
                .poll(max, Duration::from_millis(100))
                .await
                .map_err(|e| {
                    Failure::new(Stage::TaskPut, "bus", ConnectError::fatal(e.to_string()), 1)
                })?;
            // Flush when nothing more is waiting, when half the partition capacity is
            // held, or at the interval: a trickle of records is not flushed record by
            // record, and an idle sink never holds records back.
            let idle = batch.is_empty();
            if !idle {
                self.deliver(batch, stop).await?;
            }
            if self.consumer.revoking() {
                // A rebalance takes partitions away: what was given from them must be
                // durable and committed before they move, so their next owner neither
                // skips nor repeats records.
                self.flush_and_ack(stop, false).await?;
                self.consumer.release_revoked().await;
                continue;
            }
            if self.stateful && self.last_tick.elapsed() >= Duration::from_secs(1) {
                self.last_tick = Instant::now();
                self.deliver_held(false, stop).await?;
            }
            if self.unacked_count > 0
                && (idle
                    || self.unacked_count >= ack_threshold
                    || self.last_flush.elapsed() >= flush_interval)
            {
                self.flush_and_ack(stop, false).await?;
            }
        }
        Ok(())
    }

    async fn deliver(
        &mut self,
        batch: Vec<Arc<Record>>,
        stop: &mut StopSignal,
    ) -> Result<(), Failure> {
        TaskMetrics::add(&self.metrics().polled, batch.len() as u64);
        self.metrics().progressed();
        let mut filtered = 0;
        let mut good: Vec<Arc<Record>> = Vec::with_capacity(batch.len());
        let mut origin: Vec<usize> = Vec::with_capacity(batch.len());
        let mut outputs = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            if let Some(tracker) = &mut self.topics {
                tracker.note(&self.env.metrics.topics, &record.topic);
            }
            if let (Some(p), Some(o)) = (record.partition, record.offset) {
                match self
                    .unacked
                    .iter_mut()
                    .find(|u| u.partition == p && u.topic == record.topic)
                {
                    Some(u) => u.next_offset = u.next_offset.max(o + 1),
                    None => self.unacked.push(Position {
                        topic: record.topic.clone(),
                        partition: p,
                        next_offset: o + 1,
                    }),
                }
            }
            let (chain, kc, vc) = (&mut self.chain, self.key_converter, self.value_converter);
            if chain.is_empty()
                && kc.passes_through(&record.key)
                && vc.passes_through(&record.value)
            {
                // Nothing would change it: hand the sink the record the bus holds.
                good.push(record.clone());
                origin.push(index);
                continue;
            }
            let result = self
                .operator
                .run(stop, || {
                    outputs.clear();
                    process(Record::clone(record), chain, kc, vc, &mut outputs)
                })
                .await;
            match result {
                Ok(()) => {
                    filtered += u64::from(outputs.is_empty());
                    origin.extend(std::iter::repeat_n(index, outputs.len()));
                    good.extend(outputs.drain(..).map(Arc::new));
                }
                Err((mut failure, attempts)) => {
                    failure.attempts = attempts;
                    self.reject(failure, record).await?;
                }
            }
        }
        TaskMetrics::add(&self.metrics().filtered, filtered);
        self.unacked_count += batch.len();
        if good.is_empty() {
            return Ok(());
        }
        let originals = origin.iter().map(|i| batch[*i].clone()).collect();
        self.put_records(good, originals, stop).await
    }

    /// Puts `good` (retrying retriable errors until they stop) and applies
    /// `errors.tolerance` to each record the sink rejects, by its original.
    async fn put_records(
        &mut self,
        good: Vec<Arc<Record>>,
        originals: Vec<Arc<Record>>,
        stop: &mut StopSignal,
    ) -> Result<(), Failure> {
        let component = self.env.connector.common.connector_class.clone();
        let started = Instant::now();
        let mut attempt = 1;
        self.metrics.batch_size.observe(good.len() as f64);
        let outcome = loop {
            let call = Instant::now();
            let result = self.task.put(&good).await;
            self.metrics.put_seconds.observe_duration(call.elapsed());
            match result {
                Ok(outcome) => {
                    self.operator.recovered();
                    break outcome;
                }
                Err(e)
                    if self
                        .operator
                        .should_retry(Stage::TaskPut, &e, started, attempt, true, stop)
                        .await =>
                {
                    attempt += 1
                }
                Err(e) => return Err(Failure::new(Stage::TaskPut, component, e, attempt)),
            }
        };
        let failed = outcome.failed.len();
        for failure in outcome.failed {
            let Some(original) = originals.get(failure.index) else {
                tracing::warn!(connector = %self.env.connector.name(), index = failure.index, "sink reported a failure for a record it was not given");
                continue;
            };
            self.reject(
                Failure::new(Stage::TaskPut, component.clone(), failure.error, 1),
                original,
            )
            .await?;
        }
        TaskMetrics::add(
            &self.metrics().written,
            (good.len() - failed.min(good.len())) as u64,
        );
        Ok(())
    }

    /// Puts what stateful transforms emitted on their own: on `tick` (time moved on) or,
    /// when the input has ended (`--drain`), on `flush`.
    async fn deliver_held(
        &mut self,
        end_of_input: bool,
        stop: &mut StopSignal,
    ) -> Result<(), Failure> {
        let mut held = Vec::new();
        let result = if end_of_input {
            self.chain.flush(&mut held)
        } else {
            self.chain.tick(crate::source_driver::now_ms(), &mut held)
        };
        result.map_err(|e| {
            Failure::new(
                Stage::Transformation,
                format!("transforms.{}", e.alias),
                e.error,
                1,
            )
        })?;
        if held.is_empty() {
            return Ok(());
        }
        let good: Vec<Arc<Record>> = held.into_iter().map(Arc::new).collect();
        let originals = good.clone();
        self.put_records(good, originals, stop).await
    }

    /// Applies `errors.tolerance` to a record that failed for good.
    async fn reject(&mut self, failure: Failure, original: &Record) -> Result<(), Failure> {
        TaskMetrics::add(&self.metrics().failed, 1);
        match self.operator.dispose(failure, original) {
            Disposition::Fail(f) => Err(f),
            Disposition::Skip(None) => Ok(()),
            Disposition::Skip(Some(dead)) => {
                let ticket = self.env.bus.send(dead, None).await.map_err(|e| {
                    Failure::new(Stage::Produce, "bus", ConnectError::fatal(e.to_string()), 1)
                })?;
                TaskMetrics::add(&self.metrics().dead_lettered, 1);
                self.dead_letters.push(ticket);
                Ok(())
            }
        }
    }

    /// Flushes the sink, waits for this batch's dead letters to be durable, then
    /// acknowledges the consumed positions. When `stopping`, waits for dead letters only
    /// up to the graceful timeout and leaves the positions unacknowledged if they are not
    /// durable by then (the records come again on restart: at-least-once, never lost).
    async fn flush_and_ack(
        &mut self,
        stop: &mut StopSignal,
        stopping: bool,
    ) -> Result<(), Failure> {
        if self.unacked_count == 0 {
            return Ok(());
        }
        let component = self.env.connector.common.connector_class.clone();
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let call = Instant::now();
            let result = self.task.flush().await;
            self.metrics.flush_seconds.observe_duration(call.elapsed());
            match result {
                Ok(()) => {
                    self.operator.recovered();
                    break;
                }
                Err(e)
                    if !stopping
                        && self
                            .operator
                            .should_retry(Stage::TaskFlush, &e, started, attempt, true, stop)
                            .await =>
                {
                    attempt += 1
                }
                Err(e) => return Err(Failure::new(Stage::TaskFlush, component, e, attempt)),
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.env.worker.shutdown_timeout_ms);
        while !self.dead_letters.iter().all(Ticket::is_durable) {
            if let Some(reason) = self.dead_letters.iter().find_map(Ticket::failure) {
                return Err(Failure::new(
                    Stage::Produce,
                    "bus",
                    ConnectError::retriable(format!("dead letter not written: {reason}")),
                    1,
                ));
            }
            if (stopping || stop.is_stopped()) && Instant::now() >= deadline {
                tracing::warn!(connector = %self.env.connector.name(), task = self.env.task_id,
                    "dead letters not durable at shutdown; their records will be consumed again");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let positions = std::mem::take(&mut self.unacked);
        self.consumer.commit(&positions).await.map_err(|e| {
            Failure::new(
                Stage::TaskFlush,
                "bus",
                ConnectError::fatal(e.to_string()),
                1,
            )
        })?;
        self.unacked_count = 0;
        self.dead_letters.clear();
        self.last_flush = Instant::now();
        TaskMetrics::add(&self.metrics.commits, 1);
        self.metrics.committed(true);
        Ok(())
    }
}

pub(crate) fn process(
    mut record: Record,
    chain: &mut TransformChain,
    key_converter: Converter,
    value_converter: Converter,
    outputs: &mut Vec<Record>,
) -> Result<(), Failure> {
    record.key = key_converter
        .to_connect(record.key.take())
        .map_err(|e| Failure::new(Stage::KeyConverter, converter_name(key_converter), e, 1))?;
    record.value = value_converter
        .to_connect(record.value.take())
        .map_err(|e| Failure::new(Stage::ValueConverter, converter_name(value_converter), e, 1))?;
    chain.apply(record, outputs).map_err(|e| {
        Failure::new(
            Stage::Transformation,
            format!("transforms.{}", e.alias),
            e.error,
            1,
        )
    })
}
