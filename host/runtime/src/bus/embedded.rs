//! The in-process bus of standalone mode.
//!
//! Each topic partition is a bounded log. A record stays in it until every consumer
//! group subscribed to its topic has acknowledged it (after the sink flushed it); that
//! acknowledgement is what makes the record durable for its producer. A partition holds
//! at most `capacity` unacknowledged records; a producer finding it full waits.

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sluice_api::Record;
use tokio::sync::Notify;

use crate::metrics::{LagProbe, PartitionLag};

use super::{
    Bus, BusConsumer, BusError, ConnectorBusSettings, DurableMark, Position, Receipt, Ticket,
    TopicFilter, partition_for_key,
};

/// A handle to the embedded bus; clones share one bus.
#[derive(Clone)]
pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<BusState>,
    /// Wakes consumers: a record was appended or a topic created somewhere.
    data_ready: Notify,
    /// Bumped when a topic is created, so consumers know to refresh their assignment.
    topics_version: AtomicU64,
    capacity: usize,
    default_partitions: u32,
}

#[derive(Default)]
struct BusState {
    topics: BTreeMap<String, Arc<Topic>>,
    groups: BTreeMap<String, TopicFilter>,
}

struct Topic {
    name: String,
    partitions: Vec<Arc<PartitionLog>>,
    next_unkeyed: AtomicU32,
}

struct PartitionLog {
    index: i32,
    inner: Mutex<LogInner>,
    mark: Arc<DurableMark>,
    /// Wakes producers waiting for room.
    space: Notify,
}

struct LogInner {
    /// Offset of `records[0]`.
    base: i64,
    /// Offset the next appended record gets.
    end: i64,
    records: VecDeque<Arc<Record>>,
    /// Per consumer group: the offset after the last record it acknowledged.
    acked: BTreeMap<String, i64>,
}

/// A poisoned lock only means another task panicked mid-update of plain counters; the
/// data is still consistent enough to carry on, so take it rather than spread the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PartitionLog {
    fn new(index: i32) -> Self {
        PartitionLog {
            index,
            inner: Mutex::new(LogInner {
                base: 0,
                end: 0,
                records: VecDeque::new(),
                acked: BTreeMap::new(),
            }),
            mark: Arc::new(DurableMark::default()),
            space: Notify::new(),
        }
    }

    /// Removes what every group acknowledged and moves the durability mark. Returns the
    /// removed records so the caller drops them after releasing the lock: freeing
    /// thousands of records must not hold up producers.
    fn settle(&self, inner: &mut LogInner) -> Vec<Arc<Record>> {
        let durable = inner.acked.values().copied().min().unwrap_or(inner.end);
        let count = usize::try_from(durable - inner.base)
            .unwrap_or(0)
            .min(inner.records.len());
        let removed: Vec<Arc<Record>> = inner.records.drain(..count).collect();
        inner.base += count as i64;
        let trimmed = count > 0;
        if inner.records.is_empty() {
            inner.base = inner.end.min(durable.max(inner.base));
        }
        self.mark.advance_to(durable);
        if trimmed {
            self.space.notify_waiters();
        }
        removed
    }
}

fn stable_hash(text: &str) -> u64 {
    // FNV-1a: stable across runs and versions, unlike std's randomized hasher.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl EmbeddedBus {
    pub fn new(capacity: usize, default_partitions: u32) -> EmbeddedBus {
        EmbeddedBus {
            shared: Arc::new(Shared {
                state: Mutex::new(BusState::default()),
                data_ready: Notify::new(),
                topics_version: AtomicU64::new(0),
                capacity: capacity.max(1),
                default_partitions: default_partitions.max(1),
            }),
        }
    }
}

