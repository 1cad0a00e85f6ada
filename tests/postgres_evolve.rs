//! `auto.create` + `auto.evolve` from records whose fields grow over time, into a table
//! that does not exist yet. The worker runs five times over one seeded stream (each run
//! resumes the simulator where the previous one stopped), with sink-side transforms
//! that make the records wider from run to run:
//!
//! 1. `event_id`, `user_id`, `event_type` only → the table is created;
//! 2. every field, plus a boolean, an epoch-ms integer and an all-null field → columns added;
//! 3. the event hoisted into one object field `details` → a jsonb column added;
//! 4. as 2, with some `user_id`s that are strings → those records are dead-lettered, the
//!    rest of their batches land;
//! 5. as 4 with `errors.tolerance=none` → the task fails on the first such record.
//!
//! Checked with psql (information_schema and the rows) against the ground truth of the
//! same seeded stream written to files in separate runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{Value, json};

/// Events per run (runs 1–3 and 5); run 4 has twice as many.
const RUN: u64 = 300;
/// Sequence numbers where each run starts; run 5 ends at `BOUNDS[5]`.
const BOUNDS: [u64; 6] = [0, RUN, 2 * RUN, 3 * RUN, 5 * RUN, 6 * RUN];
const TOTAL: u64 = 6 * RUN;

fn source(events: u64, broken: bool) -> Value {
    let mut sim = simulator("shop", events);
    if broken {
        sim["malformed.rate"] = json!("0.1");
        sim["malformed.kinds"] = json!("wrong_type");
    }
    sim
}

/// The events of the whole stream by seq, as `source(TOTAL, broken)` produces them, and
/// their record timestamps.
fn ground_truth(broken: bool) -> Vec<(Value, i64, bool)> {
    let s = Scratch::new();
    s.worker(1_000);
    let sim = s.connector("sim", source(TOTAL, broken));
    let raw = s.connector("raw", file_sink("shop", &s.path("raw.jsonl"), "envelope"));
    let output = s.run(true, &[&sim, &raw]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut lines = read_lines(&s.path("raw.jsonl"));
    lines.sort_by_key(|l| task_seq(l).1);
    assert_eq!(lines.len() as u64, TOTAL);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            assert_eq!(task_seq(&l), (0, i as u64));
            let malformed = l["headers"]["sluice.simulator.malformed"] == "wrong_type";
            (
                l["value"].clone(),
                l["timestamp"].as_i64().unwrap(),
                malformed,
            )
        })
        .collect()
}

/// Equal maps, or a failure listing the first differences (not both maps whole).
#[track_caller]
fn assert_same<V: PartialEq + std::fmt::Debug>(
    actual: &BTreeMap<String, V>,
    expected: &BTreeMap<String, V>,
    what: &str,
) {
    let keys: BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| actual.get(*k) != expected.get(*k))
        .map(|k| {
            format!(
                "{k}: actual {:?}, expected {:?}",
                actual.get(k),
                expected.get(k)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} rows differ ({} actual, {} expected), e.g.\n{}",
        diffs.len(),
        expected.len(),
        actual.len(),
        expected.len(),
        diffs[..diffs.len().min(5)].join("\n")
    );
}

fn sink(table: &str, chain: &[(&str, Value)], tolerance: &str) -> Value {
    let mut config = json!({
        "connector.class": "PostgresSink",
        "topics": "shop",
        "connection.url": database_url(),
        "table.name.format": table,
        "auto.create": "true",
        "auto.evolve": "true",
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "pk.fields": "event_id",
        "errors.tolerance": tolerance,
        "errors.deadletterqueue.topic.name": "dlq",
    });
    let names: Vec<&str> = chain.iter().map(|(n, _)| *n).collect();
    config["transforms"] = json!(names.join(","));
    for (name, keys) in chain {
        for (k, v) in keys.as_object().unwrap() {
            config[format!("transforms.{name}.{k}")] = v.clone();
        }
    }
    config
}

fn key() -> (&'static str, Value) {
    (
        "key",
        json!({"type": "org.apache.kafka.connect.transforms.ValueToKey", "fields": "event_id"}),
    )
}

