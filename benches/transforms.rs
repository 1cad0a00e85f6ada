//! Per-core throughput of transforms on e-commerce events, next to the cost of only
//! parsing and re-serializing the same JSON, in the same run.
//!
//! `cargo bench --bench transforms` (SLUICE_BENCH_EVENTS=N to change the size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_api::{ConfigMap, Payload, Record, SourceConnector, SourcePoll, SourceTaskContext};
use sluice_runtime::PluginRegistry;
use sluice_runtime::chain::TransformChain;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn registry() -> PluginRegistry {
    let mut r = PluginRegistry::new();
    r.add_transform(Arc::new(sluice_filter::FilterPlugin));
    r.add_transform(Arc::new(sluice_aggregate::AggregatePlugin));
    for t in sluice_smt::transforms() {
        r.add_transform(t);
    }
    for p in sluice_smt::predicates() {
        r.add_predicate(p);
    }
    r
}

fn events(n: u64) -> Vec<Record> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config: ConfigMap =
            serde_json::from_value(json!({"topic": "events", "max.events": n, "seed": 42}))
                .expect("config");
        let mut task = sluice_simulator::SimulatorPlugin
            .create_task(&config)
            .expect("task");
        task.start(SourceTaskContext {
            connector: "bench".into(),
            task_id: 0,
            offsets: vec![],
        })
        .await
        .expect("start");
        let mut out = Vec::with_capacity(n as usize);
        while let SourcePoll::Records(batch) = task.poll().await.expect("poll") {
            out.extend(batch.into_iter().map(|r| r.record));
        }
        out
    })
}

fn chain(pairs: &[(&str, &str)]) -> TransformChain {
    let config: ConfigMap = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    TransformChain::build(&config, &registry()).expect("chain")
}

/// Applies the chain to every record once (records cloned beforehand, outside the timing).
fn time_chain(chain: &mut TransformChain, records: &[Record]) -> (Duration, usize) {
    let input: Vec<Record> = records.to_vec();
    let mut out = Vec::with_capacity(1024);
    let mut kept = 0;
    let started = Instant::now();
    for record in input {
        chain.apply(record, &mut out).expect("apply");
        kept += out.len();
        out.clear();
    }
    chain.flush(&mut out).expect("flush");
    kept += out.len();
    (started.elapsed(), kept)
}

fn main() {
    let n: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let records = events(n);
    let bytes: Vec<Vec<u8>> = records
        .iter()
        .map(|r| match &r.value {
            Some(Payload::Json(v)) => serde_json::to_vec(v).expect("serialize"),
            _ => Vec::new(),
        })
        .collect();

    let started = Instant::now();
    let mut total = 0usize;
    for b in &bytes {
        let v: Value = serde_json::from_slice(b).expect("parse");
        total += serde_json::to_vec(&v).expect("serialize").len();
    }
    let baseline = started.elapsed();
    assert!(total > 0);

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{n} e-commerce events, one thread");
    println!(
        "{:<44} {:>9.0} records/s  (1.00x the cost)",
        "baseline: parse + re-serialize the JSON",
        rate(baseline)
    );
    let cases: Vec<(&str, TransformChain)> = vec![
        (
            "Filter (CEL condition)",
            chain(&[
                ("transforms", "f"),
                ("transforms.f.type", "Filter"),
                (
                    "transforms.f.condition",
                    r#"value.event_type == "purchase" && value.price != null"#,
                ),
            ]),
        ),
        (
            "Aggregate (views per product per minute)",
            chain(&[
                ("transforms", "a"),
                ("transforms.a.type", "Aggregate"),
                ("transforms.a.group.by", "product_id"),
                ("transforms.a.window", "tumbling:1m"),
                ("transforms.a.timestamp.field", "timestamp"),
                ("transforms.a.aggregates", "views"),
                ("transforms.a.aggregates.views.function", "count_where"),
                (
                    "transforms.a.aggregates.views.where",
                    r#"value.event_type == "view""#,
                ),
            ]),
        ),
        (
            "3 SMTs (ReplaceField, InsertField, Cast)",
            chain(&[
                ("transforms", "drop,tag,cast"),
                (
                    "transforms.drop.type",
                    "org.apache.kafka.connect.transforms.ReplaceField$Value",
                ),
                ("transforms.drop.exclude", "event_id"),
                (
                    "transforms.tag.type",
                    "org.apache.kafka.connect.transforms.InsertField$Value",
                ),
                ("transforms.tag.static.field", "source"),
                ("transforms.tag.static.value", "simulator"),
                (
                    "transforms.cast.type",
                    "org.apache.kafka.connect.transforms.Cast$Value",
                ),
                ("transforms.cast.spec", "user_id:string"),
            ]),
        ),
    ];
    for (name, mut chain) in cases {
        let (elapsed, kept) = time_chain(&mut chain, &records);
        println!(
            "{name:<44} {:>9.0} records/s  ({:.2}x the cost; {kept} records out)",
            rate(elapsed),
            elapsed.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