impl Shared {
    fn topic(&self, name: &str, partitions: Option<u32>) -> Arc<Topic> {
        let mut state = lock(&self.state);
        if let Some(topic) = state.topics.get(name) {
            return topic.clone();
        }
        let count = partitions.unwrap_or(self.default_partitions).max(1);
        let topic = Arc::new(Topic {
            name: name.to_string(),
            partitions: (0..count as i32)
                .map(|i| Arc::new(PartitionLog::new(i)))
                .collect(),
            next_unkeyed: AtomicU32::new(0),
        });
        let subscribed: Vec<String> = state
            .groups
            .iter()
            .filter(|(_, filter)| filter.matches(name))
            .map(|(group, _)| group.clone())
            .collect();
        if subscribed.is_empty() {
            tracing::warn!(
                topic = name,
                "topic has no subscribed sink; its records are discarded"
            );
        }
        for log in &topic.partitions {
            let mut inner = lock(&log.inner);
            for group in &subscribed {
                inner.acked.insert(group.clone(), 0);
            }
        }
        state.topics.insert(name.to_string(), topic.clone());
        self.topics_version.fetch_add(1, Ordering::AcqRel);
        self.data_ready.notify_waiters();
        topic
    }

    fn choose_partition(topic: &Topic, record: &Record) -> usize {
        let count = topic.partitions.len();
        if let Some(p) = record.partition {
            return (p.max(0) as usize) % count;
        }
        match &record.key {
            Some(key) => partition_for_key(&key.to_bytes(), count as u32) as usize,
            None => topic.next_unkeyed.fetch_add(1, Ordering::Relaxed) as usize % count,
        }
    }
}

