//! `sluice dlq replay`: dead letters stored by a DeadLetterSink go back into the connector
//! they failed in once the cause is fixed; they are marked replayed and a second replay
//! delivers nothing. Checked with psql against the real PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::{Value, json};

fn count(sql: &str) -> usize {
    psql(sql).trim().parse().unwrap()
}

fn dlq(args: &[&str]) -> Output {
    sluice().arg("dlq").args(args).output().unwrap()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Purchases from the seeded stream, as (event_id, price) — the ground truth.
fn purchases(raw: &Path) -> BTreeSet<(String, String)> {
    read_lines(raw)
        .iter()
        .map(|l| &l["value"])
        .filter(|v| v["event_type"] == "purchase" && !v["price"].is_null())
        .map(|v| {
            (
                v["event_id"].as_str().unwrap().to_string(),
                format!("{:.2}", v["price"].as_f64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn replay_delivers_fixed_dead_letters_once_and_marks_them() {
    let schema = Schema::new("replay");
    let orders = format!("{}.orders", schema.0);
    let letters = format!("{}.dead_letters", schema.0);
    // No unique key: a replay that delivered twice would show as duplicate rows.
    psql(&format!(
        "CREATE TABLE {orders} (event_id text NOT NULL, user_id int, price numeric(10,2) \
         CONSTRAINT cheap CHECK (price < 100))"
    ));
    let s = Scratch::new();
    s.worker(500);
    let source = s.connector("sim", simulator("shop", 4_000));
    let raw = s.connector("raw", file_sink("shop", &s.path("raw.jsonl"), "envelope"));
    let sink = s.connector(
        "pg",
        json!({
            "connector.class": "PostgresSink",
            "topics": "shop",
            "connection.url": database_url(),
            "table.name.format": orders,
            "insert.mode": "insert",
            "fields.whitelist": "event_id,user_id,price",
            "transforms": "purchases",
            "transforms.purchases.type": "Filter",
            "transforms.purchases.condition": r#"value.event_type == "purchase" && value.price != null"#,
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "shop-dlq",
        }),
    );
    let store = s.connector(
        "dlq",
        json!({
            "connector.class": "DeadLetterSink",
            "topics": "shop-dlq",
            "store": "postgres",
            "connection.url": database_url(),
            "table": letters,
        }),
    );
    let output = s.run(true, &[&source, &raw, &sink, &store]);
    assert!(output.status.success(), "{}", stderr(&output));

    let expected = purchases(&s.path("raw.jsonl"));
    let expensive = expected
        .iter()
        .filter(|(_, p)| p.parse::<f64>().unwrap() >= 100.0)
        .count();
    assert!(expensive >= 5, "the stream should have expensive purchases");
    assert_eq!(
        count(&format!("SELECT count(*) FROM {orders}")),
        expected.len() - expensive
    );
    assert_eq!(count(&format!("SELECT count(*) FROM {letters}")), expensive);

    // `list` shows them; nothing replayed yet.
    let listed = dlq(&["list", "--store", arg(&store)]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listing.lines().count(), expensive, "{listing}");
    assert!(
        listing
            .lines()
            .all(|l| l.contains("\tpg\tshop/") && l.contains("cheap")),
        "{listing}"
    );

    // Replayed before the cause is fixed: they fail again and stay unreplayed.
    let early = dlq(&[
        "replay",
        "--store",
        arg(&store),
        "--to",
        arg(&sink),
        "--limit",
        "2",
    ]);
    assert_eq!(early.status.code(), Some(3), "{}", stderr(&early));
    assert!(
        stderr(&early).contains("failed again"),
        "{}",
        stderr(&early)
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM {letters} WHERE replayed_at IS NOT NULL"
        )),
        0
    );

    // A selection by id replays exactly that one.
    psql(&format!("ALTER TABLE {orders} DROP CONSTRAINT cheap"));
    let first_id = psql(&format!("SELECT min(id) FROM {letters}"))
        .trim()
        .to_string();
    let one = dlq(&[
        "replay",
        "--store",
        arg(&store),
        "--to",
        arg(&sink),
        "--id",
        &first_id,
    ]);
    assert!(one.status.success(), "{}", stderr(&one));
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM {letters} WHERE replayed_at IS NOT NULL"
        )),
        1
    );
    assert_eq!(
        count(&format!("SELECT count(*) FROM {orders}")),
        expected.len() - expensive + 1
    );

    // A filter matching nothing (another connector's letters) replays nothing.
    let other = dlq(&[
        "replay",
        "--store",
        arg(&store),
        "--to",
        arg(&sink),
        "--connector",
        "nope",
    ]);
    assert!(other.status.success(), "{}", stderr(&other));
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM {letters} WHERE replayed_at IS NOT NULL"
        )),
        1
    );

    // The rest, then a second full replay that must deliver nothing.
    for _ in 0..2 {
        let all = dlq(&["replay", "--store", arg(&store), "--to", arg(&sink)]);
        assert!(all.status.success(), "{}", stderr(&all));
    }
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM {letters} WHERE replayed_at IS NULL"
        )),
        0
    );
    let rows: BTreeSet<(String, String)> =
        psql(&format!("SELECT event_id, price::text FROM {orders}"))
            .lines()
            .map(|l| {
                let (id, price) = l.split_once('|').unwrap();
                (id.to_string(), price.to_string())
            })
            .collect();
    assert_eq!(
        rows, expected,
        "every purchase exactly once, with its price"
    );
    assert_eq!(
        count(&format!("SELECT count(*) FROM {orders}")),
        expected.len(),
        "no duplicates"
    );
}

