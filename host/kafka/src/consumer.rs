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
use std::ffi::CString;
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
/// Records go to the task in batches of up to this many (one channel send each instead of
/// one per record); a batch goes as soon as librdkafka holds nothing more.
const BATCH: usize = 256;
/// Batches the channel to the task holds: with full batches, 4,096 records fetched ahead.
const CHANNEL_BATCHES: usize = 16;

enum Event {
    Records(Vec<Arc<Record>>),
    /// Partitions are being revoked; reply once everything given so far is committed.
    Revoke(std::sync::mpsc::SyncSender<()>),
    /// Every record fetched has been handed over and nothing more is on its way (every
    /// assigned partition read to its end, or librdkafka had nothing for a whole poll):
    /// the task should make what it holds durable now rather than wait for more.
    End,
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
    /// The end of each assigned partition as the broker answered a lookup, and when that
    /// lookup started: `--drain` needs every partition consumed to there, as of then.
    looked_up: Mutex<Ends>,
    /// A new assignment's ends are to be looked up (by the consumer thread, which
    /// does it while the first fetches run, not at the end behind a waiting fetch).
    lookup_due: AtomicBool,
    /// Every assigned partition committed up to its end, as of `checked_at_ms`.
    caught_up: AtomicBool,
    checked_at_ms: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Ends {
    as_of_ms: u64,
    ends: HashMap<(String, i32), i64>,
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
        self.lookup_due.store(true, Ordering::Release);
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

    /// Asks the broker for what `evaluate` needs and the fetching does not tell: the
    /// group's committed offset of each assigned partition this member has not committed
    /// itself, and the end of each partition, as of now.
    fn look_up(&self, consumer: &BaseConsumer<SinkContext>) {
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
        let mut ends = HashMap::with_capacity(assigned.len());
        for (t, p) in assigned {
            let Ok((_, high)) = consumer.fetch_watermarks(&t, p, BROKER_TIMEOUT) else {
                return;
            };
            ends.insert((t, p), high);
        }
        let mut looked_up = lock(&self.looked_up);
        if started >= looked_up.as_of_ms {
            *looked_up = Ends {
                as_of_ms: started,
                ends,
            };
        }
    }

    /// Whether every assigned partition is committed up to its end, without asking the
    /// broker: the end is the greatest of the last lookup's answer, the high watermark of
    /// the newest fetch response (librdkafka's cached copy) and the position reached. On
    /// Apache Kafka the lookup is never behind the fetch response; tansu answers a lookup
    /// with the first offset of the newest batch (+1), and only its fetch responses carry
    /// the true end. The result holds as of the lookup: a record produced later may be
    /// beyond it, which is what `is_caught_up_since` accounts for.
    fn evaluate(&self, consumer: &BaseConsumer<SinkContext>) {
        // Held throughout, so evaluations (consumer thread, commits) do not interleave.
        let looked_up = lock(&self.looked_up);
        let Some(assigned) = lock(&self.assigned).clone() else {
            self.caught_up.store(false, Ordering::Release);
            return;
        };
        let positions = consumer.position().unwrap_or_default();
        let committed = lock(&self.committed);
        let done = assigned.iter().all(|tp| {
            let Some(looked) = looked_up.ends.get(tp) else {
                return false;
            };
            // Unknown until the first fetch response: nothing says the partition ends yet.
            let Some(high) = cached_high(consumer, &tp.0, tp.1) else {
                return false;
            };
            let fetched = positions
                .find_partition(&tp.0, tp.1)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            let end = (*looked).max(high).max(fetched);
            committed.get(tp).is_some_and(|c| *c >= end)
        });
        if done {
            self.checked_at_ms
                .store(looked_up.as_of_ms, Ordering::Release);
        }
        self.caught_up.store(done, Ordering::Release);
    }

    /// Whether every assigned partition has been handed over up to the high watermark of
    /// its newest fetch response (so nothing more is on its way for now).
    fn fetched_to_end(&self, consumer: &BaseConsumer<SinkContext>) -> bool {
        let Some(assigned) = lock(&self.assigned).clone() else {
            return false;
        };
        let Ok(positions) = consumer.position() else {
            return false;
        };
        assigned.iter().all(|(t, p)| {
            let fetched = positions
                .find_partition(t, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            matches!((fetched, cached_high(consumer, t, *p)), (Some(f), Some(h)) if f >= h)
        })
    }
}

/// The high watermark librdkafka keeps from the partition's newest fetch response (no
/// broker request); `None` before the first one.
fn cached_high(consumer: &BaseConsumer<SinkContext>, topic: &str, partition: i32) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle is alive for the call (`consumer` is borrowed), `topic` is
    // a NUL-terminated string that outlives it, and `low`/`high` are valid for writes.
    // rust-rdkafka has no safe wrapper for this cached read.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

struct SinkContext {
    events: mpsc::Sender<Event>,
    /// Records polled and not yet sent to the task. Here rather than on the consumer
    /// thread's stack so that a revocation (a callback inside librdkafka's poll) sends them
    /// ahead of itself.
    batch: Mutex<Vec<Arc<Record>>>,
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
    /// Adds a polled record to the batch; returns the batch once it is full.
    fn add(&self, record: Arc<Record>) -> Option<Vec<Arc<Record>>> {
        let mut batch = lock(&self.batch);
        batch.push(record);
        (batch.len() >= BATCH).then(|| std::mem::replace(&mut *batch, Vec::with_capacity(BATCH)))
    }

    /// The records batched so far.
    fn take_batch(&self) -> Vec<Arc<Record>> {
        std::mem::take(&mut *lock(&self.batch))
    }

    /// Sends the records batched so far to the task; false when the task is gone.
    fn send_batch(&self) -> bool {
        let batch = std::mem::take(&mut *lock(&self.batch));
        batch.is_empty() || self.events.blocking_send(Event::Records(batch)).is_ok()
    }

    /// Waits until the task committed everything it was given (or gives up after
    /// [`HAND_OVER_TIMEOUT`]; or at once when the consumer is closing, as the task has
    /// committed already).
    fn hand_over(&self) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        if !self.send_batch() {
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
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                // A partition paused while the task was behind (`send_records`), then
                // revoked, may come back still paused; the fetch thread pauses again
                // whatever it must, so a new assignment always starts fetching.
                assigned.and_then(|()| consumer.resume(tpl))
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
    /// An `Event::End` came behind the records last returned: if nothing followed it,
    /// the next poll returns at once, empty, so the task flushes without waiting.
    at_end: bool,
    /// Records received beyond what the last poll could return.
    held: Vec<Arc<Record>>,
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
            at_end: false,
            held: Vec::new(),
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
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let progress = Arc::new(ConsumerProgress::default());
        let lag = Arc::new(LagBook::new(progress.clone()));
        let context = SinkContext {
            events: tx.clone(),
            batch: Mutex::new(Vec::with_capacity(BATCH)),
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

/// How long the consumer thread waits in one librdkafka poll.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// At most one `Event::End` this often: a trickle of records, each read to the end of its
/// partition at once, is then flushed in batches rather than record by record.
const END_INTERVAL: Duration = Duration::from_millis(100);

/// The consumer thread: polls librdkafka (which also runs the rebalance callbacks) and
/// passes records on; tells the task when it has handed over everything there is; looks
/// up the ends of newly assigned partitions, and when idle, checks whether the member has
/// caught up.
fn fetch(
    consumer: Arc<BaseConsumer<SinkContext>>,
    events: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
    progress: Arc<ConsumerProgress>,
    group: String,
) {
    let mut last_check = Instant::now();
    let mut last_error: Option<Instant> = None;
    // Records were handed over since the last look at whether the fetching is at the end.
    let mut unchecked = false;
    // Nothing more to hand over for now: the task is to hear it (`Event::End`), and has
    // not yet (`sent`), or not since the last record.
    let mut end_due = false;
    let mut end_sent = false;
    let mut last_end: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        // Right after a record, only what librdkafka holds already: an empty queue then
        // says at once whether this is the end. Otherwise wait, but not past an End due.
        let wait = if unchecked {
            Duration::ZERO
        } else if end_due && !end_sent {
            last_end.map_or(Duration::ZERO, |t| END_INTERVAL.saturating_sub(t.elapsed()))
        } else {
            POLL_WAIT
        };
        let polled = consumer.poll(wait);
        if progress.lookup_due.load(Ordering::Acquire)
            && progress.lookup_due.swap(false, Ordering::AcqRel)
        {
            progress.look_up(&consumer);
            progress.evaluate(&consumer);
        }
        match polled {
            Some(Ok(message)) => {
                unchecked = true;
                end_due = false;
                end_sent = false;
                progress.caught_up.store(false, Ordering::Release);
                let record = Arc::new(crate::message::record_of(&message));
                if let Some(full) = consumer.context().add(record)
                    && !send_records(&consumer, &events, full, &stop)
                {
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
            None if unchecked => {
                // librdkafka holds nothing more: the task gets what was batched, and hears
                // of the end when every partition has been handed over up to the high
                // watermark of its newest fetch response.
                unchecked = false;
                let batch = consumer.context().take_batch();
                if !batch.is_empty() && !send_records(&consumer, &events, batch, &stop) {
                    break;
                }
                end_due = progress.fetched_to_end(&consumer);
            }
            None => {
                // Nothing for a whole wait: as good as the end, whatever the watermarks say.
                end_due = true;
                if last_check.elapsed() >= Duration::from_millis(300) {
                    progress.look_up(&consumer);
                    progress.evaluate(&consumer);
                    last_check = Instant::now();
                }
            }
        }
        if end_due && !end_sent && last_end.is_none_or(|t| t.elapsed() >= END_INTERVAL) {
            last_end = Some(Instant::now());
            // A full channel means the task has records to work through before the End
            // could matter; it is offered again at the next interval.
            match events.try_send(Event::End) {
                Ok(()) => end_sent = true,
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    }
}

/// How often a consumer whose task is behind polls librdkafka while it waits for room.
const BEHIND_POLL: Duration = Duration::from_millis(100);
/// How long the hand-over may stay full before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// Hands a batch to the task; false when the task is gone (or the consumer stops).
///
/// While the task is behind — a slow sink, or a paused connector that takes nothing — the
/// channel is full. Blocking on it would stop this thread polling librdkafka, and after
/// `max.poll.interval.ms` the member would leave the group (a rebalance, and the records
/// it holds repeated by the next owner). Instead, as Kafka Connect does, the assigned
/// partitions are paused and librdkafka is still polled: the member stays, rebalances still
/// run, and fetching resumes from the next record once the task has taken the batch.
fn send_records(
    consumer: &BaseConsumer<SinkContext>,
    events: &mpsc::Sender<Event>,
    batch: Vec<Arc<Record>>,
    stop: &AtomicBool,
) -> bool {
    let context = consumer.context();
    // A task that is merely busy takes the next batch within milliseconds: wait for it
    // first, as pausing would throw away what librdkafka has fetched ahead.
    let full_since = Instant::now();
    let mut event = Event::Records(batch);
    let mut waiting = loop {
        match events.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(Event::Records(batch)))
                if full_since.elapsed() >= PAUSE_AFTER || stop.load(Ordering::Acquire) =>
            {
                break batch;
            }
            Err(mpsc::error::TrySendError::Full(back)) => event = back,
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut paused = false;
    let sent = loop {
        if stop.load(Ordering::Acquire) {
            break false;
        }
        // The waiting records stay in the context's batch while librdkafka is polled: a
        // revocation (run inside the poll) then hands them over ahead of itself, as it
        // does every record fetched before it.
        {
            let mut pending = lock(&context.batch);
            waiting.append(&mut pending);
            *pending = waiting;
        }
        // Every round: a rebalance may have assigned partitions since the last one.
        match consumer.assignment() {
            Ok(assignment) if assignment.count() > 0 => match consumer.pause(&assignment) {
                Ok(()) => paused = true,
                Err(e) => tracing::debug!(error = %e, "pausing the assignment"),
            },
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reading the assignment"),
        }
        match consumer.poll(BEHIND_POLL) {
            // Fetched before the pause took effect: it follows the waiting records.
            Some(Ok(message)) => {
                lock(&context.batch).push(Arc::new(crate::message::record_of(&message)));
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Kafka consumer error while the task is behind");
            }
            None => {}
        }
        waiting = context.take_batch();
        if waiting.is_empty() {
            // A revocation handed them over.
            break true;
        }
        match events.try_send(Event::Records(waiting)) {
            Ok(()) => break true,
            Err(mpsc::error::TrySendError::Closed(_)) => break false,
            Err(mpsc::error::TrySendError::Full(Event::Records(back))) => waiting = back,
            Err(mpsc::error::TrySendError::Full(_)) => break true,
        }
    };
    if paused {
        match consumer.assignment() {
            Ok(assignment) => {
                if let Err(e) = consumer.resume(&assignment) {
                    tracing::warn!(error = %e, "resuming the assignment");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the assignment to resume it"),
        }
    }
    sent
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Arc<Record>>, BusError> {
        if let Some(e) = &self.error {
            return Err(BusError::Client(e.clone()));
        }
        if self.revoke.is_some() {
            return Ok(Vec::new());
        }
        let Some(events) = self.events.as_mut() else {
            return Err(BusError::Closed);
        };
        let max = max.max(1);
        let mut out = std::mem::take(&mut self.held);
        if out.len() >= max {
            self.held = out.split_off(max);
            return Ok(out);
        }
        // With records in hand, or right after an `Event::End`, only what is there now.
        let first = if !out.is_empty() || std::mem::take(&mut self.at_end) {
            match events.try_recv() {
                Ok(event) => Some(event),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) if out.is_empty() => {
                    return Err(BusError::Closed);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        } else {
            match tokio::time::timeout(wait, events.recv()).await {
                Ok(Some(event)) => Some(event),
                Ok(None) => return Err(BusError::Closed),
                Err(_) => None,
            }
        };
        let mut next = first;
        while let Some(event) = next.take() {
            match event {
                Event::Records(batch) => {
                    if out.is_empty() {
                        out = batch;
                    } else {
                        out.extend(batch);
                    }
                    if out.len() >= max {
                        self.held = out.split_off(max);
                        break;
                    }
                }
                Event::Revoke(done) => {
                    self.revoke = Some(done);
                    break;
                }
                // Nothing more for now: an empty poll tells the task to flush.
                Event::End if out.is_empty() => break,
                Event::End => {
                    self.at_end = true;
                    break;
                }
            }
            next = events.try_recv().ok();
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
                {
                    let mut committed = lock(&progress.committed);
                    for p in positions {
                        committed.insert((p.topic, p.partition), p.next_offset);
                    }
                }
                // The last commit of a drain ends it here, not at the thread's next check.
                progress.evaluate(&consumer);
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
