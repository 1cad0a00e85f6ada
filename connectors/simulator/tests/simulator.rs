//! SimulatorSource through its public API: plugin → task configs → tasks → polls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_api::{
    ConfigMap, Payload, Plugin, PluginKind, Severity, SourceConnector, SourceOffset, SourcePoll,
    SourceRecord, SourceTask, SourceTaskContext,
};
use sluice_simulator::{SimulatorConfig, SimulatorPlugin};

fn config(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

async fn start(
    config: &ConfigMap,
    task_id: u32,
    offsets: Vec<SourceOffset>,
) -> Box<dyn SourceTask> {
    let mut task = SimulatorPlugin.create_task(config).expect("create task");
    task.start(SourceTaskContext {
        connector: "sim".into(),
        task_id,
        offsets,
    })
    .await
    .expect("start");
    task
}

/// Polls until `n` records arrived or the task is exhausted.
async fn take(task: &mut Box<dyn SourceTask>, n: usize) -> (Vec<SourceRecord>, bool) {
    let mut out = Vec::new();
    while out.len() < n {
        match task.poll().await.expect("poll") {
            SourcePoll::Records(records) => out.extend(records),
            SourcePoll::Exhausted => return (out, true),
        }
    }
    out.truncate(n);
    (out, false)
}

async fn generate(v: Value, task_id: u32, n: usize) -> Vec<SourceRecord> {
    let mut task = start(&config(v), task_id, Vec::new()).await;
    take(&mut task, n).await.0
}

/// Everything a record carries, as text, to compare records byte for byte.
fn serialized(r: &SourceRecord) -> String {
    let bytes = |p: &Option<Payload>| {
        p.as_ref()
            .map(|p| String::from_utf8_lossy(&p.to_bytes()).to_string())
    };
    let headers: Vec<String> = r
        .record
        .headers
        .iter()
        .map(|h| format!("{}={}", h.key, h.value))
        .collect();
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
        r.record.topic,
        r.record.partition,
        r.record.timestamp,
        bytes(&r.record.key),
        bytes(&r.record.value),
        headers,
        r.source_partition,
        r.source_offset
    )
}

fn seq_of(r: &SourceRecord) -> u64 {
    r.record
        .header("sluice.simulator.seq")
        .and_then(Value::as_u64)
        .expect("seq header")
}

fn value(r: &SourceRecord) -> &Value {
    r.record.value_json().expect("JSON value")
}

fn malformed(r: &SourceRecord) -> Option<&str> {
    r.record
        .header("sluice.simulator.malformed")
        .and_then(Value::as_str)
}

fn int_in(v: &Value, lo: u64, hi: u64) -> bool {
    v.as_u64().is_some_and(|n| (lo..=hi).contains(&n))
}

fn two_decimals_in(v: &Value, lo: f64, hi: f64) -> bool {
    v.as_f64()
        .is_some_and(|p| (lo..=hi).contains(&p) && ((p * 100.0).round() - p * 100.0).abs() < 1e-6)
}