/// Every field, plus `is_test` (boolean), `record_ms` (the record timestamp) and `note`
/// (always null).
fn wide() -> Vec<(&'static str, Value)> {
    vec![
        key(),
        (
            "add",
            json!({
                "type": "org.apache.kafka.connect.transforms.InsertField$Value",
                "static.field": "is_test",
                "static.value": "true",
                "timestamp.field": "record_ms",
            }),
        ),
        (
            "cast",
            json!({
                "type": "org.apache.kafka.connect.transforms.Cast$Value",
                "spec": "is_test:boolean,note:string",
            }),
        ),
    ]
}

/// Column name → (data_type, is_nullable), from information_schema.
fn columns(schema: &str) -> BTreeMap<String, (String, String)> {
    psql(&format!(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = '{schema}' AND table_name = 'events' ORDER BY ordinal_position"
    ))
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f[0].to_string(), (f[1].to_string(), f[2].to_string()))
    })
    .collect()
}

fn expect_columns(list: &[(&str, &str)]) -> BTreeMap<String, (String, String)> {
    list.iter()
        .map(|(n, t)| {
            let nullable = if *n == "event_id" { "NO" } else { "YES" };
            (n.to_string(), (t.to_string(), nullable.to_string()))
        })
        .collect()
}

const SELECT: &str = "SELECT event_id, coalesce(user_id::text, 'NULL'), \
    coalesce(event_type, 'NULL'), coalesce(product_id, 'NULL'), \
    coalesce(\"timestamp\", 'NULL'), coalesce(price::text, 'NULL'), \
    coalesce(is_test::text, 'NULL'), coalesce(record_ms::text, 'NULL'), \
    coalesce(note, 'NULL'), coalesce(details::text, 'NULL')";

/// event_id → the other nine columns as text (`NULL` for null); `details` normalized
/// through serde_json.
fn table_rows(table: &str) -> BTreeMap<String, Vec<String>> {
    psql(&format!("{SELECT} FROM {table}"))
        .lines()
        .map(|l| {
            let mut f: Vec<String> = l.splitn(10, '|').map(str::to_string).collect();
            assert_eq!(f.len(), 10, "{l}");
            if f[9] != "NULL" {
                f[9] = serde_json::from_str::<Value>(&f[9]).unwrap().to_string();
            }
            (f[0].clone(), f[1..].to_vec())
        })
        .collect()
}

/// The row a run writes for an event, as `table_rows` reads it.
fn expected_row(run: usize, event: &Value, record_ms: i64) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        // double precision prints 1638, not 1638.0
        Value::Number(n) if n.is_f64() => n.as_f64().unwrap().to_string(),
        other => other.to_string(),
    };
    let null = || "NULL".to_string();
    match run {
        1 => vec![
            text(&event["user_id"]),
            text(&event["event_type"]),
            null(),
            null(),
            null(),
            null(),
            null(),
            null(),
            null(),
        ],
        2 | 4 | 5 => vec![
            text(&event["user_id"]),
            text(&event["event_type"]),
            text(&event["product_id"]),
            text(&event["timestamp"]),
            text(&event["price"]),
            "true".to_string(),
            record_ms.to_string(),
            null(),
            null(),
        ],
        3 => {
            let mut row = vec![null(); 8];
            row.push(event.to_string());
            row
        }
        _ => unreachable!(),
    }
}

