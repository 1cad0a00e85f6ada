//! kill -9 of the worker in the middle of a PostgreSQL sink run, then a restart: nothing
//! is lost, and upsert (or `exactly.once` insert) leaves no duplicates. A control run
//! (plain insert) shows that the comparison does catch the duplicates an at-least-once
//! replay produces. Checked with psql against the ground truth of the same seeded stream
//! written to a file in a separate run.
//!
//! upsert and the control run on the embedded bus (restarting from the same offset file).
//! `exactly.once` recognises written records by (topic, partition, offset), which needs
//! offsets that survive a restart: its tests run through Kafka (a tansu broker, or
//! `KAFKA_BOOTSTRAP_SERVERS`), and on the embedded bus the sink must refuse it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::kafka::{Broker, python, topic};
use common::*;
use serde_json::{Value, json};

/// Events over both source tasks; at 1,500 events/s per task a full paced run takes 8 s,
/// so a kill after the first rows lands in the middle.
const EVENTS: u64 = 24_000;
const RATE: &str = "1500";

/// A purchase as the table holds it: user_id, product_id, price (`NULL` or two
/// decimals), time (UTC, milliseconds).
type Purchase = (i64, String, String, String);

struct Truth {
    /// event_id → values, for every purchase of the stream.
    purchases: BTreeMap<String, Purchase>,
    /// event_id → (source task, seq), for every purchase.
    position: BTreeMap<String, (u64, u64)>,
}

fn simulator_config(rate: &str) -> Value {
    let mut sim = simulator("shop", EVENTS);
    sim["tasks.max"] = json!("2");
    sim["rate"] = json!(rate);
    sim["topic.creation.default.partitions"] = json!("2");
    sim
}

/// The same seeded stream (same seed, tasks and events; unpaced) into a file.
fn ground_truth() -> Truth {
    let s = Scratch::new();
    s.worker(1_000);
    let source = s.connector("sim", simulator_config("0"));
    let raw = s.connector("raw", file_sink("shop", &s.path("raw.jsonl"), "envelope"));
    let output = s.run(true, &[&source, &raw]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = read_lines(&s.path("raw.jsonl"));
    assert_eq!(lines.len() as u64, EVENTS, "ground truth run");
    let mut truth = Truth {
        purchases: BTreeMap::new(),
        position: BTreeMap::new(),
    };
    for line in &lines {
        let v = &line["value"];
        if v["event_type"] != "purchase" {
            continue;
        }
        let id = v["event_id"].as_str().unwrap().to_string();
        let price = match v["price"].as_f64() {
            Some(p) => format!("{p:.2}"),
            None => "NULL".to_string(),
        };
        let purchase = (
            v["user_id"].as_i64().unwrap(),
            v["product_id"].as_str().unwrap().to_string(),
            price,
            v["timestamp"].as_str().unwrap().to_string(),
        );
        assert!(
            truth.purchases.insert(id.clone(), purchase).is_none(),
            "event ids are unique in the stream"
        );
        truth.position.insert(id, task_seq(line));
    }
    assert!(truth.purchases.len() > 1_000, "enough purchases to matter");
    truth
}

/// The connection URL with an application name, so the test can tell when every
/// connection of a killed worker is gone (and PostgreSQL has finished with them).
fn url_named(app: &str) -> String {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={app}")
}

fn count(sql: &str) -> u64 {
    psql(sql).trim().parse().unwrap()
}

/// Every row of the table, keyed by event_id; the number of rows per event_id too.
fn rows(table: &str) -> (BTreeMap<String, Purchase>, BTreeMap<String, u64>) {
    let mut values = BTreeMap::new();
    let mut copies: BTreeMap<String, u64> = BTreeMap::new();
    let text = psql(&format!(
        "SELECT event_id, user_id, product_id, coalesce(price::text, 'NULL'), \
         to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
         FROM {table}"
    ));
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 5, "row {line}");
        *copies.entry(f[0].to_string()).or_default() += 1;
        values.insert(
            f[0].to_string(),
            (
                f[1].parse().unwrap(),
                f[2].to_string(),
                f[3].to_string(),
                f[4].to_string(),
            ),
        );
    }
    (values, copies)
}

/// Committed source offsets of the simulator: task → seq.
fn committed(s: &Scratch) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    if let Some(parts) = s.offsets().get("sim") {
        for (partition, offset) in parts {
            let partition: Value = serde_json::from_str(partition).unwrap();
            out.insert(
                partition["task"].as_u64().unwrap(),
                offset["seq"].as_u64().unwrap(),
            );
        }
    }
    out
}

