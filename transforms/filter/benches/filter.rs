//! Throughput of `Filter` on one thread, next to the cost of parsing and re-serializing the
//! same JSON (what any transform that touches the bytes pays at least).
//!
//! `cargo bench -p sluice-filter --bench filter`
//! (`SLUICE_BENCH_EVENTS=N` to change the number of records, default 1,000,000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_api::{ConfigMap, Plugin, Record, Transform, TransformPlugin};
use sluice_filter::{Filter, FilterPlugin, OnError};

// The allocator of the `sluice` binary (and of the pipeline benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONDITION: &str = r#"value.event_type == "purchase" && value.price != null"#;

/// A small deterministic generator (xorshift64*), so every run filters the same records.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn uuid(rng: &mut Rng) -> String {
    let a = rng.next();
    let b = rng.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

fn events(n: usize) -> Vec<Record> {
    const TYPES: [&str; 5] = [
        "view",
        "view",
        "add_to_cart",
        "purchase",
        "remove_from_cart",
    ];
    const PRODUCTS: [&str; 4] = ["Laptop_X1", "Phone_Z", "Headphones_Q", "Monitor_27"];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|i| {
            let price = if rng.below(10) == 0 {
                Value::Null
            } else {
                json!((rng.below(100_000) as f64) / 100.0)
            };
            let value = json!({
                "event_id": uuid(&mut rng),
                "user_id": rng.below(10_000),
                "event_type": TYPES[rng.below(TYPES.len() as u64) as usize],
                "product_id": PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize],
                "timestamp": format!("2024-01-01T00:{:02}:{:02}.{:03}Z", (i / 60_000) % 60, (i / 1000) % 60, i % 1000),
                "price": price,
            });
            Record::new("ecommerce", value)
        })
        .collect()
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let records = events(n);
    let bytes: Vec<Vec<u8>> = records
        .iter()
        .map(|r| serde_json::to_vec(r.value_json().unwrap()).unwrap())
        .collect();

    // Baseline: parse and re-serialize every value.
    let start = Instant::now();
    let mut total = 0usize;
    for b in &bytes {
        let v: Value = serde_json::from_slice(b).unwrap();
        total += serde_json::to_vec(&v).unwrap().len();
    }
    let json_time = start.elapsed();
    black_box(total);

    // The condition alone, on borrowed records.
    let filter = Filter::new(CONDITION, OnError::Fail).unwrap();
    let start = Instant::now();
    let mut kept = 0usize;
    for r in &records {
        kept += usize::from(filter.matches(r).unwrap());
    }
    let matches_time = start.elapsed();
    black_box(kept);

    // The same test with `value` also used as a whole (`size(value)`), which makes the
    // filter convert the complete JSON object to a CEL map per record: what the lazy
    // field resolution saves.
    let whole = Filter::new(&format!("size(value) > 0 && {CONDITION}"), OnError::Fail).unwrap();
    let start = Instant::now();
    let mut kept_whole = 0usize;
    for r in &records {
        kept_whole += usize::from(whole.matches(r).unwrap());
    }
    let whole_time = start.elapsed();
    assert_eq!(kept_whole, kept);

    // The transform as the runtime calls it (records moved in, kept ones pushed out),
    // created through the plugin from a string config.
    let config: ConfigMap =
        serde_json::from_value(json!({"condition": CONDITION, "on.error": "fail"})).unwrap();
    assert!(FilterPlugin.validate(&config).is_empty());
    let mut transform: Box<dyn Transform> = FilterPlugin.create(&config).unwrap();
    let mut out = Vec::with_capacity(n);
    let start = Instant::now();
    for r in records {
        transform.apply(r, &mut out).unwrap();
    }
    let apply_time = start.elapsed();
    assert_eq!(out.len(), kept);
    drop(black_box(out));

    println!("Filter benchmark, {n} e-commerce records, one thread");
    println!("condition: {CONDITION}");
    println!("kept: {kept} ({:.1}%)", 100.0 * kept as f64 / n as f64);
    println!(
        "serde_json from_slice + to_vec: {:>8.3} s  {:>12.0} records/s",
        json_time.as_secs_f64(),
        rate(n, json_time)
    );
    println!(
        "Filter::matches (borrowed):     {:>8.3} s  {:>12.0} records/s  ({:.2}x the JSON round trip)",
        matches_time.as_secs_f64(),
        rate(n, matches_time),
        rate(n, matches_time) / rate(n, json_time)
    );
    println!(
        "whole value converted (size()): {:>8.3} s  {:>12.0} records/s  ({:.2}x the JSON round trip)",
        whole_time.as_secs_f64(),
        rate(n, whole_time),
        rate(n, whole_time) / rate(n, json_time)
    );
    println!(
        "Transform::apply (moved):       {:>8.3} s  {:>12.0} records/s  ({:.2}x the JSON round trip)",
        apply_time.as_secs_f64(),
        rate(n, apply_time),
        rate(n, apply_time) / rate(n, json_time)
    );
}
