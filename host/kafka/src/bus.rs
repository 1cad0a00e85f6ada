//! `KafkaBus`: topics are Kafka topics. Sources produce through an idempotent producer
//! (a record is durable once the broker acknowledged it with `acks=all`); sinks consume
//! in consumer groups ([`crate::consumer::KafkaConsumer`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_api::Record;
use sluice_runtime::bus::{
    Bus, BusConsumer, BusError, ConnectorBusSettings, DurableMark, Position, Ticket, TopicFilter,
};

use crate::consumer::{ConsumerProgress, KafkaConsumer};
use crate::message::{headers_of, write_payload};
use crate::settings::KafkaSettings;
use crate::{clock_ms, lock};

/// Marks a record durable (or failed) when the broker answers.
pub struct DeliveryContext {
    /// When the last record was acknowledged ([`clock_ms`]).
    last_ack_ms: Arc<AtomicU64>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<DurableMark>;

    fn delivery(&self, result: &DeliveryResult<'_>, mark: Arc<DurableMark>) {
        match result {
            Ok(_) => {
                mark.advance_to(1);
                self.last_ack_ms.fetch_max(clock_ms(), Ordering::AcqRel);
            }
            Err((error, _)) => mark.fail(format!("Kafka did not accept the record: {error}")),
        }
    }
}

pub type SourceProducer = ThreadedProducer<DeliveryContext>;

/// What all connectors' buses share: topic creation and the consumers' progress.
struct Shared {
    /// Tells this bus apart from any other in the process (for [`Scratch::topic`]).
    id: u64,
    settings: Arc<KafkaSettings>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist (created or seen), so `send` asks the broker once per topic.
    topics: Mutex<HashSet<String>>,
    /// Consumer groups of the sink connectors started (`register_group`), so `is_settled`
    /// waits for each to have a member: a sink-only `--drain` run must not end before its
    /// tasks have subscribed.
    groups: Mutex<HashSet<String>>,
    /// Every sink consumer, with its group, for `is_settled`.
    consumers: Mutex<Vec<(String, Weak<ConsumerProgress>)>>,
    producers: Mutex<Vec<Weak<SourceProducer>>>,
    last_ack_ms: Arc<AtomicU64>,
}

#[derive(Clone)]
pub struct KafkaBus {
    shared: Arc<Shared>,
    producer: Arc<SourceProducer>,
    consumer_overrides: Vec<(String, String)>,
    /// Replication factor of topics this connector creates (-1: the broker's default).
    topic_replication: i32,
    /// The connector's dead-letter topic and its replication factor.
    dlq: Option<(String, i32)>,
}

fn client_error(what: &str, e: KafkaError) -> BusError {
    BusError::Client(format!("{what}: {e}"))
}

impl KafkaBus {
    pub fn new(settings: Arc<KafkaSettings>) -> Result<KafkaBus, BusError> {
        let admin = settings
            .admin()
            .create()
            .map_err(|e| client_error("creating the Kafka admin client", e))?;
        static IDS: AtomicU64 = AtomicU64::new(0);
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            settings,
            admin,
            topics: Mutex::default(),
            groups: Mutex::default(),
            consumers: Mutex::default(),
            producers: Mutex::default(),
            last_ack_ms: Arc::default(),
        });
        let producer = Self::make_producer(&shared, &[])?;
        Ok(KafkaBus {
            shared,
            producer,
            consumer_overrides: Vec::new(),
            topic_replication: -1,
            dlq: None,
        })
    }

    fn make_producer(
        shared: &Arc<Shared>,
        overrides: &[(String, String)],
    ) -> Result<Arc<SourceProducer>, BusError> {
        let producer: SourceProducer = shared
            .settings
            .producer(overrides)
            .create_with_context(DeliveryContext {
                last_ack_ms: shared.last_ack_ms.clone(),
            })
            .map_err(|e| client_error("creating the Kafka producer", e))?;
        let producer = Arc::new(producer);
        lock(&shared.producers).push(Arc::downgrade(&producer));
        Ok(producer)
    }

    /// Creates `topic` unless it is known to exist. Creating a topic that exists is fine:
    /// another task or worker may have been first.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: Option<u32>,
        config: &[(&str, &str)],
    ) -> Result<(), BusError> {
        // The topic this thread last produced to through this bus: no lock, no hashing.
        let id = self.shared.id;
        let known_here = SCRATCH.with_borrow(|s| {
            s.topic
                .as_ref()
                .is_some_and(|(bus, t)| *bus == id && t == topic)
        });
        if known_here {
            return Ok(());
        }
        let remember = || SCRATCH.with_borrow_mut(|s| s.topic = Some((id, topic.to_string())));
        if lock(&self.shared.topics).contains(topic) {
            remember();
            return Ok(());
        }
        let partitions = partitions
            .unwrap_or(self.shared.settings.default_partitions)
            .max(1);
        let replication = match &self.dlq {
            Some((dlq, replication)) if dlq == topic => *replication,
            _ => self.topic_replication,
        };
        create_topic(
            &self.shared.admin,
            topic,
            partitions as i32,
            replication,
            config,
        )
        .await?;
        lock(&self.shared.topics).insert(topic.to_string());
        remember();
        Ok(())
    }
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A consumer of `group` that never subscribes: it reads and commits the group's offsets
/// (which Kafka accepts while the group has no active member).
fn admin_consumer(settings: &KafkaSettings, group: &str) -> Result<BaseConsumer, BusError> {
    settings
        .consumer(group, &[])
        .create()
        .map_err(|e| client_error("creating a consumer for the group's offsets", e))
}

