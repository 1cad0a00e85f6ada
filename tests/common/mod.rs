//! Helpers for end-to-end tests: they run the real `sluice` binary on real files.
#![allow(dead_code)]

pub mod kafka;
pub mod pg_cluster;
pub mod rest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A scratch directory holding connector files, a worker file, outputs and offsets.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `{"name": name, "config": config}` to `<name>.json`.
    pub fn connector(&self, name: &str, config: Value) -> PathBuf {
        let path = self.path(&format!("{name}.json"));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({"name": name, "config": config})).unwrap(),
        )
        .unwrap();
        path
    }

    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A worker file keeping offsets in this directory, with a short flush interval.
    pub fn worker(&self, flush_ms: u64) -> PathBuf {
        let config = json!({
            "offset.storage.file.filename": self.path("offsets.json"),
            "offset.flush.interval.ms": flush_ms,
        });
        let path = self.path("worker.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    pub fn standalone(&self, drain: bool, files: &[&Path]) -> Command {
        let mut cmd = sluice();
        cmd.arg("standalone")
            .arg("--worker")
            .arg(self.path("worker.json"));
        if drain {
            cmd.arg("--drain");
        }
        cmd.args(files).current_dir(self.dir.path());
        cmd
    }

    pub fn run(&self, drain: bool, files: &[&Path]) -> Output {
        self.standalone(drain, files).output().expect("run sluice")
    }

    pub fn spawn(&self, files: &[&Path]) -> Child {
        self.standalone(false, files)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice")
    }

    /// The committed offsets: connector → source partition (as JSON text) → offset.
    pub fn offsets(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        let Ok(bytes) = std::fs::read(self.path("offsets.json")) else {
            return out;
        };
        let file: Value = serde_json::from_slice(&bytes).expect("offset file is JSON");
        for entry in file["offsets"].as_array().expect("offsets array") {
            let key = entry["key"]
                .as_array()
                .expect("key is [connector, partition]");
            out.entry(key[0].as_str().unwrap().to_string())
                .or_default()
                .insert(key[1].to_string(), entry["offset"].clone());
        }
        out
    }
}

pub fn simulator(topic: &str, max_events: u64) -> Value {
    json!({
        "connector.class": "SimulatorSource",
        "topic": topic,
        "scenario": "ecommerce",
        "seed": "42",
        "max.events": max_events.to_string(),
    })
}

pub fn file_sink(topics: &str, file: &Path, format: &str) -> Value {
    json!({
        "connector.class": "FileSink",
        "topics": topics,
        "file": file,
        "format": format,
    })
}

/// Every line of a JSON-lines file, parsed. Panics on a line that is not JSON.
pub fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {l}", path.display(), i + 1))
        })
        .collect()
}

/// (task, seq) of an envelope line, from the simulator's headers.
pub fn task_seq(line: &Value) -> (u64, u64) {
    let h = &line["headers"];
    let num = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    (
        num(&h["sluice.simulator.task"]).unwrap_or_else(|| panic!("no task header: {line}")),
        num(&h["sluice.simulator.seq"]).unwrap_or_else(|| panic!("no seq header: {line}")),
    )
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The PostgreSQL the tests use: `DATABASE_URL`, or the local server with trust auth.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Runs SQL with psql (a client written elsewhere); the unaligned output, `|`-separated.
pub fn psql(sql: &str) -> String {
    let output = Command::new("psql")
        .arg(database_url())
        .args(["-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A schema of its own, dropped when the test ends.
pub struct Schema(pub String);

impl Schema {
    pub fn new(name: &str) -> Schema {
        let schema = format!("sluice_{name}_{}", std::process::id());
        psql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ));
        Schema(schema)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(database_url())
            .args(["-c", &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0)])
            .output();
    }
}
