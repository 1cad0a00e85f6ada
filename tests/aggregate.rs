//! Windowed aggregates end to end, against a ground truth computed in the test from the
//! raw copy of the same seeded events; and the same after kill -9 and a restart.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const EVENTS: u64 = 20_000;

fn minute_of(timestamp: &str) -> String {
    // "2024-01-01T05:33:12.345Z" → "2024-01-01T05:33:00.000Z"
    format!("{}:00.000Z", &timestamp[..16])
}

/// (product, minute) → views, and minute → GMV, from the raw events.
fn ground_truth(raw: &[Value]) -> (BTreeMap<(String, String), u64>, BTreeMap<String, f64>) {
    let mut views = BTreeMap::new();
    let mut gmv = BTreeMap::new();
    for line in raw {
        let v = &line["value"];
        let minute = minute_of(v["timestamp"].as_str().unwrap());
        let product = v["product_id"].as_str().unwrap().to_string();
        if v["event_type"] == "view" {
            *views.entry((product, minute.clone())).or_insert(0) += 1;
        }
        if v["event_type"] == "purchase"
            && let Some(price) = v["price"].as_f64()
        {
            *gmv.entry(minute).or_insert(0.0) += price;
        }
    }
    (views, gmv)
}

const VIEWS_CHAIN: [(&str, &str); 8] = [
    ("transforms", "views"),
    ("transforms.views.type", "Aggregate"),
    ("transforms.views.group.by", "product_id"),
    ("transforms.views.window", "tumbling:1m"),
    ("transforms.views.timestamp.field", "timestamp"),
    ("transforms.views.aggregates", "views"),
    ("transforms.views.aggregates.views.function", "count_where"),
    (
        "transforms.views.aggregates.views.where",
        r#"value.event_type == "view""#,
    ),
];

fn connectors(s: &Scratch, rate: Option<&str>) -> Vec<PathBuf> {
    let sim = |topic: &str| {
        let mut c = simulator(topic, EVENTS);
        if let Some(rate) = rate {
            c["rate"] = json!(rate);
        }
        c
    };
    let mut views = sim("views");
    for (k, v) in VIEWS_CHAIN {
        views[k] = json!(v);
    }
    let mut gmv = sim("gmv");
    for (k, v) in [
        ("transforms", "gmv"),
        ("transforms.gmv.type", "Aggregate"),
        ("transforms.gmv.group.by", ""),
        ("transforms.gmv.window", "tumbling:1m"),
        ("transforms.gmv.timestamp.field", "timestamp"),
        ("transforms.gmv.aggregates", "gmv"),
        ("transforms.gmv.aggregates.gmv.function", "sum"),
        ("transforms.gmv.aggregates.gmv.field", "price"),
        (
            "transforms.gmv.aggregates.gmv.where",
            r#"value.event_type == "purchase""#,
        ),
    ] {
        gmv[k] = json!(v);
    }
    vec![
        s.connector("sim-raw", sim("raw")),
        s.connector("sim-views", views),
        s.connector("sim-gmv", gmv),
        s.connector("raw", file_sink("raw", &s.path("raw.jsonl"), "envelope")),
        s.connector(
            "views",
            file_sink("views", &s.path("views.jsonl"), "envelope"),
        ),
        s.connector("gmv", file_sink("gmv", &s.path("gmv.jsonl"), "envelope")),
    ]
}