/// Every partition of the topics `filter` matches.
fn partitions_of(
    consumer: &BaseConsumer,
    filter: &TopicFilter,
) -> Result<TopicPartitionList, BusError> {
    let metadata = consumer
        .fetch_metadata(None, ADMIN_TIMEOUT)
        .map_err(|e| client_error("reading the cluster's topics", e))?;
    let mut tpl = TopicPartitionList::new();
    for topic in metadata.topics() {
        if filter.matches(topic.name()) {
            for p in topic.partitions() {
                tpl.add_partition(topic.name(), p.id());
            }
        }
    }
    Ok(tpl)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BusError::Client(format!("Kafka admin task: {e}")))?
}

/// Creates a topic; one that already exists is not an error. A replication factor of -1
/// (the broker's default) is retried as 1 with brokers that do not take -1.
pub async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
    replication: i32,
    config: &[(&str, &str)],
) -> Result<(), BusError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut replication = replication;
    loop {
        let new = NewTopic {
            name: topic,
            num_partitions: partitions,
            replication: TopicReplication::Fixed(replication),
            config: config.to_vec(),
        };
        let results = admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| client_error(&format!("creating topic {topic}"), e))?;
        match results.into_iter().next() {
            None | Some(Ok(_)) => return Ok(()),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => return Ok(()),
            Some(Err((_, RDKafkaErrorCode::InvalidReplicationFactor))) if replication == -1 => {
                replication = 1;
            }
            Some(Err((_, code))) => {
                return Err(BusError::Client(format!("creating topic {topic}: {code}")));
            }
        }
    }
}

/// Buffers a thread renders the records it produces into. librdkafka copies keys, values
/// and header values when a record is handed to it, so one set per thread serves every
/// send, instead of three or four allocations per record. Also the topic last checked.
#[derive(Default)]
struct Scratch {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<u8>,
    /// The topic this thread last saw exist, and through which bus ([`Shared::id`]).
    topic: Option<(u64, String)>,
}

/// A buffer grown past this by one big record is not kept.
const MAX_SCRATCH: usize = 1 << 20;

impl Scratch {
    fn trim(&mut self) {
        for buf in [&mut self.key, &mut self.value, &mut self.headers] {
            if buf.capacity() > MAX_SCRATCH {
                *buf = Vec::new();
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// A record the producer's queue had no room for: its bytes, owned, to try again after
/// a wait (the thread's scratch buffers cannot be held across it).
struct Waiting {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

type Message<'a> = BaseRecord<'a, [u8], [u8], Arc<DurableMark>>;

/// What one attempt to hand a record to librdkafka came to.
enum Handed {
    Queued,
    /// The queue is full: wait, then try again.
    Full(Waiting),
    Failed(KafkaError),
}

fn message<'a>(
    record: &'a Record,
    mark: &Arc<DurableMark>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
) -> Message<'a> {
    let mut message: Message<'a> = BaseRecord::with_opaque_to(&record.topic, mark.clone());
    message.key = key;
    message.payload = value;
    message.headers = headers;
    message.partition = record.partition;
    message.timestamp = record.timestamp;
    message
}

impl KafkaBus {
    /// Renders `record` into the thread's scratch buffers and hands it to librdkafka.
    fn hand_over(&self, record: &Record, mark: &Arc<DurableMark>) -> Handed {
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch {
                key,
                value,
                headers,
                ..
            } = scratch;
            key.clear();
            value.clear();
            if let Some(k) = &record.key {
                write_payload(key, k);
            }
            if let Some(v) = &record.value {
                write_payload(value, v);
            }
            let kafka_headers = headers_of(record, headers);
            let key = record.key.as_ref().map(|_| key.as_slice());
            let value = record.value.as_ref().map(|_| value.as_slice());
            let handed = match self
                .producer
                .send(message(record, mark, key, value, kafka_headers))
            {
                Ok(()) => Handed::Queued,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    Handed::Full(Waiting {
                        key: back.key.map(<[u8]>::to_vec),
                        value: back.payload.map(<[u8]>::to_vec),
                        headers: back.headers,
                    })
                }
                Err((e, _)) => Handed::Failed(e),
            };
            scratch.trim();
            handed
        })
    }

