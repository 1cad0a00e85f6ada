//! Kafka interoperability (issue 5): sluice and a client written elsewhere (Python's
//! confluent-kafka, over librdkafka) read each other's records through a real broker
//! (tansu on a free port, or `KAFKA_BOOTSTRAP_SERVERS`); malformed records of sinks and
//! of sources land in dead-letter topics with Kafka Connect's context headers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::kafka::{Broker, python, topic};
use common::*;
use serde_json::{Value, json};

/// Reads topics as a consumer of a group of its own (`auto.offset.reset=earliest`).
/// Args: comma list of topics, group, how many records are expected. Reads until that
/// many came, then 1.5 s more to catch any extra. (Not by the topics' watermarks: tansu
/// 0.6 reports a partition's high watermark as the last batch's base offset + 1.)
/// Prints a JSON array of records, each with topic, partition, offset, timestamp, key and
/// value as hex (null when absent), their UTF-8 text and Python's `json.loads` of them
/// when they have one, and headers as [key, hex, text] (null for a null header value).
const CONSUME: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer

topics, group, want = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
c = Consumer({
    "bootstrap.servers": os.environ["BOOTSTRAP"],
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
})

def text(b):
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None

def parsed(b):
    if b is None:
        return None
    try:
        return {"json": json.loads(b)}
    except ValueError:
        return None

c.subscribe(topics)
records = []
deadline = time.time() + 25
linger = None
while time.time() < deadline and (linger is None or time.time() < linger):
    m = c.poll(0.1)
    if m is None:
        continue
    if m.error():
        raise Exception(str(m.error()))
    records.append({
        "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
        "timestamp": m.timestamp()[1],
        "key": None if m.key() is None else m.key().hex(),
        "key_text": text(m.key()), "key_json": parsed(m.key()),
        "value": None if m.value() is None else m.value().hex(),
        "value_text": text(m.value()), "value_json": parsed(m.value()),
        "headers": [[k, None if v is None else v.hex(), text(v)] for k, v in (m.headers() or [])],
    })
    if len(records) >= want and linger is None:
        linger = time.time() + 1.5
c.close()
print(json.dumps(records))
"#;

/// Creates a topic of `partitions` partitions with Python's admin client.
const CREATE_TOPIC: &str = r#"
from confluent_kafka.admin import AdminClient, NewTopic
import os, sys
admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]})
t = NewTopic(sys.argv[1], num_partitions=int(sys.argv[2]), replication_factor=1)
admin.create_topics([t])[sys.argv[1]].result(30)
"#;

/// Produces N JSON records (JSON keys, two headers, a create timestamp) and one
/// tombstone. Mode `plain`: the JSON as it is; `envelope`: keys and values wrapped in
/// Kafka Connect's `{"schema":…,"payload":…}`. Prints what was delivered, as the delivery
/// reports say: partition, offset, timestamp, key, value (payloads), headers.
const PRODUCE_JSON: &str = r#"
import json, os, sys
from confluent_kafka import Producer

topic, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "enable.idempotence": True, "linger.ms": 5})
KEY_SCHEMA = {"type": "struct", "optional": False, "name": "CustomerKey",
              "fields": [{"field": "customer", "type": "string", "optional": False}]}
VALUE_SCHEMA = {"type": "struct", "optional": False, "name": "Order", "fields": [
    {"field": "i", "type": "int32", "optional": False},
    {"field": "name", "type": "string", "optional": False},
    {"field": "price", "type": "double", "optional": False},
    {"field": "tags", "type": "array", "items": {"type": "string"}, "optional": False},
    {"field": "nested", "type": "struct", "optional": False, "fields": [
        {"field": "ok", "type": "boolean", "optional": False},
        {"field": "none", "type": "string", "optional": True}]}]}

def wire(obj, schema):
    if obj is None:
        return None
    if mode == "envelope":
        obj = {"schema": schema, "payload": obj}
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")

delivered = []
def report(err, msg, key, value, headers):
    if err is not None:
        raise Exception(str(err))
    delivered.append({"partition": msg.partition(), "offset": msg.offset(),
                      "timestamp": msg.timestamp()[1], "key": key, "value": value,
                      "headers": headers})

