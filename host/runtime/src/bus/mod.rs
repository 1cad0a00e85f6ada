//! The data bus between source and sink tasks.
//!
//! Two implementations share this interface: the embedded bus (in-process, standalone
//! mode) and, later, Kafka. Connector configs do not change between them. Delivery is
//! at-least-once end to end: a producer learns through a [`Ticket`] when its record is
//! durable, and only then may the record's source offset be committed.

pub mod embedded;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use sluice_api::Record;

pub use embedded::EmbeddedBus;

/// The durability frontier of one partition: every offset below it is durable.
#[derive(Debug, Default)]
pub struct DurableMark {
    next_undurable: AtomicI64,
    /// Set when a record could not be made durable for good (a broker rejected it after
    /// its retries): its source must not commit past it, and its task fails.
    failure: OnceLock<String>,
}

impl DurableMark {
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    pub fn advance_to(&self, offset: i64) {
        self.next_undurable.fetch_max(offset, Ordering::AcqRel);
    }

    pub fn get(&self) -> i64 {
        self.next_undurable.load(Ordering::Acquire)
    }
}

/// Proof of a send: tells whether that record has become durable.
#[derive(Debug, Clone)]
pub struct Ticket {
    mark: Arc<DurableMark>,
    offset: i64,
}

impl Ticket {
    pub fn new(mark: Arc<DurableMark>, offset: i64) -> Self {
        Ticket { mark, offset }
    }

    pub fn is_durable(&self) -> bool {
        self.mark.get() > self.offset
    }

    /// Why the record will never become durable, if that is known.
    pub fn failure(&self) -> Option<&str> {
        if self.is_durable() {
            None
        } else {
            self.mark.failure()
        }
    }
}

/// Proof of many sends: for each durability mark written to, the ticket of the last
/// record sent under it. A mark moves forward as a prefix, so these tickets are all
/// durable exactly when every record sent is.
#[derive(Debug, Default)]
pub struct Receipt {
    /// Not yet seen durable.
    tickets: Vec<Ticket>,
}

/// How many of the newest tickets [`Receipt::add`] compares marks with. Records of one
/// batch alternate between a few partitions; a bus with one mark per record (Kafka) must
/// not cost a scan of the whole receipt per record.
const RECENT_MARKS: usize = 4;

impl Receipt {
    /// Adds the ticket of a record sent after everything already in the receipt.
    pub fn add(&mut self, ticket: Ticket) {
        let same = self
            .tickets
            .iter_mut()
            .rev()
            .take(RECENT_MARKS)
            .find(|t| Arc::ptr_eq(&t.mark, &ticket.mark));
        match same {
            Some(t) => t.offset = t.offset.max(ticket.offset),
            None => self.tickets.push(ticket),
        }
    }

    /// Whether every record sent is durable. Forgets the tickets found durable, so each
    /// is checked until it is, and not after.
    pub fn settle(&mut self) -> bool {
        self.tickets.retain(|t| !t.is_durable());
        self.tickets.is_empty()
    }

    /// Why a record of this receipt will never become durable, if one will not.
    pub fn failure(&self) -> Option<&str> {
        self.tickets.iter().find_map(Ticket::failure)
    }

    /// The tickets not yet seen durable.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

/// Which topics a sink connector consumes.
#[derive(Debug, Clone)]
pub enum TopicFilter {
    Names(Vec<String>),
    /// Matches a topic name in full, as Kafka Connect's `topics.regex`.
    Pattern(Regex),
}

impl TopicFilter {
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicFilter::Names(names) => names.iter().any(|n| n == topic),
            TopicFilter::Pattern(re) => re
                .find(topic)
                .is_some_and(|m| m.start() == 0 && m.end() == topic.len()),
        }
    }
}

/// A topic partition and the offset after the last record consumed from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is shut down")]
    Closed,
    /// A broker or client error (Kafka), with what was being done.
    #[error("{0}")]
    Client(String),
    /// The bus cannot do this (e.g. keep sink offsets across restarts).
    #[error("{0}")]
    Unsupported(String),
}

#[async_trait]
pub trait Bus: Send + Sync {
    /// Appends a record to its topic (created with `partitions`, or the bus default, if
    /// new). Waits while the target partition is full: this is the backpressure that
    /// slows a source down to its slowest sink.
    async fn send(&self, record: Record, partitions: Option<u32>) -> Result<Ticket, BusError>;

    /// Sends `records` in order, as `send` would one by one, adding their tickets to
    /// `receipt`. On an error the records sent before it are in the receipt. A bus may
    /// append a partition's share of the batch at once (the embedded bus: one lock and
    /// one wake-up per partition instead of per record).
    async fn send_all(
        &self,
        records: Vec<Record>,
        partitions: Option<u32>,
        receipt: &mut Receipt,
    ) -> Result<(), BusError> {
        for record in records {
            receipt.add(self.send(record, partitions).await?);
        }
        Ok(())
    }

    /// Declares consumer group `group`: from now on records of matching topics are kept
    /// until the group acknowledges them. Call before the sources start.
    fn register_group(&self, group: &str, filter: &TopicFilter);

    /// Joins `group` as member `member` of `members`; the member consumes its share of
    /// the matching partitions, from the group's acknowledged position.
    fn subscribe(
        &self,
        group: &str,
        filter: &TopicFilter,
        member: u32,
        members: u32,
    ) -> Box<dyn BusConsumer>;

    /// True when every record has been acknowledged by every group that consumes it.
    fn is_settled(&self) -> bool;