impl Shared {
    /// Appends from the front of `share` (records bound for `log`, partition set) as many
    /// records as there is room for, or all of them when nobody consumes the topic (they
    /// are done as soon as they are sent). Returns the ticket of the last one appended;
    /// `None` when the partition is full.
    fn append(&self, log: &PartitionLog, share: &mut VecDeque<Record>) -> Option<Ticket> {
        let mut inner = lock(&log.inner);
        if inner.acked.is_empty() {
            let count = share.len() as i64;
            inner.end += count;
            inner.base = inner.end;
            log.mark.advance_to(inner.end);
            let last = inner.end - 1;
            drop(inner);
            share.clear();
            return (count > 0).then(|| Ticket::new(log.mark.clone(), last));
        }
        let room = self
            .capacity
            .saturating_sub(inner.records.len())
            .min(share.len());
        if room == 0 {
            return None;
        }
        for mut record in share.drain(..room) {
            record.offset = Some(inner.end);
            inner.records.push_back(Arc::new(record));
            inner.end += 1;
        }
        let last = inner.end - 1;
        drop(inner);
        // One wake-up for the whole share: consumers take what is there when they run.
        self.data_ready.notify_waiters();
        Some(Ticket::new(log.mark.clone(), last))
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn send(&self, mut record: Record, partitions: Option<u32>) -> Result<Ticket, BusError> {
        let this = &*self.shared;
        let topic = this.topic(&record.topic, partitions);
        let log = topic.partitions[Shared::choose_partition(&topic, &record)].clone();
        record.partition = Some(log.index);
        let mut share = VecDeque::from([record]);
        loop {
            let mut room = pin!(log.space.notified());
            room.as_mut().enable();
            if let Some(ticket) = this.append(&log, &mut share) {
                return Ok(ticket);
            }
            room.await;
        }
    }

    async fn send_all(
        &self,
        records: Vec<Record>,
        partitions: Option<u32>,
        receipt: &mut Receipt,
    ) -> Result<(), BusError> {
        let this = &*self.shared;
        // Each partition's share of the batch, in send order.
        let mut shares: Vec<(Arc<PartitionLog>, VecDeque<Record>)> = Vec::new();
        let mut topic: Option<Arc<Topic>> = None;
        for mut record in records {
            let topic = match &mut topic {
                Some(t) if t.name == record.topic => t,
                slot => slot.insert(this.topic(&record.topic, partitions)),
            };
            let log = &topic.partitions[Shared::choose_partition(topic, &record)];
            record.partition = Some(log.index);
            match shares.iter_mut().find(|(l, _)| Arc::ptr_eq(l, log)) {
                Some((_, share)) => share.push_back(record),
                None => shares.push((log.clone(), VecDeque::from([record]))),
            }
        }
        // What fits everywhere first, so no partition waits behind another's backlog;
        // then the rest as room is made.
        for (log, share) in &mut shares {
            if let Some(ticket) = this.append(log, share) {
                receipt.add(ticket);
            }
        }
        for (log, share) in &mut shares {
            while !share.is_empty() {
                let mut room = pin!(log.space.notified());
                room.as_mut().enable();
                match this.append(log, share) {
                    Some(ticket) => receipt.add(ticket),
                    None => room.await,
                }
            }
        }
        Ok(())
    }

    fn register_group(&self, group: &str, filter: &TopicFilter) {
        let mut state = lock(&self.shared.state);
        state.groups.insert(group.to_string(), filter.clone());
        for topic in state.topics.values().filter(|t| filter.matches(&t.name)) {
            for log in &topic.partitions {
                let mut inner = lock(&log.inner);
                let start = inner.base;
                inner.acked.entry(group.to_string()).or_insert(start);
            }
        }
    }

    fn subscribe(
        &self,
        group: &str,
        filter: &TopicFilter,
        member: u32,
        members: u32,
    ) -> Box<dyn BusConsumer> {
        self.register_group(group, filter);
        Box::new(EmbeddedConsumer {
            bus: self.shared.clone(),
            group: group.to_string(),
            filter: filter.clone(),
            member,
            members: members.max(1),
            assigned: Vec::new(),
            seen_version: u64::MAX,
            next_start: 0,
            lag: Arc::default(),
        })
    }

    fn is_settled(&self) -> bool {
        let state = lock(&self.shared.state);
        state
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .all(|log| lock(&log.inner).records.is_empty())
    }

    fn durable_offsets(&self) -> bool {
        // Partition logs start at offset 0 in every process.
        false
    }

    async fn group_offsets(
        &self,
        group: &str,
        filter: &TopicFilter,
    ) -> Result<Vec<Position>, BusError> {
        let topics: Vec<Arc<Topic>> = {
            let state = lock(&self.shared.state);
            state
                .topics
                .values()
                .filter(|t| filter.matches(&t.name))
                .cloned()
                .collect()
        };
        let mut positions = Vec::new();
        for topic in topics {
            for log in &topic.partitions {
                let inner = lock(&log.inner);
                if let Some(next) = inner.acked.get(group) {
                    positions.push(Position {
                        topic: topic.name.clone(),
                        partition: log.index,
                        next_offset: *next,
                    });
                }
            }
        }
        Ok(positions)
    }

    async fn alter_group_offsets(
        &self,
        _group: &str,
        _positions: &[(String, i32, Option<i64>)],
    ) -> Result<(), BusError> {
        Err(embedded_offsets_unsupported())
    }

    async fn delete_group(&self, _group: &str) -> Result<(), BusError> {
        Err(embedded_offsets_unsupported())
    }

    async fn offsets_for_time(
        &self,
        _filter: &TopicFilter,
        _timestamp_ms: i64,
    ) -> Result<Vec<Position>, BusError> {
        Err(embedded_offsets_unsupported())
    }

    fn for_connector(
        self: Arc<Self>,
        _connector: &str,
        _settings: &ConnectorBusSettings,
    ) -> Result<Arc<dyn Bus>, BusError> {
        Ok(self)
    }
}

fn embedded_offsets_unsupported() -> BusError {
    BusError::Unsupported(
        "the embedded bus keeps no sink offsets across restarts, so there are none to change; \
         sink offsets can be altered or reset with Kafka (bootstrap.servers)"
            .to_string(),
    )
}

struct Assigned {
    topic: String,
    log: Arc<PartitionLog>,
    /// Next offset to read.
    position: i64,
}

pub struct EmbeddedConsumer {
    bus: Arc<Shared>,
    group: String,
    filter: TopicFilter,
    member: u32,
    members: u32,
    assigned: Vec<Assigned>,
    seen_version: u64,
    next_start: usize,
    /// The assigned partitions again, for [`EmbeddedLag`] (changed only on assignment).
    lag: SharedAssignment,
}

/// (topic, partition log) of each partition a consumer was assigned.
type SharedAssignment = Arc<Mutex<Vec<(String, Arc<PartitionLog>)>>>;

/// A consumer's lag: per assigned partition, the records after the group's acknowledged
/// offset. Read at scrape time, one partition lock at a time.
struct EmbeddedLag {
    group: String,
    partitions: SharedAssignment,
}

impl LagProbe for EmbeddedLag {
    fn lag(&self) -> Vec<PartitionLag> {
        let partitions = lock(&self.partitions).clone();
        partitions
            .iter()
            .map(|(topic, log)| {
                let inner = lock(&log.inner);
                let acked = inner.acked.get(&self.group).copied().unwrap_or(0);
                PartitionLag {
                    topic: topic.clone(),
                    partition: log.index,
                    lag: (inner.end - acked.max(inner.base)).max(0),
                }
            })
            .collect()
    }
}

impl EmbeddedConsumer {
    fn refresh_assignment(&mut self) {
        let version = self.bus.topics_version.load(Ordering::Acquire);
        if version == self.seen_version {
            return;
        }
        self.seen_version = version;
        let state = lock(&self.bus.state);
        for topic in state
            .topics
            .values()
            .filter(|t| self.filter.matches(&t.name))
        {
            for log in &topic.partitions {
                let slot = stable_hash(&topic.name).wrapping_add(log.index as u64);
                if slot % u64::from(self.members) != u64::from(self.member) {
                    continue;
                }
                if self.assigned.iter().any(|a| Arc::ptr_eq(&a.log, log)) {
                    continue;
                }
                let mut inner = lock(&log.inner);
                let start = *inner.acked.entry(self.group.clone()).or_insert(0);
                drop(inner);
                lock(&self.lag).push((topic.name.clone(), log.clone()));
                self.assigned.push(Assigned {
                    topic: topic.name.clone(),
                    log: log.clone(),
                    position: start,
                });
            }
        }
    }

