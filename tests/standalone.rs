//! End-to-end runs of `sluice standalone`: simulator → embedded bus → FileSink.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[test]
fn hundred_thousand_events_drain_to_a_file_exactly_once() {
    let s = Scratch::new();
    s.worker(1_000);
    let out = s.path("out/events.jsonl");
    let source = s.connector("sim", simulator("ecommerce", 100_000));
    let sink = s.connector("file", file_sink("ecommerce", &out, "envelope"));
    let output = s.run(true, &[&source, &sink]);
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        stderr(&output)
    );

    let lines = read_lines(&out);
    assert_eq!(lines.len(), 100_000);
    let mut seen = vec![false; 100_000];
    let products = [
        "Laptop_X1",
        "Phone_Y2",
        "Headphone_Z3",
        "Monitor_A4",
        "Keyboard_B5",
    ];
    let mut null_prices = 0;
    for line in &lines {
        let (task, seq) = task_seq(line);
        assert_eq!(task, 0);
        assert!(!seen[seq as usize], "sequence number {seq} twice");
        seen[seq as usize] = true;
        assert_eq!(line["topic"], "ecommerce");
        let v = &line["value"];
        assert_eq!(v["event_id"].as_str().map(str::len), Some(36), "{v}");
        let user = v["user_id"].as_u64().expect("user_id");
        assert!((1000..=9999).contains(&user));
        assert_eq!(line["key"], v["user_id"], "records are keyed by user_id");
        assert!(["view", "add_to_cart", "purchase"].contains(&v["event_type"].as_str().unwrap()));
        assert!(products.contains(&v["product_id"].as_str().unwrap()));
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() >= 20, "{ts}");
        match &v["price"] {
            Value::Null => null_prices += 1,
            p => {
                let p = p.as_f64().unwrap();
                assert!((10.0..=2000.0).contains(&p), "{p}");
                assert!(
                    ((p * 100.0).round() - p * 100.0).abs() < 1e-6,
                    "two decimals: {p}"
                );
            }
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert!(
        (25_000..35_000).contains(&null_prices),
        "about 30% null prices, got {null_prices}"
    );
    // The offset of the last record is committed at shutdown.
    let offsets = s.offsets();
    let sim = offsets.get("sim").expect("offsets of sim");
    assert_eq!(sim.values().next().unwrap()["seq"], 99_999);
}

#[test]
fn the_same_seed_gives_byte_identical_files_and_another_seed_differs() {
    let run = |seed: &str| {
        let s = Scratch::new();
        s.worker(1_000);
        let out = s.path("out.jsonl");
        let mut config = simulator("t", 20_000);
        config["seed"] = json!(seed);
        let source = s.connector("sim", config);
        let sink = s.connector("file", file_sink("t", &out, "value"));
        let output = s.run(true, &[&source, &sink]);
        assert!(output.status.success(), "{}", stderr(&output));
        std::fs::read(&out).unwrap()
    };
    let a = run("7");
    let b = run("7");
    let c = run("8");
    assert_eq!(a.len(), b.len());
    assert!(a == b, "same seed, different bytes");
    assert!(a != c, "different seeds, same bytes");
    assert_eq!(a.iter().filter(|b| **b == b'\n').count(), 20_000);
}

#[test]
fn several_tasks_and_sinks_each_get_every_record() {
    let s = Scratch::new();
    s.worker(1_000);
    let mut config = simulator("t", 30_000);
    config["tasks.max"] = json!("3");
    let source = s.connector("sim", config);
    let a = s.connector("a", file_sink("t", &s.path("a.jsonl"), "envelope"));
    let mut regex_sink = file_sink("", &s.path("b.jsonl"), "envelope");
    regex_sink.as_object_mut().unwrap().remove("topics");
    regex_sink["topics.regex"] = json!("t|u");
    let b = s.connector("b", regex_sink);
    let output = s.run(true, &[&source, &a, &b]);
    assert!(output.status.success(), "{}", stderr(&output));
    for file in ["a.jsonl", "b.jsonl"] {
        let lines = read_lines(&s.path(file));
        let ids: BTreeSet<(u64, u64)> = lines.iter().map(task_seq).collect();
        assert_eq!(lines.len(), 30_000, "{file}");
        assert_eq!(ids.len(), 30_000, "{file}: duplicates");
        // Per task, sequence numbers arrive in order (one partition, order kept).
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (task, seq) in lines.iter().map(task_seq) {
            if let Some(prev) = last.insert(task, seq) {
                assert!(seq > prev, "{file}: task {task} seq {seq} after {prev}");
            }
        }
        assert_eq!(last.len(), 3);
    }
}

