//! A Kafka sink that stays paused (or behind) with more records waiting than the consumer
//! hands ahead to its task keeps its place in the consumer group: the consumer pauses its
//! partitions and keeps polling librdkafka instead of blocking, so `max.poll.interval.ms`
//! never runs out, no rebalance happens, and after resuming every record is written once.
//! Records come from Python's confluent-kafka (a client written elsewhere); tansu on a free
//! port, or `KAFKA_BOOTSTRAP_SERVERS`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::kafka::{Broker, python, topic};
use common::rest::{kafka_api, python_records_file_sink, wait_lines};
use common::*;
use serde_json::json;

/// Creates `topic` with one partition and produces `n` records to it (tagged `tag`).
const PRODUCE: &str = r#"
import os, sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
topic, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if tag == "first":
    admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result()
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "linger.ms": 5})
for i in range(n):
    p.produce(topic, key=f"{tag}-{i}", value='{"n": %d}' % i)
    if i % 1000 == 999:
        p.flush(30)
p.flush(30)
assert len(p) == 0, "records not delivered"
"#;

#[test]
fn a_paused_kafka_sink_keeps_its_group_membership() {
    // More than the consumer thread hands ahead (16 batches of 256) plus a full batch.
    const WAITING: usize = 12_000;
    let broker = Broker::start();
    let events = topic("paused");
    python(&broker, PRODUCE, &[&events, "20", "first"]);

    let s = Scratch::new();
    let out = s.path("out.jsonl");
    let mut sink = python_records_file_sink(&events, &out);
    // A short poll interval, so that a consumer thread blocked for a few seconds would be
    // dropped from the group within the test (librdkafka wants it ≥ the session timeout).
    sink["consumer.override.session.timeout.ms"] = json!("6000");
    sink["consumer.override.max.poll.interval.ms"] = json!("6000");
    let sink = s.connector("files", sink);
    let api = kafka_api(&broker, &s, &[&sink]);
    wait_lines(&api, &out, 20);

    let (code, body) = api.call("PUT", "/connectors/files/pause", None);
    assert_eq!(code, 202, "{body}");
    api.wait_status("files", |st| st["connector"]["state"] == "PAUSED");
    python(&broker, PRODUCE, &[&events, &WAITING.to_string(), "second"]);
    // Three poll intervals paused, with the consumer's hand-over full.
    std::thread::sleep(Duration::from_secs(18));
    assert_eq!(read_lines(&out).len(), 20, "a paused sink wrote");

    let (code, body) = api.call("PUT", "/connectors/files/resume", None);
    assert_eq!(code, 202, "{body}");
    wait_lines(&api, &out, 20 + WAITING);
    // Let a late duplicate (a rebalance's replay) show up if there is one.
    std::thread::sleep(Duration::from_secs(2));
    let lines = read_lines(&out);
    let offsets: HashSet<i64> = lines
        .iter()
        .map(|l| l["offset"].as_i64().expect("offset in the envelope"))
        .collect();
    assert_eq!(lines.len(), 20 + WAITING, "records written more than once");
    assert_eq!(
        offsets.len(),
        20 + WAITING,
        "records written more than once"
    );

    let log = api.log_tail(100_000);
    assert_eq!(
        log.matches("partitions assigned").count(),
        1,
        "the member was reassigned (it left the group while paused):\n{log}"
    );
    assert!(
        !log.contains("partitions revoked"),
        "the member lost its partitions while paused:\n{log}"
    );
}
