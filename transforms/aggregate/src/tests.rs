use super::*;
use serde_json::json;
use sluice_api::ErrorKind;

fn config(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

fn aggregate(v: Value) -> Aggregate {
    Aggregate::new(&config(v)).unwrap()
}

fn rec(value: Value) -> Record {
    Record::new("events", value)
}

fn ms(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

fn run(a: &mut Aggregate, records: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in records {
        a.apply(r.clone(), &mut out).unwrap();
    }
    out
}

fn flushed(a: &mut Aggregate) -> Vec<Record> {
    let mut out = Vec::new();
    a.flush(&mut out).unwrap();
    out
}

fn values(out: &[Record]) -> Vec<Value> {
    out.iter()
        .map(|r| r.value_json().unwrap().clone())
        .collect()
}

/// Everything about an emitted record, as text (f64s printed exactly).
fn dump(out: &[Record]) -> Vec<String> {
    out.iter()
        .map(|r| {
            format!(
                "{} {:?} {} {}",
                r.topic,
                r.timestamp,
                serde_json::to_string(r.key_json().unwrap()).unwrap(),
                serde_json::to_string(r.value_json().unwrap()).unwrap()
            )
        })
        .collect()
}

fn view(product: &str, at: &str) -> Record {
    rec(json!({"product_id": product, "event_type": "view", "timestamp": at}))
}

fn purchase(product: &str, at: &str, price: f64) -> Record {
    rec(json!({"product_id": product, "event_type": "purchase", "timestamp": at, "price": price}))
}

fn views_config() -> Value {
    json!({
        "group.by": "product_id",
        "window": "tumbling:1m",
        "timestamp.field": "timestamp",
        "aggregates": "views",
        "aggregates.views.function": "count_where",
        "aggregates.views.where": "value.event_type == \"view\""
    })
}

#[test]
fn plugin_info_and_schema() {
    let info = AggregatePlugin.info();
    assert_eq!(info.class, "Aggregate");
    assert_eq!(info.aliases, vec!["sluice.Aggregate".to_string()]);
    assert_eq!(info.kind, PluginKind::Transform);
    let schema = AggregatePlugin.config_schema();
    let props = schema["properties"].as_object().unwrap();
    for key in [
        "group.by",
        "window",
        "timestamp.field",
        "allowed.lateness",
        "late.records",
        "emit",
        "aggregates",
        "topic",
    ] {
        assert!(props.contains_key(key), "{key} missing from the schema");
    }
    assert!(AggregatePlugin.validate(&config(views_config())).is_empty());
    assert!(AggregatePlugin.create(&config(views_config())).is_ok());
}

#[test]
fn tumbling_counts_per_product() {
    let mut a = aggregate(views_config());
    let out = run(
        &mut a,
        &[
            view("p1", "2024-01-01T00:00:05Z"),
            view("p1", "2024-01-01T00:00:10Z"),
            view("p2", "2024-01-01T00:00:20Z"),
            purchase("p1", "2024-01-01T00:00:30Z", 10.5),
            view("p2", "2024-01-01T00:00:59.999Z"),
        ],
    );
    assert!(
        out.is_empty(),
        "final mode emits nothing before the window closes"
    );
    let out = run(&mut a, &[view("p1", "2024-01-01T00:01:00Z")]);
    assert_eq!(
        values(&out),
        vec![
            json!({"window_start": "2024-01-01T00:00:00.000Z",
                   "window_end": "2024-01-01T00:01:00.000Z", "product_id": "p1", "views": 2}),
            json!({"window_start": "2024-01-01T00:00:00.000Z",
                   "window_end": "2024-01-01T00:01:00.000Z", "product_id": "p2", "views": 2}),
        ]
    );
    assert_eq!(
        out[0].key_json().unwrap(),
        &json!({"product_id": "p1", "window_start": "2024-01-01T00:00:00.000Z"})
    );
    assert_eq!(out[0].timestamp, Some(ms("2024-01-01T00:01:00Z")));
    assert_eq!(out[0].topic, "events");
    // The closed window is released; the new one is open.
    assert_eq!(a.open_windows(), 1);
    assert_eq!(a.state_size(), 1);

    let out = flushed(&mut a);
    assert_eq!(
        values(&out),
        vec![json!({"window_start": "2024-01-01T00:01:00.000Z",
                    "window_end": "2024-01-01T00:02:00.000Z", "product_id": "p1", "views": 1})]
    );
    assert_eq!(a.state_size(), 0);
}

#[test]
fn tumbling_global_sum_gmv() {
    let mut a = aggregate(json!({
        "group.by": "",
        "window": "tumbling:1m",
        "timestamp.field": "timestamp",
        "aggregates": "gmv,orders",
        "aggregates.gmv.function": "sum",
        "aggregates.gmv.field": "price",
        "aggregates.gmv.where": "value.event_type == \"purchase\"",
        "aggregates.orders.function": "count",
        "aggregates.orders.where": "value.event_type == \"purchase\"",
        "topic": "gmv"
    }));
    let mut out = run(
        &mut a,
        &[
            purchase("p1", "2024-01-01T00:00:10Z", 10.5),
            purchase("p2", "2024-01-01T00:00:20Z", 4.25),
            view("p1", "2024-01-01T00:00:30Z"),
            purchase("p3", "2024-01-01T00:01:10Z", 1.0),
            view("p1", "2024-01-01T00:02:05Z"),
        ],
    );
    out.extend(flushed(&mut a));
    assert_eq!(
        values(&out),
        vec![
            json!({"window_start": "2024-01-01T00:00:00.000Z",
                   "window_end": "2024-01-01T00:01:00.000Z", "gmv": 14.75, "orders": 2}),
            json!({"window_start": "2024-01-01T00:01:00.000Z",
                   "window_end": "2024-01-01T00:02:00.000Z", "gmv": 1.0, "orders": 1}),
            json!({"window_start": "2024-01-01T00:02:00.000Z",
                   "window_end": "2024-01-01T00:03:00.000Z", "gmv": null, "orders": 0}),
        ]
    );
    assert!(out.iter().all(|r| r.topic == "gmv"));
    assert_eq!(
        out[0].key_json().unwrap(),
        &json!({"window_start": "2024-01-01T00:00:00.000Z"})
    );
}

#[test]
fn hopping_windows_hold_a_record_several_times() {
    let mut a = aggregate(json!({
        "window": "hopping:10s,5s",
        "timestamp.field": "ts",
        "aggregates": "n,total",
        "aggregates.n.function": "count",
        "aggregates.total.function": "sum",
        "aggregates.total.field": "x"
    }));
    let mut out = run(
        &mut a,
        &[
            rec(json!({"ts": 3000, "x": 1})),
            rec(json!({"ts": 12000, "x": 10})),
            // Its window [0s,10s) closed at the watermark 12s; [5s,15s) is still open.
            rec(json!({"ts": 7000, "x": 100})),
        ],
    );
    out.extend(flushed(&mut a));
    let got: Vec<(Value, Value, Value, Value)> = values(&out)
        .into_iter()
        .map(|v| {
            (
                v["window_start"].clone(),
                v["window_end"].clone(),
                v["n"].clone(),
                v["total"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                json!("1969-12-31T23:59:55.000Z"),
                json!("1970-01-01T00:00:05.000Z"),
                json!(1),
                json!(1.0)
            ),
            (
                json!("1970-01-01T00:00:00.000Z"),
                json!("1970-01-01T00:00:10.000Z"),
                json!(1),
                json!(1.0)
            ),
            (
                json!("1970-01-01T00:00:05.000Z"),
                json!("1970-01-01T00:00:15.000Z"),
                json!(2),
                json!(110.0)
            ),
            (
                json!("1970-01-01T00:00:10.000Z"),
                json!("1970-01-01T00:00:20.000Z"),
                json!(1),
                json!(10.0)
            ),
        ]
    );
    assert_eq!(a.late_records_dropped(), 0);
}

fn sensor(id: &str, t: i64, v: Value) -> Record {
    let mut r = rec(json!({"sensor_id": id, "value": v}));
    r.timestamp = Some(t);
    r
}

#[test]
fn sliding_last_n_statistics() {
    let mut a = aggregate(json!({
        "group.by": "sensor_id",
        "window": "sliding:3",
        "aggregates": "n,avg,min,max,median",
        "aggregates.n.function": "count",
        "aggregates.avg.function": "avg",
        "aggregates.avg.field": "value",
        "aggregates.min.function": "min",
        "aggregates.min.field": "value",
        "aggregates.max.function": "max",
        "aggregates.max.field": "value",
        "aggregates.median.function": "median",
        "aggregates.median.field": "value"
    }));
    let out = run(
        &mut a,
        &[
            sensor("s1", 1000, json!(10)),
            sensor("s1", 2000, json!(20)),
            sensor("s2", 2500, json!(5)),
            sensor("s1", 3000, json!(30)),
            sensor("s1", 4000, json!(40)),
            sensor("s1", 5000, Value::Null),
        ],
    );
    let stats: Vec<Value> = values(&out)
        .into_iter()
        .map(|v| {
            json!([
                v["sensor_id"],
                v["n"],
                v["avg"],
                v["min"],
                v["max"],
                v["median"],
                v["window_start"],
                v["window_end"]
            ])
        })
        .collect();
    let t = |ms: i64| json!(time_text(ms));
    assert_eq!(
        stats,
        vec![
            json!(["s1", 1, 10.0, 10.0, 10.0, 10.0, t(1000), t(1000)]),
            json!(["s1", 2, 15.0, 10.0, 20.0, 15.0, t(1000), t(2000)]),
            json!(["s2", 1, 5.0, 5.0, 5.0, 5.0, t(2500), t(2500)]),
            json!(["s1", 3, 20.0, 10.0, 30.0, 20.0, t(1000), t(3000)]),
            json!(["s1", 3, 30.0, 20.0, 40.0, 30.0, t(2000), t(4000)]),
            // A null value takes a place in the buffer but no part in the statistics.
            json!(["s1", 3, 35.0, 30.0, 40.0, 35.0, t(3000), t(5000)]),
        ]
    );
    assert_eq!(out[5].timestamp, Some(5000));
    assert_eq!(a.state_size(), 2);
    assert!(flushed(&mut a).is_empty());
}

#[test]
fn emit_update_versus_final() {
    let records = [
        view("p1", "2024-01-01T00:00:05Z"),
        view("p1", "2024-01-01T00:00:10Z"),
        // Changes no result: no update.
        purchase("p1", "2024-01-01T00:00:20Z", 3.0),
        view("p2", "2024-01-01T00:01:05Z"),
    ];
    let mut update_config = views_config();
    update_config["emit"] = json!("update");
    let mut update = aggregate(update_config);
    let out = run(&mut update, &records);
    let got: Vec<(Value, Value, Value)> = values(&out)
        .into_iter()
        .map(|v| {
            (
                v["product_id"].clone(),
                v["window_start"].clone(),
                v["views"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("p1"), json!("2024-01-01T00:00:00.000Z"), json!(1)),
            (json!("p1"), json!("2024-01-01T00:00:00.000Z"), json!(2)),
            (json!("p2"), json!("2024-01-01T00:01:00.000Z"), json!(1)),
        ]
    );
    // The first window was closed and released without another record.
    assert_eq!(update.state_size(), 1);
    assert!(flushed(&mut update).is_empty());
    assert_eq!(update.state_size(), 0);

    let mut fin = aggregate(views_config());
    let mut out = run(&mut fin, &records);
    assert_eq!(
        values(&out),
        vec![json!({"window_start": "2024-01-01T00:00:00.000Z",
                    "window_end": "2024-01-01T00:01:00.000Z", "product_id": "p1", "views": 2})]
    );
    out = flushed(&mut fin);
    assert_eq!(out.len(), 1);
    assert_eq!(values(&out)[0]["product_id"], json!("p2"));
}

#[test]
fn late_records_are_dropped_or_fail() {
    let base = json!({
        "window": "tumbling:1m",
        "timestamp.field": "ts",
        "aggregates": "n",
        "aggregates.n.function": "count"
    });
    let mut a = aggregate(base.clone());
    let out = run(
        &mut a,
        &[
            rec(json!({"ts": 0})),
            rec(json!({"ts": 65_000})),
            rec(json!({"ts": 30_000})),
        ],
    );
    assert_eq!(values(&out).len(), 1);
    assert_eq!(values(&out)[0]["n"], json!(1));
    assert_eq!(a.late_records_dropped(), 1);
    let out = flushed(&mut a);
    assert_eq!(
        values(&out)[0]["n"],
        json!(1),
        "the late record counted nowhere"
    );

    let mut fail = base.clone();
    fail["late.records"] = json!("fail");
    let mut a = aggregate(fail);
    run(&mut a, &[rec(json!({"ts": 0})), rec(json!({"ts": 65_000}))]);
    let err = a
        .apply(rec(json!({"ts": 30_000})), &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    assert!(err.message().contains("later than the allowed lateness"));

    // With 10s of lateness the window [0, 1m) stays open until an event time of 1m10s.
    let mut lenient = base;
    lenient["allowed.lateness"] = json!("10s");
    let mut a = aggregate(lenient);
    let out = run(
        &mut a,
        &[
            rec(json!({"ts": 0})),
            rec(json!({"ts": 65_000})),
            rec(json!({"ts": 30_000})),
        ],
    );
    assert!(out.is_empty());
    assert_eq!(a.watermark(), Some(55_000));
    let out = run(&mut a, &[rec(json!({"ts": 70_000}))]);
    assert_eq!(
        values(&out),
        vec![json!({"window_start": "1970-01-01T00:00:00.000Z",
        "window_end": "1970-01-01T00:01:00.000Z", "n": 2})]
    );
    assert_eq!(a.late_records_dropped(), 0);
}

#[test]
fn watermark_releases_closed_windows() {
    let mut a = aggregate(json!({
        "group.by": "k",
        "window": "tumbling:1s",
        "timestamp.field": "ts",
        "aggregates": "n",
        "aggregates.n.function": "count"
    }));
    let records: Vec<Record> = (0..100)
        .map(|i| rec(json!({"k": format!("k{i}"), "ts": i})))
        .collect();
    assert!(run(&mut a, &records).is_empty());
    assert_eq!(a.state_size(), 100);
    let out = run(&mut a, &[rec(json!({"k": "k0", "ts": 1000}))]);
    assert_eq!(out.len(), 100);
    // Sorted by group key.
    assert_eq!(values(&out)[0]["k"], json!("k0"));
    assert_eq!(values(&out)[1]["k"], json!("k1"));
    assert_eq!(values(&out)[2]["k"], json!("k10"));
    assert_eq!(a.state_size(), 1);
    assert_eq!(a.open_windows(), 1);
    let checkpoint = a.checkpoint().unwrap();
    assert_eq!(checkpoint["windows"].as_array().unwrap().len(), 1);
}

#[test]
fn tick_closes_processing_time_windows() {
    let mut a = aggregate(json!({
        "window": "tumbling:1m",
        "aggregates": "n",
        "aggregates.n.function": "count"
    }));
    // No timestamp field and no record timestamp: processing time.
    let mut out = Vec::new();
    a.apply(rec(json!({"a": 1})), &mut out).unwrap();
    a.apply(rec(json!({"a": 2})), &mut out).unwrap();
    assert!(out.is_empty());
    let now = chrono::Utc::now().timestamp_millis();
    a.tick(now + 120_000, &mut out).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(values(&out)[0]["n"], json!(2));
    assert_eq!(a.state_size(), 0);

    // With event time, ticks change nothing.
    let mut a = aggregate(views_config());
    run(&mut a, &[view("p1", "2024-01-01T00:00:05Z")]);
    let mut out = Vec::new();
    a.tick(now + 120_000, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(a.state_size(), 1);
}

#[test]
fn group_fields_are_named_by_last_segment() {
    let mut a = aggregate(json!({
        "group.by": "device.id, site.id, region",
        "window": "tumbling:1h",
        "timestamp.field": "at",
        "aggregates": "m",
        "aggregates.m.function": "max",
        "aggregates.m.field": "reading.temp"
    }));
    run(
        &mut a,
        &[
            rec(
                json!({"device": {"id": 7}, "site": {"id": "a"}, "region": null,
                       "at": "2024-05-01T10:15:00+02:00", "reading": {"temp": 21.5}}),
            ),
            rec(
                json!({"device": {"id": 7}, "site": {"id": "a"}, "region": null,
                       "at": "2024-05-01T08:45:00Z", "reading": {"temp": 23}}),
            ),
        ],
    );
    let out = flushed(&mut a);
    assert_eq!(
        values(&out),
        vec![json!({"window_start": "2024-05-01T08:00:00.000Z",
                    "window_end": "2024-05-01T09:00:00.000Z",
                    "device.id": 7, "site.id": "a", "region": null, "m": 23.0})]
    );
    assert_eq!(
        out[0].key_json().unwrap(),
        &json!({"device.id": 7, "site.id": "a", "region": null,
                "window_start": "2024-05-01T08:00:00.000Z"})
    );
}

#[test]
fn data_errors_name_the_field_and_leave_no_trace() {
    let mut a = aggregate(json!({
        "group.by": "product_id",
        "window": "tumbling:1m",
        "timestamp.field": "timestamp",
        "aggregates": "views,gmv",
        "aggregates.views.function": "count",
        "aggregates.gmv.function": "sum",
        "aggregates.gmv.field": "price"
    }));
    let mut out = Vec::new();
    let err = a
        .apply(rec(json!({"timestamp": "2024-01-01T00:00:00Z"})), &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    assert!(
        err.message().contains("\"product_id\""),
        "{}",
        err.message()
    );

    let err = a
        .apply(rec(json!({"product_id": "p1"})), &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    assert!(err.message().contains("\"timestamp\""), "{}", err.message());

    let err = a
        .apply(
            rec(json!({"product_id": "p1", "timestamp": "yesterday"})),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);

    let err = a
        .apply(
            rec(json!({"product_id": "p1", "timestamp": 0, "price": "12.5"})),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    assert!(err.message().contains("\"price\""), "{}", err.message());

    let err = a.apply(rec(json!([1, 2])), &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    let mut bytes = rec(json!({}));
    bytes.value = Some(Payload::Bytes(b"{not json".to_vec()));
    assert_eq!(
        a.apply(bytes, &mut out).unwrap_err().kind(),
        ErrorKind::Data
    );
    let mut tombstone = rec(json!({}));
    tombstone.value = None;
    assert_eq!(
        a.apply(tombstone, &mut out).unwrap_err().kind(),
        ErrorKind::Data
    );

    assert!(out.is_empty());
    assert_eq!(a.state_size(), 0);
    assert_eq!(a.watermark(), None);
}

#[test]
fn where_evaluation_errors_are_data_errors() {
    let mut a = aggregate(json!({
        "window": "tumbling:1m",
        "timestamp.field": "ts",
        "aggregates": "big",
        "aggregates.big.function": "count_where",
        "aggregates.big.where": "value.amount > 10"
    }));
    let err = a.apply(rec(json!({"ts": 0})), &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Data);
    assert!(
        err.message().contains("aggregates.big.where"),
        "{}",
        err.message()
    );
}

fn issue_keys(v: Value) -> Vec<String> {
    AggregatePlugin
        .validate(&config(v))
        .into_iter()
        .map(|i| i.key.unwrap_or_default())
        .collect()
}

#[test]
fn validation_errors_name_their_keys() {
    let mut bad_window = views_config();
    bad_window["window"] = json!("tumbling:5x");
    assert_eq!(issue_keys(bad_window), vec!["window"]);
    for window in [
        "rolling:1m",
        "hopping:1m",
        "hopping:1m,2m",
        "sliding:0",
        "tumbling:0s",
    ] {
        let mut c = views_config();
        c["window"] = json!(window);
        assert_eq!(issue_keys(c), vec!["window"], "{window}");
    }

    let mut lateness = views_config();
    lateness["allowed.lateness"] = json!("soon");
    assert_eq!(issue_keys(lateness), vec!["allowed.lateness"]);

    assert_eq!(
        issue_keys(json!({
            "window": "tumbling:1m",
            "aggregates": "a,b,c,d",
            "aggregates.a.function": "mode",
            "aggregates.b.function": "sum",
            "aggregates.c.function": "count_where",
            "aggregates.c.where": "value.x ==",
            "aggregates.d.function": "count_where"
        })),
        vec![
            "aggregates.a.function",
            "aggregates.b.field",
            "aggregates.c.where",
            "aggregates.d.where"
        ]
    );
    assert_eq!(
        issue_keys(json!({"window": "tumbling:1m", "aggregates": "x"})),
        vec!["aggregates.x.function"]
    );
    assert_eq!(
        issue_keys(json!({"window": "tumbling:1m", "emit": "sometimes"})),
        vec!["emit"]
    );
    assert_eq!(issue_keys(json!({"group.by": "a"})), vec!["window"]);
    assert_eq!(
        issue_keys(json!({"window": "tumbling:1m", "group.by": "a",
                          "aggregates": "a", "aggregates.a.function": "count"})),
        vec!["aggregates"]
    );

    let err = AggregatePlugin
        .create(&config(json!({"window": "nope"})))
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn durations_and_windows_parse() {
    assert_eq!(parse_duration("250ms"), Ok(250));
    assert_eq!(parse_duration("2s"), Ok(2_000));
    assert_eq!(parse_duration("5m"), Ok(300_000));
    assert_eq!(parse_duration("1h"), Ok(3_600_000));
    assert_eq!(parse_duration("1d"), Ok(86_400_000));
    assert_eq!(parse_duration("0"), Ok(0));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("-5s").is_err());
    assert!(parse_duration("99999999999999999d").is_err());
    assert_eq!(
        parse_window("hopping:5m,1m"),
        Ok(WindowSpec::Hopping {
            size_ms: 300_000,
            advance_ms: 60_000
        })
    );
    assert_eq!(
        parse_window("sliding:10"),
        Ok(WindowSpec::Sliding { count: 10 })
    );
    assert!(parse_window("hopping:1d,1ms").is_err());
}

/// A mixed stream: several keys, out-of-order times, a late record, inexact floats.
fn stream() -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..60i64 {
        let product = format!("p{}", i % 4);
        let t = 1_700_000_000_000 + i * 7_000 - (i % 5) * 3_000;
        let kind = if i % 3 == 0 { "purchase" } else { "view" };
        let mut value = json!({"product_id": product, "event_type": kind, "ts": t,
                               "price": 0.1 * (i % 7) as f64 + 0.7});
        if i % 11 == 0 {
            value["price"] = Value::Null;
        }
        records.push(rec(value));
    }
    // Far behind everything: late.
    records.insert(
        40,
        rec(json!({"product_id": "p1", "event_type": "view",
                                  "ts": 1_700_000_000_000i64, "price": 1.0})),
    );
    records
}

fn full_config(window: &str, emit: &str) -> Value {
    json!({
        "group.by": "product_id",
        "window": window,
        "timestamp.field": "ts",
        "allowed.lateness": "5s",
        "emit": emit,
        "aggregates": "n,views,gmv,avg,min,max,median",
        "aggregates.n.function": "count",
        "aggregates.views.function": "count_where",
        "aggregates.views.where": "value.event_type == \"view\"",
        "aggregates.gmv.function": "sum",
        "aggregates.gmv.field": "price",
        "aggregates.gmv.where": "value.event_type == \"purchase\"",
        "aggregates.avg.function": "avg",
        "aggregates.avg.field": "price",
        "aggregates.min.function": "min",
        "aggregates.min.field": "price",
        "aggregates.max.function": "max",
        "aggregates.max.field": "price",
        "aggregates.median.function": "median",
        "aggregates.median.field": "price"
    })
}

#[test]
fn checkpoint_restore_is_equivalent_to_one_run() {
    let records = stream();
    for (window, emit) in [
        ("tumbling:30s", "final"),
        ("tumbling:30s", "update"),
        ("hopping:40s,15s", "final"),
        ("hopping:40s,15s", "update"),
        ("sliding:4", "final"),
    ] {
        let cfg = full_config(window, emit);
        let mut whole = aggregate(cfg.clone());
        let mut expected = run(&mut whole, &records);
        expected.extend(flushed(&mut whole));
        let expected = dump(&expected);
        assert!(expected.len() > 10, "{window} {emit}: {}", expected.len());
        let late = u64::from(!window.starts_with("sliding"));
        assert_eq!(whole.late_records_dropped(), late, "{window} {emit}");

        for k in [0, 1, 7, 20, 40, 41, 59, records.len()] {
            let mut first = aggregate(cfg.clone());
            let mut got = run(&mut first, &records[..k]);
            // Through text, as a checkpoint store would keep it.
            let saved = serde_json::to_string(&first.checkpoint().unwrap()).unwrap();
            drop(first);
            let mut second = aggregate(cfg.clone());
            second
                .restore(serde_json::from_str(&saved).unwrap())
                .unwrap();
            assert_eq!(
                serde_json::to_string(&second.checkpoint().unwrap()).unwrap(),
                saved,
                "{window} {emit} k={k}: restore is not exact"
            );
            got.extend(run(&mut second, &records[k..]));
            got.extend(flushed(&mut second));
            assert_eq!(dump(&got), expected, "{window} {emit} k={k}");
            assert_eq!(
                second.late_records_dropped(),
                whole.late_records_dropped(),
                "{window} {emit} k={k}"
            );
        }
    }
}

#[test]
fn medians_survive_a_checkpoint_exactly() {
    let cfg = json!({
        "window": "tumbling:1h",
        "timestamp.field": "ts",
        "aggregates": "median,sum",
        "aggregates.median.function": "median",
        "aggregates.median.field": "x",
        "aggregates.sum.function": "sum",
        "aggregates.sum.field": "x"
    });
    let mut a = aggregate(cfg.clone());
    run(
        &mut a,
        &[
            rec(json!({"ts": 1, "x": 0.1})),
            rec(json!({"ts": 2, "x": 0.2})),
            rec(json!({"ts": 3, "x": 1e-300})),
        ],
    );
    let mut b = aggregate(cfg);
    b.restore(a.checkpoint().unwrap()).unwrap();
    let tail = [rec(json!({"ts": 4, "x": 0.7}))];
    run(&mut a, &tail);
    run(&mut b, &tail);
    let (x, y) = (flushed(&mut a), flushed(&mut b));
    assert_eq!(dump(&x), dump(&y));
    assert_eq!(values(&x)[0]["median"], json!((0.1 + 0.2) / 2.0));
    assert_eq!(values(&x)[0]["sum"], json!(0.1 + 0.2 + 1e-300 + 0.7));
}

#[test]
fn restore_rejects_a_mismatched_checkpoint() {
    let mut a = aggregate(views_config());
    run(&mut a, &[view("p1", "2024-01-01T00:00:05Z")]);
    let saved = a.checkpoint().unwrap();

    let mut other = aggregate(json!({
        "window": "tumbling:1m",
        "group.by": "product_id",
        "aggregates": "m",
        "aggregates.m.function": "max",
        "aggregates.m.field": "price"
    }));
    assert!(other.restore(saved).is_err());
    assert!(other.restore(json!({"nonsense": true})).is_err());
    assert_eq!(other.state_size(), 0);

    let mut sliding = aggregate(json!({"window": "sliding:2"}));
    assert!(sliding.restore(a.checkpoint().unwrap()).is_err());
}