    /// Hands over a record that found the queue full before: `Ok(false)` if it still is.
    fn hand_over_again(
        &self,
        record: &Record,
        mark: &Arc<DurableMark>,
        waiting: &mut Waiting,
    ) -> Result<bool, KafkaError> {
        let Waiting {
            key,
            value,
            headers,
        } = waiting;
        let message = message(
            record,
            mark,
            key.as_deref(),
            value.as_deref(),
            headers.take(),
        );
        match self.producer.send(message) {
            Ok(()) => Ok(true),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                *headers = back.headers;
                Ok(false)
            }
            Err((e, _)) => Err(e),
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn send(&self, record: Record, partitions: Option<u32>) -> Result<Ticket, BusError> {
        self.ensure_topic(&record.topic, partitions, &[]).await?;
        let mark = Arc::new(DurableMark::default());
        let mut waiting = match self.hand_over(&record, &mark) {
            Handed::Queued => return Ok(Ticket::new(mark, 0)),
            Handed::Full(waiting) => waiting,
            Handed::Failed(e) => {
                return Err(client_error(
                    &format!("producing to topic {}", record.topic),
                    e,
                ));
            }
        };
        loop {
            // The producer's queue is full: wait for the broker to catch up. This is the
            // backpressure that slows a source down to what Kafka takes.
            tokio::time::sleep(Duration::from_millis(1)).await;
            match self.hand_over_again(&record, &mark, &mut waiting) {
                Ok(true) => return Ok(Ticket::new(mark, 0)),
                Ok(false) => {}
                Err(e) => {
                    return Err(client_error(
                        &format!("producing to topic {}", record.topic),
                        e,
                    ));
                }
            }
        }
    }

    fn register_group(&self, group: &str, _filter: &TopicFilter) {
        // Kafka keeps every record for every group by itself; the group is noted only so
        // that draining waits for its members.
        lock(&self.shared.groups).insert(group.to_string());
    }

    fn subscribe(
        &self,
        group: &str,
        filter: &TopicFilter,
        _member: u32,
        _members: u32,
    ) -> Box<dyn BusConsumer> {
        // Partitions are shared out by the group protocol, not by member numbers.
        let consumer = KafkaConsumer::start(
            &self.shared.settings,
            group,
            filter,
            &self.consumer_overrides,
        );
        if let Some(progress) = consumer.progress() {
            lock(&self.shared.consumers).push((group.to_string(), Arc::downgrade(&progress)));
        }
        Box::new(consumer)
    }

    fn is_settled(&self) -> bool {
        let producers_idle = lock(&self.shared.producers)
            .iter()
            .filter_map(Weak::upgrade)
            .all(|p| p.in_flight_count() == 0);
        let since = self.shared.last_ack_ms.load(Ordering::Acquire);
        let consumers = lock(&self.shared.consumers);
        let live: Vec<(&str, Arc<ConsumerProgress>)> = consumers
            .iter()
            .filter_map(|(g, c)| c.upgrade().map(|c| (g.as_str(), c)))
            .collect();
        // A group whose tasks have not subscribed yet has consumed nothing.
        let groups_joined = lock(&self.shared.groups)
            .iter()
            .all(|g| live.iter().any(|(joined, _)| joined == g));
        let consumers_done = live.iter().all(|(_, c)| c.is_caught_up_since(since));
        producers_idle && groups_joined && consumers_done
    }

    fn durable_offsets(&self) -> bool {
        true
    }

    async fn group_offsets(
        &self,
        group: &str,
        filter: &TopicFilter,
    ) -> Result<Vec<Position>, BusError> {
        let settings = self.shared.settings.clone();
        let (group, filter) = (group.to_string(), filter.clone());
        blocking(move || {
            let consumer = admin_consumer(&settings, &group)?;
            let tpl = partitions_of(&consumer, &filter)?;
            let committed = consumer
                .committed_offsets(tpl, ADMIN_TIMEOUT)
                .map_err(|e| client_error("reading the group's offsets", e))?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(Position {
                        topic: e.topic().to_string(),
                        partition: e.partition(),
                        next_offset: o,
                    }),
                    _ => None,
                })
                .collect())
        })
        .await
    }

    async fn alter_group_offsets(
        &self,
        group: &str,
        positions: &[(String, i32, Option<i64>)],
    ) -> Result<(), BusError> {
        let settings = self.shared.settings.clone();
        let group = group.to_string();
        let positions = positions.to_vec();
        blocking(move || {
            let consumer = admin_consumer(&settings, &group)?;
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, offset) in &positions {
                // No offset: the beginning, which is where a group without one starts.
                let offset = match offset {
                    Some(o) => Offset::Offset(*o),
                    None => {
                        let (low, _) = consumer
                            .fetch_watermarks(topic, *partition, ADMIN_TIMEOUT)
                            .map_err(|e| client_error("reading the partition's start", e))?;
                        Offset::Offset(low)
                    }
                };
                tpl.add_partition_offset(topic, *partition, offset)
                    .map_err(|e| client_error("building the offsets", e))?;
            }
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| client_error("committing the group's offsets", e))
        })
        .await
    }

    async fn delete_group(&self, group: &str) -> Result<(), BusError> {
        let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .shared
            .admin
            .delete_groups(&[group], &options)
            .await
            .map_err(|e| client_error(&format!("deleting consumer group {group}"), e))?;
        match results.into_iter().next() {
            None | Some(Ok(_)) => Ok(()),
            // A group never formed, or deleted by an earlier reset: reset already.
            Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) => Ok(()),
            Some(Err((_, RDKafkaErrorCode::NonEmptyGroup))) => Err(BusError::Client(format!(
                "consumer group {group} is not empty: a member outside this worker still \
                 consumes in it; stop it before resetting the offsets"
            ))),
            Some(Err((_, code))) => Err(BusError::Client(format!(
                "deleting consumer group {group}: {code}"
            ))),
        }
    }

    async fn offsets_for_time(
        &self,
        filter: &TopicFilter,
        timestamp_ms: i64,
    ) -> Result<Vec<Position>, BusError> {
        let settings = self.shared.settings.clone();
        let filter = filter.clone();
        blocking(move || {
            let consumer = admin_consumer(&settings, "sluice-offsets-for-time")?;
            let partitions = partitions_of(&consumer, &filter)?;
            let mut by_time = TopicPartitionList::new();
            for e in partitions.elements() {
                by_time
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(timestamp_ms))
                    .map_err(|e| client_error("building the lookup", e))?;
            }
            let found = consumer
                .offsets_for_times(by_time, ADMIN_TIMEOUT)
                .map_err(|e| client_error("looking offsets up by time", e))?;
            let mut positions = Vec::new();
            for e in found.elements() {
                let next_offset = match e.offset() {
                    Offset::Offset(o) => o,
                    // No record at or after the time: the end of the partition.
                    _ => {
                        consumer
                            .fetch_watermarks(e.topic(), e.partition(), ADMIN_TIMEOUT)
                            .map_err(|e| client_error("reading the partition's end", e))?
                            .1
                    }
                };
                positions.push(Position {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    next_offset,
                });
            }
            Ok(positions)
        })
        .await
    }

    fn for_connector(
        self: Arc<Self>,
        _connector: &str,
        overrides: &ConnectorBusSettings,
    ) -> Result<Arc<dyn Bus>, BusError> {
        if overrides.is_default() {
            return Ok(self);
        }
        let producer = if overrides.producer.is_empty() {
            self.producer.clone()
        } else {
            Self::make_producer(&self.shared, &overrides.producer)?
        };
        Ok(Arc::new(KafkaBus {
            shared: self.shared.clone(),
            producer,
            consumer_overrides: overrides.consumer.clone(),
            topic_replication: overrides.topic_replication.unwrap_or(-1),
            dlq: overrides
                .dlq_topic
                .clone()
                .map(|t| (t, overrides.dlq_replication.unwrap_or(-1))),
        }))
    }
}