fn is_rfc3339_millis_z(v: &Value) -> bool {
    let Some(text) = v.as_str() else { return false };
    // 2024-01-01T00:00:01.234Z
    text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

#[test]
fn plugin_info() {
    let info = SimulatorPlugin.info();
    assert_eq!(info.class, "SimulatorSource");
    assert_eq!(info.aliases, vec!["Simulator", "simulator"]);
    assert_eq!(info.kind, PluginKind::Source);
    assert_eq!(info.version, sluice_api::API_VERSION);
    assert!(!info.description.is_empty());
    assert_eq!(
        SimulatorPlugin.config_schema(),
        sluice_api::schema_of::<SimulatorConfig>()
    );
}

#[tokio::test]
async fn same_inputs_same_records_and_each_input_matters() {
    let base = json!({"topic": "t", "seed": 7, "malformed.rate": 0.05});
    let a = generate(base.clone(), 0, 2_000).await;
    let b = generate(base.clone(), 0, 2_000).await;
    assert_eq!(a.len(), 2_000);
    let a_text: Vec<String> = a.iter().map(serialized).collect();
    let b_text: Vec<String> = b.iter().map(serialized).collect();
    assert_eq!(
        a_text, b_text,
        "same seed, task and seq must give identical records"
    );
    assert_eq!(a, b);

    let mut other_seed = base.clone();
    other_seed["seed"] = json!(8);
    let c = generate(other_seed, 0, 2_000).await;
    let same = a
        .iter()
        .zip(&c)
        .filter(|(x, y)| x.record.value == y.record.value)
        .count();
    assert!(same < 20, "{same} of 2000 values equal across seeds");

    let d = generate(base, 1, 2_000).await;
    let same = a
        .iter()
        .zip(&d)
        .filter(|(x, y)| x.record.value == y.record.value)
        .count();
    assert!(same < 20, "{same} of 2000 values equal across tasks");
    assert_eq!(
        *d[0].source_partition,
        json!({"scenario": "ecommerce", "task": 1})
    );
    assert_eq!(d[0].record.header("sluice.simulator.task"), Some(&json!(1)));
}

#[tokio::test]
async fn the_first_event_of_seed_42_is_pinned() {
    // Replays across versions depend on this staying the same: changing the generator
    // changes what a resumed connector sends after its committed offset.
    let r = &generate(json!({"topic": "orders"}), 0, 1).await[0];
    let text = String::from_utf8(r.record.value.as_ref().unwrap().to_bytes()).unwrap();
    let expected = r#"{"event_id":"aa53b400-a2b1-4df4-b237-95afcdd7ffc2","event_type":"view","price":237.56,"product_id":"Keyboard_B5","timestamp":"2024-01-01T00:00:00.212Z","user_id":9614}"#;
    assert_eq!(text, expected);
    assert_eq!(r.record.timestamp, Some(1_704_067_200_212));
    assert_eq!(r.record.key_json(), Some(&json!(9614)));
}

#[tokio::test]
async fn a_resumed_task_continues_after_the_committed_seq_with_the_same_events() {
    let cfg = config(json!({"topic": "t", "scenario": "sensors", "batch.size": 64}));
    let offsets = vec![SourceOffset {
        partition: json!({"scenario": "sensors", "task": 0}),
        offset: json!({"seq": 99}),
    }];
    let mut resumed = start(&cfg, 0, offsets).await;
    let (after, _) = take(&mut resumed, 50).await;
    assert_eq!(seq_of(&after[0]), 100);
    assert_eq!(after[0].source_offset, json!({"seq": 100}));
    let seqs: Vec<u64> = after.iter().map(seq_of).collect();
    assert_eq!(seqs, (100..150).collect::<Vec<_>>());

    let mut fresh = start(&cfg, 0, Vec::new()).await;
    let (all, _) = take(&mut fresh, 150).await;
    assert_eq!(
        &all[100..],
        &after[..],
        "a replay produces exactly the original records"
    );

    // An offset of another partition (another task) is not ours.
    let other = vec![SourceOffset {
        partition: json!({"scenario": "sensors", "task": 1}),
        offset: json!({"seq": 99}),
    }];
    let mut t = start(&cfg, 0, other).await;
    assert_eq!(seq_of(&take(&mut t, 1).await.0[0]), 0);
}

#[tokio::test]
async fn a_corrupt_committed_offset_is_an_error_not_a_panic() {
    let cfg = config(json!({"topic": "t"}));
    let mut task = SimulatorPlugin.create_task(&cfg).unwrap();
    let err = task
        .start(SourceTaskContext {
            connector: "sim".into(),
            task_id: 0,
            offsets: vec![SourceOffset {
                partition: json!({"scenario": "ecommerce", "task": 0}),
                offset: json!({"seq": "lots"}),
            }],
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("seq"), "{err}");
    assert!(task.poll().await.is_err(), "poll before a successful start");
}

#[tokio::test]
async fn a_task_at_its_end_is_exhausted_at_once() {
    let cfg = config(json!({"topic": "t", "max.events": "100"}));
    let offsets = vec![SourceOffset {
        partition: json!({"scenario": "ecommerce", "task": 0}),
        offset: json!({"seq": 99}),
    }];
    let mut task = start(&cfg, 0, offsets).await;
    assert_eq!(task.poll().await.unwrap(), SourcePoll::Exhausted);
}

#[tokio::test]
async fn max_events_is_split_over_the_tasks() {
    let cfg =
        config(json!({"topic": "t", "max.events": "1000", "batch.size": 128, "tasks.max": "3"}));
    let tasks = SimulatorPlugin.task_configs(&cfg, 3).unwrap();
    assert_eq!(tasks.len(), 3);
    let mut total = 0;
    let mut shares = Vec::new();
    for (i, tc) in tasks.iter().enumerate() {
        assert_eq!(tc.get("topic"), Some(&json!("t")), "other keys are kept");
        let mut task = start(tc, i as u32, Vec::new()).await;
        let (records, exhausted) = take(&mut task, usize::MAX).await;
        assert!(exhausted);
        assert_eq!(
            task.poll().await.unwrap(),
            SourcePoll::Exhausted,
            "stays exhausted"
        );
        let seqs: Vec<u64> = records.iter().map(seq_of).collect();
        assert_eq!(seqs, (0..records.len() as u64).collect::<Vec<_>>());
        for r in &records {
            assert_eq!(r.record.header("sluice.simulator.task"), Some(&json!(i)));
        }
        shares.push(records.len());
        total += records.len();
    }
    assert_eq!(total, 1000);
    assert_eq!(shares, vec![334, 333, 333]);

    // No more tasks than events; endless runs get every task; at least one task.
    let few = config(json!({"topic": "t", "max.events": 2}));
    assert_eq!(SimulatorPlugin.task_configs(&few, 5).unwrap().len(), 2);
    let endless = config(json!({"topic": "t"}));
    let configs = SimulatorPlugin.task_configs(&endless, 4).unwrap();
    assert_eq!(configs.len(), 4);
    assert!(configs.iter().all(|c| c == &endless));
    assert_eq!(SimulatorPlugin.task_configs(&endless, 0).unwrap().len(), 1);
    assert!(SimulatorPlugin.task_configs(&config(json!({})), 2).is_err());
}

#[tokio::test]
async fn batches_are_bounded_by_batch_size() {
    let mut task = start(
        &config(json!({"topic": "t", "batch.size": "37", "max.events": "80"})),
        0,
        Vec::new(),
    )
    .await;
    let mut sizes = Vec::new();
    while let SourcePoll::Records(r) = task.poll().await.unwrap() {
        sizes.push(r.len());
    }
    assert_eq!(sizes, vec![37, 37, 6]);
}

#[tokio::test]
async fn ecommerce_fields_are_in_range() {
    let records = generate(json!({"topic": "shop"}), 0, 10_000).await;
    let products = [
        "Laptop_X1",
        "Phone_Y2",
        "Headphone_Z3",
        "Monitor_A4",
        "Keyboard_B5",
    ];
    let mut types: BTreeMap<String, u32> = BTreeMap::new();
    let mut nulls = 0;
    let mut ids = BTreeSet::new();
    for r in &records {
        let v = value(r);
        assert_eq!(v.as_object().unwrap().len(), 6, "{v}");
        let id = v["event_id"].as_str().unwrap();
        let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(id.len(), 36);
        assert!(ids.insert(id.to_string()), "duplicate event_id");
        assert!(int_in(&v["user_id"], 1000, 9999), "{v}");
        *types
            .entry(v["event_type"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert!(products.contains(&v["product_id"].as_str().unwrap()), "{v}");
        assert!(is_rfc3339_millis_z(&v["timestamp"]), "{v}");
        match &v["price"] {
            Value::Null => nulls += 1,
            p => assert!(two_decimals_in(p, 10.0, 2000.0), "{v}"),
        }
        assert_eq!(r.record.key_json(), Some(&v["user_id"]), "keyed by user_id");
        assert_eq!(r.record.topic, "shop");
        assert!(malformed(r).is_none());
    }
    assert_eq!(
        types.keys().collect::<Vec<_>>(),
        vec!["add_to_cart", "purchase", "view"]
    );
    assert!(
        types["view"] > types["add_to_cart"] && types["add_to_cart"] > types["purchase"],
        "{types:?}"
    );
    assert!(
        (2_500..=3_500).contains(&nulls),
        "{nulls} null prices of 10000"
    );
}

#[tokio::test]
async fn event_types_restrict_the_types_and_keep_every_other_field() {
    let all = generate(json!({"topic": "shop"}), 0, 2_000).await;
    let bought = generate(
        json!({"topic": "shop", "event.types": "purchase"}),
        0,
        2_000,
    )
    .await;
    for (a, b) in all.iter().zip(&bought) {
        let (mut a, b) = (value(a).clone(), value(b).clone());
        assert_eq!(b["event_type"], "purchase", "{b}");
        a["event_type"] = json!("purchase");
        assert_eq!(a, b, "only event_type differs from the unrestricted stream");
    }

    let two = generate(
        json!({"topic": "shop", "event.types": ["add_to_cart", "purchase"]}),
        0,
        3_000,
    )
    .await;
    let carts = two
        .iter()
        .filter(|r| value(r)["event_type"] == "add_to_cart")
        .count();
    let purchases = two
        .iter()
        .filter(|r| value(r)["event_type"] == "purchase")
        .count();
    assert_eq!(carts + purchases, 3_000);
    // Weights 20:10 are kept: two thirds carts.
    assert!((1_850..=2_150).contains(&carts), "{carts} carts of 3000");

    // Replays stay exact with a restriction.
    let again = generate(
        json!({"topic": "shop", "event.types": "purchase"}),
        0,
        2_000,
    )
    .await;
    assert_eq!(
        bought.iter().map(serialized).collect::<Vec<_>>(),
        again.iter().map(serialized).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn sensor_fields_are_in_range() {
    let records = generate(json!({"topic": "t", "scenario": "sensors"}), 0, 10_000).await;
    let sensors = [
        "temperature",
        "humidity",
        "pressure",
        "cpu_usage",
        "memory_usage",
    ];
    let mut seen = BTreeSet::new();
    for r in &records {
        let v = value(r);
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        let s = v["sensor_id"].as_str().unwrap();
        assert!(sensors.contains(&s), "{v}");
        seen.insert(s.to_string());
        assert!(two_decimals_in(&v["value"], 0.0, 100.0), "{v}");
        assert!(is_rfc3339_millis_z(&v["timestamp"]), "{v}");
        assert!(
            ["server1", "server2", "server3"].contains(&v["location"].as_str().unwrap()),
            "{v}"
        );
        assert_eq!(r.record.key_json(), Some(&v["sensor_id"]));
        assert_eq!(
            *r.source_partition,
            json!({"scenario": "sensors", "task": 0})
        );
    }
    assert_eq!(seen.len(), 5);
}

#[tokio::test]
async fn user_activity_fields_are_in_range() {
    let records = generate(
        json!({"topic": "t", "scenario": "user-activity"}),
        0,
        10_000,
    )
    .await;
    let actions = ["login", "logout", "click", "view", "purchase", "search"];
    let pages: Vec<String> = (1..=10).map(|i| format!("/page/{i}")).collect();
    let mut seen_actions = BTreeSet::new();
    let mut seen_pages = BTreeSet::new();
    for r in &records {
        let v = value(r);
        assert_eq!(v.as_object().unwrap().len(), 6, "{v}");
        assert!(int_in(&v["user_id"], 1000, 9999), "{v}");
        let a = v["action"].as_str().unwrap();
        assert!(actions.contains(&a), "{v}");
        seen_actions.insert(a.to_string());
        let p = v["page"].as_str().unwrap();
        assert!(pages.iter().any(|x| x == p), "{v}");
        seen_pages.insert(p.to_string());
        assert!(is_rfc3339_millis_z(&v["timestamp"]), "{v}");
        let ip: std::net::Ipv4Addr = v["ip"].as_str().unwrap().parse().expect("IPv4");
        assert!(!ip.is_unspecified());
        assert!(
            ["mobile", "desktop", "tablet"].contains(&v["device"].as_str().unwrap()),
            "{v}"
        );
        assert_eq!(r.record.key_json(), Some(&v["user_id"]));
    }
    assert_eq!(seen_actions.len(), 6);
    assert_eq!(seen_pages.len(), 10);
}

#[tokio::test]
async fn clickstream_fields_are_in_range() {
    let records = generate(json!({"topic": "t", "scenario": "clickstream"}), 0, 10_000).await;
    let mut seen_actions = BTreeSet::new();
    for r in &records {
        let v = value(r);
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        assert!(is_rfc3339_millis_z(&v["timestamp"]), "{v}");
        assert!(int_in(&v["userid"], 1000, 9999), "{v}");
        let page = v["page"].as_str().unwrap();
        let n: u32 = page.strip_prefix("/page/").unwrap().parse().unwrap();
        assert!((1..=10).contains(&n), "{v}");
        let a = v["action"].as_str().unwrap();
        assert!(["view", "rating"].contains(&a), "{v}");
        seen_actions.insert(a.to_string());
        assert_eq!(r.record.key_json(), Some(&v["userid"]));
    }
    assert_eq!(seen_actions.len(), 2);
}

#[tokio::test]
async fn timestamps_are_monotone_and_match_the_record_timestamp() {
    for scenario in ["ecommerce", "sensors", "user-activity", "clickstream"] {
        let cfg = json!({"topic": "t", "scenario": scenario, "timestamp.start": "2024-03-01T12:00:00Z",
                         "timestamp.interval.ms": "250", "malformed.rate": 0.2, "malformed.kinds": "missing_field"});
        let records = generate(cfg, 3, 5_000).await;
        let start = chrono::DateTime::parse_from_rfc3339("2024-03-01T12:00:00Z")
            .unwrap()
            .timestamp_millis();
        let mut last = i64::MIN;
        for (n, r) in records.iter().enumerate() {
            let v = value(r);
            let parsed =
                chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
            let ms = r.record.timestamp.unwrap();
            assert_eq!(parsed.timestamp_millis(), ms);
            assert!(ms >= last, "{scenario}: time went backwards at {n}");
            let slot = start + n as i64 * 250;
            assert!(
                (slot..slot + 250).contains(&ms),
                "{scenario}: event {n} at {ms}, slot {slot}"
            );
            last = ms;
        }
    }
}

#[tokio::test]
async fn wallclock_timestamps_are_now() {
    let before = chrono::Utc::now().timestamp_millis();
    let records = generate(
        json!({"topic": "t", "timestamp.mode": "wallclock"}),
        0,
        1_000,
    )
    .await;
    let after = chrono::Utc::now().timestamp_millis();
    let mut last = i64::MIN;
    for r in &records {
        let ms = r.record.timestamp.unwrap();
        assert!((before..=after).contains(&ms));
        assert!(ms >= last);
        last = ms;
        assert!(is_rfc3339_millis_z(&value(r)["timestamp"]));
    }
}

#[tokio::test]
async fn about_one_percent_are_malformed_in_every_kind() {
    let base = json!({"topic": "t", "malformed.rate": "0.01", "seed": 5});
    let records = generate(base.clone(), 0, 20_000).await;
    let clean = generate(json!({"topic": "t", "seed": 5}), 0, 20_000).await;
    let mut kinds: BTreeMap<String, u32> = BTreeMap::new();
    for (r, c) in records.iter().zip(&clean) {
        let Some(kind) = malformed(r) else {
            assert_eq!(r, c, "malformed.rate only changes the broken records");
            continue;
        };
        *kinds.entry(kind.to_string()).or_default() += 1;
        let original = value(c);
        match kind {
            "invalid_json" => {
                let Some(Payload::Bytes(bytes)) = &r.record.value else {
                    panic!("bytes expected")
                };
                assert!(
                    serde_json::from_slice::<Value>(bytes).is_err(),
                    "{}",
                    String::from_utf8_lossy(bytes)
                );
                let text = serde_json::to_vec(original).unwrap();
                assert!(
                    text.starts_with(bytes) && bytes.len() < text.len(),
                    "a cut-short prefix"
                );
                assert_eq!(r.record.key, c.record.key, "the key is intact");
            }
            "missing_field" => {
                let v = value(r);
                assert!(v.get("event_type").is_none(), "{v}");
                assert_eq!(v.as_object().unwrap().len(), 5);
            }
            "wrong_type" => {
                let v = value(r);
                let user = v["user_id"].as_str().expect("user_id as a string");
                assert!(user.parse::<f64>().is_err(), "{user} must not be numeric");
                assert_eq!(r.record.key_json(), Some(&v["user_id"]));
            }
            other => panic!("unknown kind {other}"),
        }
        assert_eq!(
            r.record.header("sluice.simulator.seq"),
            c.record.header("sluice.simulator.seq")
        );
    }
    let total: u32 = kinds.values().sum();
    assert!(
        (100..=300).contains(&total),
        "{total} malformed of 20000: {kinds:?}"
    );
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}

#[tokio::test]
async fn malformed_kinds_follow_the_scenario() {
    for (scenario, missing, wrong) in [
        ("sensors", "sensor_id", "value"),
        ("user-activity", "action", "user_id"),
        ("clickstream", "action", "userid"),
    ] {
        let cfg = json!({"topic": "t", "scenario": scenario, "malformed.rate": 1,
                         "malformed.kinds": ["missing_field", "wrong_type"]});
        let records = generate(cfg, 0, 500).await;
        let mut seen = BTreeSet::new();
        for r in &records {
            let v = value(r);
            match malformed(r).expect("every record is malformed at rate 1") {
                "missing_field" => assert!(v.get(missing).is_none(), "{scenario}: {v}"),
                "wrong_type" => {
                    let s = v[wrong]
                        .as_str()
                        .unwrap_or_else(|| panic!("{scenario}: {v}"));
                    assert!(s.parse::<f64>().is_err(), "{scenario}: {v}");
                }
                other => panic!("{scenario}: kind {other} not configured"),
            }
            seen.insert(malformed(r).unwrap().to_string());
        }
        assert_eq!(seen.len(), 2, "{scenario}");
    }
}

#[tokio::test]
async fn key_field_chooses_or_drops_the_key() {
    let r = &generate(json!({"topic": "t", "key.field": "product_id"}), 0, 1).await[0];
    assert_eq!(r.record.key_json(), Some(&value(r)["product_id"]));
    let r = &generate(json!({"topic": "t", "key.field": ""}), 0, 1).await[0];
    assert_eq!(r.record.key, None);
    let r = &generate(json!({"topic": "t", "key.field": "nope"}), 0, 1).await[0];
    assert_eq!(r.record.key, None);
    let issues = SimulatorPlugin.validate(&config(json!({"topic": "t", "key.field": "nope"})));
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Warning);
    assert_eq!(issues[0].key.as_deref(), Some("key.field"));
}

#[tokio::test(start_paused = true)]
async fn rate_paces_the_events() {
    let mut task = start(&config(json!({"topic": "t", "rate": "50"})), 0, Vec::new()).await;
    let started = tokio::time::Instant::now();
    let mut count = 0;
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(2) {
        match task.poll().await.unwrap() {
            SourcePoll::Records(r) => count += r.len(),
            SourcePoll::Exhausted => panic!("endless"),
        }
        polls += 1;
        assert!(polls < 10_000, "busy loop");
    }
    // 50/s for 2 s: events 0..=100 are due by the end.
    assert!((99..=102).contains(&count), "{count} events in 2 s at 50/s");

    // Nothing due: a poll waits at most 100 ms.
    let mut slow = start(&config(json!({"topic": "t", "rate": "0.1"})), 0, Vec::new()).await;
    assert_eq!(take(&mut slow, 1).await.0.len(), 1);
    let before = tokio::time::Instant::now();
    assert_eq!(slow.poll().await.unwrap(), SourcePoll::Records(Vec::new()));
    assert!(before.elapsed() <= Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn after_a_stall_the_task_catches_up_by_at_most_a_second() {
    let mut task = start(
        &config(json!({"topic": "t", "rate": "100", "batch.size": "100000"})),
        0,
        Vec::new(),
    )
    .await;
    // Held back for 10 s (a full bus): 1,000 events fell due meanwhile.
    tokio::time::advance(Duration::from_secs(10)).await;
    let SourcePoll::Records(burst) = task.poll().await.unwrap() else {
        panic!("endless")
    };
    assert!(
        burst.len() <= 101,
        "burst of {} events after a stall at 100/s",
        burst.len()
    );
    // Then the pace is the configured one again.
    let started = tokio::time::Instant::now();
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(1) {
        if let SourcePoll::Records(r) = task.poll().await.unwrap() {
            count += r.len();
        }
    }
    assert!(
        (99..=102).contains(&count),
        "{count} events in the second after the stall"
    );
}

#[test]
fn validation_names_the_keys() {
    let keys = |v: Value| -> Vec<String> {
        SimulatorPlugin
            .validate(&config(v))
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| i.key.unwrap_or_default())
            .collect()
    };
    assert_eq!(keys(json!({"topic": "t"})), Vec::<String>::new());
    assert_eq!(keys(json!({})), vec!["topic"]);
    assert_eq!(keys(json!({"topic": " "})), vec!["topic"]);
    assert_eq!(
        keys(json!({"topic": "t", "scenario": "weather"})),
        vec!["scenario"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "malformed.rate": 2})),
        vec!["malformed.rate"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "malformed.rate": "-0.1"})),
        vec!["malformed.rate"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "timestamp.start": "soon"})),
        vec!["timestamp.start"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "malformed.kinds": "invalid_json,bad_kind"})),
        vec!["malformed.kinds"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "malformed.kinds": "", "malformed.rate": 0.1})),
        vec!["malformed.kinds"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "event.types": "purchase,refund"})),
        vec!["event.types"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "event.types": ""})),
        vec!["event.types"]
    );
    let issues = SimulatorPlugin.validate(&config(
        json!({"topic": "t", "scenario": "sensors", "event.types": "purchase"}),
    ));
    assert!(
        issues.len() == 1
            && issues[0].severity == Severity::Warning
            && issues[0].key.as_deref() == Some("event.types"),
        "{issues:?}"
    );
    assert_eq!(keys(json!({"topic": "t", "rate": -1})), vec!["rate"]);
    assert_eq!(
        keys(json!({"topic": "t", "batch.size": 0})),
        vec!["batch.size"]
    );
    assert_eq!(keys(json!({"topic": "t", "seed": "-1"})), vec!["seed"]);
    assert_eq!(
        keys(json!({"topic": "t", "max.events": "many"})),
        vec!["max.events"]
    );
    assert_eq!(
        keys(json!({"topic": "t", "timestamp.mode": "sundial"})),
        vec!["timestamp.mode"]
    );

    let issues = SimulatorPlugin.validate(&config(
        json!({"topic": "t", "malformed.kinds": "bad_kind"}),
    ));
    assert!(
        issues[0].message.contains("bad_kind") && issues[0].message.contains("invalid_json"),
        "{issues:?}"
    );

    // create_task refuses what validation refuses.
    let err = SimulatorPlugin
        .create_task(&config(json!({"topic": "t", "timestamp.start": "soon"})))
        .err()
        .expect("refused");
    assert!(err.message().contains("timestamp.start"), "{err}");
}