/// Kills the worker with SIGKILL once `ready` holds for the committed source offsets
/// (and the table); then waits until PostgreSQL has no connection of it left. Returns the
/// rows at the kill and the offsets it left behind.
fn kill_when(
    s: &Scratch,
    child: &mut Child,
    table: &str,
    app: &str,
    ready: impl Fn(&BTreeMap<u64, u64>) -> bool,
) -> (u64, BTreeMap<u64, u64>) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the worker ended before it was killed: {status:?}");
        }
        let now = committed(s);
        if now.len() == 2 && ready(&now) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no progress to kill in: {} rows, offsets {now:?}",
            count(&format!("SELECT count(*) FROM {table}"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    wait_sessions_gone(app);
    let rows = count(&format!("SELECT count(*) FROM {table}"));
    (rows, committed(s))
}

/// A COMMIT sent just before a kill may still be in PostgreSQL's hands: waits until the
/// killed worker's sessions are gone, so the table can be looked at.
fn wait_sessions_gone(app: &str) {
    let started = Instant::now();
    while count(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
    )) > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "sessions linger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Crash {
    s: Scratch,
    source: PathBuf,
    sink: PathBuf,
    app: String,
}

impl Crash {
    fn new(schema: &Schema, table: &str, flush_ms: u64, extra: Value) -> Crash {
        let s = Scratch::new();
        s.worker(flush_ms);
        let source = s.connector("sim", simulator_config(RATE));
        let app = schema.0.clone();
        let mut sink = json!({
            "connector.class": "PostgresSink",
            "topics": "shop",
            "tasks.max": "2",
            "connection.url": url_named(&app),
            "table.name.format": table,
            "transforms": "purchases",
            "transforms.purchases.type": "Filter",
            "transforms.purchases.condition": r#"value.event_type == "purchase""#,
        });
        for (k, v) in extra.as_object().unwrap() {
            sink[k] = v.clone();
        }
        let sink = s.connector("pg", sink);
        Crash {
            s,
            source,
            sink,
            app,
        }
    }

    fn spawn(&self) -> Child {
        self.s.spawn(&[&self.source, &self.sink])
    }

