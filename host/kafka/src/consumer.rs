//! A sink task's consumer: one member of the connector's consumer group.
//!
//! librdkafka is polled on a thread of its own, which hands records to the task through a
//! bounded channel (so a slow sink slows the fetching down). Rebalances run on that
//! thread too, inside librdkafka's poll. When partitions are revoked, the thread tells the
//! task (an event behind every record fetched before it) and waits: the task makes
//! everything it was given durable, commits, and releases the revocation; only then does
//! librdkafka hand the partitions over. The next owner starts exactly at the commit, so
//! nothing is skipped and nothing is repeated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_api::Record;
use sluice_runtime::bus::{BusConsumer, BusError, Position, TopicFilter};
use tokio::sync::mpsc;

use crate::lag::{LagBook, LagView};
use crate::settings::KafkaSettings;
use crate::{clock_ms, lock};

/// How long a revocation waits for the task to commit. A sink stuck longer (its database
/// down) lets the partitions go uncommitted: the next owner then repeats what this one
/// had not committed, which idempotent sinks absorb.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(60);
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

enum Event {
    Record(Arc<Record>),
    /// Partitions are being revoked; reply once everything given so far is committed.
    Revoke(std::sync::mpsc::SyncSender<()>),
}

/// How far one consumer got, for the bus's `is_settled` (drain mode).
#[derive(Default)]
pub struct ConsumerProgress {
    /// `None` until the group gave this member its first assignment, and again from a
    /// revocation of everything (eager rebalance, lost session) until the next one: a
    /// member between assignments owns no partition, but has not caught up on any.
    assigned: Mutex<Option<Vec<(String, i32)>>>,
    /// Next offset to consume, as last committed by this member or read from the group.
    committed: Mutex<HashMap<(String, i32), i64>>,
    /// Every assigned partition committed up to its end, as of `checked_at_ms`.
    caught_up: AtomicBool,
    checked_at_ms: std::sync::atomic::AtomicU64,
}

impl ConsumerProgress {
    /// Caught up at a check made after `since_ms` (the last record the bus produced was
    /// acknowledged then), so a check older than the newest record does not count.
    pub fn is_caught_up_since(&self, since_ms: u64) -> bool {
        self.caught_up.load(Ordering::Acquire)
            && self.checked_at_ms.load(Ordering::Acquire) > since_ms
    }

    fn set_assignment(&self, tpl: &TopicPartitionList, add: bool) {
        let mut assigned = lock(&self.assigned);
        let list = assigned.get_or_insert_with(Vec::new);
        if !add {
            list.clear();
        }
        for e in tpl.elements() {
            let tp = (e.topic().to_string(), e.partition());
            if !list.contains(&tp) {
                list.push(tp);
            }
        }
        self.caught_up.store(false, Ordering::Release);
    }

    fn remove_assignment(&self, tpl: &TopicPartitionList, all: bool) {
        let mut assigned = lock(&self.assigned);
        if all {
            *assigned = None;
        } else if let Some(list) = assigned.as_mut() {
            list.retain(|(t, p)| {
                !tpl.elements()
                    .iter()
                    .any(|e| e.topic() == t && e.partition() == *p)
            });
        }
        self.caught_up.store(false, Ordering::Release);
    }

    /// The partitions this member owns now (`None` between assignments).
    pub(crate) fn assigned(&self) -> Option<Vec<(String, i32)>> {
        lock(&self.assigned).clone()
    }

