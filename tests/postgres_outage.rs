//! A PostgreSQL outage mid-run loses nothing: the sink's retriable errors are retried
//! until the database is back, and the pipeline finishes by itself. The outage is done to
//! a throwaway cluster of the test's own (initdb + pg_ctl on a free port), never to the
//! shared server.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pg_cluster::Cluster;
use common::*;
use serde_json::json;

#[test]
fn a_30_second_outage_loses_nothing_and_the_connector_recovers_by_itself() {
    let pg = Cluster::start();
    pg.psql(
        "CREATE TABLE events (event_id varchar(36) PRIMARY KEY, user_id int, product_id text, \
         event_type text, price numeric(10,2), timestamp timestamptz)",
    );
    let s = Scratch::new();
    s.worker(500);
    let total = 30_000u64;
    let mut sim = simulator("events", total);
    sim["rate"] = json!("1500");
    let source = s.connector("sim", sim);
    let sink = s.connector(
        "pg",
        json!({
            "connector.class": "PostgresSink",
            "topics": "events",
            "connection.url": pg.url(),
            "table.name.format": "events",
            "insert.mode": "upsert",
            "pk.mode": "record_value",
            "pk.fields": "event_id",
            "errors.retry.delay.max.ms": "2000",
        }),
    );
    let status_file = s.path("status.json");
    let mut child = s
        .standalone(true, &[&source, &sink])
        .arg("--status-file")
        .arg(&status_file)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while pg
        .psql("SELECT count(*) FROM events")
        .parse::<u64>()
        .unwrap()
        < 3_000
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no rows arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.ctl("stop");
    let outage = Instant::now();
    let mut retrying = None;
    while outage.elapsed() < Duration::from_secs(30) {
        if retrying.is_none() {
            retrying = sink_task_retrying(&status_file);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker gave up during the outage"
    );
    // While the database is down, the status says the task is retrying, and why.
    let retrying = retrying.expect("the status file never showed the sink task retrying");
    assert_eq!(retrying["stage"], "TASK_PUT", "{retrying}");
    assert!(retrying["attempts"].as_u64().unwrap() >= 2, "{retrying}");
    let error = retrying["last_error"].as_str().unwrap();
    assert!(
        error.contains("connect") || error.contains("terminat") || error.contains("closed"),
        "the last error should say the connection failed: {error}"
    );
    pg.ctl("start");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the pipeline did not finish by itself: {status:?}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM events"),
        total.to_string(),
        "rows lost"
    );
    assert_eq!(
        pg.psql("SELECT count(DISTINCT event_id) FROM events"),
        total.to_string()
    );
    // Recovered by itself: no task restart, no failure, the retry note gone.
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status_file).unwrap()).unwrap();
    let tasks = last["pg"]["status"]["tasks"].as_array().unwrap();
    assert!(!tasks.is_empty());
    for task in tasks {
        assert_eq!(task["state"], "STOPPED", "{task}");
        assert!(task.get("retrying").is_none(), "{task}");
        assert!(task.get("restarts").is_none(), "{task}");
    }
}

/// The `retrying` entry of the PostgresSink's task in the status file, if it has one.
fn sink_task_retrying(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let status: serde_json::Value = serde_json::from_str(&text).ok()?;
    let tasks = status["pg"]["status"]["tasks"].as_array()?.clone();
    tasks.into_iter().find_map(|t| {
        assert_eq!(t["state"], "RUNNING", "{t}");
        t.get("retrying").cloned()
    })
}
