//! Throughput of a standalone pipeline (SimulatorSource → embedded bus → FileSink),
//! against a bare loop doing the same useful work in the same run: generate the same
//! events with the simulator task, serialize them as JSON lines, write, fsync once.
//!
//! `cargo bench --bench pipeline` (SLUICE_BENCH_EVENTS=N to change the size).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_api::{ConfigMap, Payload, SourceConnector, SourcePoll, SourceTaskContext};
use sluice_runtime::validation::validate_all;
use sluice_runtime::{ConnectorDefinition, PluginRegistry, RunMode, Worker, WorkerConfig};

// The same allocator as the binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn config(value: Value) -> ConfigMap {
    serde_json::from_value(value).expect("config map")
}

fn simulator_config(events: u64) -> Value {
    json!({"name": "sim", "connector.class": "SimulatorSource", "topic": "t", "seed": 42, "max.events": events})
}

fn registry() -> PluginRegistry {
    let mut r = PluginRegistry::new();
    r.add_source(Arc::new(sluice_simulator::SimulatorPlugin))
        .add_sink(Arc::new(sluice_file::FileSinkPlugin));
    r
}

/// The baseline: the simulator's own task polled in a loop, values written as JSON lines.
async fn bare_loop(events: u64, path: &std::path::Path) -> Duration {
    let started = Instant::now();
    let plugin = sluice_simulator::SimulatorPlugin;
    let mut task = plugin
        .create_task(&config(simulator_config(events)))
        .expect("task");
    task.start(SourceTaskContext {
        connector: "sim".into(),
        task_id: 0,
        offsets: vec![],
    })
    .await
    .expect("start");
    let mut out =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("file"));
    let mut written = 0u64;
    while let SourcePoll::Records(batch) = task.poll().await.expect("poll") {
        for r in batch {
            match r.record.value {
                Some(Payload::Json(v)) => serde_json::to_writer(&mut out, &v).expect("write"),
                Some(Payload::Bytes(b)) => out.write_all(&b).expect("write"),
                None => out.write_all(b"null").expect("write"),
            }
            out.write_all(b"\n").expect("write");
            written += 1;
        }
    }
    let file = out.into_inner().expect("flush");
    file.sync_data().expect("fsync");
    assert_eq!(written, events);
    started.elapsed()
}

async fn sluice_pipeline(events: u64, dir: &std::path::Path) -> Duration {
    let out = dir.join("sluice.jsonl");
    let definitions = vec![
        ConnectorDefinition::parse("bench", &simulator_config(events).to_string()).expect("sim"),
        ConnectorDefinition::parse(
            "bench",
            &json!({"name": "file", "connector.class": "FileSink", "topics": "t", "file": out})
                .to_string(),
        )
        .expect("sink"),
    ];
    let (problems, valid) = validate_all(&definitions, &registry());
    assert!(problems.iter().all(|p| !p.is_error()), "{problems:?}");
    let worker_config = WorkerConfig {
        offset_file: dir.join("offsets.json"),
        ..WorkerConfig::default()
    };
    let started = Instant::now();
    let mut worker = Worker::standalone(worker_config, registry()).expect("worker");
    worker.start(valid);
    let outcome = worker.run(RunMode::Drain, std::future::pending()).await;
    let elapsed = started.elapsed();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    let lines = std::fs::read(&out)
        .expect("output")
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    assert_eq!(lines as u64, events);
    elapsed
}

fn main() {
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds = 5;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut bare = Vec::new();
    let mut piped = Vec::new();
    for _ in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        bare.push(runtime.block_on(bare_loop(events, &dir.path().join("bare.jsonl"))));
        piped.push(runtime.block_on(sluice_pipeline(events, dir.path())));
    }
    bare.sort();
    piped.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let (b, p) = (median(&bare), median(&piped));
    println!("events per run: {events}; median of {rounds} runs [fastest..slowest]");
    let show = |name: &str, m: Duration, all: &[Duration]| {
        println!(
            "{name:<55} {:>7.3}s {:>9.0} events/s  [{:.3}..{:.3}s]",
            m.as_secs_f64(),
            rate(m),
            all[0].as_secs_f64(),
            all[all.len() - 1].as_secs_f64()
        )
    };
    show("bare loop (generate + serialize + write + fsync)", b, &bare);
    show(
        "sluice standalone --drain (same + bus, acks, offsets)",
        p,
        &piped,
    );
    println!(
        "sluice / bare throughput (medians): {:.2}",
        rate(p) / rate(b)
    );
}