#[test]
fn auto_create_and_evolve_follow_the_growing_records_and_dead_letter_type_conflicts() {
    let clean = ground_truth(false);
    let broken = ground_truth(true);
    let schema = Schema::new("evolve");
    let table = format!("{}.events", schema.0);
    let dead_letters = format!("{}.dead_letters", schema.0);
    let s = Scratch::new();
    s.worker(1_000);
    let dlq = s.connector(
        "dlq-store",
        json!({
            "connector.class": "DeadLetterSink",
            "topics": "dlq",
            "store": "postgres",
            "connection.url": database_url(),
            "table": dead_letters,
            "key.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
        }),
    );
    let run = |n: usize, chain: Vec<(&str, Value)>, tolerance: &str| {
        let sim = s.connector("sim", source(BOUNDS[n], n >= 4));
        let pg = s.connector("pg", sink(&table, &chain, tolerance));
        s.run(true, &[&sim, &pg, &dlq])
    };
    // What each run is expected to have written: event_id → row.
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let add_run = |n: usize, expected: &mut BTreeMap<String, Vec<String>>| {
        for seq in BOUNDS[n - 1]..BOUNDS[n] {
            let (event, ms, bad) = if n >= 4 {
                &broken[seq as usize]
            } else {
                &clean[seq as usize]
            };
            if !bad {
                let id = event["event_id"].as_str().unwrap().to_string();
                expected.insert(id, expected_row(n, event, *ms));
            }
        }
    };

    // 1. The narrow records create the table.
    assert_eq!(
        psql(&format!("SELECT to_regclass('{table}') IS NULL")).trim(),
        "t"
    );
    let narrow = (
        "narrow",
        json!({
            "type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
            "include": "event_id,user_id,event_type",
        }),
    );
    let output = run(1, vec![key(), narrow], "all");
    assert!(output.status.success(), "{}", stderr(&output));
    let mut cols = vec![
        ("event_id", "text"),
        ("user_id", "bigint"),
        ("event_type", "text"),
    ];
    assert_eq!(columns(&schema.0), expect_columns(&cols), "created columns");
    assert_eq!(
        psql(&format!(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = '{table}'::regclass AND i.indisprimary"
        ))
        .trim(),
        "event_id",
        "primary key from pk.fields"
    );
    let rows = psql(&format!(
        "SELECT event_id, user_id, event_type FROM {table} ORDER BY event_id"
    ));
    let mut want: Vec<String> = clean[..RUN as usize]
        .iter()
        .map(|(e, _, _)| {
            format!(
                "{}|{}|{}",
                e["event_id"].as_str().unwrap(),
                e["user_id"],
                e["event_type"].as_str().unwrap()
            )
        })
        .collect();
    want.sort();
    assert_eq!(rows.lines().collect::<Vec<_>>(), want, "rows of run 1");
    add_run(1, &mut expected);

    // 2. Every field plus a boolean, an integer and an all-null field: columns added.
    let output = run(2, wide(), "all");
    assert!(output.status.success(), "{}", stderr(&output));
    cols.extend([
        ("product_id", "text"),
        ("timestamp", "text"),
        ("price", "double precision"),
        ("is_test", "boolean"),
        ("record_ms", "bigint"),
        ("note", "text"),
    ]);
    assert_eq!(columns(&schema.0), expect_columns(&cols), "evolved columns");
    add_run(2, &mut expected);

    // 3. The event as one object: a jsonb column; the other columns stay.
    let nest = (
        "nest",
        json!({"type": "org.apache.kafka.connect.transforms.HoistField$Value", "field": "details"}),
    );
    let output = run(3, vec![key(), nest], "all");
    assert!(output.status.success(), "{}", stderr(&output));
    cols.push(("details", "jsonb"));
    assert_eq!(
        columns(&schema.0),
        expect_columns(&cols),
        "jsonb column added"
    );
    add_run(3, &mut expected);

    // Old rows have NULL in the new columns, new rows NULL in the columns they lack.
    assert_same(&table_rows(&table), &expected, "rows after run 3");
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {dead_letters}")).trim(),
        "0",
        "nothing dead-lettered so far"
    );

    // 4. Some user_ids are strings: those records (only) are dead-lettered.
    let output = run(4, wide(), "all");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        columns(&schema.0),
        expect_columns(&cols),
        "no column changed"
    );
    add_run(4, &mut expected);
    assert_same(&table_rows(&table), &expected, "rows after run 4");
    let bad4: BTreeSet<u64> = (BOUNDS[3]..BOUNDS[4])
        .filter(|seq| broken[*seq as usize].2)
        .collect();
    assert!(bad4.len() >= 20, "{} conflicting records", bad4.len());
    // Bus offsets start at 0 in each run: offset = seq - first seq of the run.
    let stored = psql(&format!(
        "SELECT original_offset, stage, class_name, exception_class, value_json::text, error_message \
         FROM {dead_letters} ORDER BY original_offset"
    ));
    let mut offsets = BTreeSet::new();
    for line in stored.lines() {
        let f: Vec<&str> = line.splitn(6, '|').collect();
        let seq = f[0].parse::<u64>().unwrap() + BOUNDS[3];
        assert!(offsets.insert(seq), "seq {seq} dead-lettered twice");
        let event = &broken[seq as usize].0;
        assert_eq!(
            &f[1..4],
            &[
                "TASK_PUT",
                "PostgresSink",
                "org.apache.kafka.connect.errors.DataException"
            ],
            "{line}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(f[4]).unwrap(),
            *event,
            "{line}"
        );
        let reason = format!(
            "field `user_id` cannot be written to column \"user_id\" (bigint) of table {table}: \
             expected an integer, got {}",
            event["user_id"]
        );
        assert!(f[5].contains(&reason), "{} lacks {reason}", f[5]);
    }
    assert_eq!(
        offsets, bad4,
        "exactly the conflicting records are dead-lettered"
    );

    // 5. The same conflict with errors.tolerance=none fails the task (exit 3), naming the
    // field; nothing is dead-lettered. The good records before it were written.
    let output = run(5, wide(), "none");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("field `user_id` cannot be written to column \"user_id\" (bigint)"),
        "{log}"
    );
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {dead_letters}")).trim(),
        bad4.len().to_string()
    );
    let first_bad = (BOUNDS[4]..BOUNDS[5])
        .find(|seq| broken[*seq as usize].2)
        .expect("a conflicting record in run 5");
    let rows = table_rows(&table);
    for seq in BOUNDS[4]..BOUNDS[5] {
        let (event, ms, bad) = &broken[seq as usize];
        let id = event["event_id"].as_str().unwrap();
        if *bad {
            assert!(!rows.contains_key(id), "conflicting record {seq} written");
        } else if seq < first_bad {
            assert_eq!(
                rows.get(id),
                Some(&expected_row(5, event, *ms)),
                "seq {seq}"
            );
        } else if let Some(row) = rows.get(id) {
            // The rest of the failing record's batch may have landed (same transaction).
            assert_eq!(row, &expected_row(5, event, *ms), "seq {seq}");
        }
    }
    let earlier: BTreeMap<String, Vec<String>> = rows
        .into_iter()
        .filter(|(id, _)| {
            !broken[BOUNDS[4] as usize..]
                .iter()
                .any(|(e, _, _)| e["event_id"] == id.as_str())
        })
        .collect();
    assert_same(&earlier, &expected, "rows of runs 1–4 untouched");
}

