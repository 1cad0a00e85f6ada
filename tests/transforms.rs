//! Transform chains end to end: the same seeded events through sinks with and without
//! transforms; the expected output is computed in the test from the unfiltered copy.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

#[test]
fn a_cel_filter_keeps_exactly_the_matching_records_and_dead_letters_the_unevaluable() {
    let s = Scratch::new();
    s.worker(1_000);
    let mut sim = simulator("events", 20_000);
    sim["malformed.rate"] = json!("0.05");
    sim["malformed.kinds"] = json!("missing_field");
    let source = s.connector("sim", sim);
    let all = s.connector("all", file_sink("events", &s.path("all.jsonl"), "envelope"));
    let mut filtered = file_sink("events", &s.path("purchases.jsonl"), "envelope");
    filtered["transforms"] = json!("purchases");
    filtered["transforms.purchases.type"] = json!("Filter");
    filtered["transforms.purchases.condition"] =
        json!(r#"value.event_type == "purchase" && value.price != null"#);
    filtered["errors.tolerance"] = json!("all");
    filtered["errors.deadletterqueue.topic.name"] = json!("purchases-dlq");
    let filtered = s.connector("purchases", filtered);
    let dlq = s.connector(
        "dlq",
        file_sink("purchases-dlq", &s.path("dlq.jsonl"), "envelope"),
    );
    let output = s.run(true, &[&source, &all, &filtered, &dlq]);
    assert!(output.status.success(), "{}", stderr(&output));

    let all = read_lines(&s.path("all.jsonl"));
    assert_eq!(all.len(), 20_000);
    // Ground truth, from the unfiltered copy. CEL's `&&` is false when either side is
    // false, even if the other side is an error; it is an error only when the other
    // side is true.
    let mut expected_kept = BTreeSet::new();
    let mut expected_dead = BTreeSet::new();
    for line in &all {
        let v = &line["value"];
        let has_price = v.get("price").is_some_and(|p| !p.is_null());
        match v.get("event_type") {
            Some(Value::String(t)) if t == "purchase" && has_price => {
                expected_kept.insert(task_seq(line));
            }
            None if has_price => {
                expected_dead.insert(task_seq(line));
            }
            _ => {}
        }
    }
    let kept: BTreeSet<_> = read_lines(&s.path("purchases.jsonl"))
        .iter()
        .map(task_seq)
        .collect();
    let dead: Vec<Value> = read_lines(&s.path("dlq.jsonl"));
    let dead_ids: BTreeSet<_> = dead.iter().map(task_seq).collect();
    assert!(!expected_kept.is_empty() && !expected_dead.is_empty());
    assert_eq!(kept, expected_kept);
    assert_eq!(dead_ids, expected_dead);
    for line in &dead {
        assert_eq!(line["headers"]["__connect.errors.stage"], "TRANSFORMATION");
        assert_eq!(
            line["headers"]["__connect.errors.class.name"],
            "transforms.purchases"
        );
    }
}

#[test]
fn an_invalid_condition_is_reported_before_anything_runs() {
    let s = Scratch::new();
    let mut sink = file_sink("t", &s.path("o.jsonl"), "value");
    sink["transforms"] = json!("f");
    sink["transforms.f.type"] = json!("Filter");
    sink["transforms.f.condition"] = json!("value.price >");
    let file = s.connector("sink", sink);
    let output = sluice().arg("validate").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("connector \"sink\": key \"transforms.f.condition\""),
        "{err}"
    );
    assert!(err.contains("line 1"), "position of the error: {err}");
}

#[test]
fn a_kafka_connect_smt_chain_with_a_predicate_runs_unchanged() {
    let s = Scratch::new();
    s.worker(1_000);
    let source = s.connector("sim", simulator("shop-events", 2_000));
    // A chain as it would be written for Kafka Connect, class names and all.
    let mut sink = file_sink("shop-events", &s.path("out.jsonl"), "envelope");
    let chain = json!({
        "transforms": "drop,tag,route,dropViews",
        "transforms.drop.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "transforms.drop.exclude": "event_id",
        "transforms.drop.renames": "product_id:product",
        "transforms.tag.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.tag.static.field": "source",
        "transforms.tag.static.value": "simulator",
        "transforms.tag.topic.field": "from_topic",
        "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
        "transforms.route.regex": "shop-(.*)",
        "transforms.route.replacement": "clean-$1",
        "transforms.dropViews.type": "org.apache.kafka.connect.transforms.Filter",
        "transforms.dropViews.predicate": "isView",
        "predicates": "isView",
        "predicates.isView.type": "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
        "predicates.isView.pattern": "never-matches",
    });
    for (k, v) in chain.as_object().unwrap() {
        sink[k] = v.clone();
    }
    let sink = s.connector("file", sink);
    let output = s.run(true, &[&source, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = read_lines(&s.path("out.jsonl"));
    assert_eq!(
        lines.len(),
        2_000,
        "the predicate never matches, so Filter drops nothing"
    );
    for line in &lines {
        let v = &line["value"];
        assert_eq!(line["topic"], "clean-events");
        assert!(v.get("event_id").is_none(), "{v}");
        assert!(
            v.get("product_id").is_none() && v["product"].is_string(),
            "{v}"
        );
        assert_eq!(v["source"], "simulator");
        assert_eq!(v["from_topic"], "shop-events");
    }
}

#[test]
fn kafka_connects_filter_drops_what_its_predicate_matches() {
    let s = Scratch::new();
    s.worker(1_000);
    let mut sim = simulator("t", 3_000);
    sim["malformed.rate"] = json!("0.1");
    sim["malformed.kinds"] = json!("missing_field");
    let source = s.connector("sim", sim);
    let all = s.connector("all", file_sink("t", &s.path("all.jsonl"), "envelope"));
    let mut sink = file_sink("t", &s.path("out.jsonl"), "envelope");
    for (k, v) in [
        ("transforms", "dropMalformed"),
        (
            "transforms.dropMalformed.type",
            "org.apache.kafka.connect.transforms.Filter",
        ),
        ("transforms.dropMalformed.predicate", "marked"),
        ("predicates", "marked"),
        (
            "predicates.marked.type",
            "org.apache.kafka.connect.transforms.predicates.HasHeaderKey",
        ),
        ("predicates.marked.name", "sluice.simulator.malformed"),
    ] {
        sink[k] = json!(v);
    }
    let sink = s.connector("file", sink);
    let output = s.run(true, &[&source, &all, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected: BTreeSet<_> = read_lines(&s.path("all.jsonl"))
        .iter()
        .filter(|l| l["headers"].get("sluice.simulator.malformed").is_none())
        .map(task_seq)
        .collect();
    let got: BTreeSet<_> = read_lines(&s.path("out.jsonl"))
        .iter()
        .map(task_seq)
        .collect();
    assert!(
        expected.len() < 3_000 && expected.len() > 2_500,
        "{}",
        expected.len()
    );
    assert_eq!(got, expected);
}
