//! A PostgreSQL outage mid-run loses nothing: the sink's retriable errors are retried
//! until the database is back, and the pipeline finishes by itself. The outage is done to
//! a throwaway cluster of the test's own (initdb + pg_ctl on a free port), never to the
//! shared server.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn pg_bin(tool: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(tool)
}

/// Runs a server tool as the `postgres` user (initdb refuses to run as root).
fn as_postgres(tool: &str, args: &[&str]) -> std::process::Output {
    let bin = pg_bin(tool);
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).output().expect("run PostgreSQL tool")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let data = dir.path().join("data");
        let out = as_postgres(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { dir, port };
        cluster.ctl("start");
        cluster
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let args: Vec<&str> = match action {
            "start" => vec![
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
            _ => vec!["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        };
        let out = as_postgres("pg_ctl", &args);
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url())
            .args(["-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

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
