//! The Kafka bus against a real broker (tansu on a free port, or `KAFKA_BOOTSTRAP_SERVERS`):
//! sources produce to Kafka topics, sinks consume them in consumer groups, source offsets
//! live in the offset topic.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::kafka::{Broker, topic};
use common::*;
use serde_json::{Value, json};

/// Checks a FileSink envelope file against a seeded simulator run of `total` events:
/// every (task, seq) exactly once, and per key (user_id) in the order produced.
fn assert_once_in_key_order(lines: &[Value], total: u64) {
    let mut seen = BTreeSet::new();
    let mut last_per_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in lines {
        let ts = task_seq(line);
        assert!(seen.insert(ts), "record {ts:?} written twice");
        let key = line["key"].to_string();
        if let Some(prev) = last_per_key.insert(key.clone(), ts) {
            assert!(prev < ts, "key {key}: {ts:?} written after {prev:?}");
        }
    }
    assert_eq!(seen.len() as u64, total, "records lost");
}

#[test]
fn simulator_to_kafka_to_file_once_in_key_order() {
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let shop = topic("shop");
    let mut sim = simulator(&shop, 20_000);
    sim["topic.creation.default.partitions"] = json!("4");
    let source = s.connector("sim", sim);
    let mut sink = file_sink(&shop, &s.path("out.jsonl"), "envelope");
    sink["transforms"] = json!("all");
    sink["transforms.all.type"] = json!("Filter");
    sink["transforms.all.condition"] = json!("true");
    let sink = s.connector("files", sink);
    let output = sluice()
        .args(["standalone", "--drain", "--progress", "never", "--worker"])
        .arg(&worker)
        .arg(&source)
        .arg(&sink)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = read_lines(&s.path("out.jsonl"));
    assert_once_in_key_order(&lines, 20_000);
    // Records came through Kafka: four partitions, keyed by user_id.
    let partitions: BTreeSet<i64> = lines
        .iter()
        .map(|l| l["partition"].as_i64().unwrap())
        .collect();
    assert_eq!(partitions, (0..4).collect());
    for line in &lines {
        assert_eq!(line["key"], line["value"]["user_id"], "{line}");
    }
}

/// Creates the topic (`create`) with one partition per count, or adds to it, then produces
/// `counts[p]` records to partition p, numbered from `first`: values `{"p": p, "i": i}`.
/// librdkafka batches them (linger), so partitions end in batches of many records, where
/// tansu's end-offset answer (the last batch's base offset + 1) falls short of the end.
const PRODUCE_TO_PARTITIONS: &str = r#"
import json, os, sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

topic, counts, first, create = sys.argv[1], [int(c) for c in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4] == "create"
if create:
    admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]})
    admin.create_topics([NewTopic(topic, num_partitions=len(counts), replication_factor=1)])[topic].result(30)
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "linger.ms": 20})
for part, n in enumerate(counts):
    for i in range(first, first + n):
        p.produce(topic, partition=part, value=json.dumps({"p": part, "i": i}).encode())
        if i % 1000 == 0:
            p.poll(0)
p.flush(30)
if len(p) != 0:
    raise Exception("not all records delivered")
"#;

/// The committed offset of each partition of `topic` in consumer group `group`.
const COMMITTED: &str = r#"
import json, os, sys
from confluent_kafka import Consumer, TopicPartition

topic, group, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": group})
found = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
print(json.dumps([tp.offset for tp in found]))
c.close()
"#;

fn drain(worker: &std::path::Path, connector: &std::path::Path) {
    let output = sluice()
        .args(["standalone", "--drain", "--progress", "never", "--worker"])
        .arg(worker)
        .arg(connector)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

/// `(partition, i)` of every value a FileSink envelope file holds, each once.
fn written(path: &std::path::Path) -> BTreeSet<(i64, i64)> {
    let mut seen = BTreeSet::new();
    for line in read_lines(path) {
        let value = &line["value"];
        let pi = (value["p"].as_i64().unwrap(), value["i"].as_i64().unwrap());
        assert_eq!(line["partition"].as_i64(), Some(pi.0), "{line}");
        assert!(seen.insert(pi), "{pi:?} written twice");
    }
    seen
}

/// Fails with what is missing and what is extra (counts and a few of each), not with two
/// sets of thousands.
fn assert_same(got: &BTreeSet<(i64, i64)>, want: &BTreeSet<(i64, i64)>) {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing (first: {:?}), {} extra (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

fn numbered(counts: &[i64], first: i64) -> BTreeSet<(i64, i64)> {
    counts
        .iter()
        .enumerate()
        .flat_map(|(p, n)| (first..first + n).map(move |i| (p as i64, i)))
        .collect()
}

/// A sink connector alone (`--drain`, no source) ends once every partition is committed
/// up to its end, and not before: partitions of different lengths, one empty, each ending
/// in a batch of many records; then again, from the group's commits, after more arrived
/// (also in the partition that was empty). A `NullSink` drains the same topic and commits
/// every partition's end.
#[test]
fn a_sink_alone_drains_every_partition_to_its_end() {
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let orders = topic("orders");
    let counts = [3000, 700, 1, 0];
    common::kafka::python(
        &broker,
        PRODUCE_TO_PARTITIONS,
        &[&orders, "3000,700,1,0", "0", "create"],
    );
    let file = s.path("out.jsonl");
    let sink = s.connector("drained", file_sink(&orders, &file, "envelope"));
    drain(&worker, &sink);
    assert_same(&written(&file), &numbered(&counts, 0));

    let more = [0, 0, 200, 1500];
    common::kafka::python(
        &broker,
        PRODUCE_TO_PARTITIONS,
        &[&orders, "0,0,200,1500", "1000000", "append"],
    );
    drain(&worker, &sink);
    let mut all = numbered(&counts, 0);
    all.extend(numbered(&more, 1_000_000));
    assert_same(&written(&file), &all);

    let null = s.connector(
        "nothing",
        json!({"connector.class": "NullSink", "topics": orders, "tasks.max": "2"}),
    );
    drain(&worker, &null);
    let committed: Vec<i64> = serde_json::from_str(&common::kafka::python(
        &broker,
        COMMITTED,
        &[&orders, "connect-nothing", "4"],
    ))
    .unwrap();
    let ends: Vec<i64> = counts.iter().zip(more).map(|(a, b)| a + b).collect();
    assert_eq!(committed, ends);
}
