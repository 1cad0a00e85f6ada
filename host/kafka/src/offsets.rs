//! Source offsets in a compacted Kafka topic (`offset.storage.topic`), keyed as Kafka
//! Connect's: key `["<connector>",{source partition}]`, value `{source offset}`, both as
//! schemaless JSON. A Kafka Connect cluster sharing the topic reads them, and sluice reads
//! Kafka Connect's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use sluice_api::SourceOffset;
use sluice_runtime::offsets::{OffsetStore, OffsetStoreError};

use crate::settings::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct KafkaOffsetStore {
    settings: Arc<KafkaSettings>,
    producer: FutureProducer,
    topic: String,
}

impl KafkaOffsetStore {
    /// Creates the offset topic (compacted) if it does not exist.
    pub async fn open(settings: Arc<KafkaSettings>) -> Result<KafkaOffsetStore, OffsetStoreError> {
        let topic = settings.offset_topic.clone();
        let admin = settings
            .admin()
            .create()
            .map_err(|e| error(&topic, format!("creating the admin client: {e}")))?;
        crate::create_topic(
            &admin,
            &topic,
            settings.offset_partitions as i32,
            settings.offset_replication,
            &[("cleanup.policy", "compact")],
        )
        .await
        .map_err(|e| error(&topic, e.to_string()))?;
        let producer = settings
            .producer(&[])
            .create()
            .map_err(|e| error(&topic, format!("creating the producer: {e}")))?;
        Ok(KafkaOffsetStore {
            settings,
            producer,
            topic,
        })
    }

    /// Reads the whole topic; the last value of each key wins (null deletes it).
    ///
    /// A partition is read until the consumer reports its end (`PartitionEOF`, from the
    /// high watermark of the fetch responses), not up to the end `ListOffsets` answered:
    /// some brokers (tansu 0.6) answer there the last batch's base offset + 1, which
    /// stopped the read after the first record of the last batch, so offsets committed
    /// together (several tasks or source partitions in one batch) came back stale.
    fn read_all(settings: &KafkaSettings, topic: &str) -> Result<HashMap<Vec<u8>, Value>, String> {
        let consumer: BaseConsumer = settings
            .reader()
            .create()
            .map_err(|e: KafkaError| format!("creating the reader: {e}"))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| format!("reading metadata: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        // Partitions still being read.
        let mut reading = std::collections::HashSet::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), TIMEOUT)
                    .map_err(|e| format!("reading partition {} bounds: {e}", p.id()))?;
                // An empty partition is skipped (its end says so on every broker).
                if high > low {
                    tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                        .map_err(|e| e.to_string())?;
                    reading.insert(p.id());
                }
            }
        }
        let mut entries = HashMap::new();
        if reading.is_empty() {
            return Ok(entries);
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("assigning: {e}"))?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !reading.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err("timed out reading the offset topic".into());
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some(key) = m.key() {
                        match m.payload().map(serde_json::from_slice::<Value>) {
                            Some(Ok(v)) if !v.is_null() => {
                                entries.insert(key.to_vec(), v);
                            }
                            Some(Err(_)) => {
                                tracing::warn!(
                                    topic,
                                    offset = m.offset(),
                                    "offset record is not JSON; skipped"
                                );
                            }
                            _ => {
                                entries.remove(key);
                            }
                        }
                    }
                }
                // A partition is read once librdkafka signals its end. The end-offset query
                // is not used for that: tansu answers it with the first offset of the last
                // batch + 1, which would stop before the newest offsets.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    reading.remove(&p);
                }
                Some(Err(e)) => tracing::debug!(topic, error = %e, "reading offsets"),
                None => {}
            }
        }
        Ok(entries)
    }
}

fn error(topic: &str, message: String) -> OffsetStoreError {
    OffsetStoreError::Store {
        store: format!("Kafka topic {topic}"),
        message,
    }
}

/// Kafka Connect's key: `["<connector>",{partition}]` as compact JSON.
pub fn offset_key(connector: &str, partition: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!([connector, partition])).unwrap_or_default()
}

#[async_trait]
impl OffsetStore for KafkaOffsetStore {
    async fn load(&self, connector: &str) -> Result<Vec<SourceOffset>, OffsetStoreError> {
        let settings = self.settings.clone();
        let topic = self.topic.clone();
        let entries = tokio::task::spawn_blocking(move || Self::read_all(&settings, &topic))
            .await
            .map_err(|e| error(&self.topic, e.to_string()))?
            .map_err(|e| error(&self.topic, e))?;
        Ok(entries
            .into_iter()
            .filter_map(
                |(key, offset)| match serde_json::from_slice::<Value>(&key) {
                    Ok(Value::Array(parts)) if parts.len() == 2 && parts[0] == connector => {
                        Some(SourceOffset {
                            partition: parts[1].clone(),
                            offset,
                        })
                    }
                    _ => None,
                },
            )
            .collect())
    }

    async fn commit(
        &self,
        connector: &str,
        offsets: &[SourceOffset],
    ) -> Result<(), OffsetStoreError> {
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = offsets
            .iter()
            .map(|o| {
                (
                    offset_key(connector, &o.partition),
                    serde_json::to_vec(&o.offset).unwrap_or_default(),
                )
            })
            .collect();
        let mut deliveries = Vec::with_capacity(encoded.len());
        for (key, value) in &encoded {
            let record = FutureRecord::to(&self.topic).key(key).payload(value);
            deliveries.push(self.producer.send(record, TIMEOUT));
        }
        for delivery in deliveries {
            delivery
                .await
                .map_err(|(e, _)| error(&self.topic, format!("writing offsets: {e}")))?;
        }
        Ok(())
    }

    /// Tombstones: compaction then drops the keys, and readers skip them at once.
    async fn remove(&self, connector: &str, partitions: &[Value]) -> Result<(), OffsetStoreError> {
        let keys: Vec<Vec<u8>> = partitions
            .iter()
            .map(|p| offset_key(connector, p))
            .collect();
        let mut deliveries = Vec::with_capacity(keys.len());
        for key in &keys {
            let record: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(&self.topic).key(key);
            deliveries.push(self.producer.send(record, TIMEOUT));
        }
        for delivery in deliveries {
            delivery
                .await
                .map_err(|(e, _)| error(&self.topic, format!("removing offsets: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kafka_connects() {
        assert_eq!(
            offset_key("sim", &json!({"task": 0})),
            br#"["sim",{"task":0}]"#.to_vec()
        );
    }
}