def send(key, value, headers, ts):
    p.produce(topic, key=wire(key, KEY_SCHEMA), value=wire(value, VALUE_SCHEMA),
              headers=[(k, v.encode("utf-8")) for k, v in headers.items()], timestamp=ts,
              on_delivery=lambda err, msg: report(err, msg, key, value, headers))

for i in range(n):
    value = {"i": i, "name": "caf\u00e9 \u2603 \"quoted\" #%d\n" % i, "price": round(i * 1.25 + 0.1, 2),
             "tags": ["a", "b", "c"][: i % 4], "nested": {"ok": i % 2 == 0, "none": None}}
    send({"customer": "c%d" % (i % 7)}, value, {"origin": "python", "i": str(i)}, 1700000000000 + i)
send({"customer": "c0"}, None, {"origin": "python", "tombstone": "yes"}, 1700000000000 + n)
p.flush(30)
if len(p) != 0:
    raise Exception("not all records delivered")
print(json.dumps(delivered))
"#;

/// Produces a mix of good JSON values and malformed ones (bytes that are not UTF-8,
/// truncated JSON), with JSON keys (one malformed record has none) and headers (one
/// malformed record has a binary header and a null one). Prints each record as
/// delivered: partition, offset, kind, key/value hex, headers as [key, hex].
const PRODUCE_MIXED: &str = r#"
import json, os, sys
from confluent_kafka import Producer

topic, n = sys.argv[1], int(sys.argv[2])
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "enable.idempotence": True})
delivered = []
def report(err, msg, kind):
    if err is not None:
        raise Exception(str(err))
    delivered.append({
        "partition": msg.partition(), "offset": msg.offset(), "kind": kind,
        "key": None if msg.key() is None else msg.key().hex(),
        "value": msg.value().hex(),
        "headers": [[k, None if v is None else v.hex()] for k, v in (msg.headers() or [])],
    })

for i in range(n):
    key = json.dumps("k%d" % i).encode()
    headers = [("trace", ("t%d" % i).encode())]
    kind = ["good", "good", "not_utf8", "truncated"][i % 4]
    if kind == "good":
        value = json.dumps({"n": i, "text": "ok \u00e9"}, ensure_ascii=False).encode()
    elif kind == "not_utf8":
        value = b"\xff\xfe\x00" + bytes([i]) + b"\x80 not text"
    else:
        value = json.dumps({"n": i, "text": "cut here"}).encode()[:-5]
    if i == 2:
        key = None
        headers += [("bin", b"\x00\xff\x10"), ("nothing", None)]
    p.produce(topic, key=key, value=value, headers=headers,
              on_delivery=lambda err, msg, kind=kind: report(err, msg, kind))
p.flush(30)
if len(p) != 0:
    raise Exception("not all records delivered")
print(json.dumps(delivered))
"#;

/// What a Python consumer read from `topics` (comma-separated), expecting `want` records.
fn consume(broker: &Broker, topics: &str, want: usize) -> Vec<Value> {
    let out = python(
        broker,
        CONSUME,
        &[topics, &topic("py-reader"), &want.to_string()],
    );
    serde_json::from_str(&out).expect("consumer prints JSON")
}

fn unhex(hex: &Value) -> Option<Vec<u8>> {
    let hex = hex.as_str()?;
    Some(
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect(),
    )
}

