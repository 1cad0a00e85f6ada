//! PostgresSink against PostgreSQL's own ceiling, on the same rows, in the same run.
//!
//! ```text
//! cargo bench --bench postgres      # DATABASE_URL, SLUICE_BENCH_ROWS, SLUICE_BENCH_ROUNDS
//! ```
//!
//! The rows: the priced purchases of the simulator's seeded `ecommerce` scenario
//! (`event.types=purchase`, so no views and carts are generated only to be dropped),
//! 1,000,000 by default, into a table with `event_id uuid PRIMARY KEY`. Each round times,
//! each into a fresh empty table after a `CHECKPOINT`:
//!
//! * `COPY … FROM STDIN` by `psql -c "\copy …"` from a file of the rows (text format);
//! * `sluice standalone --drain` (the release binary `cargo bench` builds):
//!   SimulatorSource → Filter (`value.event_type == "purchase" && value.price != null`) →
//!   PostgresSink, `insert`, two tasks each side of a two-partition topic, 10,000-record
//!   puts (`consumer.max.poll.records`, `batch.size`);
//! * one `INSERT … SELECT FROM unnest($1, …, $6) ON CONFLICT (event_id) DO UPDATE` of all
//!   rows from tokio-postgres (typed arrays; the price as `text[]`, cast to numeric);
//! * the same sluice pipeline with `insert.mode=upsert` on `event_id`.
//!
//! After every run the table is checked (row count, distinct ids, sums) against the rows.
//! The schema is dropped at the end.
//!
//! Besides wall time, each run reports CPU seconds from `/proc` (Linux): the client (psql,
//! sluice, or this process for the unnest statement), PostgreSQL's processes (when the
//! server runs on this machine) and everything else on the machine, whose share shows
//! when other work disturbed a run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_api::{ConfigMap, Payload, SourceConnector, SourcePoll, SourceTaskContext};

const FILTER: &str = r#"value.event_type == "purchase" && value.price != null"#;
const COLUMNS: &str = "event_id, user_id, event_type, product_id, \"timestamp\", price";
/// Tasks of the source and of the sink, and partitions of the topic between them.
const TASKS: u32 = 2;
/// Records per sink `put`, one transaction each (the worker's default of 500 spends more
/// on transactions than on rows), written by one statement (`batch.size`).
const POLL_RECORDS: u32 = 10_000;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// One purchase as generated (the JSON texts of its fields).
struct Purchase {
    event_id: String,
    user_id: i64,
    event_type: String,
    product_id: String,
    timestamp: String,
    /// The JSON number's text, as PostgreSQL's numeric input reads it.
    price: String,
}

fn simulator_config(max_events: u64) -> Value {
    json!({
        "connector.class": "SimulatorSource",
        "topic": "purchases",
        "seed": 42,
        "event.types": "purchase",
        "max.events": max_events,
        "tasks.max": TASKS,
    })
}

fn purchase(value: &Value) -> Option<Purchase> {
    if value["event_type"] != "purchase" || value["price"].is_null() {
        return None;
    }
    let text = |field: &str| value[field].as_str().map(str::to_string);
    Some(Purchase {
        event_id: text("event_id")?,
        user_id: value["user_id"].as_i64()?,
        event_type: text("event_type")?,
        product_id: text("product_id")?,
        timestamp: text("timestamp")?,
        price: value["price"].to_string(),
    })
}