#[test]
fn replay_from_a_file_store_through_a_fixed_transform() {
    let s = Scratch::new();
    s.worker(500);
    let source = s.connector("sim", simulator("shop", 2_000));
    // The sink's filter needs a field only purchases have; the other events fail it and
    // are dead-lettered at the TRANSFORMATION stage.
    let mut broken = file_sink("shop", &s.path("out.jsonl"), "value");
    broken["transforms"] = json!("cheap");
    broken["transforms.cheap.type"] = json!("Filter");
    broken["transforms.cheap.condition"] = json!("value.price < 50.0");
    broken["errors.tolerance"] = json!("all");
    broken["errors.deadletterqueue.topic.name"] = json!("shop-dlq");
    let broken_file = s.connector("files", broken.clone());
    let store = s.connector(
        "dlq",
        json!({
            "connector.class": "DeadLetterSink",
            "topics": "shop-dlq",
            "store": "file",
            "file": s.path("dead.jsonl"),
        }),
    );
    let output = s.run(true, &[&source, &broken_file, &store]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dead = read_lines(&s.path("dead.jsonl"));
    assert!(!dead.is_empty());
    assert!(
        dead.iter().all(|d| d["stage"] == "TRANSFORMATION"),
        "{:?}",
        dead[0]
    );
    let landed = read_lines(&s.path("out.jsonl")).len();

    // The fix: events without a price pass the filter too.
    let mut fixed = broken;
    fixed["transforms.cheap.condition"] =
        json!("!has(value.price) || value.price == null || value.price < 50.0");
    let fixed_file = s.connector("files", fixed);
    let replay = dlq(&["replay", "--store", arg(&store), "--to", arg(&fixed_file)]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let out = read_lines(&s.path("out.jsonl"));
    assert!(out.len() > landed);
    // Every dead letter came back, as the original value.
    let dead_values: Vec<Value> = dead.iter().map(|d| d["value_json"].clone()).collect();
    for value in &dead_values {
        if value["price"].is_null() || value["price"].as_f64().is_some_and(|p| p < 50.0) {
            assert!(out.contains(value), "{value} not replayed");
        }
    }
    assert_eq!(
        out.len(),
        landed
            + dead_values
                .iter()
                .filter(|v| v["price"].is_null() || v["price"].as_f64().is_some_and(|p| p < 50.0))
                .count()
    );
    let marks = std::fs::read_to_string(s.path("dead.jsonl.replayed")).unwrap();
    assert_eq!(marks.lines().count(), dead.len());
    // Again: nothing left to deliver.
    let again = dlq(&["replay", "--store", arg(&store), "--to", arg(&fixed_file)]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(read_lines(&s.path("out.jsonl")).len(), out.len());
}