#[test]
fn string_values_are_coerced() {
    let c = SimulatorConfig::parse(&config(json!({
        "topic": "t", "scenario": "user-activity", "seed": "1000", "rate": "0.5",
        "max.events": "1000", "malformed.rate": "0.5", "malformed.kinds": "invalid_json, wrong_type",
        "timestamp.mode": "wallclock", "timestamp.interval.ms": "10", "batch.size": "20",
        "event.types": "view, purchase",
        "connector.class": "SimulatorSource", "tasks.max": "2"
    })))
    .unwrap();
    assert_eq!(c.seed, 1000);
    assert_eq!(c.rate, 0.5);
    assert_eq!(c.max_events, 1000);
    assert_eq!(c.malformed_rate, 0.5);
    assert_eq!(c.malformed_kinds, vec!["invalid_json", "wrong_type"]);
    assert_eq!(c.event_types, vec!["view", "purchase"]);
    assert_eq!(c.timestamp_interval_ms, 10);
    assert_eq!(c.batch_size, 20);
    assert_eq!(c.scenario, sluice_simulator::Scenario::UserActivity);
    assert_eq!(c.timestamp_mode, sluice_simulator::TimestampMode::Wallclock);

    let d = SimulatorConfig::parse(&config(json!({"topic": "t"}))).unwrap();
    assert_eq!(
        (d.seed, d.rate, d.max_events, d.batch_size),
        (42, 0.0, 0, 500)
    );
    assert_eq!(d.scenario, sluice_simulator::Scenario::Ecommerce);
    assert_eq!(d.malformed_kinds.len(), 3);
    assert_eq!(d.event_types, vec!["view", "add_to_cart", "purchase"]);
    assert_eq!(d.timestamp_start, "2024-01-01T00:00:00Z");
    assert_eq!(d.timestamp_interval_ms, 1000);
    assert_eq!(d.key_field, None);
}