    /// Compares each assigned partition's committed offset with its end.
    fn check(&self, consumer: &BaseConsumer<SinkContext>) {
        let started = clock_ms();
        let Some(assigned) = lock(&self.assigned).clone() else {
            return;
        };
        let missing: Vec<&(String, i32)> = {
            let committed = lock(&self.committed);
            assigned
                .iter()
                .filter(|tp| !committed.contains_key(*tp))
                .collect()
        };
        if !missing.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &missing {
                tpl.add_partition(t, *p);
            }
            let Ok(found) = consumer.committed_offsets(tpl, BROKER_TIMEOUT) else {
                return;
            };
            let mut committed = lock(&self.committed);
            for e in found.elements() {
                let next = match e.offset() {
                    Offset::Offset(o) => o,
                    // Nothing committed yet: the group starts at the beginning.
                    _ => {
                        match consumer.fetch_watermarks(e.topic(), e.partition(), BROKER_TIMEOUT) {
                            Ok((low, _)) => low,
                            Err(_) => return,
                        }
                    }
                };
                committed.insert((e.topic().to_string(), e.partition()), next);
            }
        }
        // Where the fetching got to: every record handed to the task (the thread is idle,
        // so nothing fetched is held back) must be committed too. On Apache Kafka this is
        // never past the end; tansu answers the end of a partition with the first offset
        // of its newest batch (+1), so the rest of that batch counts only through here.
        let positions = consumer.position().unwrap_or_default();
        for (t, p) in &assigned {
            let Ok((_, high)) = consumer.fetch_watermarks(t, *p, BROKER_TIMEOUT) else {
                return;
            };
            let fetched = positions
                .find_partition(t, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            let end = high.max(fetched);
            let done = lock(&self.committed)
                .get(&(t.clone(), *p))
                .is_some_and(|c| *c >= end);
            if !done {
                self.caught_up.store(false, Ordering::Release);
                return;
            }
        }
        self.checked_at_ms.store(started, Ordering::Release);
        self.caught_up.store(true, Ordering::Release);
    }
}

struct SinkContext {
    events: mpsc::Sender<Event>,
    progress: Arc<ConsumerProgress>,
    closing: Arc<AtomicBool>,
    /// `consumer.start.timestamp`: where partitions without a committed offset start.
    start_timestamp: Option<i64>,
    group: String,
    lag: Arc<LagBook>,
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.record(&statistics);
    }
}

impl SinkContext {
    /// Waits until the task committed everything it was given (or gives up after
    /// [`HAND_OVER_TIMEOUT`]; or at once when the consumer is closing, as the task has
    /// committed already).
    fn hand_over(&self) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        if self.events.blocking_send(Event::Revoke(done_tx)).is_err() {
            return;
        }
        if done_rx.recv_timeout(HAND_OVER_TIMEOUT).is_err() && !self.closing.load(Ordering::Acquire)
        {
            tracing::warn!(group = %self.group, "partitions revoked before the sink committed; their next owner repeats the uncommitted records");
        }
    }

    /// Points partitions the group never committed at the first record at or after
    /// `consumer.start.timestamp`.
    fn start_from_time(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        ts: i64,
    ) {
        let Ok(committed) = consumer.committed_offsets(tpl.clone(), BROKER_TIMEOUT) else {
            tracing::warn!(group = %self.group, "cannot read committed offsets; consumer.start.timestamp not applied");
            return;
        };
        let mut by_time = TopicPartitionList::new();
        for e in committed.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                let _ = by_time.add_partition_offset(e.topic(), e.partition(), Offset::Offset(ts));
            }
        }
        if by_time.count() == 0 {
            return;
        }
        match consumer.offsets_for_times(by_time, BROKER_TIMEOUT) {
            Ok(found) => {
                let mut starts = Vec::new();
                for e in found.elements() {
                    let start = match e.offset() {
                        Offset::Offset(o) => o,
                        // No record that late: start at the end as it is now (not as it
                        // will be when fetching starts, which could skip records).
                        _ => match consumer.fetch_watermarks(
                            e.topic(),
                            e.partition(),
                            BROKER_TIMEOUT,
                        ) {
                            Ok((_, high)) => high,
                            Err(err) => {
                                tracing::warn!(group = %self.group, partition = e.partition(), error = %err, "cannot read the end of a partition; consumer.start.timestamp not applied to it");
                                continue;
                            }
                        },
                    };
                    let _ =
                        tpl.set_partition_offset(e.topic(), e.partition(), Offset::Offset(start));
                    starts.push(((e.topic().to_string(), e.partition()), start));
                }
                tracing::info!(group = %self.group, timestamp = ts, partitions = found.count(), "starting partitions from consumer.start.timestamp");
                // For `--drain`, these partitions count as consumed up to where they
                // start (the group has no commit to read that from).
                lock(&self.progress.committed).extend(starts);
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "offsets for consumer.start.timestamp not found")
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(ts) = self.start_timestamp {
                    self.start_from_time(consumer, tpl, ts);
                }
                self.progress.set_assignment(tpl, cooperative);
                tracing::info!(group = %self.group, partitions = ?partitions_of(tpl), "partitions assigned");
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if tpl.count() > 0 {
                    self.hand_over();
                }
                self.progress.remove_assignment(tpl, !cooperative);
                lock(&self.progress.committed).clear();
                tracing::info!(group = %self.group, partitions = ?partitions_of(tpl), "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(group = %self.group, error = %code, "rebalance error");
                self.progress.remove_assignment(tpl, true);
                lock(&self.progress.committed).clear();
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(group = %self.group, error = %e, "applying the rebalance failed");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}-{}", e.topic(), e.partition()))
        .collect()
}

