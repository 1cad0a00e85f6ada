//! KIP-875 offsets over REST with Kafka as the bus (tansu on a free port, or
//! `KAFKA_BOOTSTRAP_SERVERS`): a sink connector's consumer-group offsets read, moved to
//! explicit offsets, to a time and back to the beginning, each checked by what the sink
//! writes when resumed and by Python's confluent-kafka (a client written elsewhere); a
//! source connector's offsets in the offset topic read, changed and reset.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kafka::{Broker, python, topic};
use common::rest::{self, Api};
use common::*;
use serde_json::{Value, json};

/// Polls `check` until it returns something (60 s at most: consumer groups take seconds
/// to form on tansu).
fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    rest::wait_for(what, Duration::from_secs(60), check)
}

/// A worker on a broker, serving REST on a free port.
struct Worker(Api);

impl std::ops::Deref for Worker {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.0
    }
}

impl Worker {
    /// A worker on `broker` serving REST on a free port.
    fn start(broker: &Broker, s: &Scratch, connectors: &[&Path]) -> Worker {
        let keys = broker.worker(s, json!({"connector.storage.dir": s.path("connectors")}));
        let keys: Value = serde_json::from_slice(&std::fs::read(keys).unwrap()).unwrap();
        Worker(
            Api::builder(s)
                .worker(keys)
                .env("RUST_LOG", "info")
                .log("sluice.log")
                .ready_within(Duration::from_secs(60))
                .start(connectors),
        )
    }

    fn stop(&self, name: &str) {
        let (code, body) = self.call("PUT", &format!("/connectors/{name}/stop"), None);
        assert_eq!(code, 204, "{body}");
    }

    fn resume(&self, name: &str) {
        let (code, body) = self.call("PUT", &format!("/connectors/{name}/resume"), None);
        assert_eq!(code, 202, "{body}");
    }

    /// Polls `GET /connectors/{name}/offsets` until `sorted` of it is `expected`.
    fn wait_offsets(&self, name: &str, sorted: impl Fn(Value) -> Value, expected: &Value) {
        let started = Instant::now();
        loop {
            let now = sorted(self.offsets(name));
            if &now == expected {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name}'s offsets are {now}, not {expected}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn offsets(&self, name: &str) -> Value {
        let (code, body) = self.get(&format!("/connectors/{name}/offsets"));
        assert_eq!(code, 200, "{body}");
        body
    }

    fn patch_offsets(&self, name: &str, change: &Value) {
        let (code, body) = self.call(
            "PATCH",
            &format!("/connectors/{name}/offsets"),
            Some(&change.to_string()),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["message"],
            json!("The offsets for this connector have been altered successfully")
        );
    }

    fn reset_offsets(&self, name: &str) {
        let (code, body) = self.call("DELETE", &format!("/connectors/{name}/offsets"), None);
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["message"],
            json!("The offsets for this connector have been reset successfully")
        );
    }
}

/// Reads a topic from the beginning in a group of its own until `want` records came.
/// Prints `[[partition, offset, seq header], …]`.
const READ_TOPIC: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer
topic, group, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
c.subscribe([topic])
out = []
deadline = time.time() + 40
while len(out) < want and time.time() < deadline:
    m = c.poll(0.2)
    if m is None:
        continue
    if m.error():
        raise Exception(str(m.error()))
    seq = dict(m.headers() or []).get("sluice.simulator.seq")
    out.append([m.partition(), m.offset(), None if seq is None else int(seq)])
c.close()
print(json.dumps(out))
"#;

/// A consumer group's committed offsets (without joining it): `{partition: offset|null}`.
const COMMITTED: &str = r#"
import json, os, sys
from confluent_kafka import Consumer, TopicPartition
group, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": group,
              "enable.auto.commit": False})
found = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
c.close()
print(json.dumps({str(tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in found}))
"#;

/// The offset topic as a table: the last value of each key (JSON text → JSON, or null
/// for a tombstone). Read from the start until nothing new came for a second.
const OFFSET_TOPIC: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer, TopicPartition
topic = sys.argv[1]
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "py-offsets",
              "enable.auto.commit": False})
meta = c.list_topics(topic, timeout=20)
c.assign([TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions])
table = {}
deadline, idle = time.time() + 30, time.time() + 1.5
while time.time() < min(deadline, idle):
    m = c.poll(0.1)
    if m is None:
        continue
    if m.error():
        raise Exception(str(m.error()))
    table[m.key().decode()] = None if m.value() is None else json.loads(m.value())
    idle = time.time() + 1.0
c.close()
print(json.dumps(table))
"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (partition, offset) of every record of `topic`, read by Python.
fn records(broker: &Broker, topic_name: &str, want: usize) -> BTreeSet<(i64, i64)> {
    let out = python(
        broker,
        READ_TOPIC,
        &[topic_name, &topic("py-reader"), &want.to_string()],
    );
    let read: Vec<(i64, i64, Option<u64>)> = serde_json::from_str(&out).unwrap();
    assert_eq!(read.len(), want, "records of {topic_name}");
    read.into_iter().map(|(p, o, _)| (p, o)).collect()
}

