//! `GET /metrics` against the real binary: fetched with curl and parsed by the Python
//! Prometheus client's text-format parser (both written elsewhere), then checked against
//! the records the pipeline really moved (the files its sinks wrote).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::rest::{Api, scrape};
use common::*;
use serde_json::{Value, json};

const CONNECTORS: [&str; 4] = ["sim", "all", "purchases", "dlq"];
const STATES: [&str; 6] = [
    "UNASSIGNED",
    "RUNNING",
    "PAUSED",
    "STOPPED",
    "FAILED",
    "RESTARTING",
];

#[test]
fn metrics_count_what_the_pipeline_moved() {
    const N: u64 = 3_000;
    let s = Scratch::new();
    // A bounded source, some of whose events miss a field the filter needs: the filter
    // keeps purchases, drops the rest, and cannot evaluate the malformed ones, which go
    // to the dead-letter topic.
    let mut sim = simulator("events", N);
    sim["malformed.rate"] = json!("0.05");
    sim["malformed.kinds"] = json!("missing_field");
    let source = s.connector("sim", sim);
    let all = s.connector("all", file_sink("events", &s.path("all.jsonl"), "envelope"));
    let mut purchases = file_sink("events", &s.path("purchases.jsonl"), "envelope");
    purchases["transforms"] = json!("purchases");
    purchases["transforms.purchases.type"] = json!("Filter");
    purchases["transforms.purchases.condition"] =
        json!(r#"value.event_type == "purchase" && value.price != null"#);
    purchases["errors.tolerance"] = json!("all");
    purchases["errors.deadletterqueue.topic.name"] = json!("purchases-dlq");
    let purchases = s.connector("purchases", purchases);
    let dlq = s.connector(
        "dlq",
        file_sink("purchases-dlq", &s.path("dlq.jsonl"), "envelope"),
    );
    // Without --drain: the worker keeps running (and serving) after the source ends.
    let api = Api::start(&s, &[&source, &all, &purchases, &dlq]);

    let wait_for_lines = |file: &str, n: usize| {
        let started = Instant::now();
        loop {
            let lines = read_lines(&s.path(file));
            if lines.len() >= n {
                assert_eq!(lines.len(), n, "{file}");
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{file}: {} of {n} lines",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let everything = wait_for_lines("all.jsonl", N as usize);
    // What the filter must have done, from the unfiltered copy (as tests/transforms.rs).
    let mut expected_kept = BTreeSet::new();
    let mut expected_dead = BTreeSet::new();
    for line in &everything {
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
    let kept = expected_kept.len() as u64;
    let dead = expected_dead.len() as u64;
    assert!(kept > 0 && dead > 0 && kept + dead < N);
    wait_for_lines("purchases.jsonl", kept as usize);
    wait_for_lines("dlq.jsonl", dead as usize);

    // Counters are bumped right after the sink's put returns, and commits follow the
    // flush: wait until the books close (everything taken in accounted for, committed,
    // and no lag), then check every number.
    let started = Instant::now();
    let m = loop {
        let m = scrape(&api);
        let settled = CONNECTORS.iter().all(|c| {
            let polled = m.counter("sluice_records_polled_total", c);
            let out = m.counter("sluice_records_written_total", c)
                + m.counter("sluice_records_filtered_total", c)
                + m.counter("sluice_records_failed_total", c);
            polled > 0
                && out == polled
                && m.task_value("sluice_offset_commit_age_seconds", c, &[]) == 0.0
        }) && ["all", "purchases", "dlq"]
            .iter()
            .all(|c| m.lags(c).iter().all(|l| *l == 0.0))
            && m.counter("sluice_records_polled_total", "dlq") == dead;
        if settled {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the metrics never settled:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // Counters equal the records moved.
    let counts = |c: &str| {
        ["polled", "written", "filtered", "failed", "dead_lettered"]
            .map(|k| m.counter(&format!("sluice_records_{k}_total"), c))
    };
    assert_eq!(counts("sim"), [N, N, 0, 0, 0], "sim");
    assert_eq!(counts("all"), [N, N, 0, 0, 0], "all");
    assert_eq!(
        counts("purchases"),
        [N, kept, N - kept - dead, dead, dead],
        "purchases"
    );
    assert_eq!(counts("dlq"), [dead, dead, 0, 0, 0], "dlq");
    for c in CONNECTORS {
        assert_eq!(m.counter("sluice_retries_total", c), 0, "{c}");
        assert!(m.counter("sluice_offset_commits_total", c) > 0, "{c}");
        assert_eq!(
            m.find("sluice_records_polled_total", &[("connector", c)])
                .len(),
            1
        );
    }

    // Every task is RUNNING (the exhausted source too: it waits to be stopped).
    for c in CONNECTORS {
        for state in STATES {
            let expected = if state == "RUNNING" { 1.0 } else { 0.0 };
            assert_eq!(
                m.task_value("sluice_task_state", c, &[("state", state)]),
                expected,
                "{c} {state}"
            );
        }
    }

    // Histograms: typed as such, observed, and consistent (+Inf bucket = count).
    let histogram = |family: &str, c: &str| -> (f64, f64) {
        let count = m.task_value(&format!("{family}_count"), c, &[]);
        let sum = m.task_value(&format!("{family}_sum"), c, &[]);
        let inf = m.task_value(&format!("{family}_bucket"), c, &[("le", "+Inf")]);
        assert_eq!(inf, count, "{family} {c}");
        let kinds: BTreeSet<&str> = m
            .samples
            .iter()
            .filter(|s| s.family == family)
            .map(|s| s.kind.as_str())
            .collect();
        assert_eq!(kinds, BTreeSet::from(["histogram"]), "{family}");
        (count, sum)
    };
    let (polls, polled) = histogram("sluice_batch_size_records", "sim");
    assert!(polls > 0.0);
    assert_eq!(polled, N as f64, "the source's batches add up to N");
    assert!(histogram("sluice_poll_duration_seconds", "sim").0 >= polls);
    let (_, put) = histogram("sluice_batch_size_records", "all");
    assert_eq!(put, N as f64, "every record put once");
    let (_, put) = histogram("sluice_batch_size_records", "purchases");
    assert_eq!(put, kept as f64, "only the kept records are put");
    for c in ["all", "purchases", "dlq"] {
        assert!(histogram("sluice_put_duration_seconds", c).0 > 0.0, "{c}");
        assert!(histogram("sluice_flush_duration_seconds", c).0 > 0.0, "{c}");
        assert!(!m.lags(c).is_empty(), "{c} has partitions");
    }
    // Sources have no put/flush or lag; sinks no poll.
    assert!(
        m.find("sluice_put_duration_seconds_count", &[("connector", "sim")])
            .is_empty()
    );
    assert!(m.lags("sim").is_empty());
    assert!(
        m.find(
            "sluice_poll_duration_seconds_count",
            &[("connector", "all")]
        )
        .is_empty()
    );

    // The process.
    let rss = m.find("sluice_process_resident_memory_bytes", &[]);
    assert!(rss.len() == 1 && rss[0].value > 1e6, "{rss:?}");
    let uptime = m.find("sluice_uptime_seconds", &[]);
    assert!(uptime.len() == 1 && uptime[0].value > 0.0, "{uptime:?}");

    // A paused task shows PAUSED; a deleted connector's series go away.
    assert_eq!(api.call("PUT", "/connectors/all/pause", None).0, 202);
    assert_eq!(api.call("DELETE", "/connectors/dlq", None).0, 204);
    let started = Instant::now();
    loop {
        let m = scrape(&api);
        let paused = m.task_value("sluice_task_state", "all", &[("state", "PAUSED")]);
        let running = m.task_value("sluice_task_state", "all", &[("state", "RUNNING")]);
        if paused == 1.0 && running == 0.0 {
            assert!(
                m.samples
                    .iter()
                    .all(|s| s.labels.get("connector") != Some(&json!("dlq"))),
                "{}",
                m.text
            );
            assert_eq!(m.counter("sluice_records_written_total", "all"), N);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never PAUSED:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