    /// Whether a record keeps its (topic, partition, offset) across worker restarts.
    fn durable_offsets(&self) -> bool;

    /// A consumer group's committed positions on the topics `filter` matches.
    async fn group_offsets(
        &self,
        group: &str,
        filter: &TopicFilter,
    ) -> Result<Vec<Position>, BusError>;

    /// Moves a consumer group (with no member running) to these positions; a position
    /// of `None` resets that partition (the group then starts from the beginning there).
    async fn alter_group_offsets(
        &self,
        group: &str,
        positions: &[(String, i32, Option<i64>)],
    ) -> Result<(), BusError>;

    /// Deletes a consumer group (with no member running) and every offset it committed:
    /// its next member starts as a new group's would. Kafka Connect's reset of a sink
    /// connector's offsets; a group that does not exist is already reset.
    async fn delete_group(&self, group: &str) -> Result<(), BusError>;

    /// For `{"timestamp": …}` offset changes: per partition of the matched topics, the
    /// first offset at or after `timestamp_ms` (the end when none is).
    async fn offsets_for_time(
        &self,
        filter: &TopicFilter,
        timestamp_ms: i64,
    ) -> Result<Vec<Position>, BusError>;

    /// The bus one connector's tasks use: Kafka applies the connector's client
    /// overrides and topic-creation settings; the embedded bus has no clients to
    /// configure and is shared as it is.
    fn for_connector(
        self: Arc<Self>,
        connector: &str,
        settings: &ConnectorBusSettings,
    ) -> Result<Arc<dyn Bus>, BusError>;
}

/// What one connector sets about its bus clients and the topics it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorBusSettings {
    /// `producer.override.*` keys, prefix removed.
    pub producer: Vec<(String, String)>,
    /// `consumer.override.*` keys, prefix removed.
    pub consumer: Vec<(String, String)>,
    /// `topic.creation.default.replication.factor`.
    pub topic_replication: Option<i32>,
    /// `errors.deadletterqueue.topic.name` and its `.replication.factor`.
    pub dlq_topic: Option<String>,
    pub dlq_replication: Option<i32>,
}

impl ConnectorBusSettings {
    /// Nothing differs from the worker's defaults.
    pub fn is_default(&self) -> bool {
        self.producer.is_empty()
            && self.consumer.is_empty()
            && self.topic_replication.is_none()
            && self.dlq_replication.is_none()
    }
}

#[async_trait]
pub trait BusConsumer: Send {
    /// Up to `max` records, waiting at most `wait` for the first one.
    /// Up to `max` records, waiting at most `wait` for the first one. Records are shared,
    /// not copied: the bus may still hold them for other consumer groups.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Arc<Record>>, BusError>;

    /// Acknowledges consumption: the group will not see records before these positions again.
    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError>;

    /// True while a rebalance is taking partitions away from this member: the sink must
    /// make durable and commit everything it was given, then call
    /// [`BusConsumer::release_revoked`], before the partitions move to their new owner
    /// (so the new owner starts exactly where this one stopped).
    fn revoking(&self) -> bool {
        false
    }

    /// Lets a pending revocation proceed (after the commit).
    async fn release_revoked(&mut self) {}

    /// This member's consumer lag, read whenever metrics are scraped; `None` when the
    /// bus cannot tell it cheaply (without a broker round trip).
    fn lag_probe(&self) -> Option<Arc<dyn crate::metrics::LagProbe>> {
        None
    }
}

/// Kafka's default partitioner hash (murmur2, seed 0x9747b28c), so a keyed record lands
/// in the same partition number on the embedded bus as it would in Kafka.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: u32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Expected values from Kafka's own UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn a_receipt_is_durable_when_every_mark_passed_its_last_record() {
        let a = Arc::new(DurableMark::default());
        let b = Arc::new(DurableMark::default());
        let mut receipt = Receipt::default();
        assert!(
            receipt.settle(),
            "an empty receipt proves nothing is pending"
        );
        for offset in 0..3 {
            receipt.add(Ticket::new(a.clone(), offset));
            receipt.add(Ticket::new(b.clone(), offset));
        }
        assert_eq!(receipt.len(), 2, "one ticket per mark");
        a.advance_to(3);
        b.advance_to(2); // b's last record (offset 2) is not durable yet
        assert!(!receipt.settle());
        assert_eq!(receipt.len(), 1, "a's ticket is forgotten once durable");
        b.fail("rejected".into());
        assert_eq!(receipt.failure(), Some("rejected"));
        b.advance_to(3);
        assert!(receipt.settle());
        assert_eq!(receipt.failure(), None);
    }

    #[test]
    fn a_receipt_of_one_mark_per_record_keeps_every_ticket() {
        // Kafka: each record has a mark of its own; none may be merged away.
        let marks: Vec<Arc<DurableMark>> = (0..10).map(|_| Arc::default()).collect();
        let mut receipt = Receipt::default();
        for mark in &marks {
            receipt.add(Ticket::new(mark.clone(), 0));
        }
        assert_eq!(receipt.len(), 10);
        for mark in &marks[..9] {
            mark.advance_to(1);
        }
        assert!(!receipt.settle());
        marks[9].advance_to(1);
        assert!(receipt.settle());
    }

    #[test]
    fn regex_filter_matches_whole_names() {
        let f = TopicFilter::Pattern(Regex::new("dlq-.*").unwrap());
        assert!(f.matches("dlq-orders"));
        assert!(!f.matches("x-dlq-orders"));
    }
}