pub struct KafkaConsumer {
    consumer: Option<Arc<BaseConsumer<SinkContext>>>,
    events: Option<mpsc::Receiver<Event>>,
    revoke: Option<std::sync::mpsc::SyncSender<()>>,
    progress: Option<Arc<ConsumerProgress>>,
    lag: Option<Arc<LagBook>>,
    stop: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Why the consumer could not be created, reported by `poll`.
    error: Option<String>,
}

/// `consumer.start.timestamp`: epoch milliseconds or RFC 3339.
pub fn parse_start_timestamp(text: &str) -> Result<i64, String> {
    sluice_runtime::timestamps::parse_epoch_ms(text)
}

impl KafkaConsumer {
    pub fn start(
        settings: &KafkaSettings,
        group: &str,
        filter: &TopicFilter,
        overrides: &[(String, String)],
    ) -> KafkaConsumer {
        let mut this = KafkaConsumer {
            consumer: None,
            events: None,
            revoke: None,
            progress: None,
            lag: None,
            stop: Arc::new(AtomicBool::new(false)),
            closing: Arc::new(AtomicBool::new(false)),
            thread: None,
            error: None,
        };
        if let Err(e) = this.open(settings, group, filter, overrides) {
            this.error = Some(e);
        }
        this
    }

    fn open(
        &mut self,
        settings: &KafkaSettings,
        group: &str,
        filter: &TopicFilter,
        overrides: &[(String, String)],
    ) -> Result<(), String> {
        let start_timestamp = overrides
            .iter()
            .find(|(k, _)| k == "start.timestamp")
            .map(|(_, v)| parse_start_timestamp(v))
            .transpose()
            .map_err(|e| format!("consumer.start.timestamp: {e}"))?;
        let (tx, rx) = mpsc::channel(4096);
        let progress = Arc::new(ConsumerProgress::default());
        let lag = Arc::new(LagBook::new(progress.clone()));
        let context = SinkContext {
            events: tx.clone(),
            progress: progress.clone(),
            closing: self.closing.clone(),
            start_timestamp,
            group: group.to_string(),
            lag: lag.clone(),
        };
        let mut config = settings.consumer(group, overrides);
        crate::lag::enable_statistics(&mut config);
        let consumer: BaseConsumer<SinkContext> = config
            .create_with_context(context)
            .map_err(|e| format!("creating the Kafka consumer of group {group}: {e}"))?;
        let topics: Vec<String> = match filter {
            TopicFilter::Names(names) => names.clone(),
            // librdkafka subscribes to a pattern when the name starts with ^.
            TopicFilter::Pattern(re) => vec![format!("^{}$", re.as_str())],
        };
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("subscribing group {group} to {topics:?}: {e}"))?;
        let consumer = Arc::new(consumer);
        let thread = {
            let consumer = consumer.clone();
            let stop = self.stop.clone();
            let progress = progress.clone();
            let group = group.to_string();
            std::thread::Builder::new()
                .name(format!("kafka-{group}"))
                .spawn(move || fetch(consumer, tx, stop, progress, group))
                .map_err(|e| format!("starting the consumer thread: {e}"))?
        };
        self.consumer = Some(consumer);
        self.events = Some(rx);
        self.progress = Some(progress);
        self.lag = Some(lag);
        self.thread = Some(thread);
        Ok(())
    }

    pub fn progress(&self) -> Option<Arc<ConsumerProgress>> {
        self.progress.clone()
    }
}