/// The simulator's records as the embedded bus delivers them to a FileSink (envelope),
/// by (task, seq): the ground truth for what the same config sends to Kafka.
fn simulated(sim: &Value) -> BTreeMap<(u64, u64), Value> {
    let s = Scratch::new();
    s.worker(1_000);
    let source = s.connector("sim", sim.clone());
    let topic = sim["topic"].as_str().unwrap();
    let mut sink = file_sink(topic, &s.path("truth.jsonl"), "envelope");
    // Values as text, so `invalid_json` bytes reach the file; JSON is parsed back below.
    sink["value.converter"] = json!("org.apache.kafka.connect.storage.StringConverter");
    let sink = s.connector("truth", sink);
    let output = s.run(true, &[&source, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    read_lines(&s.path("truth.jsonl"))
        .into_iter()
        .map(|mut line| {
            let text = line["value"].as_str().unwrap().to_string();
            if let Ok(value) = serde_json::from_str(&text) {
                line["value"] = value;
            }
            (task_seq(&line), line)
        })
        .collect()
}

/// (task, seq) from the simulator's headers of a record a Python consumer read; both
/// headers must be UTF-8 strings of digits.
fn py_task_seq(record: &Value) -> (u64, u64) {
    let header = |name: &str| -> u64 {
        let found: Vec<&Value> = record["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .collect();
        assert_eq!(found.len(), 1, "{name} once: {record}");
        let text = found[0][2]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is not a string: {record}"));
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
    };
    (
        header("sluice.simulator.task"),
        header("sluice.simulator.seq"),
    )
}

/// Java's default partitioner (murmur2 of the key bytes, positive, modulo partitions).
fn java_partition(key: &[u8], partitions: u32) -> i64 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    for (i, b) in tail.iter().enumerate().rev() {
        h ^= u32::from(*b) << (8 * i);
    }
    if !tail.is_empty() {
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions) as i64
}

fn run_drain(worker: &Path, connectors: &[&Path]) {
    let started = std::time::Instant::now();
    let output = sluice()
        .args(["standalone", "--drain", "--progress", "never", "--worker"])
        .arg(worker)
        .args(connectors)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    eprintln!("sluice ran {:?}", started.elapsed());
}

/// Headers of a dead letter by name (values as UTF-8 text), checking each is there once.
fn context(record: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for h in record["headers"].as_array().unwrap() {
        let key = h[0].as_str().unwrap();
        if key.starts_with("__connect.errors.") || key.starts_with("sluice.errors.") {
            let text = h[2]
                .as_str()
                .unwrap_or_else(|| panic!("{key} not text: {record}"));
            assert!(
                out.insert(key.to_string(), text.to_string()).is_none(),
                "{key} twice"
            );
        }
    }
    out
}

#[test]
fn python_reads_what_sluice_produces() {
    const EVENTS: u64 = 2_000;
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let shop = topic("shop");
    let mut sim = simulator(&shop, EVENTS);
    sim["tasks.max"] = json!("2");
    sim["topic.creation.default.partitions"] = json!("3");
    let truth = simulated(&sim);
    let source = s.connector("sim", sim);
    run_drain(&worker, &[&source]);

    let records = consume(&broker, &shop, EVENTS as usize);
    assert_eq!(records.len() as u64, EVENTS, "records Python read");
    let mut seen = BTreeSet::new();
    let mut partitions_of_key: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for r in &records {
        let id = py_task_seq(r);
        assert!(seen.insert(id), "{id:?} twice");
        let expected = &truth[&id];
        // The value is the simulator's JSON object, as Python's json parses it.
        let value = &r["value_json"]["json"];
        assert_eq!(value, &expected["value"], "{r}");
        let fields: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "event_id",
                "event_type",
                "price",
                "product_id",
                "timestamp",
                "user_id"
            ])
        );
        // The key is the user_id as JSON text.
        let key = r["key_text"].as_str().unwrap();
        assert_eq!(key, value["user_id"].to_string());
        assert_eq!(r["key_json"]["json"], value["user_id"]);
        // The record timestamp is the event time.
        assert_eq!(r["timestamp"], expected["timestamp"], "{r}");
        // Only the simulator's two headers.
        assert_eq!(r["headers"].as_array().unwrap().len(), 2, "{r}");
        let partition = r["partition"].as_i64().unwrap();
        assert_eq!(
            partition,
            java_partition(key.as_bytes(), 3),
            "key {key} not where Java's partitioner puts it"
        );
        partitions_of_key
            .entry(key.to_string())
            .or_default()
            .insert(partition);
    }
    assert_eq!(seen, truth.keys().copied().collect());
    for (key, partitions) in &partitions_of_key {
        assert_eq!(
            partitions.len(),
            1,
            "key {key} in partitions {partitions:?}"
        );
    }
    let used: BTreeSet<i64> = partitions_of_key.values().flatten().copied().collect();
    assert_eq!(used, (0..3).collect(), "keys spread over the partitions");
}