/// Two sink tasks whose first puts both find the table (auto.create) and the offsets
/// table (exactly.once) missing: both must run, and every record land once. A few
/// rounds, since which task wins the race varies.
#[test]
fn two_sink_tasks_creating_the_tables_at_the_same_time_both_keep_running() {
    let schema = Schema::new("evolve_race");
    for round in 0..4 {
        let s = Scratch::new();
        s.worker(1_000);
        let mut sim = simulator("shop", 4_000);
        sim["tasks.max"] = json!("2");
        sim["topic.creation.default.partitions"] = json!("2");
        let sim = s.connector("sim", sim);
        let table = format!("{}.events{round}", schema.0);
        let pg = s.connector(
            "pg",
            json!({
                "connector.class": "PostgresSink",
                "topics": "shop",
                "tasks.max": "2",
                "connection.url": database_url(),
                "table.name.format": table,
                "auto.create": "true",
                "insert.mode": "upsert",
                "pk.mode": "record_value",
                "pk.fields": "event_id",
                "errors.tolerance": "all",
                "errors.deadletterqueue.topic.name": "dlq",
            }),
        );
        // Two DeadLetterSink tasks creating their schema and table at the same moment.
        let dlq = s.connector(
            "dlq",
            json!({
                "connector.class": "DeadLetterSink",
                "topics": "dlq",
                "tasks.max": "2",
                "store": "postgres",
                "connection.url": database_url(),
                "table": format!("{}_dlq{round}.dead_letters", schema.0),
            }),
        );
        let output = s.run(true, &[&sim, &pg, &dlq]);
        let _ = psql(&format!(
            "DROP SCHEMA IF EXISTS {}_dlq{round} CASCADE",
            schema.0
        ));
        assert!(
            output.status.success(),
            "round {round}: {:?}\n{}",
            output.status,
            stderr(&output)
        );
        assert_eq!(
            psql(&format!(
                "SELECT count(*), count(DISTINCT event_id) FROM {table}"
            ))
            .trim(),
            "4000|4000",
            "round {round}"
        );
    }
}