/// Per partition, the offset after its last record.
fn ends(records: &BTreeSet<(i64, i64)>, partitions: i64) -> BTreeMap<i64, i64> {
    (0..partitions)
        .map(|p| {
            let end = records
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap_or(0);
            (p, end)
        })
        .collect()
}

/// A sink's offsets in the REST shape, sorted by partition.
fn sink_offsets(topic_name: &str, offsets: &BTreeMap<i64, i64>) -> Value {
    json!({"offsets": offsets.iter().map(|(p, o)| json!({
        "partition": {"kafka_topic": topic_name, "kafka_partition": p},
        "offset": {"kafka_offset": o},
    })).collect::<Vec<_>>()})
}

fn sorted_sink_offsets(mut body: Value) -> Value {
    if let Some(list) = body["offsets"].as_array_mut() {
        list.sort_by_key(|o| o["partition"]["kafka_partition"].as_i64());
    }
    body
}

/// What Python sees committed for group `connect-files`.
fn committed(broker: &Broker, topic_name: &str, partitions: i64) -> BTreeMap<i64, Option<i64>> {
    let out = python(
        broker,
        COMMITTED,
        &["connect-files", topic_name, &partitions.to_string()],
    );
    let found: BTreeMap<String, Option<i64>> = serde_json::from_str(&out).unwrap();
    found
        .into_iter()
        .map(|(p, o)| (p.parse().unwrap(), o))
        .collect()
}

