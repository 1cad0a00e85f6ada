//! The Kafka bus when things fail (issue 5): a worker killed with SIGKILL mid-stream on
//! the source side and on the sink side, one of two sink processes of a group dying, the
//! broker process restarting under a running worker, and `consumer.start.timestamp`.
//! Against tansu (a Kafka-protocol broker, see tests/common/kafka.rs); what is read back is
//! read with the Python confluent-kafka client, a client written elsewhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{Broker, python, topic};
use common::*;
use serde_json::{Value, json};

/// Reads a topic whole from the start (outside any group) and prints one JSON line per
/// record: `[partition, offset, key, task, seq]` (task and seq from the simulator's
/// headers). Stops once `expect` distinct (task, seq) were seen and nothing came for
/// `idle` seconds (or after 10 s of nothing at all).
const READ_TOPIC: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer, TopicPartition
topic, expect, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "sluice-test-reader",
              "enable.auto.commit": False})
deadline = time.time() + 45
while True:
    t = c.list_topics(topic, timeout=10).topics.get(topic)
    if t is not None and t.error is None and t.partitions:
        break
    if time.time() > deadline:
        sys.exit("topic %s not found" % topic)
    time.sleep(0.2)
c.assign([TopicPartition(topic, p, 0) for p in sorted(t.partitions)])
seen, last = set(), time.time()
while time.time() < deadline:
    msgs = c.consume(1000, 0.2)
    for m in msgs:
        if m.error():
            continue
        h = {k: v.decode() for k, v in (m.headers() or [])}
        ts = (int(h["sluice.simulator.task"]), int(h["sluice.simulator.seq"]))
        seen.add(ts)
        print(json.dumps([m.partition(), m.offset(), (m.key() or b"").decode(), ts[0], ts[1]]))
        last = time.time()
    if msgs:
        continue
    if len(seen) >= expect and time.time() - last >= idle:
        break
    if time.time() - last >= 10:
        break
c.close()
"#;

/// Follows the source offsets of connector `argv[2]` in offset topic `argv[1]` (keyed as
/// Kafka Connect's) and prints `{task: seq}` once some task committed a seq of at least
/// `argv[3]` and no offset record came for `argv[4]` seconds.
const SOURCE_OFFSETS: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer, TopicPartition
topic, connector, at_least, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "sluice-test-offsets",
              "enable.auto.commit": False})
deadline = time.time() + 40
while True:
    t = c.list_topics(topic, timeout=10).topics.get(topic)
    if t is not None and t.error is None and t.partitions:
        break
    if time.time() > deadline:
        sys.exit("topic %s not found" % topic)
    time.sleep(0.1)
c.assign([TopicPartition(topic, p, 0) for p in sorted(t.partitions)])
last, t_last = {}, time.time()
while time.time() < deadline:
    for m in c.consume(100, 0.05):
        if m.error() or m.key() is None:
            continue
        name, part = json.loads(m.key())
        if name != connector:
            continue
        last[str(part["task"])] = None if m.value() is None else json.loads(m.value())["seq"]
        t_last = time.time()
    top = max([v for v in last.values() if v is not None], default=-1)
    if top >= at_least and time.time() - t_last >= idle:
        print(json.dumps(last))
        sys.exit(0)
sys.exit("timed out waiting for offsets: %s" % last)
"#;

/// Polls the offsets group `argv[2]` committed on topic `argv[1]` until they add up to at
/// least `argv[3]`, then prints `{partition: offset}` (-1001: none committed).
const GROUP_OFFSETS: &str = r#"
import json, os, sys, time
from confluent_kafka import Consumer, TopicPartition
topic, group, at_least = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": group,
              "enable.auto.commit": False})
parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
deadline = time.time() + 40
while time.time() < deadline:
    got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    offsets = {str(tp.partition): tp.offset for tp in got}
    if sum(max(o, 0) for o in offsets.values()) >= at_least:
        print(json.dumps(offsets))
        sys.exit(0)
    time.sleep(0.05)
sys.exit("timed out waiting for commits: %s" % offsets)
"#;

/// One record of a topic as the Python reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    partition: i64,
    offset: i64,
    key: String,
    task_seq: (u64, u64),
}