/// The rows the pipeline writes when the simulator sends `max.events` = the returned
/// number: exactly `wanted` purchases with a price.
///
/// Task i of N sends `max.events / N` events (plus one if i < `max.events % N`), each task
/// its own sequence, so both tasks' streams are generated far enough and the smallest
/// `max.events` whose shares hold `wanted` priced purchases is found by walking it up.
async fn generate(wanted: u64) -> (u64, Vec<Purchase>) {
    let per_task = wanted * 3 / (2 * u64::from(TASKS)) + 10_000;
    let config: ConfigMap =
        serde_json::from_value(simulator_config(per_task * u64::from(TASKS))).expect("config");
    let plugin = sluice_simulator::SimulatorPlugin;
    let task_configs = plugin.task_configs(&config, TASKS).expect("task configs");
    // Per task: the events' purchases (None for those the filter drops), in order.
    let mut streams: Vec<Vec<Option<Purchase>>> = Vec::new();
    for (id, task_config) in task_configs.iter().enumerate() {
        let mut task = plugin.create_task(task_config).expect("task");
        task.start(SourceTaskContext {
            connector: "sim".into(),
            task_id: id as u32,
            offsets: vec![],
        })
        .await
        .expect("start");
        let mut events = Vec::new();
        while let SourcePoll::Records(batch) = task.poll().await.expect("poll") {
            for r in batch {
                events.push(match &r.record.value {
                    Some(Payload::Json(v)) => purchase(v),
                    _ => None,
                });
            }
        }
        streams.push(events);
    }
    let tasks = streams.len() as u64;
    let mut taken = vec![0usize; streams.len()];
    let mut found = 0;
    let mut max_events = 0;
    while found < wanted {
        // Event number max_events goes to task max_events % N.
        let t = (max_events % tasks) as usize;
        let event = streams[t]
            .get(taken[t])
            .expect("generate more events per task");
        taken[t] += 1;
        max_events += 1;
        if event.is_some() {
            found += 1;
        }
    }
    let rows = streams
        .into_iter()
        .zip(taken)
        .flat_map(|(events, n)| events.into_iter().take(n).flatten())
        .collect();
    (max_events, rows)
}

fn psql(sql: &str) -> String {
    let output = Command::new("psql")
        .arg(database_url())
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Drops the schema however the benchmark ends.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(database_url())
            .args([
                "-X",
                "-q",
                "-c",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ])
            .output();
    }
}

/// A fresh empty table (the previous one dropped), and a checkpoint so that no run pays
/// for the previous run's dirty pages.
fn fresh_table(table: &str) {
    psql(&format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (event_id uuid PRIMARY KEY, user_id integer NOT NULL, \
         event_type text NOT NULL, product_id text NOT NULL, \"timestamp\" timestamptz NOT NULL, \
         price numeric(10,2)); CHECKPOINT"
    ));
}

/// What a table holds, to compare with the rows: count, distinct ids, sums, time range.
fn summary(table: &str) -> String {
    psql(&format!(
        "SELECT count(*), count(DISTINCT event_id), sum(user_id), sum(price), \
         min(\"timestamp\"), max(\"timestamp\"), count(DISTINCT product_id) FROM {table}"
    ))
}

fn copy_file(rows: &[Purchase], path: &Path) {
    let mut text = String::with_capacity(rows.len() * 100);
    for r in rows {
        // Simulator values hold no tab, newline or backslash: no COPY escaping needed.
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}",
            r.event_id, r.user_id, r.event_type, r.product_id, r.timestamp, r.price
        );
    }
    std::fs::write(path, text).expect("write the COPY file");
}

/// CPU seconds, from `/proc` (zeros where there is none).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// This process and its waited-for children (psql, sluice).
    client: f64,
    /// Every `postgres` process (exited backends count in the postmaster's children).
    server: f64,
    /// Everything on the machine.
    machine: f64,
}

/// Clock ticks per second of `/proc`'s CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// utime + stime + cutime + cstime of a `/proc/<pid>/stat`, in seconds.
fn process_cpu(stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name may hold spaces: the fields that follow start after its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) fields 14-17; `rest` starts at field 3.
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Some(ticks / TICKS)
}

