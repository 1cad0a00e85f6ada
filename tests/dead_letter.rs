//! Dead letters into a real PostgreSQL through DeadLetterSink, checked with psql.

mod common;

use common::*;
use serde_json::json;

#[test]
fn dead_letters_land_in_postgres_with_their_context_and_original_bytes() {
    let schema = Schema::new("dlq");
    let table = format!("{}.dead_letters", schema.0);
    let s = Scratch::new();
    s.worker(1_000);
    let mut sim = simulator("orders", 5_000);
    sim["malformed.rate"] = json!("0.02");
    sim["malformed.kinds"] = json!("invalid_json");
    let source = s.connector("sim", sim);
    let mut sink = file_sink("orders", &s.path("good.jsonl"), "envelope");
    sink["errors.tolerance"] = json!("all");
    sink["errors.deadletterqueue.topic.name"] = json!("orders-dlq");
    let sink = s.connector("file", sink);
    let dlq = s.connector(
        "dlq",
        json!({
            "connector.class": "DeadLetterSink",
            "topics": "orders-dlq",
            "store": "postgres",
            "connection.url": database_url(),
            "table": table,
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
        }),
    );
    let output = s.run(true, &[&source, &sink, &dlq]);
    assert!(output.status.success(), "{}", stderr(&output));
    let good = read_lines(&s.path("good.jsonl")).len();
    let stored: usize = psql(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    assert!(stored > 0);
    assert_eq!(good + stored, 5_000, "good + dead-lettered = produced");
    let rows = psql(&format!(
        "SELECT original_topic, connector, stage, exception_class, \
         value_json IS NULL, length(value_bytes) > 0, original_offset IS NOT NULL FROM {table}"
    ));
    for row in rows.lines() {
        assert_eq!(
            row, "orders|file|VALUE_CONVERTER|org.apache.kafka.connect.errors.DataException|t|t|t",
            "stored context"
        );
    }
    // Running the same dead letters through again stores nothing new.
    std::fs::remove_file(s.path("offsets.json")).unwrap();
    std::fs::remove_file(s.path("good.jsonl")).unwrap();
    let output = s.run(true, &[&source, &sink, &dlq]);
    assert!(output.status.success(), "{}", stderr(&output));
    let again: usize = psql(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(again, stored);
}
