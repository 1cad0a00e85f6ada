//! The seed pipeline into a real PostgreSQL: simulator → Filter → ReplaceField/InsertField
//! → PostgresSink upsert into a pre-created, typed table. Checked with psql, a client
//! written elsewhere.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;

#[test]
fn the_seed_pipeline_upserts_purchases_once_with_their_values() {
    let schema = Schema::new("seed");
    let table = format!("{}.purchases", schema.0);
    psql(&format!(
        "CREATE TABLE {table} (
            id serial PRIMARY KEY,
            event_id varchar(36) NOT NULL UNIQUE,
            user_id int NOT NULL,
            product_id varchar(32) NOT NULL,
            event_type varchar(16) NOT NULL,
            price numeric(10,2) NOT NULL,
            purchase_time timestamptz NOT NULL,
            kafka_offset bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )"
    ));
    let s = Scratch::new();
    s.worker(1_000);
    let source = s.connector("sim", simulator("shop", 20_000));
    let raw = s.connector("raw", file_sink("shop", &s.path("raw.jsonl"), "envelope"));
    let mut sink = json!({
        "connector.class": "PostgresSink",
        "topics": "shop",
        "connection.url": format!("jdbc:postgresql://127.0.0.1:5432/test"),
        "connection.user": "postgres",
        "table.name.format": table,
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "event_id",
        "transforms": "purchases,rename,offset",
        "transforms.purchases.type": "Filter",
        "transforms.purchases.condition": r#"value.event_type == "purchase" && value.price != null"#,
        "transforms.rename.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "transforms.rename.renames": "timestamp:purchase_time",
        "transforms.offset.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.offset.offset.field": "kafka_offset",
    });
    if let Ok(url) = std::env::var("DATABASE_URL") {
        sink["connection.url"] = json!(url);
    }
    let sink = s.connector("pg", sink);
    let output = s.run(true, &[&source, &raw, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Ground truth from the raw copy of the same stream.
    let mut expected: BTreeMap<String, (i64, String, String, String)> = BTreeMap::new();
    for line in read_lines(&s.path("raw.jsonl")) {
        let v = &line["value"];
        if v["event_type"] == "purchase" && !v["price"].is_null() {
            let ts = v["timestamp"].as_str().unwrap().to_string();
            expected.insert(
                v["event_id"].as_str().unwrap().to_string(),
                (
                    v["user_id"].as_i64().unwrap(),
                    v["product_id"].as_str().unwrap().to_string(),
                    format!("{:.2}", v["price"].as_f64().unwrap()),
                    ts,
                ),
            );
        }
    }
    let rows = || -> BTreeMap<String, (i64, String, String, String)> {
        psql(&format!(
            "SELECT event_id, user_id, product_id, price::text, \
             to_char(purchase_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM {table}"
        ))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_string(), (f[1].parse().unwrap(), f[2].to_string(), f[3].to_string(), f[4].to_string()))
        })
        .collect()
    };
    assert!(!expected.is_empty());
    assert_eq!(rows(), expected);

    // The same stream again (offsets forgotten): upsert adds no row.
    std::fs::remove_file(s.path("offsets.json")).unwrap();
    let output = s.run(true, &[&source, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    let count: usize = psql(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, expected.len());
    assert_eq!(rows(), expected);
}