impl Cpu {
    fn now() -> Cpu {
        let server = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "postgres")
                    })
                    .filter_map(|e| process_cpu(&e.path().join("stat")))
                    .sum()
            })
            .unwrap_or(0.0);
        // /proc/stat: "cpu user nice system idle iowait irq softirq steal ...".
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let v: Vec<f64> = s
                    .lines()
                    .next()?
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
                Some(busy / TICKS)
            })
            .unwrap_or(0.0);
        Cpu {
            client: process_cpu(Path::new("/proc/self/stat")).unwrap_or(0.0),
            server,
            machine,
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            client: self.client - before.client,
            server: self.server - before.server,
            machine: self.machine - before.machine,
        }
    }
}

/// One timed run: wall time and the CPU it took.
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    cpu: Cpu,
}

/// Times `work`; CPU is read a moment after, once the server has reaped the run's
/// backends (their time then counts in the postmaster's children).
fn measure(work: impl FnOnce()) -> Run {
    let before = Cpu::now();
    let started = Instant::now();
    work();
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    Run {
        elapsed,
        cpu: Cpu::now().since(before),
    }
}

fn run_copy(table: &str, path: &Path) -> Run {
    measure(|| {
        psql(&format!(
            "\\copy {table} ({COLUMNS}) FROM '{}'",
            path.display()
        ));
    })
}

fn run_sluice(dir: &Path, table: &str, max_events: u64, upsert: bool) -> Run {
    let mut source = simulator_config(max_events);
    source["name"] = json!("sim");
    source["transforms"] = json!("purchases");
    source["transforms.purchases.type"] = json!("Filter");
    source["transforms.purchases.condition"] = json!(FILTER);
    let mut sink = json!({
        "name": "pg",
        "connector.class": "PostgresSink",
        "topics": "purchases",
        "tasks.max": TASKS,
        "connection.url": database_url(),
        "table.name.format": table,
        "batch.size": POLL_RECORDS,
    });
    if upsert {
        sink["insert.mode"] = json!("upsert");
        sink["pk.mode"] = json!("record_value");
        sink["pk.fields"] = json!("event_id");
    }
    let offsets = dir.join("offsets.json");
    let _ = std::fs::remove_file(&offsets);
    let worker = json!({
        "offset.storage.file.filename": offsets,
        "embedded.default.partitions": TASKS,
        "consumer.max.poll.records": POLL_RECORDS,
    });
    let files: Vec<PathBuf> = [("sim", source), ("pg", sink), ("worker", worker)]
        .into_iter()
        .map(|(name, config)| {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, config.to_string()).expect("write config");
            path
        })
        .collect();
    measure(|| {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env("RUST_LOG", "warn")
            .arg("standalone")
            .arg("--drain")
            .arg("--worker")
            .arg(&files[2])
            .arg(&files[0])
            .arg(&files[1])
            .output()
            .expect("run sluice");
        assert!(
            output.status.success(),
            "sluice failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    })
}

async fn run_unnest_upsert(table: &str, rows: &[Purchase]) -> Run {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let sql = format!(
        "INSERT INTO {table} ({COLUMNS}) \
         SELECT u.event_id, u.user_id, u.event_type, u.product_id, u.ts, u.price::numeric \
         FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::timestamptz[], \
         $6::text[]) AS u(event_id, user_id, event_type, product_id, ts, price) \
         ON CONFLICT (event_id) DO UPDATE SET user_id = EXCLUDED.user_id, \
         event_type = EXCLUDED.event_type, product_id = EXCLUDED.product_id, \
         \"timestamp\" = EXCLUDED.\"timestamp\", price = EXCLUDED.price"
    );
    let statement = client.prepare(&sql).await.expect("prepare");
    // Building the arrays is the client's work, not the server's: outside the timing.
    let ids: Vec<uuid::Uuid> = rows
        .iter()
        .map(|r| uuid::Uuid::parse_str(&r.event_id).expect("uuid"))
        .collect();
    let users: Vec<i32> = rows.iter().map(|r| r.user_id as i32).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let products: Vec<&str> = rows.iter().map(|r| r.product_id.as_str()).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = rows
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.timestamp)
                .expect("timestamp")
                .to_utc()
        })
        .collect();
    let prices: Vec<&str> = rows.iter().map(|r| r.price.as_str()).collect();
    let before = Cpu::now();
    let started = Instant::now();
    let written = client
        .execute(
            &statement,
            &[&ids, &users, &types, &products, &times, &prices],
        )
        .await
        .expect("unnest upsert");
    let elapsed = started.elapsed();
    assert_eq!(written, rows.len() as u64);
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Run {
        elapsed,
        cpu: Cpu::now().since(before),
    }
}