/// Runs a Python snippet (see [`python`]) against the broker at `bootstrap`.
fn python_at(bootstrap: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("BOOTSTRAP", bootstrap)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn read_topic(bootstrap: &str, topic: &str, expect: u64) -> Vec<Seen> {
    python_at(bootstrap, READ_TOPIC, &[topic, &expect.to_string(), "1.5"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            Seen {
                partition: v[0].as_i64().unwrap(),
                offset: v[1].as_i64().unwrap(),
                key: v[2].as_str().unwrap().to_string(),
                task_seq: (v[3].as_u64().unwrap(), v[4].as_u64().unwrap()),
            }
        })
        .collect()
}

/// `sluice standalone` with a log file of its own (stderr) in the scratch directory.
fn worker_command(
    s: &Scratch,
    worker: &Path,
    files: &[&Path],
    drain: bool,
    log: &str,
    rust_log: &str,
) -> Command {
    let mut cmd = sluice();
    cmd.env("RUST_LOG", rust_log)
        .args(["standalone", "--progress", "never", "--worker"])
        .arg(worker);
    if drain {
        cmd.arg("--drain");
    }
    cmd.args(files)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(File::create(s.path(log)).unwrap());
    cmd
}

fn spawn(s: &Scratch, worker: &Path, files: &[&Path], drain: bool, log: &str) -> Child {
    worker_command(
        s,
        worker,
        files,
        drain,
        log,
        "info,librdkafka=warn,rdkafka=warn",
    )
    .spawn()
    .expect("spawn sluice")
}

fn log_of(s: &Scratch, log: &str) -> String {
    std::fs::read_to_string(s.path(log)).unwrap_or_default()
}

/// Waits for a worker to exit by itself; kills it and fails after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration, s: &Scratch, log: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "worker did not finish within {timeout:?}; its log:\n{}",
                tail(&log_of(s, log))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Lines of a JSON-lines file that is being written: complete lines only.
fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// Every line of a file that may be being written (or was, by a killed worker); a torn
/// last line is left out.
fn complete_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Kills a worker as a crash would (SIGKILL, no shutdown).
fn kill_9(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

fn simulator_source(topic: &str, events: u64, tasks: u32, rate: u32, partitions: u32) -> Value {
    let mut sim = simulator(topic, events);
    sim["tasks.max"] = json!(tasks.to_string());
    sim["rate"] = json!(rate.to_string());
    sim["topic.creation.default.partitions"] = json!(partitions.to_string());
    sim
}

/// The number logged as `name=<number>` in a log line.
fn field(line: &str, name: &str) -> u64 {
    let at = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len() + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn offset_topic(worker: &Path) -> String {
    let config: Value = serde_json::from_slice(&std::fs::read(worker).unwrap()).unwrap();
    config["offset.storage.topic"].as_str().unwrap().to_string()
}

/// Every (task, seq) of a simulator run of `events` events over `tasks` tasks.
fn all_task_seqs(events: u64, tasks: u64) -> BTreeSet<(u64, u64)> {
    (0..tasks)
        .flat_map(|t| {
            let share = events / tasks + u64::from(t < events % tasks);
            (0..share).map(move |seq| (t, seq))
        })
        .collect()
}

/// Case 1a: the source side: a simulator producing to Kafka is killed with SIGKILL after it
/// committed some source offsets; a restart with `--drain` resumes after them. Every
/// record is in the topic, and the only duplicates are records after the last committed
/// source offset of their task (what the restart sent again).
#[test]
fn source_worker_killed_mid_stream_loses_nothing() {
    const EVENTS: u64 = 30_000;
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let shop = topic("shop");
    // Two tasks at 2,500 events/s each: a full run takes 6 s.
    let source = s.connector("sim", simulator_source(&shop, EVENTS, 2, 2_500, 3));
    let mut first = spawn(&s, &worker, &[&source], false, "first.log");
    // Kill once a committed offset shows the run well under way.
    python(
        &broker,
        SOURCE_OFFSETS,
        &[&offset_topic(&worker), "sim", "4000", "0"],
    );
    kill_9(&mut first);
    let committed: BTreeMap<u64, u64> = {
        let text = python(
            &broker,
            SOURCE_OFFSETS,
            &[&offset_topic(&worker), "sim", "0", "1.5"],
        );
        let map: BTreeMap<String, Value> = serde_json::from_str(text.trim()).unwrap();
        map.into_iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
            .collect()
    };
    let before = read_topic(&broker.bootstrap, &shop, 0).len() as u64;
    assert!(
        before < EVENTS,
        "the first run was killed mid-stream, yet the topic holds {before} records"
    );

    let started = Instant::now();
    let output = worker_command(
        &s,
        &worker,
        &[&source],
        true,
        "second.log",
        "warn,sluice_simulator=debug",
    )
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let rerun = started.elapsed();
    // Each task resumed right after its committed offset, as read back from the topic.
    let resumed: BTreeMap<u64, u64> = stderr(&output)
        .lines()
        .filter(|l| l.contains("simulator task starting"))
        .map(|l| (field(l, "task"), field(l, "next_seq")))
        .collect();
    let expected: BTreeMap<u64, u64> = committed.iter().map(|(t, c)| (*t, c + 1)).collect();
    assert_eq!(
        resumed, expected,
        "where the tasks resumed vs. after the committed source offsets"
    );

    let records = read_topic(&broker.bootstrap, &shop, EVENTS);
    let mut count: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for r in &records {
        *count.entry(r.task_seq).or_default() += 1;
    }
    let missing: Vec<_> = all_task_seqs(EVENTS, 2)
        .into_iter()
        .filter(|ts| !count.contains_key(ts))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        count.len() as u64,
        EVENTS,
        "records the simulator never made"
    );
    let mut duplicates = 0;
    for (&(task, seq), &n) in &count {
        if n > 1 {
            duplicates += n - 1;
            let resumed_after = committed.get(&task).copied();
            assert!(
                resumed_after.is_some_and(|c| seq > c),
                "({task}, {seq}) written {n} times, but it is not after the committed \
                 offset {resumed_after:?}"
            );
        }
    }
    // Per key, records first appear in the order produced (a resend only repeats).
    let mut by_partition: BTreeMap<i64, Vec<&Seen>> = BTreeMap::new();
    for r in &records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for list in by_partition.values_mut() {
        list.sort_by_key(|r| r.offset);
        let mut first_seen = BTreeSet::new();
        let mut last_per_key: BTreeMap<(&str, u64), u64> = BTreeMap::new();
        for r in list.iter() {
            if !first_seen.insert(r.task_seq) {
                continue;
            }
            let (task, seq) = r.task_seq;
            if let Some(prev) = last_per_key.insert((&r.key, task), seq) {
                assert!(prev < seq, "key {}: seq {seq} after {prev}", r.key);
            }
        }
    }
    eprintln!(
        "source kill -9: {before} records before the kill, committed {committed:?}, \
         {duplicates} duplicates after the restart ({} records in the topic), rerun {rerun:?}",
        records.len()
    );
}

/// Case 1b: the sink side: a FileSink consuming a pre-filled topic is killed with SIGKILL after
/// its group committed some offsets; a rerun with `--drain` (same connector name, so the
/// same group, writing another file) starts exactly at the committed offsets. Together
/// the files hold every record; the repeats are only what the first run wrote after its
/// last commit.
#[test]
fn sink_worker_killed_mid_stream_resumes_from_committed_offsets() {
    const EVENTS: u64 = 30_000;
    let broker = Broker::start();
    let s = Scratch::new();
    // Small batches (10 records per put, one write each) slow the sink down.
    let worker = broker.worker(&s, json!({"consumer.max.poll.records": "10"}));
    let shop = topic("shop");
    let source = s.connector("sim", simulator_source(&shop, EVENTS, 1, 0, 3));
    let fill = worker_command(&s, &worker, &[&source], true, "fill.log", "warn")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(fill.status.success(), "{}", stderr(&fill));

    let first_file = s.path("first.jsonl");
    let sink = s.connector("files", file_sink(&shop, &first_file, "envelope"));
    let mut first = spawn(&s, &worker, &[&sink], false, "first.log");
    python(&broker, GROUP_OFFSETS, &[&shop, "connect-files", "3000"]);
    kill_9(&mut first);
    let committed: BTreeMap<i64, i64> = {
        let text = python(&broker, GROUP_OFFSETS, &[&shop, "connect-files", "0"]);
        let map: BTreeMap<String, i64> = serde_json::from_str(text.trim()).unwrap();
        map.into_iter()
            .map(|(k, v)| (k.parse().unwrap(), v))
            .collect()
    };
    let first_lines = complete_lines(&first_file);
    assert!(
        (first_lines.len() as u64) < EVENTS,
        "the first run was killed mid-stream, yet it wrote {} records",
        first_lines.len()
    );

    let second_file = s.path("second.jsonl");
    let sink = s.connector("files", file_sink(&shop, &second_file, "envelope"));
    let started = Instant::now();
    let output = worker_command(&s, &worker, &[&sink], true, "second.log", "warn")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let rerun = started.elapsed();
    let second_lines = read_lines(&second_file);

    // The rerun started exactly at each partition's committed offset.
    let mut first_offset: BTreeMap<i64, i64> = BTreeMap::new();
    for line in &second_lines {
        let (p, o) = (
            line["partition"].as_i64().unwrap(),
            line["offset"].as_i64().unwrap(),
        );
        let e = first_offset.entry(p).or_insert(o);
        *e = (*e).min(o);
    }
    for (p, o) in &first_offset {
        let c = committed.get(p).copied().unwrap_or(-1001);
        let c = if c < 0 { 0 } else { c };
        assert_eq!(
            *o, c,
            "partition {p}: the rerun started at {o}, committed was {c}"
        );
    }
    let first_set: BTreeSet<(u64, u64)> = first_lines.iter().map(task_seq).collect();
    let second_set: BTreeSet<(u64, u64)> = second_lines.iter().map(task_seq).collect();
    assert_eq!(
        first_set.len(),
        first_lines.len(),
        "the first run wrote a record twice"
    );
    assert_eq!(
        second_set.len(),
        second_lines.len(),
        "the rerun wrote a record twice"
    );
    let union: BTreeSet<_> = first_set.union(&second_set).copied().collect();
    let missing = all_task_seqs(EVENTS, 1).difference(&union).count();
    assert_eq!(missing, 0, "records lost");
    let duplicates = first_set.intersection(&second_set).count() as u64;
    let after_commit = first_lines
        .iter()
        .filter(|l| {
            let p = l["partition"].as_i64().unwrap();
            l["offset"].as_i64().unwrap() >= committed.get(&p).copied().unwrap_or(0)
        })
        .count() as u64;
    assert_eq!(
        duplicates, after_commit,
        "the repeats are exactly what the first run wrote after its last commit"
    );
    assert!(
        duplicates < EVENTS / 2,
        "{duplicates} repeats: the rerun started over"
    );
    eprintln!(
        "sink kill -9: first run wrote {}, committed {committed:?}; rerun wrote {} in \
         {rerun:?}, {duplicates} repeats",
        first_lines.len(),
        second_lines.len()
    );
}

/// The partitions of the last "partitions assigned" line of a worker log (INFO).
fn last_assignment(log: &str) -> Option<Vec<String>> {
    let line = log.lines().rfind(|l| l.contains("partitions assigned"))?;
    let list = line.split("partitions=[").nth(1)?.split(']').next()?;
    Some(
        list.split(", ")
            .map(|p| p.trim_matches('"').to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

/// Per key, the records of one file in the order produced, each once.
fn assert_key_order(lines: &[Value], file: &str) {
    let mut seen = BTreeSet::new();
    let mut last_per_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in lines {
        let ts = task_seq(line);
        assert!(seen.insert(ts), "{file}: record {ts:?} written twice");
        let key = line["key"].to_string();
        if let Some(prev) = last_per_key.insert(key.clone(), ts) {
            assert!(
                prev < ts,
                "{file}: key {key}: {ts:?} written after {prev:?}"
            );
        }
    }
}

/// Case 2: Two `sluice standalone` processes run the same sink connector (one consumer group)
/// on a 6-partition topic a third process fills. Once both have partitions, one is
/// killed with SIGKILL: when its session expires its partitions move to the survivor,
/// which resumes them exactly at the dead member's commits. Together the two files hold
/// every record, each file in per-key order.
#[test]
fn a_dead_sink_members_partitions_move_to_the_survivor() {
    const EVENTS: u64 = 22_500;
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let shop = topic("shop");
    // One task at 1,500 events/s: the stream lasts 15 s.
    let source = s.connector("sim", simulator_source(&shop, EVENTS, 1, 1_500, 6));
    let (file_a, file_b) = (s.path("a.jsonl"), s.path("b.jsonl"));
    let sink_a = s.path("files-a.json");
    let sink_b = s.path("files-b.json");
    for (path, file) in [(&sink_a, &file_a), (&sink_b, &file_b)] {
        let config = json!({"name": "files", "config": file_sink(&shop, file, "envelope")});
        std::fs::write(path, config.to_string()).unwrap();
    }
    let mut producer = spawn(&s, &worker, &[&source], true, "source.log");
    let mut a = spawn(&s, &worker, &[&sink_a], false, "a.log");
    let mut b = spawn(&s, &worker, &[&sink_b], false, "b.log");

    wait_until(Duration::from_secs(30), "both members assigned", || {
        let assigned = |log| last_assignment(&log_of(&s, log)).is_some_and(|p| !p.is_empty());
        assigned("a.log") && assigned("b.log") && count_lines(&file_b) >= 100
    });
    let b_partitions = last_assignment(&log_of(&s, "b.log")).unwrap();
    kill_9(&mut b);
    let killed_at = Instant::now();
    let b_lines = complete_lines(&file_b);
    // The dead member's last commits (nobody else may commit its partitions until its
    // session has expired).
    let committed: BTreeMap<i64, i64> = {
        let text = python(&broker, GROUP_OFFSETS, &[&shop, "connect-files", "0"]);
        let map: BTreeMap<String, i64> = serde_json::from_str(text.trim()).unwrap();
        map.into_iter()
            .map(|(k, v)| (k.parse().unwrap(), v.max(0)))
            .collect()
    };

    // The survivor takes over once the dead member's session expired; stop it when the
    // two files together hold the whole stream.
    let all = all_task_seqs(EVENTS, 1);
    let mut missing = all.len();
    let started = Instant::now();
    while missing > 0 {
        if started.elapsed() > Duration::from_secs(45) {
            let _ = a.kill();
            panic!(
                "{missing} records in neither file; survivor's log:\n{}",
                tail(&log_of(&s, "a.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        let a_lines = complete_lines(&file_a);
        let union: BTreeSet<(u64, u64)> = a_lines.iter().chain(&b_lines).map(task_seq).collect();
        missing = all.difference(&union).count();
    }
    let complete_after = killed_at.elapsed();
    Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut a, Duration::from_secs(20), &s, "a.log");
    assert!(status.success(), "{}", tail(&log_of(&s, "a.log")));
    let status = wait_exit(&mut producer, Duration::from_secs(30), &s, "source.log");
    assert!(status.success(), "{}", tail(&log_of(&s, "source.log")));

    let a_lines = read_lines(&file_a);
    assert_key_order(&a_lines, "a.jsonl");
    assert_key_order(&b_lines, "b.jsonl");
    // The survivor ended up with all six partitions, the dead member's included.
    let final_assignment = last_assignment(&log_of(&s, "a.log")).unwrap();
    assert_eq!(final_assignment.len(), 6, "{final_assignment:?}");
    for p in &b_partitions {
        assert!(final_assignment.contains(p), "{p} did not move");
    }
    // The survivor resumed the dead member's partitions exactly at its commits: what it
    // repeated is exactly what the dead member wrote after its last commit.
    let a_set: BTreeSet<_> = a_lines.iter().map(task_seq).collect();
    let repeats = b_lines
        .iter()
        .filter(|l| a_set.contains(&task_seq(l)))
        .count();
    let after_commit = b_lines
        .iter()
        .filter(|l| {
            let p = l["partition"].as_i64().unwrap();
            l["offset"].as_i64().unwrap() >= committed[&p]
        })
        .count();
    assert_eq!(repeats, after_commit, "b's commits were {committed:?}");
    eprintln!(
        "group failover: b had {b_partitions:?} and wrote {} before SIGKILL; a wrote {}, \
         {repeats} of b's records again; complete {complete_after:?} after the kill",
        b_lines.len(),
        a_lines.len()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    wait_until(Duration::from_secs(20), what, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// tansu keeping its data in S3, served by moto (a local S3 stand-in, in this
/// machine's Python packages) that outlives restarts of the broker process. tansu 0.6 as
/// shipped is built without its PostgreSQL and SQLite engines (`--storage-engine
/// postgres://…` fails with `FeatureNotEnabled { feature: "postgres" }`), and its
/// `memory://` engine loses everything on a restart: S3 is the one way it keeps data.
struct S3Tansu {
    broker: Broker,
    moto: Child,
}

impl S3Tansu {
    fn start() -> S3Tansu {
        let s3_port = free_port();
        let moto = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (pip install 'moto[server]')");
        let s3 = format!("http://127.0.0.1:{s3_port}");
        wait_listening(s3_port, "moto_server");
        let created = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request as r; \
                 r.urlopen(r.Request(sys.argv[1] + '/tansu', method='PUT'))",
                &s3,
            ])
            .status()
            .unwrap();
        assert!(created.success(), "creating the bucket");
        let broker = Broker::own(
            "s3://tansu/",
            &[
                ("AWS_ENDPOINT", &s3),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ],
        );
        S3Tansu { broker, moto }
    }
}

impl Drop for S3Tansu {
    fn drop(&mut self) {
        // The broker first: it must not outlive its storage.
        self.broker.kill();
        let _ = self.moto.kill();
        let _ = self.moto.wait();
    }
}

/// Case 3: the broker process is killed and started again (its data kept) while a worker runs
/// simulator → Kafka → FileSink: the worker reconnects by itself, finishes with
/// `--drain`, exits 0, and the file holds every record (per key in the order produced).
///
/// The producer runs without idempotence here (one request in flight keeps the order):
/// tansu 0.6 stores an idempotent batch's sequence number before the batch itself, so a
/// kill between the two makes it answer the producer's retry with DUPLICATE_SEQUENCE_NUMBER
/// (which Kafka clients take as success) for a batch it never stored. Python's
/// confluent-kafka producer loses acknowledged records to the same restart.
#[test]
fn worker_rides_out_a_broker_restart() {
    if std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok() {
        eprintln!("skipped: restarts its own broker");
        return;
    }
    const EVENTS: u64 = 12_000;
    let mut tansu = S3Tansu::start();
    let broker = &mut tansu.broker;
    let s = Scratch::new();
    let worker = broker.worker(
        &s,
        json!({
            "producer.enable.idempotence": "false",
            "producer.max.in.flight.requests.per.connection": "1",
        }),
    );
    let shop = topic("shop");
    // 1,000 events/s: a 12 s stream.
    let source = s.connector("sim", simulator_source(&shop, EVENTS, 1, 1_000, 3));
    let out = s.path("out.jsonl");
    let sink = s.connector("files", file_sink(&shop, &out, "envelope"));
    let mut run = spawn(&s, &worker, &[&source, &sink], true, "worker.log");
    wait_until(Duration::from_secs(30), "the sink writing", || {
        count_lines(&out) >= 2_000
    });
    broker.kill();
    let written_at_kill = count_lines(&out);
    std::thread::sleep(Duration::from_secs(2));
    broker.spawn();
    let restarted = Instant::now();
    let status = wait_exit(&mut run, Duration::from_secs(50), &s, "worker.log");
    assert!(status.success(), "{}", tail(&log_of(&s, "worker.log")));
    let lines = read_lines(&out);
    let mut count: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    for line in &lines {
        *count.entry(task_seq(line)).or_default() += 1;
    }
    let missing = all_task_seqs(EVENTS, 1)
        .into_iter()
        .filter(|ts| !count.contains_key(ts))
        .count();
    assert_eq!(
        missing,
        0,
        "records lost over the broker restart; the worker's log:\n{}",
        tail(&log_of(&s, "worker.log"))
    );
    let mut first_seen = BTreeSet::new();
    let mut last_per_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in &lines {
        let ts = task_seq(line);
        if first_seen.insert(ts) {
            let key = line["key"].to_string();
            if let Some(prev) = last_per_key.insert(key.clone(), ts) {
                assert!(prev < ts, "key {key}: {ts:?} first written after {prev:?}");
            }
        }
    }
    eprintln!(
        "broker restart: {written_at_kill} written when the broker was killed; finished \
         {:?} after the restart, {} duplicates",
        restarted.elapsed(),
        lines.len() - count.len()
    );
}

/// Produces `argv[3]` records to each of the 3 partitions of topic `argv[1]` (created if
/// missing), numbered from `argv[2]`: key `"p<partition>"` (JSON), value `{"i": i}`, and
/// the explicit timestamp `argv[4]` (epoch ms), or the wall clock at the time of producing
/// when that is `now`.
const PRODUCE_TIMESTAMPED: &str = r#"
import json, os, sys, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
topic, first, count, ts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]})
for f in admin.create_topics([NewTopic(topic, 3, 1)]).values():
    try:
        f.result()
    except Exception as e:
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "linger.ms": 20})
for i in range(first, first + count):
    for part in range(3):
        at = int(time.time() * 1000) if ts == "now" else int(ts)
        p.produce(topic, key=json.dumps("p%d" % part), value=json.dumps({"i": i}),
                  partition=part, timestamp=at)
assert p.flush(30) == 0
"#;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (partition, i) of each line of a FileSink envelope file; every timestamp at least `at`.
fn numbered(path: &Path, at: i64) -> BTreeSet<(i64, i64)> {
    read_lines(path)
        .iter()
        .map(|l| {
            let ts = l["timestamp"].as_i64().unwrap();
            assert!(ts >= at, "{}: record before {at}: {l}", path.display());
            (
                l["partition"].as_i64().unwrap(),
                l["value"]["i"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn numbers(range: std::ops::Range<i64>) -> BTreeSet<(i64, i64)> {
    range.flat_map(|i| (0..3).map(move |p| (p, i))).collect()
}

/// Case 4: `consumer.override.start.timestamp` starts a new group's partitions at the first
/// record at or after the time: epoch ms in one connector, RFC 3339 (with a +01:00
/// offset) in another, run side by side. Once the group has committed, the next run
/// resumes at its commits, even for records older than the start time.
///
/// Records carry explicit timestamps equal to the wall clock when produced, with a pause
/// around each start time: tansu (0.6) answers offsets-for-times by when each batch was
/// stored, not by the records' timestamps (and answers a time after every batch with
/// offset 0, not the end), so only such a stream gives the same answer on tansu and on
/// Apache Kafka.
#[test]
fn start_timestamp_sees_exactly_the_records_at_or_after_it() {
    let broker = Broker::start();
    let s = Scratch::new();
    let worker = broker.worker(&s, json!({}));
    let events = topic("events");
    let produce = |first: i64, count: i64, ts: &str| {
        python(
            &broker,
            PRODUCE_TIMESTAMPED,
            &[&events, &first.to_string(), &count.to_string(), ts],
        );
    };
    let pause = || std::thread::sleep(Duration::from_millis(1_200));
    produce(0, 30, "now");
    pause();
    let by_ms_at = now_ms();
    pause();
    produce(30, 30, "now");
    pause();
    let by_rfc_at = now_ms();
    pause();
    produce(60, 30, "now");

    let sink = |name: &str, file: &str, at: &str| {
        let mut config = file_sink(&events, &s.path(file), "envelope");
        config["consumer.override.start.timestamp"] = json!(at);
        s.connector(name, config)
    };
    let rfc = chrono::DateTime::from_timestamp_millis(by_rfc_at)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    assert!(rfc.ends_with("+01:00"), "{rfc}");
    let by_ms = sink("by-ms", "by-ms.jsonl", &by_ms_at.to_string());
    let by_rfc = sink("by-rfc", "by-rfc.jsonl", &rfc);
    let mut run = worker_command(&s, &worker, &[&by_ms, &by_rfc], true, "first.log", "info")
        .spawn()
        .unwrap();
    let status = wait_exit(&mut run, Duration::from_secs(40), &s, "first.log");
    assert!(status.success(), "{}", tail(&log_of(&s, "first.log")));
    assert_eq!(numbered(&s.path("by-ms.jsonl"), by_ms_at), numbers(30..90));
    assert_eq!(
        numbered(&s.path("by-rfc.jsonl"), by_rfc_at),
        numbers(60..90)
    );
    let log = log_of(&s, "first.log");
    assert!(
        log.contains("starting partitions from consumer.start.timestamp"),
        "{}",
        tail(&log)
    );

    // Records stamped an hour before the start time: the group committed every partition,
    // so the rerun resumes at its commits and sees exactly these.
    produce(90, 10, &(by_ms_at - 3_600_000).to_string());
    let by_ms = sink("by-ms", "by-ms-again.jsonl", &by_ms_at.to_string());
    let mut run = worker_command(&s, &worker, &[&by_ms], true, "second.log", "info")
        .spawn()
        .unwrap();
    let status = wait_exit(&mut run, Duration::from_secs(40), &s, "second.log");
    assert!(status.success(), "{}", tail(&log_of(&s, "second.log")));
    assert_eq!(
        numbered(&s.path("by-ms-again.jsonl"), by_ms_at - 3_600_000),
        numbers(90..100)
    );
}