/// The consumer thread: polls librdkafka (which also runs the rebalance callbacks) and
/// passes records on; when idle, checks whether the member has caught up.
fn fetch(
    consumer: Arc<BaseConsumer<SinkContext>>,
    events: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
    progress: Arc<ConsumerProgress>,
    group: String,
) {
    let mut last_check = Instant::now();
    let mut last_error: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                progress.caught_up.store(false, Ordering::Release);
                let record = Arc::new(crate::message::record_of(&message));
                if events.blocking_send(Event::Record(record)).is_err() {
                    break;
                }
            }
            Some(Err(e)) => {
                // librdkafka recovers from broker outages by itself; say so now and then.
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(group = %group, error = %e, "Kafka consumer error (retrying)");
                    last_error = Some(Instant::now());
                }
            }
            None => {
                if last_check.elapsed() >= Duration::from_millis(300) {
                    progress.check(&consumer);
                    last_check = Instant::now();
                }
            }
        }
    }
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Arc<Record>>, BusError> {
        if let Some(e) = &self.error {
            return Err(BusError::Client(e.clone()));
        }
        let mut out = Vec::new();
        if self.revoke.is_some() {
            return Ok(out);
        }
        let Some(events) = self.events.as_mut() else {
            return Err(BusError::Closed);
        };
        let first = match tokio::time::timeout(wait, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(BusError::Closed),
            Err(_) => return Ok(out),
        };
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match event {
                Event::Record(r) => out.push(r),
                Event::Revoke(done) => {
                    self.revoke = Some(done);
                    break;
                }
            }
            if out.len() < max {
                next = events.try_recv().ok();
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let (Some(consumer), Some(progress)) = (self.consumer.clone(), self.progress.clone())
        else {
            return Ok(());
        };
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in positions {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
                .map_err(|e| BusError::Client(format!("commit: {e}")))?;
        }
        let positions = positions.to_vec();
        let result = tokio::task::spawn_blocking(move || {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            if result.is_ok() {
                let mut committed = lock(&progress.committed);
                for p in positions {
                    committed.insert((p.topic, p.partition), p.next_offset);
                }
            }
            result
        })
        .await
        .map_err(|e| BusError::Client(format!("commit task: {e}")))?;
        if let Err(e) = result {
            // Not a loss: uncommitted records are consumed again (by this member or the
            // partition's next owner); idempotent sinks absorb the repeat.
            tracing::warn!(error = %e, "offset commit failed; the records will be consumed again");
        }
        Ok(())
    }

    fn revoking(&self) -> bool {
        self.revoke.is_some()
    }

    async fn release_revoked(&mut self) {
        if let Some(done) = self.revoke.take() {
            let _ = done.send(());
        }
    }

    fn lag_probe(&self) -> Option<Arc<dyn sluice_runtime::metrics::LagProbe>> {
        let book = self.lag.clone()?;
        Some(Arc::new(LagView(book)))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // The task has committed what it will commit; the close's own revocation must
        // not wait for it.
        self.closing.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        if let Some(done) = self.revoke.take() {
            let _ = done.send(());
        }
        self.events = None;
        // The thread holds the last reference: the consumer closes (leaves its group, so
        // its partitions move at once) when the thread ends. Waiting for that here means a
        // stopped worker has left the group before it exits.
        self.consumer = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