    fn take(&mut self, max: usize, out: &mut Vec<Arc<Record>>) {
        let n = self.assigned.len();
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let slot = &mut self.assigned[(self.next_start + i) % n];
            let inner = lock(&slot.log.inner);
            let skip = (slot.position - inner.base).max(0) as usize;
            for record in inner.records.iter().skip(skip).take(max - out.len()) {
                out.push(record.clone());
                slot.position += 1;
            }
        }
        if n > 0 {
            self.next_start = (self.next_start + 1) % n;
        }
    }
}

#[async_trait]
impl BusConsumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Arc<Record>>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let bus = self.bus.clone();
            let mut ready = pin!(bus.data_ready.notified());
            ready.as_mut().enable();
            self.refresh_assignment();
            self.take(max.max(1), &mut out);
            if !out.is_empty() {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, ready).await.is_err() {
                return Ok(out);
            }
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        for position in positions {
            let Some(slot) = self
                .assigned
                .iter()
                .find(|a| a.topic == position.topic && a.log.index == position.partition)
            else {
                continue;
            };
            let removed = {
                let mut inner = lock(&slot.log.inner);
                let acked = inner.acked.entry(self.group.clone()).or_insert(0);
                *acked = (*acked).max(position.next_offset);
                slot.log.settle(&mut inner)
            };
            drop(removed);
        }
        Ok(())
    }

    fn lag_probe(&self) -> Option<Arc<dyn LagProbe>> {
        Some(Arc::new(EmbeddedLag {
            group: self.group.clone(),
            partitions: self.lag.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(topic: &str, n: i64) -> Record {
        Record::new(topic, json!(n))
    }

    fn names(topics: &[&str]) -> TopicFilter {
        TopicFilter::Names(topics.iter().map(|t| t.to_string()).collect())
    }

    fn values(batch: &[Arc<Record>]) -> Vec<i64> {
        batch
            .iter()
            .map(|r| r.value_json().and_then(|v| v.as_i64()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_record_is_durable_only_when_every_group_acknowledged_it() {
        let bus = EmbeddedBus::new(100, 1);
        bus.register_group("a", &names(&["t"]));
        bus.register_group("b", &names(&["t"]));
        let mut a = bus.subscribe("a", &names(&["t"]), 0, 1);
        let mut b = bus.subscribe("b", &names(&["t"]), 0, 1);
        let ticket = bus.send(record("t", 1), None).await.unwrap();
        assert!(!ticket.is_durable());
        let got = a.poll(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(values(&got), vec![1]);
        a.commit(&[Position {
            topic: "t".into(),
            partition: 0,
            next_offset: 1,
        }])
        .await
        .unwrap();
        assert!(!ticket.is_durable(), "group b has not acknowledged yet");
        assert!(!bus.is_settled());
        let got = b.poll(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(values(&got), vec![1]);
        b.commit(&[Position {
            topic: "t".into(),
            partition: 0,
            next_offset: 1,
        }])
        .await
        .unwrap();
        assert!(ticket.is_durable());
        assert!(bus.is_settled());
    }

    #[tokio::test]
    async fn a_full_partition_makes_the_producer_wait() {
        let bus = EmbeddedBus::new(3, 1);
        bus.register_group("g", &names(&["t"]));
        for n in 0..3 {
            bus.send(record("t", n), None).await.unwrap();
        }
        let blocked =
            tokio::time::timeout(Duration::from_millis(100), bus.send(record("t", 3), None)).await;
        assert!(blocked.is_err(), "the fourth send must wait for room");
        let mut consumer = bus.subscribe("g", &names(&["t"]), 0, 1);
        let got = consumer.poll(2, Duration::from_millis(100)).await.unwrap();
        assert_eq!(values(&got), vec![0, 1]);
        let producer = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.send(record("t", 3), None).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !producer.is_finished(),
            "reading alone frees no room; acknowledging does"
        );
        consumer
            .commit(&[Position {
                topic: "t".into(),
                partition: 0,
                next_offset: 2,
            }])
            .await
            .unwrap();
        let ticket = tokio::time::timeout(Duration::from_secs(5), producer)
            .await
            .unwrap()
            .unwrap();
        assert!(!ticket.is_durable());
    }

    #[tokio::test]
    async fn send_all_appends_each_partitions_share_in_order_and_waits_for_room() {
        let bus = EmbeddedBus::new(3, 2);
        let filter = names(&["t"]);
        bus.register_group("g", &filter);
        let mut consumer = bus.subscribe("g", &filter, 0, 1);
        // Unkeyed records alternate: partition 0 gets 0, 2, 4, 6 and partition 1 gets
        // 1, 3, 5, 7; three fit in each.
        let sender = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut receipt = Receipt::default();
                let records = (0..8).map(|n| record("t", n)).collect();
                bus.send_all(records, None, &mut receipt).await.unwrap();
                receipt
            })
        };
        let mut by_partition: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
        let mut take = |batch: Vec<Arc<Record>>| {
            for r in batch {
                let value = r.value_json().and_then(|v| v.as_i64()).unwrap();
                by_partition
                    .entry(r.partition.unwrap())
                    .or_default()
                    .push((r.offset.unwrap(), value));
            }
        };
        let mut got = Vec::new();
        while got.len() < 6 {
            got.extend(consumer.poll(10, Duration::from_millis(100)).await.unwrap());
        }
        assert_eq!(got.len(), 6, "only what fits");
        take(got);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sender.is_finished(), "the rest waits for room");
        let ack = |next_offset| {
            [0, 1].map(|partition| Position {
                topic: "t".into(),
                partition,
                next_offset,
            })
        };
        consumer.commit(&ack(3)).await.unwrap();
        let mut receipt = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .unwrap()
            .unwrap();
        take(consumer.poll(10, Duration::from_millis(100)).await.unwrap());
        assert_eq!(
            by_partition,
            BTreeMap::from([
                (0, vec![(0, 0), (1, 2), (2, 4), (3, 6)]),
                (1, vec![(0, 1), (1, 3), (2, 5), (3, 7)]),
            ])
        );
        assert!(!receipt.settle(), "nothing acknowledged past offset 2");
        consumer.commit(&ack(4)).await.unwrap();
        assert!(receipt.settle());
        assert!(bus.is_settled());
    }

    #[tokio::test]
    async fn unacknowledged_records_are_delivered_again_to_a_new_member() {
        let bus = EmbeddedBus::new(100, 1);
        let filter = names(&["t"]);
        bus.register_group("g", &filter);
        for n in 0..5 {
            bus.send(record("t", n), None).await.unwrap();
        }
        let mut first = bus.subscribe("g", &filter, 0, 1);
        let got = first.poll(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(values(&got), vec![0, 1, 2, 3, 4]);
        first
            .commit(&[Position {
                topic: "t".into(),
                partition: 0,
                next_offset: 2,
            }])
            .await
            .unwrap();
        drop(first); // the task failed before acknowledging the rest
        let mut second = bus.subscribe("g", &filter, 0, 1);
        let got = second.poll(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(values(&got), vec![2, 3, 4]);
    }

    #[tokio::test]
    async fn keyed_records_keep_their_partition_and_order() {
        let bus = EmbeddedBus::new(1000, 4);
        let filter = names(&["t"]);
        bus.register_group("g", &filter);
        for n in 0..200 {
            let mut r = record("t", n);
            r.key = Some(sluice_api::Payload::Json(json!(n % 7)));
            bus.send(r, None).await.unwrap();
        }
        let mut consumer = bus.subscribe("g", &filter, 0, 1);
        let mut by_key: BTreeMap<i64, (i32, i64)> = BTreeMap::new();
        let mut total = 0;
        while total < 200 {
            let got = consumer
                .poll(1000, Duration::from_millis(100))
                .await
                .unwrap();
            assert!(!got.is_empty());
            for r in got {
                let key = r.key_json().unwrap().as_i64().unwrap();
                let value = r.value_json().unwrap().as_i64().unwrap();
                let partition = r.partition.unwrap();
                assert_eq!(partition, partition_for_key(key.to_string().as_bytes(), 4));
                if let Some((p, last)) = by_key.insert(key, (partition, value)) {
                    assert_eq!(p, partition);
                    assert!(value > last, "key {key}: {value} after {last}");
                }
                total += 1;
            }
        }
    }

    #[tokio::test]
    async fn a_topic_without_subscribers_discards_and_never_blocks() {
        let bus = EmbeddedBus::new(1, 1);
        for n in 0..10 {
            let ticket = bus.send(record("nobody", n), None).await.unwrap();
            assert!(ticket.is_durable());
        }
        assert!(bus.is_settled());
    }

    #[tokio::test]
    async fn members_split_partitions_and_regex_groups_see_new_topics() {
        let bus = EmbeddedBus::new(100, 4);
        let filter = TopicFilter::Pattern(regex::Regex::new("dlq-.*").unwrap());
        bus.register_group("g", &filter);
        let mut m0 = bus.subscribe("g", &filter, 0, 2);
        let mut m1 = bus.subscribe("g", &filter, 1, 2);
        for n in 0..40 {
            let mut r = record("dlq-a", n);
            r.partition = Some((n % 4) as i32);
            bus.send(r, None).await.unwrap();
        }
        let a = m0.poll(100, Duration::from_millis(100)).await.unwrap();
        let b = m1.poll(100, Duration::from_millis(100)).await.unwrap();
        assert_eq!(a.len() + b.len(), 40);
        assert!(
            !a.is_empty() && !b.is_empty(),
            "both members own partitions"
        );
        let pa: std::collections::BTreeSet<i32> = a.iter().map(|r| r.partition.unwrap()).collect();
        let pb: std::collections::BTreeSet<i32> = b.iter().map(|r| r.partition.unwrap()).collect();
        assert!(pa.is_disjoint(&pb));
    }

    #[tokio::test]
    async fn lag_is_what_the_group_has_not_acknowledged() {
        let bus = EmbeddedBus::new(100, 1);
        let filter = names(&["t"]);
        let mut consumer = bus.subscribe("g", &filter, 0, 1);
        let probe = consumer
            .lag_probe()
            .expect("the embedded bus knows its lag");
        assert!(probe.lag().is_empty(), "nothing assigned yet");
        for n in 0..5 {
            bus.send(record("t", n), None).await.unwrap();
        }
        let got = consumer.poll(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(got.len(), 5);
        let lag = |n: i64| {
            vec![PartitionLag {
                topic: "t".into(),
                partition: 0,
                lag: n,
            }]
        };
        // Consumed is not committed: the lag counts what is not acknowledged.
        assert_eq!(probe.lag(), lag(5));
        consumer
            .commit(&[Position {
                topic: "t".into(),
                partition: 0,
                next_offset: 2,
            }])
            .await
            .unwrap();
        assert_eq!(probe.lag(), lag(3));
        bus.send(record("t", 5), None).await.unwrap();
        assert_eq!(probe.lag(), lag(4));
    }
}
