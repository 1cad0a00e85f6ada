//! One stuck connector never blocks the REST API for the others (issue 6): a PostgresSink
//! whose database hangs (a throwaway cluster of this test's own, frozen with SIGSTOP
//! mid-run: connections stay open and no query ever answers), and one whose server
//! accepts connections and never says a word. While they hang, every request — reads,
//! changes to the healthy connectors, and changes to the stuck ones that must stop their
//! tasks — answers within a generous client timeout, and the healthy pipeline keeps
//! moving records.
//!
//! Reads come from the view the worker publishes and never wait. Changes are carried out
//! by the worker one at a time, and one that stops a stuck task waits for it at most
//! `task.shutdown.graceful.timeout.ms` + 5 s (here 1 s + 5 s), however many of the
//! connector's tasks are stuck; curl's `--max-time 10` is the failure signal.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg_cluster::Cluster;
use common::rest::{Answer, Api, task_states};
use common::*;
use serde_json::{Value, json};

/// Any request not answered within this long fails the test.
const CLIENT_TIMEOUT: &str = "10";

/// The cluster's processes: the postmaster (from `postmaster.pid`) and its children (the
/// backends serving the sink's open connections, and the server's own helpers).
fn cluster_pids(pg: &Cluster) -> Vec<String> {
    let pid_file = std::fs::read_to_string(pg.data().join("postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap().trim().to_string();
    let mut pids = vec![postmaster.clone()];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(postmaster.as_str()) {
            pids.push(name);
        }
    }
    pids
}

/// Freezes the cluster (SIGSTOP to its processes) and thaws it when dropped, before the
/// cluster itself is stopped.
struct Frozen(Vec<String>);

impl Frozen {
    fn freeze(pg: &Cluster) -> Frozen {
        let pids = cluster_pids(pg);
        assert!(pids.len() > 1, "no backends to freeze: {pids:?}");
        signal("-STOP", &pids);
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(which: &str, pids: &[String]) {
    let status = Command::new("kill").arg(which).args(pids).status().unwrap();
    assert!(status.success(), "kill {which} {pids:?}");
}

/// One request with the client timeout; an unanswered one fails the test, naming it.
fn call(api: &Api, method: &str, path: &str, body: Option<Value>) -> Answer {
    let body = body.map(|b| b.to_string());
    let started = Instant::now();
    let answer = api.request_as(
        &["--max-time", CLIENT_TIMEOUT],
        method,
        path,
        body.as_deref(),
    );
    assert_ne!(
        answer.code,
        0,
        "{method} {path} got no answer within {CLIENT_TIMEOUT} s (gave up after {:?}); log:\n{}",
        started.elapsed(),
        api.log_tail(40)
    );
    answer
}

/// A request that must answer `expected`.
fn expect(api: &Api, method: &str, path: &str, body: Option<Value>, expected: u16) -> Value {
    let answer = call(api, method, path, body);
    assert_eq!(
        answer.code,
        expected,
        "{method} {path}: {}\n{}",
        answer.text,
        api.log_tail(40)
    );
    answer.body
}

fn lines(s: &Scratch, file: &str) -> usize {
    std::fs::read_to_string(s.path(file))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Waits until `file` has more than `than` lines (the healthy pipeline moved on).
fn wait_more_lines(s: &Scratch, file: &str, than: usize) -> usize {
    common::rest::wait_for(
        &format!("{file} to grow past {than} lines"),
        Duration::from_secs(30),
        || {
            let n = lines(s, file);
            (n > than).then_some(n)
        },
    )
}

fn simulator_at(topic: &str, rate: u32) -> Value {
    let mut sim = simulator(topic, 10_000_000);
    sim["rate"] = json!(rate.to_string());
    sim
}

#[test]
fn a_sink_whose_database_hangs_never_blocks_the_api_for_the_others() {
    let pg = Cluster::start();
    // Accepts connections (the kernel completes the handshake) and never answers them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        silent.local_addr().unwrap().port()
    );

    let s = Scratch::new();
    let healthy_src = s.connector("healthy-src", simulator_at("healthy", 200));
    let healthy = s.connector(
        "healthy",
        file_sink("healthy", &s.path("healthy.jsonl"), "envelope"),
    );
    let events_src = s.connector("events-src", simulator_at("events", 400));
    // Two tasks, one partition each: both get stuck, and stopping them must still take
    // one graceful timeout, not one per task.
    let pg_sink = json!({
        "connector.class": "PostgresSink",
        "topics": "events",
        "tasks.max": "2",
        "connection.url": pg.url(),
        "table.name.format": "events",
        "auto.create": "true",
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "event_id",
    });
    let stuck = s.connector("stuck", pg_sink.clone());
    let api = Api::builder(&s)
        .worker(json!({
            "task.shutdown.graceful.timeout.ms": "1000",
            "embedded.default.partitions": "2",
            "connector.storage.dir": s.path("connectors"),
        }))
        .env("RUST_LOG", "warn")
        .log("sluice.log")
        .start(&[&healthy_src, &healthy, &events_src, &stuck]);

    // Both pipelines move: rows reach the database, lines the file.
    common::rest::wait_for("rows in the database", Duration::from_secs(60), || {
        let n: u64 = pg
            .psql("SELECT count(*) FROM pg_tables WHERE tablename = 'events'")
            .parse()
            .unwrap();
        (n == 1
            && pg
                .psql("SELECT count(*) FROM events")
                .parse::<u64>()
                .unwrap()
                > 200)
            .then_some(())
    });
    wait_more_lines(&s, "healthy.jsonl", 100);
    let status = api.wait_status("stuck", |st| {
        task_states(st) == ["RUNNING", "RUNNING"] && st["connector"]["state"] == "RUNNING"
    });
    assert_eq!(status["type"], "sink", "{status}");

    // The database hangs: both tasks are inside a put or flush that never returns.
    let frozen = Frozen::freeze(&pg);
    std::thread::sleep(Duration::from_secs(2));

    // Meanwhile, and all through the changes below, reads keep answering.
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(0u32));
    let reader = {
        let done = done.clone();
        let reads = reads.clone();
        let base = api.base.clone();
        std::thread::spawn(move || {
            let paths = [
                "/connectors?expand=status&expand=info",
                "/connectors/healthy/status",
                "/connectors/healthy/config",
                "/connectors/healthy/tasks",
                "/connectors/healthy/topics",
                "/metrics",
                "/",
                "/connector-plugins",
            ];
            while !done.load(Ordering::Acquire) {
                for path in paths {
                    let started = Instant::now();
                    let answer = common::rest::curl(
                        "GET",
                        &format!("{base}{path}"),
                        None,
                        &["--max-time", CLIENT_TIMEOUT],
                        None,
                    );
                    assert_eq!(
                        answer.code,
                        200,
                        "GET {path} while a connector is stuck: answered {} after {:?}: {}",
                        answer.code,
                        started.elapsed(),
                        answer.text
                    );
                    *reads.lock().unwrap() += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let before = lines(&s, "healthy.jsonl");
    // Reads of the stuck connector.
    let all = expect(&api, "GET", "/connectors?expand=status", None, 200);
    for name in ["healthy-src", "healthy", "events-src", "stuck"] {
        assert!(
            all[name]["status"]["connector"]["state"].is_string(),
            "{all}"
        );
    }
    expect(&api, "GET", "/connectors/stuck", None, 200);
    let status = expect(&api, "GET", "/connectors/stuck/status", None, 200);
    assert_eq!(task_states(&status), ["RUNNING", "RUNNING"], "{status}");
    expect(&api, "GET", "/connectors/stuck/tasks/1/status", None, 200);
    let config = expect(&api, "GET", "/connectors/stuck/config", None, 200);
    assert_eq!(config["connection.url"], json!(pg.url()), "{config}");
    expect(&api, "GET", "/connectors/stuck/tasks", None, 200);
    expect(&api, "GET", "/connectors/stuck/topics", None, 200);
    let offsets = expect(&api, "GET", "/connectors/stuck/offsets", None, 200);
    assert!(offsets["offsets"].is_array(), "{offsets}");
    let health = call(&api, "GET", "/health", None);
    assert_eq!(health.code, 200, "{}", health.text);
    let metrics = expect(&api, "GET", "/metrics", None, 200);
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains(r#"connector="stuck""#)),
        "{metrics}"
    );

    // Changes to other connectors: created, changed and deleted while it hangs.
    let other = file_sink("healthy", &s.path("other.jsonl"), "envelope");
    expect(
        &api,
        "POST",
        "/connectors",
        Some(json!({"name": "other", "config": other})),
        201,
    );
    expect(
        &api,
        "PATCH",
        "/connectors/other/config",
        Some(json!({"format": "value"})),
        200,
    );
    // A second stuck sink: its server never answers, so its tasks hang connecting.
    let mut silent_sink = pg_sink.clone();
    silent_sink["connection.url"] = json!(silent_url);
    silent_sink["tasks.max"] = json!("1");
    expect(
        &api,
        "PUT",
        "/connectors/silent/config",
        Some(silent_sink),
        201,
    );
    wait_more_lines(&s, "other.jsonl", 0);

    // Changes to the stuck connector: those that stop its tasks wait for them at most the
    // graceful timeout (+ 5 s), then abandon them.
    expect(&api, "PUT", "/connectors/stuck/pause", None, 202);
    api.wait_status("stuck", |st| {
        st["connector"]["state"] == "PAUSED" && task_states(st) == ["PAUSED", "PAUSED"]
    });
    expect(&api, "PUT", "/connectors/stuck/resume", None, 202);
    api.wait_status("stuck", |st| st["connector"]["state"] == "RUNNING");
    let mut changed = pg_sink.clone();
    changed["batch.size"] = json!("500");
    expect(&api, "PUT", "/connectors/stuck/config", Some(changed), 200);
    expect(
        &api,
        "PATCH",
        "/connectors/stuck/config",
        Some(json!({"batch.size": "400"})),
        200,
    );
    expect(
        &api,
        "POST",
        "/connectors/stuck/restart?includeTasks=true",
        None,
        202,
    );
    expect(&api, "POST", "/connectors/stuck/tasks/1/restart", None, 204);
    expect(&api, "POST", "/connectors/stuck/restart", None, 204);
    expect(&api, "PUT", "/connectors/stuck/stop", None, 204);
    let stopped = expect(&api, "GET", "/connectors/stuck/status", None, 200);
    assert_eq!(stopped["connector"]["state"], "STOPPED", "{stopped}");
    expect(&api, "GET", "/connectors/stuck/offsets", None, 200);
    expect(&api, "PUT", "/connectors/stuck/resume", None, 202);
    expect(&api, "DELETE", "/connectors/stuck", None, 204);
    expect(&api, "PUT", "/connectors/silent/stop", None, 204);
    expect(&api, "DELETE", "/connectors/silent", None, 204);
    expect(&api, "DELETE", "/connectors/other", None, 204);
    let names = expect(&api, "GET", "/connectors", None, 200);
    let mut names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["events-src", "healthy", "healthy-src"]);

    // The healthy pipeline moved all along, and the worker is healthy again.
    wait_more_lines(&s, "healthy.jsonl", before);
    let health = call(&api, "GET", "/health", None);
    assert_eq!(health.code, 200, "{}", health.text);
    done.store(true, Ordering::Release);
    reader.join().expect("every read answered");
    assert!(*reads.lock().unwrap() > 0);
    let healthy = expect(&api, "GET", "/connectors/healthy/status", None, 200);
    assert_eq!(task_states(&healthy), ["RUNNING"], "{healthy}");
    drop(frozen);
    drop(silent);
}
