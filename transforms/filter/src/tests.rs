use serde_json::json;
use sluice_api::{ErrorKind, Header, Severity};

use super::*;
use serde_json::Value;
use sluice_api::Payload;

fn config(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

fn filter(condition: &str) -> Box<dyn Transform> {
    filter_with(condition, "fail")
}

fn filter_with(condition: &str, on_error: &str) -> Box<dyn Transform> {
    FilterPlugin
        .create(&config(
            json!({"condition": condition, "on.error": on_error}),
        ))
        .unwrap()
}

/// Runs `record` through `f`: `Ok(true)` kept, `Ok(false)` dropped. Checks that deciding
/// by reference (`keeps`, what the runtime calls for a filter) says the same as `apply`.
fn run(f: &mut dyn Transform, record: Record) -> Result<bool, ConnectError> {
    assert!(f.is_filter());
    let by_reference = f.keeps(&record);
    let mut out = Vec::new();
    let original = record.clone();
    let applied = f.apply(record, &mut out).map(|()| match out.as_slice() {
        [] => false,
        [kept] => {
            assert_eq!(kept, &original, "a kept record is unchanged");
            true
        }
        _ => panic!("more than one record out"),
    });
    // Error texts may list a map's entries in any order: compare kinds.
    assert_eq!(
        by_reference.map_err(|e| e.kind()),
        applied.as_ref().copied().map_err(|e| e.kind()),
        "keeps and apply disagree"
    );
    applied
}

fn keeps(condition: &str, record: Record) -> bool {
    run(filter(condition).as_mut(), record).unwrap()
}

fn purchase() -> Record {
    Record::new(
        "events",
        json!({"event_id": "5a1c", "user_id": 1234, "event_type": "purchase",
               "product_id": "Laptop_X1", "timestamp": "2024-01-01T00:00:00.212Z",
               "price": 237.56}),
    )
}

fn view() -> Record {
    Record::new(
        "events",
        json!({"event_id": "5a1d", "user_id": 1234, "event_type": "view",
               "product_id": "Laptop_X1", "timestamp": "2024-01-01T00:00:00.212Z",
               "price": 237.56}),
    )
}

const ECOMMERCE: &str = r#"value.event_type == "purchase" && value.price != null"#;

#[test]
fn info_names_the_plugin() {
    let info = FilterPlugin.info();
    assert_eq!(info.class, "Filter");
    assert_eq!(info.aliases, vec!["sluice.Filter".to_string()]);
    assert_eq!(info.kind, PluginKind::Transform);
    assert_eq!(info.version, API_VERSION);
    let schema = FilterPlugin.config_schema();
    assert!(schema["properties"]["condition"].is_object(), "{schema}");
    assert!(schema["properties"]["on.error"].is_object(), "{schema}");
}

#[test]
fn ecommerce_example() {
    assert!(keeps(ECOMMERCE, purchase()));
    assert!(!keeps(ECOMMERCE, view()));
    let mut no_price = purchase();
    no_price.value_json_mut().unwrap()["price"] = Value::Null;
    assert!(!keeps(ECOMMERCE, no_price));
}

#[test]
fn sensor_example_with_int_and_double() {
    let sensor = |v: Value| Record::new("sensors", json!({"sensor_id": "cpu_usage", "value": v}));
    let cond = r#"value.value > 80.0 && value.sensor_id == "cpu_usage""#;
    assert!(keeps(cond, sensor(json!(85.5))));
    assert!(!keeps(cond, sensor(json!(42.0))));
    // An integer in the record against a double literal, and the other way round.
    assert!(keeps(cond, sensor(json!(81))));
    assert!(!keeps(cond, sensor(json!(80))));
    let int_literal = r#"value.value > 80 && value.sensor_id == "cpu_usage""#;
    assert!(keeps(int_literal, sensor(json!(80.5))));
    assert!(!keeps(int_literal, sensor(json!(79.9))));
    assert!(keeps("value.value == 80", sensor(json!(80.0))));
    let other = Record::new("sensors", json!({"sensor_id": "mem", "value": 99.0}));
    assert!(!keeps(cond, other));
}

#[test]
fn null_checks() {
    let r = Record::new("t", json!({"a": null, "b": 1, "c": {"d": null}}));
    assert!(keeps("value.a == null", r.clone()));
    assert!(keeps("value.b != null", r.clone()));
    assert!(keeps("value.c.d == null", r.clone()));
    assert!(keeps("has(value.a) && !has(value.z)", r.clone()));
    assert!(keeps("has(value.c.d) && !has(value.c.e)", r.clone()));
    // A tombstone's value is null.
    let mut tombstone = r;
    tombstone.value = None;
    assert!(keeps("value == null", tombstone));
}

#[test]
fn topic_key_headers_and_timestamp() {
    let mut r = purchase();
    r.key = Some(Payload::Json(json!({"user_id": 1234})));
    r.timestamp = Some(1_700_000_000_000);
    r.headers = vec![
        Header::new("source", "web"),
        Header::new("trace-id", "abc"),
        Header::new("source", "app"),
        Header::new("meta", json!({"region": "eu"})),
    ];
    assert!(keeps(r#"topic == "events""#, r.clone()));
    assert!(!keeps(r#"topic.startsWith("orders")"#, r.clone()));
    assert!(keeps("key.user_id == 1234", r.clone()));
    assert!(keeps(r#"key == {"user_id": 1234}"#, r.clone()));
    assert!(keeps(r#"headers.source == "app""#, r.clone()), "last wins");
    assert!(keeps(r#"headers["source"] == "app""#, r.clone()));
    assert!(keeps(r#"headers["trace-id"] == "abc""#, r.clone()));
    assert!(keeps(r#"headers.meta.region == "eu""#, r.clone()));
    assert!(keeps(
        r#""trace-id" in headers && !("x" in headers)"#,
        r.clone()
    ));
    assert!(keeps("timestamp > 1600000000000", r.clone()));
    let mut no_ts = r.clone();
    no_ts.timestamp = None;
    no_ts.key = None;
    assert!(keeps("timestamp == null && key == null", no_ts));
    let mut bytes_key = r;
    bytes_key.key = Some(Payload::Bytes(b"k1".to_vec()));
    assert!(keeps(r#"key == b"k1""#, bytes_key));
}

#[test]
fn whole_value_uses() {
    let r = Record::new("t", json!({"a": 1, "tags": ["x", "y"], "m": {"k": "v"}}));
    assert!(keeps(
        r#"value == {"a": 1, "tags": ["x", "y"], "m": {"k": "v"}}"#,
        r.clone()
    ));
    assert!(keeps(
        r#"{"a": 1, "tags": ["x", "y"], "m": {"k": "v"}} == value"#,
        r.clone()
    ));
    assert!(keeps("size(value) == 3", r.clone()));
    assert!(keeps(r#""a" in value && value["a"] == 1"#, r.clone()));
    assert!(keeps(r#"value.exists(k, k == "tags")"#, r.clone()));
    assert!(keeps(
        r#""y" in value.tags && size(value.tags) == 2"#,
        r.clone()
    ));
    assert!(keeps(r#"value.m == {"k": "v"}"#, r.clone()));
    assert!(keeps(r#"value.tags.exists(t, t == "x")"#, r.clone()));
    assert!(keeps(r#"value.m.k.matches("^v$")"#, r));
}

#[test]
fn evaluation_errors_follow_on_error() {
    let cases = [
        // A missing field.
        ("value.missing == 1", purchase()),
        // A wrong type.
        ("value.event_type > 3", purchase()),
        // A field of a non-object.
        ("value.price.amount == 1", purchase()),
        // A result that is not a boolean.
        ("value.price", purchase()),
        ("value", purchase()),
        ("value.user_id + 1", purchase()),
    ];
    for (cond, record) in cases {
        let err = run(filter(cond).as_mut(), record.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Data, "{cond}: {err}");
        assert!(
            !run(filter_with(cond, "drop").as_mut(), record.clone()).unwrap(),
            "{cond}"
        );
        assert!(
            run(filter_with(cond, "keep").as_mut(), record).unwrap(),
            "{cond}"
        );
    }
    let err = run(filter("value.price").as_mut(), purchase()).unwrap_err();
    assert!(err.message().contains("not a boolean"), "{err}");
    let err = run(filter("value.missing == 1").as_mut(), purchase()).unwrap_err();
    assert!(err.message().contains("missing"), "{err}");
}

#[test]
fn bytes_value_is_an_error_or_dropped() {
    let mut r = purchase();
    r.value = Some(Payload::Bytes(b"not json {".to_vec()));
    let err = run(filter(ECOMMERCE).as_mut(), r.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    assert!(err.message().contains("bytes"), "{err}");
    assert!(!run(filter_with(ECOMMERCE, "drop").as_mut(), r.clone()).unwrap());
    assert!(run(filter_with(ECOMMERCE, "keep").as_mut(), r.clone()).unwrap());
    // A condition that does not read the value still works on it.
    assert!(keeps(r#"topic == "events""#, r));
}

#[test]
fn invalid_expression_is_an_issue_with_position() {
    let issues = FilterPlugin.validate(&config(json!({"condition": "value.price >"})));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].severity, Severity::Error);
    assert_eq!(issues[0].key.as_deref(), Some("condition"));
    assert!(
        issues[0].message.contains("at line 1 column 14"),
        "{}",
        issues[0].message
    );
    assert!(
        issues[0].message.contains("Syntax error"),
        "{}",
        issues[0].message
    );

    let issues = FilterPlugin.validate(&config(json!({"condition": "a ==\n  && b"})));
    assert!(
        issues[0].message.contains("at line 2 column 3"),
        "{}",
        issues[0].message
    );

    let issues = FilterPlugin.validate(&config(json!({"condition": "   "})));
    assert_eq!(issues[0].key.as_deref(), Some("condition"));

    let err = FilterPlugin
        .create(&config(json!({"condition": "value.price >"})))
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("condition"), "{err}");
}

#[test]
fn missing_condition_and_bad_on_error_are_issues() {
    let issues = FilterPlugin.validate(&config(json!({})));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key.as_deref(), Some("condition"));
    let issues = FilterPlugin.validate(&config(json!({"condition": "true", "on.error": "skip"})));
    assert_eq!(issues[0].key.as_deref(), Some("on.error"), "{issues:?}");
}

#[test]
fn string_valued_config_parses() {
    let cfg = config(json!({"condition": "true", "on.error": "drop", "unknown": "x"}));
    assert!(FilterPlugin.validate(&cfg).is_empty());
    let parsed: FilterConfig = parse_config(&cfg).unwrap();
    assert_eq!(parsed.on_error, OnError::Drop);
    let parsed: FilterConfig = parse_config(&config(json!({"condition": "false"}))).unwrap();
    assert_eq!(parsed.on_error, OnError::Fail);
    assert!(!keeps("false", purchase()));
    assert!(keeps("true", purchase()));
}

#[test]
fn filter_new_and_matches() {
    let f = Filter::new(ECOMMERCE, OnError::Fail).unwrap();
    assert!(f.matches(&purchase()).unwrap());
    assert!(!f.matches(&view()).unwrap());
    assert!(Filter::new("(", OnError::Fail).is_err());
}

#[test]
fn strange_records_never_panic() {
    let f = filter_with(
        r#"value.a.b.c == "x" || value[0] == 1 || key.z > 2"#,
        "keep",
    );
    let values = [
        json!(null),
        json!(1),
        json!("s"),
        json!([1, 2]),
        json!({"a": [1]}),
        json!({"a": {"b": 7}}),
        json!({"a": {"b": {"c": 18446744073709551615u64}}}),
        json!({"a": {"b": {"c": 1e308}}}),
    ];
    let mut f = f;
    for v in values {
        let mut r = Record::new("t", v);
        r.key = Some(Payload::Bytes(vec![0xff]));
        assert!(run(f.as_mut(), r).unwrap());
    }
}

#[test]
fn documented_examples_compile_and_work() {
    let examples = [
        r#"value.event_type == "purchase" && value.price != null"#,
        r#"value.value > 80.0 && value.sensor_id == "cpu_usage""#,
        r#"has(value.price) && value.price >= 100.0"#,
        r#"topic.startsWith("orders.") && headers["source"] == "web""#,
        r#"value.user.country in ["DE", "FR", "NL"]"#,
        r#"value.items.exists(i, i.sku == "Laptop_X1" && i.qty > 1)"#,
        r#"value.email.matches("@example\\.com$")"#,
        r#"key != null && timestamp != null && timestamp > 1704067200000"#,
    ];
    for e in examples {
        assert!(
            FilterPlugin
                .validate(&config(json!({ "condition": e })))
                .is_empty(),
            "{e}"
        );
    }
    let mut r = Record::new(
        "orders.eu",
        json!({"user": {"country": "DE"}, "email": "a@example.com",
               "items": [{"sku": "Laptop_X1", "qty": 2}], "name": " Ab "}),
    );
    r.headers = vec![Header::new("source", "web")];
    assert!(keeps(examples[3], r.clone()));
    assert!(keeps(examples[4], r.clone()));
    assert!(keeps(examples[5], r.clone()));
    assert!(keeps(examples[6], r.clone()));
    assert!(keeps(
        r#"value.name.trim().lowerAscii() == "ab""#,
        r.clone()
    ));
    assert!(keeps("math.greatest(1, 2) == 2", r.clone()));
    assert!(keeps("[1, 2].exists_one(x, x > 1)", r.clone()));
    assert!(keeps(
        r#"int("3") == 3 && double(value.items[0].qty) == 2.0"#,
        r.clone()
    ));
    // Errors on the side of && / || that does not decide the result are absorbed.
    assert!(!keeps("value.missing == 1 && false", r.clone()));
    assert!(keeps("value.missing == 1 || true", r.clone()));
}