    /// The rest of the stream, unpaced, to the end (`--drain`).
    fn finish(&self) {
        // Same connector name, seed, tasks and events: the same stream, resumed from the
        // committed offsets; only the pacing differs.
        self.s.connector("sim", simulator_config("0"));
        let output = self.s.run(true, &[&self.source, &self.sink]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
}

/// Runs the pipeline, kills it twice mid-run, finishes it; returns the rows seen at each
/// kill.
fn crash_twice(crash: &Crash, table: &str, total: u64) -> Vec<u64> {
    let mut at_kill = Vec::new();
    let mut offsets = BTreeMap::new();
    let mut min_rows = 300;
    for _ in 0..2 {
        let mut child = KillOnDrop(crash.spawn());
        let (rows, after) = kill_when(&crash.s, &mut child.0, table, &crash.app, |now| {
            *now != offsets && count(&format!("SELECT count(*) FROM {table}")) >= min_rows
        });
        assert!(
            rows < total,
            "killed too late: {rows} of {total} rows already there"
        );
        at_kill.push(rows);
        offsets = after;
        min_rows = rows + 300;
    }
    crash.finish();
    at_kill
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_table_is_truth(table: &str, truth: &Truth) {
    let (values, copies) = rows(table);
    let total = count(&format!("SELECT count(*) FROM {table}"));
    let duplicated: Vec<(&String, &u64)> = copies.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<&String> = truth
        .purchases
        .keys()
        .filter(|id| !values.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty() && duplicated.is_empty(),
        "{} purchases lost (of {}), e.g. {:?}; {} written more than once, e.g. {:?}",
        missing.len(),
        truth.purchases.len(),
        &missing[..missing.len().min(3)],
        duplicated.len(),
        &duplicated[..duplicated.len().min(3)]
    );
    assert_eq!(total, truth.purchases.len() as u64);
    assert_eq!(values, truth.purchases, "row values");
}

#[test]
fn upsert_survives_kill_9_with_every_purchase_once_and_equal() {
    let truth = ground_truth();
    let schema = Schema::new("crash_upsert");
    let table = format!("{}.purchases", schema.0);
    psql(&format!(
        "CREATE TABLE {table} (event_id uuid PRIMARY KEY, user_id int NOT NULL, \
         event_type text NOT NULL, product_id text NOT NULL, price numeric(10,2), \
         \"timestamp\" timestamptz NOT NULL)"
    ));
    let crash = Crash::new(
        &schema,
        &table,
        200,
        json!({"insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "event_id"}),
    );
    let at_kill = crash_twice(&crash, &table, truth.purchases.len() as u64);
    assert!(at_kill[0] >= 300 && at_kill[1] > at_kill[0], "{at_kill:?}");
    assert_table_is_truth(&table, &truth);
}

/// The control: plain insert, no exactly.once. Rows written after the last committed
/// source offset are written again after the restart, so the table has exactly those
/// duplicates: the checks above would catch them.
#[test]
fn plain_insert_after_kill_9_duplicates_exactly_the_rows_past_the_committed_offsets() {
    let truth = ground_truth();
    let schema = Schema::new("crash_dup");
    let table = format!("{}.purchases", schema.0);
    psql(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, event_id uuid NOT NULL, \
         user_id int NOT NULL, event_type text NOT NULL, product_id text NOT NULL, \
         price numeric(10,2), \"timestamp\" timestamptz NOT NULL)"
    ));
    // Source offsets are committed every 2 s: the kill follows the first commit as soon
    // as a row past it is in the table, long before the next commit.
    let crash = Crash::new(&schema, &table, 2_000, json!({"insert.mode": "insert"}));
    let past = |offsets: &BTreeMap<u64, u64>, ids: &mut dyn Iterator<Item = &String>| {
        ids.filter(|id| {
            let (task, seq) = truth.position[*id];
            offsets.get(&task).is_none_or(|done| seq > *done)
        })
        .cloned()
        .collect::<BTreeSet<String>>()
    };
    let mut child = KillOnDrop(crash.spawn());
    let (rows_at_kill, offsets) = kill_when(&crash.s, &mut child.0, &table, &crash.app, |now| {
        let (landed, _) = rows(&table);
        !past(now, &mut landed.keys()).is_empty()
    });
    assert!(
        (rows_at_kill as usize) < truth.purchases.len(),
        "killed too late"
    );
    // Which rows are past the committed offsets: those come again.
    let (before, copies) = rows(&table);
    assert!(copies.values().all(|n| *n == 1));
    let replayed = past(&offsets, &mut before.keys());
    assert!(
        !replayed.is_empty(),
        "no row past the committed offsets at the kill ({rows_at_kill} rows, {offsets:?}): \
         the control shows nothing"
    );
    crash.finish();
    let (values, copies) = rows(&table);
    assert_eq!(
        values, truth.purchases,
        "every purchase is there, values equal"
    );
    let duplicated: BTreeSet<String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(copies.values().all(|n| *n <= 2));
    assert_eq!(
        duplicated, replayed,
        "exactly the replayed rows are duplicated"
    );
    assert_eq!(
        count(&format!("SELECT count(*) FROM {table}")),
        truth.purchases.len() as u64 + replayed.len() as u64
    );
}

// exactly.once: through Kafka, whose offsets survive restarts.

/// Reads a topic whole from offset 0 (outside any group) to the end of every partition
/// and prints one JSON line per record: `[partition, offset, event_id, event_type]`. The
/// end is librdkafka's partition EOF (the fetch's high watermark): tansu answers
/// ListOffsets(latest) with the last batch's base offset + 1, short of the end.
const READ_TOPIC: &str = r#"
import json, os, sys
from confluent_kafka import Consumer, KafkaError, TopicPartition
topic = sys.argv[1]
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "sluice-test-reader",
              "enable.auto.commit": False, "enable.partition.eof": True})
parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
ended = set()
while len(ended) < len(parts):
    m = c.poll(10)
    if m is None:
        sys.exit("nothing from %s for 10 s; partitions at their end: %s" % (topic, sorted(ended)))
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            ended.add(m.partition())
            continue
        sys.exit(str(m.error()))
    v = json.loads(m.value())
    if isinstance(v, dict) and "schema" in v and "payload" in v:
        v = v["payload"]
    print(json.dumps([m.partition(), m.offset(), v["event_id"], v["event_type"]]))
c.close()
"#;

/// The offsets group `argv[1]` committed on topic `argv[2]`, as `{"partition": offset}`
/// (-1001 where it committed nothing). Reads them without joining the group.
const GROUP_OFFSETS: &str = r#"
import json, os, sys
from confluent_kafka import Consumer, TopicPartition
group, topic = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": group,
              "enable.auto.commit": False})
parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
print(json.dumps({str(tp.partition): tp.offset for tp in got}))
c.close()
"#;

/// A record of a topic as the Python reader saw it: partition, offset, event_id,
/// event_type.
type InTopic = (i64, i64, String, String);

fn read_topic(broker: &Broker, topic: &str) -> Vec<InTopic> {
    python(broker, READ_TOPIC, &[topic])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Per partition, the offset of its last record (of those `keep` selects).
fn last_offsets(records: &[InTopic], keep: impl Fn(&InTopic) -> bool) -> BTreeMap<i64, i64> {
    let mut last = BTreeMap::new();
    for r in records.iter().filter(|r| keep(r)) {
        let at = last.entry(r.0).or_insert(r.1);
        *at = (*at).max(r.1);
    }
    last
}

/// Where consumer group `group` resumes each partition of `topic`: its committed offset,
/// or 0 (the earliest: the broker deletes nothing) where it committed nothing.
fn resume_at(broker: &Broker, group: &str, topic: &str) -> BTreeMap<i64, i64> {
    let text = python(broker, GROUP_OFFSETS, &[group, topic]);
    let offsets: BTreeMap<String, i64> = serde_json::from_str(text.trim()).unwrap();
    offsets
        .into_iter()
        .map(|(p, o)| (p.parse().unwrap(), o.max(0)))
        .collect()
}

/// The exactly.once table's rows of connector `pg` on `topic`: partition → offset.
fn stored_offsets(offsets_table: &str, topic: &str) -> BTreeMap<i64, i64> {
    psql(&format!(
        "SELECT \"partition\", \"offset\" FROM {offsets_table} \
         WHERE connector = 'pg' AND topic = '{topic}'"
    ))
    .lines()
    .map(|l| {
        let (p, o) = l.split_once('|').unwrap();
        (p.parse().unwrap(), o.parse().unwrap())
    })
    .collect()
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Once the sink wrote `min_rows` rows, freezes the worker (SIGSTOP) and, after commits
/// already sent had time to land, reads the group's committed offsets and the
/// exactly.once table. If some partition's committed offset is at or below the stored
/// one, a restart re-reads a record the table has: the worker is killed (SIGKILL) right
/// there. Otherwise (the commit to Kafka had just caught up) it goes on (SIGCONT) and
/// the check is repeated. Returns where the group resumes.
fn kill_when_kafka_lags(
    broker: &Broker,
    group: &str,
    child: &mut Child,
    table: &str,
    offsets_table: &str,
    topic: &str,
    min_rows: u64,
) -> BTreeMap<i64, i64> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
            }
            panic!("the worker ended before it was killed: {status:?}\n{err}");
        }
        let rows = count(&format!("SELECT count(*) FROM {table}"));
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no progress to kill in: {rows} rows"
        );
        if rows >= min_rows {
            signal(child, "STOP");
            std::thread::sleep(Duration::from_millis(300));
            let resume = resume_at(broker, group, topic);
            let stored = stored_offsets(offsets_table, topic);
            if stored
                .iter()
                .any(|(p, o)| resume.get(p).is_none_or(|r| r <= o))
            {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                return resume_at(broker, group, topic);
            }
            signal(child, "CONT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A full Kafka topic of the seeded stream, read by a sink-only worker (Kafka → Filter
/// purchases → `exactly.once` insert into a table without a unique key) that is killed
/// with SIGKILL twice mid-way, then run to the end (`--drain`). At each kill the group's
/// committed offsets lag the exactly.once table (the worker commits them to Kafka every
/// 500 ms, after the rows' transactions; the kill is timed so), so each restart re-reads
/// purchases the table already has: only the skip keeps them from being written twice.
#[test]
fn exactly_once_insert_through_kafka_survives_kill_9_without_duplicates_or_loss() {
    let truth = ground_truth();
    let broker = Broker::start();
    let schema = Schema::new("crash_eos");
    let table = format!("{}.purchases", schema.0);
    let offsets_table = format!("{}.sink_offsets", schema.0);
    // No unique constraint on event_id: only exactly.once keeps replays out.
    psql(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, event_id uuid NOT NULL, \
         user_id int NOT NULL, event_type text NOT NULL, product_id text NOT NULL, \
         price numeric(10,2), \"timestamp\" timestamptz NOT NULL)"
    ));
    let s = Scratch::new();
    // 20 records a poll, one transaction each: a few hundred rows a second, so the kills
    // land mid-way. A 3 s session: a killed member leaves the group (and its restart gets
    // the partitions) that much sooner.
    broker.worker(
        &s,
        json!({"consumer.max.poll.records": "20", "consumer.session.timeout.ms": "3000"}),
    );
    let shop = topic("shop");

    // The stream into Kafka: two partitions, no sink.
    let mut sim = simulator_config("0");
    sim["topic"] = json!(shop);
    let source = s.connector("sim", sim);
    let output = s.run(true, &[&source]);
    assert!(output.status.success(), "{}", stderr(&output));
    let records = read_topic(&broker, &shop);
    assert_eq!(records.len() as u64, EVENTS, "records in the topic");
    let end: BTreeMap<i64, i64> = last_offsets(&records, |_| true)
        .into_iter()
        .map(|(p, o)| (p, o + 1))
        .collect();
    assert_eq!(end.len(), 2, "partitions: {end:?}");
    assert_eq!(end.values().sum::<i64>() as u64, EVENTS, "dense offsets");
    // event_id → (partition, offset) of every purchase: the topic holds the ground truth's.
    let at: BTreeMap<String, (i64, i64)> = records
        .iter()
        .filter(|r| r.3 == "purchase")
        .map(|r| (r.2.clone(), (r.0, r.1)))
        .collect();
    assert!(
        at.keys().eq(truth.purchases.keys()),
        "the topic's purchases are the ground truth's"
    );

    let app = schema.0.clone();
    // A group of this test's own (not `connect-pg`): tests sharing an external broker must
    // not rebalance one another.
    let group = format!("connect-{shop}");
    let sink = s.connector(
        "pg",
        json!({
            "connector.class": "PostgresSink",
            "topics": shop,
            // One sink task (reading both partitions), as the embedded-bus version had.
            "tasks.max": "1",
            "connection.url": url_named(&app),
            "table.name.format": table,
            "transforms": "purchases",
            "transforms.purchases.type": "Filter",
            "transforms.purchases.condition": r#"value.event_type == "purchase""#,
            "insert.mode": "insert",
            "exactly.once": "true",
            "exactly.once.table": offsets_table,
            "consumer.override.group.id": group,
        }),
    );
    let total = truth.purchases.len() as u64;
    let mut min_rows = 300;
    let mut at_kill = Vec::new();
    for kill in 1..=2 {
        let mut child = KillOnDrop(s.spawn(&[&sink]));
        let resume = kill_when_kafka_lags(
            &broker,
            &group,
            &mut child.0,
            &table,
            &offsets_table,
            &shop,
            min_rows,
        );
        wait_sessions_gone(&app);
        let (written, copies) = rows(&table);
        let rows_now = written.len() as u64;
        let twice = copies.values().filter(|n| **n > 1).count();
        assert_eq!(twice, 0, "kill {kill}: purchases written more than once");
        assert!(
            rows_now >= min_rows && rows_now < total,
            "kill {kill} mid-way: {rows_now} of {total} rows"
        );
        // The exactly.once offsets moved with the rows, in the same transactions.
        let mut highest = BTreeMap::new();
        for id in written.keys() {
            let (p, o) = at[id];
            let h = highest.entry(p).or_insert(o);
            *h = (*h).max(o);
        }
        assert_eq!(
            stored_offsets(&offsets_table, &shop),
            highest,
            "kill {kill}: the stored offsets are those of the rows written"
        );
        // What the restart re-reads although the table has it.
        let again = written
            .keys()
            .filter(|id| {
                let (p, o) = at[*id];
                o >= resume[&p]
            })
            .count();
        assert!(
            again > 0,
            "kill {kill}: the group resumes at {resume:?}, past every row written: \
             the restart would not test the skip"
        );
        at_kill.push((rows_now, again));
        min_rows = rows_now + 300;
    }
    eprintln!("(rows at the kill, of them re-read by the restart): {at_kill:?}");

    let output = s.run(true, &[&sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_table_is_truth(&table, &truth);
    assert_eq!(
        count(&format!("SELECT count(*) FROM {table}")),
        count(&format!("SELECT count(DISTINCT event_id) FROM {table}")),
        "count(*) = count(distinct event_id)"
    );
    // One row per partition of the connector, at the partition's last purchase (nothing
    // after it passes the filter); the group committed the end of the topic.
    assert_eq!(
        count(&format!("SELECT count(*) FROM {offsets_table}")),
        2,
        "{}",
        psql(&format!("SELECT * FROM {offsets_table}"))
    );
    assert_eq!(
        stored_offsets(&offsets_table, &shop),
        last_offsets(&records, |r| r.3 == "purchase")
    );
    assert_eq!(resume_at(&broker, &group, &shop), end, "committed offsets");
}

/// The plainest case, without any crash: between two sink runs the topic gets 1,000 more
/// events (the source resumes after its offsets in Kafka's offset topic); the second run
/// must write exactly those. (On the embedded bus, where offsets start over, exactly.once
/// took them for the first run's records.)
#[test]
fn exactly_once_insert_through_kafka_writes_the_new_records_of_a_second_run() {
    let broker = Broker::start();
    let schema = Schema::new("eos_rerun");
    let table = format!("{}.events", schema.0);
    let offsets_table = format!("{}.sink_offsets", schema.0);
    psql(&format!(
        "CREATE TABLE {table} (event_id uuid NOT NULL, user_id int NOT NULL)"
    ));
    let s = Scratch::new();
    broker.worker(&s, json!({}));
    let shop = topic("shop");
    let sink = s.connector(
        "pg",
        json!({
            "connector.class": "PostgresSink",
            "topics": shop,
            "connection.url": database_url(),
            "table.name.format": table,
            "exactly.once": "true",
            "exactly.once.table": offsets_table,
            // Not `connect-pg`: tests sharing an external broker must not share a group.
            "consumer.override.group.id": format!("connect-{shop}"),
        }),
    );
    for events in [1_000u64, 2_000] {
        let mut sim = simulator(&shop, events);
        sim["topic.creation.default.partitions"] = json!("2");
        let source = s.connector("sim", sim);
        let output = s.run(true, &[&source]);
        assert!(output.status.success(), "{}", stderr(&output));
        let records = read_topic(&broker, &shop);
        assert_eq!(records.len() as u64, events, "records in the topic");

        let output = s.run(true, &[&sink]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            psql(&format!(
                "SELECT count(*), count(DISTINCT event_id) FROM {table}"
            ))
            .trim(),
            format!("{events}|{events}"),
            "rows after the sink run over {events} events"
        );
        let in_table: BTreeSet<String> = psql(&format!("SELECT event_id FROM {table}"))
            .lines()
            .map(str::to_string)
            .collect();
        let in_topic: BTreeSet<String> = records.iter().map(|r| r.2.clone()).collect();
        assert!(in_table == in_topic, "the table holds the topic's events");
        assert_eq!(
            stored_offsets(&offsets_table, &shop),
            last_offsets(&records, |_| true),
            "stored offsets after {events} events"
        );
    }
}

/// On the embedded bus (no `bootstrap.servers`) offsets start over in every process, so
/// exactly.once would take new records for written ones: the sink refuses to start, the
/// run fails (exit 3) saying why, and nothing is written, nor acknowledged to the source.
#[test]
fn exactly_once_on_the_embedded_bus_is_refused() {
    let schema = Schema::new("eos_embedded");
    let table = format!("{}.events", schema.0);
    let offsets_table = format!("{}.sink_offsets", schema.0);
    psql(&format!(
        "CREATE TABLE {table} (event_id uuid NOT NULL, user_id int NOT NULL)"
    ));
    let s = Scratch::new();
    // A source that sent records waits this long for them to become durable (they never
    // do) before it stops without committing them.
    s.write(
        "worker.json",
        &json!({
            "offset.storage.file.filename": s.path("offsets.json"),
            "offset.flush.interval.ms": 200,
            "task.shutdown.graceful.timeout.ms": 1_000,
        })
        .to_string(),
    );
    let source = s.connector("sim", simulator("shop", 1_000));
    let sink = s.connector(
        "pg",
        json!({
            "connector.class": "PostgresSink",
            "topics": "shop",
            "connection.url": database_url(),
            "table.name.format": table,
            "exactly.once": "true",
            "exactly.once.table": offsets_table,
        }),
    );
    let output = s.run(true, &[&source, &sink]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(
        err.contains("exactly.once needs a bus whose offsets survive restarts"),
        "{err}"
    );
    assert!(
        err.contains("Kafka") && err.contains("bootstrap.servers"),
        "{err}"
    );
    assert_eq!(count(&format!("SELECT count(*) FROM {table}")), 0);
    assert_eq!(
        psql(&format!("SELECT to_regclass('{offsets_table}') IS NULL")).trim(),
        "t",
        "no offsets table"
    );
    assert!(
        committed(&s).is_empty(),
        "source offsets committed for records no sink wrote: {:?}",
        committed(&s)
    );
}
