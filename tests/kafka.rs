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