/// Python produces JSON records (plain or in Kafka Connect envelopes); a FileSink
/// consumes them; every record lands once with the value, key and headers Python sent.
fn python_to_file(mode: &str, schemas: bool) {
    const RECORDS: usize = 300;
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let orders = topic("orders");
    python(&broker, CREATE_TOPIC, &[&orders, "3"]);
    let sent = python(
        &broker,
        PRODUCE_JSON,
        &[&orders, &RECORDS.to_string(), mode],
    );
    let sent: Vec<Value> = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent.len(), RECORDS + 1);

    let mut sink = file_sink(&orders, &s.path("out.jsonl"), "envelope");
    if schemas {
        sink["key.converter"] = json!("org.apache.kafka.connect.json.JsonConverter");
        sink["key.converter.schemas.enable"] = json!("true");
        sink["value.converter"] = json!("org.apache.kafka.connect.json.JsonConverter");
        sink["value.converter.schemas.enable"] = json!("true");
        // A bad envelope would be skipped silently otherwise; fail instead.
        sink["errors.tolerance"] = json!("none");
    }
    let sink = s.connector("files", sink);
    run_drain(&worker, &[&sink]);

    let lines = read_lines(&s.path("out.jsonl"));
    let mut written: BTreeMap<(i64, i64), &Value> = BTreeMap::new();
    for line in &lines {
        assert_eq!(line["topic"], orders.as_str());
        let at = (
            line["partition"].as_i64().unwrap(),
            line["offset"].as_i64().unwrap(),
        );
        assert!(written.insert(at, line).is_none(), "{at:?} written twice");
    }
    assert_eq!(lines.len(), sent.len(), "every record exactly once");
    for record in &sent {
        let at = (
            record["partition"].as_i64().unwrap(),
            record["offset"].as_i64().unwrap(),
        );
        let line = written
            .get(&at)
            .unwrap_or_else(|| panic!("{record} not written"));
        assert_eq!(line["key"], record["key"], "{line}");
        assert_eq!(line["value"], record["value"], "{line}");
        assert_eq!(line["headers"], record["headers"], "{line}");
        assert_eq!(line["timestamp"], record["timestamp"], "{line}");
    }
    assert!(
        sent.iter().any(|r| r["value"].is_null()),
        "the tombstone was sent"
    );
}

#[test]
fn sluice_reads_what_python_produces() {
    python_to_file("plain", false);
}

#[test]
fn sluice_reads_kafka_connect_schema_envelopes_python_produces() {
    python_to_file("envelope", true);
}

#[test]
fn malformed_records_land_in_the_dlq_topic_with_context_and_unchanged_bytes() {
    const RECORDS: usize = 40;
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let input = topic("input");
    let dlq = topic("input-dlq");
    python(&broker, CREATE_TOPIC, &[&input, "2"]);
    let sent = python(&broker, PRODUCE_MIXED, &[&input, &RECORDS.to_string()]);
    let sent: Vec<Value> = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent.len(), RECORDS);

    let mut sink = file_sink(&input, &s.path("good.jsonl"), "envelope");
    sink["errors.tolerance"] = json!("all");
    sink["errors.deadletterqueue.topic.name"] = json!(dlq);
    sink["errors.deadletterqueue.context.headers.enable"] = json!("true");
    let sink = s.connector("mixed", sink);
    run_drain(&worker, &[&sink]);

    // Good records in the file, each once.
    let good: BTreeMap<(i64, i64), Value> = read_lines(&s.path("good.jsonl"))
        .into_iter()
        .map(|l| {
            (
                (
                    l["partition"].as_i64().unwrap(),
                    l["offset"].as_i64().unwrap(),
                ),
                l,
            )
        })
        .collect();
    let at = |r: &Value| {
        (
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        )
    };
    let expected_good: Vec<&Value> = sent.iter().filter(|r| r["kind"] == "good").collect();
    assert_eq!(good.len(), expected_good.len(), "{good:?}");
    for r in &expected_good {
        let line = &good[&at(r)];
        let value: Value = serde_json::from_slice(&unhex(&r["value"]).unwrap()).unwrap();
        assert_eq!(line["value"], value);
    }

    // The malformed ones in the DLQ, and nothing else.
    let malformed: BTreeMap<(i64, i64), &Value> = sent
        .iter()
        .filter(|r| r["kind"] != "good")
        .map(|r| (at(r), r))
        .collect();
    let dead = consume(&broker, &dlq, malformed.len());
    assert_eq!(dead.len(), malformed.len(), "records in the DLQ topic");
    let mut seen = BTreeSet::new();
    for d in &dead {
        let ctx = context(d);
        let p: i64 = ctx["__connect.errors.partition"].parse().unwrap();
        let o: i64 = ctx["__connect.errors.offset"].parse().unwrap();
        assert!(seen.insert((p, o)), "({p}, {o}) dead-lettered twice");
        let original = malformed
            .get(&(p, o))
            .unwrap_or_else(|| panic!("{d} is no malformed record"));
        assert_eq!(d["key"], original["key"], "key bytes");
        assert_eq!(d["value"], original["value"], "value bytes");
        // The record's own headers first, unchanged (binary and null ones too).
        let own: Vec<Value> = d["headers"].as_array().unwrap()
            [..original["headers"].as_array().unwrap().len()]
            .iter()
            .map(|h| json!([h[0], h[1]]))
            .collect();
        assert_eq!(&Value::from(own), &original["headers"], "{d}");
        assert_eq!(ctx["__connect.errors.topic"], input);
        assert_eq!(ctx["__connect.errors.connector.name"], "mixed");
        assert_eq!(ctx["__connect.errors.task.id"], "0");
        assert_eq!(ctx["__connect.errors.stage"], "VALUE_CONVERTER");
        assert_eq!(
            ctx["__connect.errors.class.name"],
            "org.apache.kafka.connect.json.JsonConverter"
        );
        assert_eq!(
            ctx["__connect.errors.exception.class.name"],
            "org.apache.kafka.connect.errors.DataException"
        );
        let message = &ctx["__connect.errors.exception.message"];
        assert!(!message.is_empty());
        assert!(ctx["__connect.errors.exception.stacktrace"].contains(message.as_str()));
        assert_eq!(ctx["sluice.errors.attempts"], "1");
        assert!(ctx.contains_key("sluice.errors.timestamp"));
    }
    assert_eq!(seen, malformed.keys().copied().collect());
}

