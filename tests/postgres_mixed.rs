//! Good and bad records in the same batches into a typed PostgreSQL table: the good rows
//! land (exactly the set the ground truth predicts), and every bad record is in
//! `dead_letters` exactly once, with its original position, connector, stage, error class,
//! a message naming the reason, and its original bytes. Bad records of four kinds:
//!
//! * value not JSON (simulator `invalid_json`): the sink's value converter fails;
//! * a conversion error (`wrong_type`: `user_id` = "user-4821" into an `int` column),
//!   found by the sink before any SQL;
//! * a NOT NULL violation (`missing_field`: no `event_type`), found by PostgreSQL;
//! * a unique violation in insert mode (UNIQUE (user_id, product_id, event_type): a
//!   user's second event of a type for a product), found by PostgreSQL.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{Value, json};

const EVENTS: u64 = 6_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bad {
    NotJson,
    Conversion,
    NotNull,
    Unique,
}

#[test]
fn good_rows_land_and_each_bad_record_is_dead_lettered_once_with_its_reason() {
    let schema = Schema::new("mixed");
    let table = format!("{}.shop", schema.0);
    let dead_letters = format!("{}.dead_letters", schema.0);
    psql(&format!(
        "CREATE TABLE {table} (
            event_id uuid PRIMARY KEY,
            user_id int NOT NULL,
            event_type text NOT NULL,
            product_id text NOT NULL,
            price numeric(10,2),
            \"timestamp\" timestamptz NOT NULL,
            CONSTRAINT one_per_user_product_type UNIQUE (user_id, product_id, event_type)
        )"
    ));
    let s = Scratch::new();
    s.worker(1_000);
    let mut sim = simulator("shop", EVENTS);
    sim["malformed.rate"] = json!("0.06");
    sim["malformed.kinds"] = json!("invalid_json,missing_field,wrong_type");
    let source = s.connector("sim", sim);
    // The raw bytes of the same run, with their offsets: the ground truth.
    let mut raw = file_sink("shop", &s.path("raw.jsonl"), "envelope");
    raw["key.converter"] = json!("org.apache.kafka.connect.converters.ByteArrayConverter");
    raw["value.converter"] = json!("org.apache.kafka.connect.converters.ByteArrayConverter");
    let raw = s.connector("raw", raw);
    let sink = s.connector(
        "pg",
        json!({
            "connector.class": "PostgresSink",
            "topics": "shop",
            "connection.url": database_url(),
            "table.name.format": table,
            "insert.mode": "insert",
            "errors.tolerance": "all",
            "errors.deadletterqueue.topic.name": "dlq",
        }),
    );
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
    let output = s.run(true, &[&source, &raw, &sink, &dlq]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Ground truth, in offset order (one source task, one partition).
    let mut lines = read_lines(&s.path("raw.jsonl"));
    assert_eq!(lines.len() as u64, EVENTS);
    lines.sort_by_key(|l| l["offset"].as_i64().unwrap());
    let mut good: BTreeMap<String, (i64, String, String, String, String)> = BTreeMap::new();
    let mut bad: BTreeMap<i64, (Bad, String)> = BTreeMap::new();
    let mut seen: BTreeSet<(i64, String, String)> = BTreeSet::new();
    for line in &lines {
        assert_eq!(line["partition"], 0);
        let offset = line["offset"].as_i64().unwrap();
        let text = line["value"]
            .as_str()
            .expect("raw bytes as text")
            .to_string();
        let kind = line["headers"]["sluice.simulator.malformed"].as_str();
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            assert_eq!(kind, Some("invalid_json"), "offset {offset}");
            bad.insert(offset, (Bad::NotJson, text));
            continue;
        };
        match kind {
            Some("wrong_type") => {
                assert!(v["user_id"].is_string());
                bad.insert(offset, (Bad::Conversion, text));
                continue;
            }
            Some("missing_field") => {
                assert!(v.get("event_type").is_none());
                bad.insert(offset, (Bad::NotNull, text));
                continue;
            }
            None => {}
            other => panic!("unexpected malformed kind {other:?}"),
        }
        let user = v["user_id"].as_i64().unwrap();
        let product = v["product_id"].as_str().unwrap().to_string();
        let event_type = v["event_type"].as_str().unwrap().to_string();
        if !seen.insert((user, product.clone(), event_type.clone())) {
            bad.insert(offset, (Bad::Unique, text));
            continue;
        }
        let price = v["price"]
            .as_f64()
            .map_or("NULL".to_string(), |p| format!("{p:.2}"));
        good.insert(
            v["event_id"].as_str().unwrap().to_string(),
            (
                user,
                event_type,
                product,
                price,
                v["timestamp"].as_str().unwrap().to_string(),
            ),
        );
    }
    let per_kind = |k: Bad| bad.values().filter(|(b, _)| *b == k).count();
    for kind in [Bad::NotJson, Bad::Conversion, Bad::NotNull, Bad::Unique] {
        assert!(
            per_kind(kind) >= 10,
            "too few {kind:?} records to test: {}",
            per_kind(kind)
        );
    }
    assert_eq!(good.len() + bad.len(), EVENTS as usize);

    // Exactly the good rows landed, with their values.
    let landed: BTreeMap<String, (i64, String, String, String, String)> = psql(&format!(
        "SELECT event_id, user_id, event_type, product_id, coalesce(price::text, 'NULL'), \
         to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM {table}"
    ))
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_string(),
            (
                f[1].parse().unwrap(),
                f[2].to_string(),
                f[3].to_string(),
                f[4].to_string(),
                f[5].to_string(),
            ),
        )
    })
    .collect();
    assert_eq!(landed.len(), good.len(), "number of good rows");
    assert_eq!(landed, good, "the good rows and their values");

    // Each bad record dead-lettered exactly once, nothing else.
    let stored = psql(&format!(
        "SELECT original_topic, original_partition, original_offset, connector, task_id, \
         stage, class_name, exception_class, value_text, \
         replace(replace(error_message, E'\\n', ' '), '|', '/') \
         FROM {dead_letters} ORDER BY original_offset"
    ));
    let mut by_offset: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for line in stored.lines() {
        let f: Vec<String> = line.splitn(10, '|').map(str::to_string).collect();
        assert_eq!(f.len(), 10, "dead letter row {line}");
        let offset: i64 = f[2].parse().unwrap();
        assert!(
            by_offset.insert(offset, f).is_none(),
            "offset {offset} dead-lettered more than once"
        );
    }
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {dead_letters}")).trim(),
        bad.len().to_string(),
        "one dead letter per bad record"
    );
    assert_eq!(
        by_offset.keys().copied().collect::<BTreeSet<_>>(),
        bad.keys().copied().collect::<BTreeSet<_>>(),
        "the dead-lettered offsets are exactly the bad records"
    );
    for (offset, (kind, text)) in &bad {
        let f = &by_offset[offset];
        let (stage, class, reasons): (&str, &str, Vec<String>) = match kind {
            Bad::NotJson => (
                "VALUE_CONVERTER",
                "org.apache.kafka.connect.json.JsonConverter",
                vec!["serialization error".to_string()],
            ),
            Bad::Conversion => {
                let v: Value = serde_json::from_str(text).unwrap();
                (
                    "TASK_PUT",
                    "PostgresSink",
                    vec![
                        "field `user_id` cannot be written to column \"user_id\" (integer)"
                            .to_string(),
                        format!("expected an integer, got {}", v["user_id"]),
                    ],
                )
            }
            Bad::NotNull => (
                "TASK_PUT",
                "PostgresSink",
                vec![
                    "null value in column \"event_type\"".to_string(),
                    "SQLSTATE 23502".to_string(),
                ],
            ),
            Bad::Unique => (
                "TASK_PUT",
                "PostgresSink",
                vec![
                    "duplicate key value violates unique constraint".to_string(),
                    "SQLSTATE 23505".to_string(),
                    "constraint \"one_per_user_product_type\"".to_string(),
                ],
            ),
        };
        let expected = [
            "shop",
            "0",
            &offset.to_string(),
            "pg",
            "0",
            stage,
            class,
            "org.apache.kafka.connect.errors.DataException",
            text,
        ];
        assert_eq!(
            &f[..9],
            &expected[..],
            "dead letter of offset {offset} ({kind:?})"
        );
        for reason in reasons {
            assert!(
                f[9].contains(&reason),
                "offset {offset} ({kind:?}): message {:?} does not name {reason:?}",
                f[9]
            );
        }
    }

    // The bad records were in the same puts as good ones: every put in which PostgreSQL
    // rejected rows logs how many it isolated and how many of the same transaction it
    // wrote; the rejected ones add up to the NOT NULL and unique violations.
    let log = stderr(&output);
    let mut isolated = 0;
    let mut puts = 0;
    for line in log.lines().filter(|l| l.contains("were isolated")) {
        let number = |key: &str| -> usize {
            let at = line
                .find(key)
                .unwrap_or_else(|| panic!("no {key} in {line}"))
                + key.len();
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (failed, written) = (number("failed="), number("written="));
        assert!(
            failed > 0 && written > 0,
            "a put with only bad rows: {line}"
        );
        isolated += failed;
        puts += 1;
    }
    assert_eq!(
        isolated,
        per_kind(Bad::NotNull) + per_kind(Bad::Unique),
        "rows isolated by PostgreSQL in mixed puts ({puts} puts); log:\n{log}"
    );
    assert!(puts > 1, "bad rows spread over several puts");
}