fn check(s: &Scratch) {
    let raw = read_lines(&s.path("raw.jsonl"));
    let mut seen = std::collections::BTreeSet::new();
    for line in &raw {
        seen.insert(task_seq(line));
    }
    assert_eq!(seen.len() as u64, EVENTS, "raw copy incomplete");
    // A restart may repeat raw lines; the truth counts each event once.
    let mut unique = BTreeMap::new();
    for line in raw {
        unique.entry(task_seq(&line)).or_insert(line);
    }
    let raw: Vec<Value> = unique.into_values().collect();
    let (views, gmv) = ground_truth(&raw);

    let mut got_views: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in read_lines(&s.path("views.jsonl")) {
        let v = &line["value"];
        let key = (
            v["product_id"].as_str().unwrap().to_string(),
            v["window_start"].as_str().unwrap().to_string(),
        );
        let count = v["views"].as_u64().unwrap();
        // emit=final: every emitted value is the window's final value, also when repeated.
        if let Some(previous) = got_views.insert(key.clone(), count) {
            assert_eq!(
                previous, count,
                "window {key:?} emitted with two different counts"
            );
        }
    }
    let expected_views: BTreeMap<_, _> = views.into_iter().filter(|(_, n)| *n > 0).collect();
    let got_views: BTreeMap<_, _> = got_views.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(got_views, expected_views);

    let mut got_gmv: BTreeMap<String, f64> = BTreeMap::new();
    for line in read_lines(&s.path("gmv.jsonl")) {
        let v = &line["value"];
        if let Some(sum) = v["gmv"].as_f64() {
            got_gmv.insert(v["window_start"].as_str().unwrap().to_string(), sum);
        }
    }
    assert_eq!(got_gmv.len(), gmv.len(), "minutes with purchases");
    for (minute, expected) in &gmv {
        let got = got_gmv
            .get(minute)
            .unwrap_or_else(|| panic!("no GMV for {minute}"));
        assert!(
            (got - expected).abs() < 1e-6,
            "{minute}: {got} != {expected}"
        );
    }
}

#[test]
fn per_product_views_and_per_minute_gmv_equal_the_ground_truth() {
    let s = Scratch::new();
    s.worker(1_000);
    let files = connectors(&s, None);
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let output = s.run(true, &refs);
    assert!(output.status.success(), "{}", stderr(&output));
    check(&s);
}

#[test]
fn aggregates_survive_kill_9_without_loss_or_double_counting() {
    let s = Scratch::new();
    s.worker(200);
    let files = connectors(&s, Some("4000"));
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let mut child = s.spawn(&refs);
    let started = Instant::now();
    loop {
        let committed = s
            .offsets()
            .get("sim-views")
            .is_some_and(|o| o.keys().any(|k| k.contains("sluice.transform")));
        let lines = std::fs::read(s.path("views.jsonl"))
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        if committed && lines > 50 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no aggregate state was committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let raw_before = std::fs::read(s.path("raw.jsonl"))
        .unwrap()
        .iter()
        .filter(|c| **c == b'\n')
        .count() as u64;
    assert!(raw_before < EVENTS, "killed too late");

    let output = s.run(true, &refs);
    assert!(output.status.success(), "{}", stderr(&output));
    check(&s);
}

#[test]
fn a_sink_side_aggregate_emits_its_open_windows_when_drain_ends_the_input() {
    let s = Scratch::new();
    s.worker(1_000);
    let mut sink = file_sink("raw", &s.path("views.jsonl"), "envelope");
    for (k, v) in VIEWS_CHAIN {
        sink[k] = json!(v);
    }
    let files = [
        s.connector("sim-raw", simulator("raw", EVENTS)),
        s.connector("raw", file_sink("raw", &s.path("raw.jsonl"), "envelope")),
        s.connector("views", sink),
    ];
    let validate = sluice().arg("validate").arg(&files[2]).output().unwrap();
    assert!(validate.status.success());
    assert!(
        stderr(&validate)
            .contains("warning: connector \"views\": key \"transforms.views.type\": is stateful"),
        "{}",
        stderr(&validate)
    );
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let output = s.run(true, &refs);
    assert!(output.status.success(), "{}", stderr(&output));
    let (views, _) = ground_truth(&read_lines(&s.path("raw.jsonl")));
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in read_lines(&s.path("views.jsonl")) {
        let v = &line["value"];
        let key = (
            v["product_id"].as_str().unwrap().to_string(),
            v["window_start"].as_str().unwrap().to_string(),
        );
        assert!(
            got.insert(key, v["views"].as_u64().unwrap()).is_none(),
            "a window emitted twice"
        );
    }
    got.retain(|_, n| *n > 0);
    let expected: BTreeMap<_, _> = views.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(got, expected);
}