/// A source whose transform chain rejects some records: Filter's condition reads
/// `value.event_type`, which `missing_field` records lack and `invalid_json` (bytes)
/// records cannot give; `on.error=fail` makes both record errors.
fn rejecting_simulator(topic: &str, dlq: &str, events: u64) -> Value {
    let mut sim = simulator(topic, events);
    sim["malformed.rate"] = json!("0.1");
    sim["malformed.kinds"] = json!("invalid_json,missing_field");
    sim["transforms"] = json!("types");
    sim["transforms.types.type"] = json!("Filter");
    sim["transforms.types.condition"] = json!(r#"value.event_type != "none""#);
    sim["transforms.types.on.error"] = json!("fail");
    sim["errors.tolerance"] = json!("all");
    sim["errors.deadletterqueue.topic.name"] = json!(dlq);
    sim
}

/// Checks the context headers of a source dead letter (by header name → text).
fn assert_source_context(ctx: &BTreeMap<String, String>, line: &Value) {
    for absent in [
        "__connect.errors.topic",
        "__connect.errors.partition",
        "__connect.errors.offset",
    ] {
        assert!(
            !ctx.contains_key(absent),
            "{absent} on a source record: {line}"
        );
    }
    assert_eq!(ctx["__connect.errors.connector.name"], "sim", "{line}");
    assert_eq!(ctx["__connect.errors.task.id"], "0");
    assert_eq!(ctx["__connect.errors.stage"], "TRANSFORMATION");
    assert_eq!(ctx["__connect.errors.class.name"], "transforms.types");
    assert_eq!(
        ctx["__connect.errors.exception.class.name"],
        "org.apache.kafka.connect.errors.DataException"
    );
    assert!(!ctx["__connect.errors.exception.message"].is_empty());
    assert!(!ctx["__connect.errors.exception.stacktrace"].is_empty());
}

#[test]
fn a_source_dead_letters_what_its_transforms_reject_to_kafka() {
    const EVENTS: u64 = 2_000;
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let events = topic("events");
    let dlq = topic("events-dlq");
    let mut truth_config = simulator(&events, EVENTS);
    truth_config["malformed.rate"] = json!("0.1");
    truth_config["malformed.kinds"] = json!("invalid_json,missing_field");
    let truth = simulated(&truth_config);
    let mut sim = rejecting_simulator(&events, &dlq, EVENTS);
    sim["topic.creation.default.partitions"] = json!("2");
    let source = s.connector("sim", sim);
    run_drain(&worker, &[&source]);

    let both = format!("{events},{dlq}");
    let records = consume(&broker, &both, EVENTS as usize);
    assert_eq!(records.len() as u64, EVENTS);
    let mut seen = BTreeSet::new();
    let mut dead = 0;
    for r in &records {
        let id = py_task_seq(r);
        assert!(seen.insert(id), "{id:?} twice");
        let expected = &truth[&id];
        let kind = expected["headers"]["sluice.simulator.malformed"].as_str();
        // The key as the source produced it: user_id as JSON text.
        assert_eq!(r["key_json"]["json"], expected["key"], "{r}");
        if r["topic"] == dlq.as_str() {
            dead += 1;
            assert!(kind.is_some(), "a good record dead-lettered: {r}");
            assert_source_context(&context(r), r);
            // The value as the source produced it: the truncated text kept as bytes, or
            // the object lacking event_type.
            match kind {
                Some("invalid_json") => {
                    assert_eq!(r["value_text"], expected["value"], "{r}");
                    assert!(r["value_json"].is_null());
                }
                _ => assert_eq!(r["value_json"]["json"], expected["value"], "{r}"),
            }
            // The simulator's own headers are kept.
            assert_eq!(r["headers"][2][0], "sluice.simulator.malformed", "{r}");
        } else {
            assert!(kind.is_none(), "a malformed record produced: {r}");
            assert_eq!(r["value_json"]["json"], expected["value"]);
            assert!(context(r).is_empty());
        }
    }
    let expected_dead = truth
        .values()
        .filter(|l| l["headers"]["sluice.simulator.malformed"].is_string())
        .count();
    assert!(expected_dead > 100, "{expected_dead} malformed");
    assert_eq!(dead, expected_dead);

    // Every offset was committed, the rejected records' too: a second run sends nothing.
    run_drain(&worker, &[&source]);
    let again = consume(&broker, &both, EVENTS as usize);
    assert_eq!(
        again.len() as u64,
        EVENTS,
        "a second run sent records again"
    );
}

#[test]
fn a_source_dead_letters_what_its_transforms_reject_on_the_embedded_bus() {
    const EVENTS: u64 = 2_000;
    let s = Scratch::new();
    s.worker(500);
    let mut truth_config = simulator("events", EVENTS);
    truth_config["malformed.rate"] = json!("0.1");
    truth_config["malformed.kinds"] = json!("invalid_json,missing_field");
    let truth = simulated(&truth_config);
    let source = s.connector("sim", rejecting_simulator("events", "events-dlq", EVENTS));
    let good = s.connector(
        "good",
        file_sink("events", &s.path("good.jsonl"), "envelope"),
    );
    let mut dlq = file_sink("events-dlq", &s.path("dlq.jsonl"), "envelope");
    dlq["value.converter"] = json!("org.apache.kafka.connect.storage.StringConverter");
    let dlq = s.connector("dlq", dlq);
    let output = s.run(true, &[&source, &good, &dlq]);
    assert!(output.status.success(), "{}", stderr(&output));

    let good = read_lines(&s.path("good.jsonl"));
    let dead = read_lines(&s.path("dlq.jsonl"));
    let mut seen = BTreeSet::new();
    for line in &good {
        let id = task_seq(line);
        assert!(seen.insert(id), "{id:?} twice");
        assert_eq!(line["value"], truth[&id]["value"]);
    }
    for line in &dead {
        let id = task_seq(line);
        assert!(seen.insert(id), "{id:?} twice");
        let expected = &truth[&id];
        assert_eq!(line["key"], expected["key"]);
        let value = line["value"].as_str().unwrap();
        match expected["headers"]["sluice.simulator.malformed"].as_str() {
            Some("invalid_json") => assert_eq!(value, expected["value"].as_str().unwrap()),
            Some("missing_field") => {
                assert_eq!(
                    serde_json::from_str::<Value>(value).unwrap(),
                    expected["value"]
                )
            }
            other => panic!("{other:?} dead-lettered: {line}"),
        }
        let ctx: BTreeMap<String, String> = line["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("__connect.errors."))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_source_context(&ctx, line);
    }
    assert_eq!(
        seen,
        truth.keys().copied().collect(),
        "good + dead = produced"
    );
    assert!(dead.len() > 100, "{} dead letters", dead.len());
    let committed = &s.offsets()["sim"];
    assert_eq!(
        committed.values().next().unwrap()["seq"],
        EVENTS - 1,
        "{committed:?}"
    );
}
