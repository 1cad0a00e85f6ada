//! Client settings from the worker config: `bootstrap.servers` plus `producer.*`,
//! `consumer.*` and `admin.*` keys (librdkafka's property names, the prefix removed),
//! then a connector's `producer.override.*` / `consumer.override.*` on top.

use rdkafka::ClientConfig;
use serde_json::Value;
use sluice_runtime::WorkerConfig;

/// Keys of Java's Kafka clients that librdkafka does not know, or that sluice handles
/// itself; they are dropped (with a warning) instead of failing the client's creation.
const NOT_FOR_LIBRDKAFKA: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
    "partitioner.class",
    "max.poll.records",
    "max.in.flight.requests.per.connection.ignored",
    "start.timestamp",
];

/// Fetch settings of every consumer sluice creates, where librdkafka's defaults stall a
/// sink (`consumer.*` and `consumer.override.*` still set them):
/// - `fetch.queue.backoff.ms` (librdkafka: 1000): when a partition's pre-fetch queue holds
///   `queued.min.messages` (100,000) records, librdkafka stops fetching it for this long.
///   Any sink slower than the fetching reaches that mark again and again and then waits
///   a second with an empty queue each time (500,000 small records into a FileSink: 4.1 s
///   at 1000, 1.2 s at 10).
/// - `fetch.wait.max.ms` (librdkafka: 500): how long the broker holds a fetch of a
///   partition that has no new records. Requests on the same connection (the end-offset
///   lookups of `--drain`, offsets for times) wait behind it.
const FETCH_DEFAULTS: &[(&str, &str)] = &[
    ("fetch.queue.backoff.ms", "10"),
    ("fetch.wait.max.ms", "100"),
];

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub producer: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    pub admin: Vec<(String, String)>,
    pub offset_topic: String,
    pub offset_partitions: u32,
    pub offset_replication: i32,
    /// Partitions of a topic sluice creates when the connector does not say.
    pub default_partitions: u32,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl KafkaSettings {
    /// `None` without `bootstrap.servers`: the worker then uses the embedded bus.
    pub fn from_worker(config: &WorkerConfig) -> Option<KafkaSettings> {
        let bootstrap_servers = config.bootstrap_servers.clone()?;
        let prefixed = |prefix: &str| -> Vec<(String, String)> {
            config
                .raw
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), text(v))))
                .collect()
        };
        Some(KafkaSettings {
            bootstrap_servers,
            producer: prefixed("producer."),
            consumer: prefixed("consumer."),
            admin: prefixed("admin."),
            offset_topic: config.offset_storage_topic.clone(),
            offset_partitions: config.offset_storage_partitions,
            offset_replication: config.offset_storage_replication_factor,
            default_partitions: config.default_partitions,
        })
    }

    fn client(&self, defaults: &[(&str, &str)], layers: &[&[(String, String)]]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for layer in layers {
            for (k, v) in layer.iter() {
                if NOT_FOR_LIBRDKAFKA.contains(&k.as_str()) {
                    continue;
                }
                config.set(k, v);
            }
        }
        config
    }

    /// Keys given for a client that librdkafka would reject; said once at start.
    pub fn ignored_keys(&self) -> Vec<String> {
        let mut ignored = Vec::new();
        for (prefix, keys) in [
            ("producer.", &self.producer),
            ("consumer.", &self.consumer),
            ("admin.", &self.admin),
        ] {
            for (k, _) in keys.iter() {
                // `consumer.max.poll.records` is sluice's own key, not an ignored one.
                if NOT_FOR_LIBRDKAFKA.contains(&k.as_str())
                    && !(prefix == "consumer." && k == "max.poll.records")
                {
                    ignored.push(format!("{prefix}{k}"));
                }
            }
        }
        ignored
    }

    /// A source producer: idempotent, `acks=all`, Java's partitioner (murmur2 of the key,
    /// so a key lands in the same partition as with Java clients and the embedded bus),
    /// and no delivery timeout: as Kafka Connect, a source waits out a broker outage
    /// rather than failing records.
    pub fn producer(&self, overrides: &[(String, String)]) -> ClientConfig {
        self.client(
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("partitioner", "murmur2_random"),
                ("message.timeout.ms", "0"),
                ("linger.ms", "5"),
            ],
            &[&self.producer, overrides],
        )
    }

    /// A sink task's consumer in `group`: offsets committed only by sluice, after the sink
    /// made the records durable; a new group starts at the earliest offset, as Kafka
    /// Connect's sink consumers.
    pub fn consumer(&self, group: &str, overrides: &[(String, String)]) -> ClientConfig {
        let mut defaults = vec![
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // Topics created after the subscription (a source starting later) are
            // found within seconds, not librdkafka's default five minutes.
            ("topic.metadata.refresh.interval.ms", "5000"),
        ];
        defaults.extend_from_slice(FETCH_DEFAULTS);
        let mut config = self.client(&defaults, &[&self.consumer, overrides]);
        config.set("group.id", group);
        config
    }

    /// A consumer outside any group, for reading a topic whole (the offset topic).
    pub fn reader(&self) -> ClientConfig {
        let mut defaults = vec![
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
        ];
        defaults.extend_from_slice(FETCH_DEFAULTS);
        let mut config = self.client(&defaults, &[&self.consumer]);
        config.set("group.id", "sluice-offset-reader");
        config
    }

    pub fn admin(&self) -> ClientConfig {
        self.client(&[], &[&self.admin])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::ffi::{CStr, CString};

    fn settings(consumer: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            // Creating a client does not connect, so no broker is needed here.
            bootstrap_servers: "127.0.0.1:9".to_string(),
            producer: Vec::new(),
            consumer: consumer
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            admin: Vec::new(),
            offset_topic: "offsets".to_string(),
            offset_partitions: 1,
            offset_replication: 1,
            default_partitions: 1,
        }
    }

    /// The value librdkafka itself holds for `name` in a client created from `config`.
    fn in_librdkafka(config: &ClientConfig, name: &str) -> String {
        let consumer: BaseConsumer = config.create().unwrap();
        let name = CString::new(name).unwrap();
        let mut buf = vec![0 as std::ffi::c_char; 256];
        let mut size = buf.len();
        // SAFETY: the client outlives the call; `buf` holds `size` bytes, which
        // rd_kafka_conf_get fills with a NUL-terminated string.
        let result = unsafe {
            let conf = rdkafka::bindings::rd_kafka_conf(consumer.client().native_ptr());
            rdkafka::bindings::rd_kafka_conf_get(conf, name.as_ptr(), buf.as_mut_ptr(), &mut size)
        };
        assert_eq!(result, rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_OK);
        // SAFETY: NUL-terminated by rd_kafka_conf_get.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn sink_consumers_get_sluices_fetch_defaults_unless_configured() {
        let defaults = settings(&[]);
        for config in [defaults.consumer("g", &[]), defaults.reader()] {
            assert_eq!(in_librdkafka(&config, "fetch.queue.backoff.ms"), "10");
            assert_eq!(in_librdkafka(&config, "fetch.wait.max.ms"), "100");
        }
        // A worker key wins over the default, and a connector override over both.
        let worker = settings(&[
            ("fetch.queue.backoff.ms", "250"),
            ("fetch.wait.max.ms", "300"),
        ]);
        let config = worker.consumer("g", &[("fetch.wait.max.ms".into(), "50".into())]);
        assert_eq!(in_librdkafka(&config, "fetch.queue.backoff.ms"), "250");
        assert_eq!(in_librdkafka(&config, "fetch.wait.max.ms"), "50");
        assert_eq!(in_librdkafka(&config, "group.id"), "g");
    }
}