fn main() {
    let wanted = env_number("SLUICE_BENCH_ROWS", 1_000_000);
    let rounds = env_number("SLUICE_BENCH_ROUNDS", 3).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let started = Instant::now();
    let (max_events, rows) = runtime.block_on(generate(wanted));
    assert_eq!(rows.len() as u64, wanted);
    println!(
        "{wanted} purchases with a price from {max_events} simulator events \
         (seed 42, event.types=purchase, {TASKS} tasks), generated in {:.1}s (not timed)",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let copy_path = dir.path().join("purchases.tsv");
    copy_file(&rows, &copy_path);
    let schema = Schema(format!("sluice_bench_{}", std::process::id()));
    psql(&format!(
        "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
        schema.0
    ));
    let table = format!("{}.purchases", schema.0);

    // The reference: what PostgreSQL's own COPY made of the rows.
    fresh_table(&table);
    run_copy(&table, &copy_path);
    let expected = summary(&table);
    assert!(
        expected.starts_with(&format!("{wanted}|{wanted}|")),
        "COPY wrote {expected}"
    );

    let names = [
        "COPY FROM STDIN (psql \\copy, text)",
        "sluice insert (standalone --drain)",
        "INSERT ... unnest ... ON CONFLICT (1 statement)",
        "sluice upsert (standalone --drain)",
    ];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); names.len()];
    let show = |label: &str, name: &str, run: &Run| {
        let c = run.cpu;
        println!(
            "{label:<8} {name:<48} {:>7.3}s {:>9.0} rows/s   CPU s: client {:>5.2} \
             server {:>5.2} other {:>5.2}",
            run.elapsed.as_secs_f64(),
            wanted as f64 / run.elapsed.as_secs_f64(),
            c.client,
            c.server,
            (c.machine - c.client - c.server).max(0.0)
        )
    };
    for round in 0..rounds {
        for (n, name) in names.iter().enumerate() {
            fresh_table(&table);
            let run = match n {
                0 => run_copy(&table, &copy_path),
                1 => run_sluice(dir.path(), &table, max_events, false),
                2 => runtime.block_on(run_unnest_upsert(&table, &rows)),
                _ => run_sluice(dir.path(), &table, max_events, true),
            };
            let got = summary(&table);
            assert_eq!(got, expected, "{name}: the table differs from the rows");
            show(&format!("round {}", round + 1), name, &run);
            runs[n].push(run);
        }
    }

    let rate = |d: Duration| wanted as f64 / d.as_secs_f64();
    // Each method's median run (by wall time), shown with its CPU figures.
    for r in &mut runs {
        r.sort_by_key(|run| run.elapsed);
    }
    let medians: Vec<Duration> = runs.iter().map(|r| r[r.len() / 2].elapsed).collect();
    println!("\n{wanted} rows; the median of {rounds} runs");
    for (n, name) in names.iter().enumerate() {
        show("median", name, &runs[n][runs[n].len() / 2]);
    }
    for (n, name) in names.iter().enumerate() {
        let r = &runs[n];
        println!(
            "  {name:<48} fastest {:.3}s, slowest {:.3}s",
            r[0].elapsed.as_secs_f64(),
            r[r.len() - 1].elapsed.as_secs_f64()
        );
    }
    println!(
        "sluice insert / COPY: {:.2}   sluice upsert / unnest upsert: {:.2}   (targets: 0.80)",
        rate(medians[1]) / rate(medians[0]),
        rate(medians[3]) / rate(medians[2])
    );
}