/// The (partition, offset) of each line the FileSink wrote from line `from` on.
fn written(out: &Path, from: usize) -> Vec<(i64, i64)> {
    read_lines(out)[from..]
        .iter()
        .map(|l| {
            (
                l["partition"].as_i64().unwrap(),
                l["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Resumes the sink, waits until it wrote `expected.len()` more lines and committed up to
/// `end`, stops it, and checks that exactly `expected` was written, each record once.
fn resume_and_check(
    api: &Worker,
    out: &Path,
    topic_name: &str,
    end: &BTreeMap<i64, i64>,
    expected: &BTreeSet<(i64, i64)>,
) {
    let before = read_lines(out).len();
    api.resume("files");
    wait_for("the sink to write the records again", || {
        (read_lines(out).len() >= before + expected.len()).then_some(())
    });
    api.stop("files");
    assert_eq!(
        sorted_sink_offsets(api.offsets("files")),
        sink_offsets(topic_name, end)
    );
    let again = written(out, before);
    let unique: BTreeSet<(i64, i64)> = again.iter().copied().collect();
    assert_eq!(
        unique.len(),
        again.len(),
        "a record written twice: {again:?}"
    );
    assert_eq!(&unique, expected);
}

/// Runs simulator `name` into `topic` with --drain (its records acknowledged by Kafka).
fn fill(broker: &Broker, s: &Scratch, name: &str, topic_name: &str, seed: &str, events: u64) {
    let worker = broker.worker(s, json!({}));
    let mut sim = simulator(topic_name, events);
    sim["seed"] = json!(seed);
    sim["topic.creation.default.partitions"] = json!("3");
    sim["timestamp.mode"] = json!("wallclock");
    let source = s.connector(name, sim);
    let output = sluice()
        .args(["standalone", "--drain", "--progress", "never", "--worker"])
        .arg(&worker)
        .arg(&source)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn sink_offsets_on_kafka_are_read_moved_and_reset_over_rest() {
    let broker = Broker::start();
    let s = Scratch::new();
    let shop = topic("shop");
    // Two bursts a pause apart, with a time between them (tansu looks offsets up by the
    // time a batch was stored; Kafka by the record's timestamp, here the wall clock too).
    fill(&broker, &s, "sim1", &shop, "42", 120);
    let first = records(&broker, &shop, 120);
    let first_ends = ends(&first, 3);
    std::thread::sleep(Duration::from_millis(1000));
    let between = now_ms();
    std::thread::sleep(Duration::from_millis(1000));
    fill(&broker, &s, "sim2", &shop, "7", 60);
    let all = records(&broker, &shop, 180);
    let end = ends(&all, 3);
    assert!(
        (0..3).all(|p| end[&p] > first_ends[&p] && first_ends[&p] > 0),
        "each partition holds records of both bursts: {first_ends:?} {end:?}"
    );

    // The sink consumes everything, then is stopped: its offsets are the partitions' ends.
    let out = s.path("out.jsonl");
    let sink = s.connector("files", file_sink(&shop, &out, "envelope"));
    let api = Worker::start(&broker, &s, &[&sink]);
    wait_for("the sink to write every record", || {
        (read_lines(&out).len() >= 180).then_some(())
    });
    api.stop("files");
    assert_eq!(
        sorted_sink_offsets(api.offsets("files")),
        sink_offsets(&shop, &end)
    );
    let expected: BTreeMap<i64, Option<i64>> = end.iter().map(|(p, o)| (*p, Some(*o))).collect();
    assert_eq!(committed(&broker, &shop, 3), expected);
    let once: BTreeSet<(i64, i64)> = written(&out, 0).into_iter().collect();
    assert_eq!(once, all);

    // Explicit offsets: half way into each partition.
    let half: BTreeMap<i64, i64> = end.iter().map(|(p, o)| (*p, o / 2)).collect();
    api.patch_offsets("files", &sink_offsets(&shop, &half));
    assert_eq!(
        sorted_sink_offsets(api.offsets("files")),
        sink_offsets(&shop, &half)
    );
    let expected: BTreeMap<i64, Option<i64>> = half.iter().map(|(p, o)| (*p, Some(*o))).collect();
    assert_eq!(committed(&broker, &shop, 3), expected);
    let after_half: BTreeSet<(i64, i64)> =
        all.iter().copied().filter(|(p, o)| *o >= half[p]).collect();
    resume_and_check(&api, &out, &shop, &end, &after_half);

    // A time between the bursts: every partition moves to its first record of the second.
    api.patch_offsets("files", &json!({"timestamp": between}));
    assert_eq!(
        sorted_sink_offsets(api.offsets("files")),
        sink_offsets(&shop, &first_ends)
    );
    let second: BTreeSet<(i64, i64)> = all.difference(&first).copied().collect();
    resume_and_check(&api, &out, &shop, &end, &second);

    // Reset: the group and its offsets are gone (as Kafka Connect deletes the group), so
    // the sink starts from the beginning of every partition again.
    api.reset_offsets("files");
    assert_eq!(api.offsets("files"), json!({"offsets": []}));
    let none: BTreeMap<i64, Option<i64>> = (0..3).map(|p| (p, None)).collect();
    assert_eq!(committed(&broker, &shop, 3), none);
    // Resetting a reset group is no error.
    api.reset_offsets("files");
    resume_and_check(&api, &out, &shop, &end, &all);

    // Changes to a running connector are refused.
    api.resume("files");
    let (code, body) = api.call("DELETE", "/connectors/files/offsets", None);
    assert_eq!(code, 400, "{body}");
}

#[test]
fn source_offsets_on_kafka_round_trip_over_rest() {
    let broker = Broker::start();
    let s = Scratch::new();
    let shop = topic("shop");
    let mut sim = simulator(&shop, 100);
    sim["tasks.max"] = json!("2");
    let source = s.connector("sim", sim);
    let api = Worker::start(&broker, &s, &[&source]);
    let offset_topic = format!("sluice-offsets-{}", std::process::id());
    let partition = |task: u64| json!({"scenario": "ecommerce", "task": task});
    let entry = |task: u64, seq: u64| json!({"partition": partition(task), "offset": {"seq": seq}});
    let sorted = |mut body: Value| {
        if let Some(list) = body["offsets"].as_array_mut() {
            list.sort_by_key(|o| o["partition"]["task"].as_u64());
        }
        body
    };
    // Each of the two tasks sends 50 events: sequence numbers 0 … 49.
    let done = json!({"offsets": [entry(0, 49), entry(1, 49)]});
    api.wait_offsets("sim", sorted, &done);
    api.stop("sim");
    assert_eq!(sorted(api.offsets("sim")), done);
    // The offset topic holds the same, keyed as Kafka Connect's.
    let table = |expected: Value| {
        wait_for("the offset topic to show the change", || {
            let out = python(&broker, OFFSET_TOPIC, &[&offset_topic]);
            let table: Value = serde_json::from_str(&out).unwrap();
            (table == expected).then_some(())
        })
    };
    let key = |task: u64| json!(["sim", partition(task)]).to_string();
    table(json!({key(0): {"seq": 49}, key(1): {"seq": 49}}));

    // Altered: task 0 back to sequence 19, task 1 left alone.
    api.patch_offsets("sim", &json!({"offsets": [entry(0, 19)]}));
    let altered = json!({"offsets": [entry(0, 19), entry(1, 49)]});
    assert_eq!(sorted(api.offsets("sim")), altered);
    table(json!({key(0): {"seq": 19}, key(1): {"seq": 49}}));
    // Resumed, task 0 sends 20 … 49 again and task 1 nothing.
    api.resume("sim");
    api.wait_offsets("sim", sorted, &done);
    let sent = python(&broker, READ_TOPIC, &[&shop, &topic("py-reader"), "130"]);
    let sent: Vec<(i64, i64, Option<u64>)> = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent.len(), 130);

    // Reset: no offsets; resumed, both tasks start over.
    api.stop("sim");
    api.reset_offsets("sim");
    assert_eq!(api.offsets("sim"), json!({"offsets": []}));
    table(json!({key(0): null, key(1): null}));
    api.resume("sim");
    api.wait_offsets("sim", sorted, &done);
    let sent = python(&broker, READ_TOPIC, &[&shop, &topic("py-reader"), "230"]);
    let sent: Vec<(i64, i64, Option<u64>)> = serde_json::from_str(&sent).unwrap();
    let seqs: Vec<u64> = sent.iter().filter_map(|(_, _, seq)| *seq).collect();
    assert_eq!(seqs.iter().filter(|s| **s == 0).count(), 4, "{seqs:?}");
}