#[test]
fn a_crash_loses_nothing_and_only_the_uncommitted_window_repeats() {
    let s = Scratch::new();
    s.worker(100);
    let total = 60_000u64;
    let out = s.path("out.jsonl");
    let mut config = simulator("t", total);
    config["rate"] = json!("20000");
    let source = s.connector("sim", config);
    let sink = s.connector("file", file_sink("t", &out, "envelope"));

    let mut child = s.spawn(&[&source, &sink]);
    let started = Instant::now();
    loop {
        let written = std::fs::read(&out)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        if written >= 15_000 && s.path("offsets.json").exists() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first run made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9"); // SIGKILL on Unix
    child.wait().unwrap();
    let committed = s.offsets()["sim"].values().next().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let first_run: Vec<(u64, u64)> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| task_seq(&v))
        .collect();
    let first_max = first_run.iter().map(|(_, s)| *s).max().unwrap();
    assert!(
        first_max < total - 1,
        "killed too late to test anything: all {total} were written"
    );
    assert!(
        committed <= first_max,
        "committed {committed} beyond what was written ({first_max})"
    );

    let output = s.run(true, &[&source, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for line in read_lines(&out) {
        *count.entry(task_seq(&line).1).or_default() += 1;
    }
    for seq in 0..total {
        assert!(count.contains_key(&seq), "sequence number {seq} was lost");
    }
    for (seq, n) in &count {
        assert!(*n <= 2, "{seq} delivered {n} times");
        if *n == 2 {
            assert!(
                *seq > committed && *seq <= first_max,
                "{seq} repeated but it was committed ({committed}) or never written before the crash ({first_max})"
            );
        }
    }
    assert_eq!(
        s.offsets()["sim"].values().next().unwrap()["seq"],
        total - 1
    );
}

#[test]
fn sigterm_stops_cleanly_and_everything_committed_is_in_the_file() {
    let s = Scratch::new();
    s.worker(60_000); // only the shutdown commits
    let out = s.path("out.jsonl");
    let mut config = simulator("t", 0); // endless
    config["rate"] = json!("5000");
    let source = s.connector("sim", config);
    let sink = s.connector("file", file_sink("t", &out, "envelope"));
    let mut child = s.spawn(&[&source, &sink]);
    let started = Instant::now();
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 100_000 {
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let committed = s.offsets()["sim"]
        .values()
        .next()
        .expect("offsets committed at shutdown")["seq"]
        .as_u64()
        .unwrap();
    let seqs: BTreeSet<u64> = read_lines(&out).iter().map(|l| task_seq(l).1).collect();
    assert!(
        (0..=committed).all(|seq| seqs.contains(&seq)),
        "a committed record is missing"
    );
}

fn dead_letter_configs(
    s: &Scratch,
    tolerance: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut config = simulator("orders", 20_000);
    config["malformed.rate"] = json!("0.01");
    let source = s.connector("sim", config);
    let mut sink = file_sink("orders", &s.path("good.jsonl"), "envelope");
    sink["errors.tolerance"] = json!(tolerance);
    sink["errors.deadletterqueue.topic.name"] = json!("orders-dlq");
    let sink = s.connector("file", sink);
    let mut dlq = file_sink("orders-dlq", &s.path("dlq.jsonl"), "envelope");
    dlq["value.converter"] = json!("org.apache.kafka.connect.storage.StringConverter");
    let dlq = s.connector("dlq", dlq);
    (source, sink, dlq)
}

#[test]
fn malformed_records_go_to_the_dead_letter_topic_with_context() {
    let s = Scratch::new();
    s.worker(1_000);
    let (source, sink, dlq) = dead_letter_configs(&s, "all");
    let output = s.run(true, &[&source, &sink, &dlq]);
    assert!(output.status.success(), "{}", stderr(&output));
    let good = read_lines(&s.path("good.jsonl"));
    let dead = read_lines(&s.path("dlq.jsonl"));
    assert!(
        !dead.is_empty() && dead.len() < 600,
        "{} dead letters",
        dead.len()
    );

    let mut all: BTreeSet<(u64, u64)> = BTreeSet::new();
    for line in good.iter().chain(&dead) {
        assert!(
            all.insert(task_seq(line)),
            "{:?} delivered twice",
            task_seq(line)
        );
    }
    assert_eq!(all.len(), 20_000, "good + dead-lettered = produced");
    for line in &good {
        assert_ne!(
            line["headers"]["sluice.simulator.malformed"],
            "invalid_json"
        );
    }
    for line in &dead {
        let h = &line["headers"];
        assert_eq!(h["sluice.simulator.malformed"], "invalid_json", "{line}");
        assert_eq!(line["topic"], "orders-dlq");
        assert_eq!(h["__connect.errors.topic"], "orders");
        assert_eq!(h["__connect.errors.connector.name"], "file");
        assert_eq!(h["__connect.errors.task.id"], "0");
        assert_eq!(h["__connect.errors.stage"], "VALUE_CONVERTER");
        assert_eq!(
            h["__connect.errors.exception.class.name"],
            "org.apache.kafka.connect.errors.DataException"
        );
        assert!(
            h["__connect.errors.partition"].is_string() && h["__connect.errors.offset"].is_string()
        );
        assert!(
            !h["__connect.errors.exception.message"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        // The original bytes are kept: still not JSON.
        let raw = line["value"].as_str().expect("raw value kept as text");
        assert!(serde_json::from_str::<Value>(raw).is_err(), "{raw}");
    }
}

#[test]
fn with_tolerance_none_the_task_fails_and_the_process_says_so() {
    let s = Scratch::new();
    s.worker(1_000);
    let (source, sink, dlq) = dead_letter_configs(&s, "none");
    let output = s.run(true, &[&source, &sink, &dlq]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("connector \"file\" task 0 FAILED"), "{err}");
    assert!(
        err.contains("VALUE_CONVERTER") && err.contains("DataException"),
        "{err}"
    );
    assert!(read_lines(&s.path("good.jsonl")).len() < 20_000);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_failed_task_is_restarted_with_backoff_when_asked_and_nothing_is_lost() {
    let s = Scratch::new();
    s.worker(1_000);
    // The sink's file is a directory at first, so its task fails on start.
    let out = s.path("blocked.jsonl");
    std::fs::create_dir(&out).unwrap();
    let source = s.connector("sim", simulator("t", 5_000));
    let mut sink = file_sink("t", &out, "envelope");
    sink["task.restart.policy"] = json!("backoff");
    sink["task.restart.backoff.max.ms"] = json!("300");
    let sink = s.connector("file", sink);
    let mut child = s
        .standalone(true, &[&source, &sink])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the worker says it will restart the failed task, then fix the cause.
    let mut err = String::new();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "the worker ended without restarting the task: {err}");
        err.push_str(&line);
        if line.contains("restarting failed task") {
            break;
        }
    }
    std::fs::remove_dir(&out).unwrap(); // the operator fixes the cause
    std::io::Read::read_to_string(&mut reader, &mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{err}");
    let ids: BTreeSet<(u64, u64)> = read_lines(&out).iter().map(task_seq).collect();
    assert_eq!(ids.len(), 5_000);
}

#[test]
fn without_a_restart_policy_a_failed_sink_fails_the_drain() {
    let s = Scratch::new();
    s.worker(1_000);
    let out = s.path("blocked.jsonl");
    std::fs::create_dir(&out).unwrap();
    let source = s.connector("sim", simulator("t", 5_000));
    let sink = s.connector("file", file_sink("t", &out, "envelope"));
    let output = s.run(true, &[&source, &sink]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("connector \"file\" task 0 FAILED"),
        "{}",
        stderr(&output)
    );
    // Nothing was durable, so nothing was committed.
    assert!(!s.offsets().contains_key("sim"), "{:?}", s.offsets());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = Scratch::new();
    s.worker(1_000);
    let source = s.connector("sim", simulator("t", 10));
    let sink = s.connector("file", file_sink("t", &s.path("o.jsonl"), "value"));
    let output = s
        .standalone(true, &[&source, &sink])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(output.status.success());
    let err = stderr(&output);
    let logs: Vec<Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "starting connector"),
        "no JSON log line for the start: {err}"
    );
}
