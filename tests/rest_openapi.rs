//! `GET /openapi.json` against the real binary: the document is valid OpenAPI (checked by
//! the Python `openapi-spec-validator`, written elsewhere), every operation it documents
//! is served, and a schema-driven fuzz run (`schemathesis`, generating requests from the
//! document) finds no 5xx. scripts/test-deps installs both.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::rest::Api;
use common::*;
use serde_json::{Value, json};

/// (status, content type, body) of one curl call.
fn call(api: &Api, method: &str, path: &str, body: Option<&str>) -> (u16, String, String) {
    let answer = api.request(method, path, body);
    (answer.code, answer.content_type, answer.text)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The binary with `connectors` (files) on a free port; its log goes to `sluice.log`
/// (a fuzz run may turn every logger to TRACE).
fn start(s: &Scratch, connectors: &[&Path]) -> Api {
    Api::builder(s)
        .worker(json!({"connector.storage.dir": s.path("stored")}))
        .log("sluice.log")
        .start(connectors)
}

/// Waits until `name` is listed (a create or a stop is carried out asynchronously).
fn wait_state(api: &Api, name: &str, state: &str) {
    let started = Instant::now();
    loop {
        let (code, _, body) = call(api, "GET", &format!("/connectors/{name}/status"), None);
        if code == 200 && json_of(&body)["connector"]["state"] == state {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} never became {state}: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A source (`sim`), a sink reading it (`files`) and a STOPPED source (`parked`, whose
/// offsets may change): the connectors the checks and the fuzz run use by name.
fn start_with_connectors(s: &Scratch) -> Api {
    let mut sim = simulator("shop", 0);
    sim["rate"] = json!("50");
    let sim = s.connector("sim", sim);
    let files = s.connector("files", file_sink("shop", &s.path("out.jsonl"), "value"));
    let parked = s.connector("parked", simulator("parked", 10));
    let api = start(s, &[&sim, &files, &parked]);
    let (code, _, body) = call(&api, "PUT", "/connectors/parked/stop", None);
    assert_eq!(code, 204, "{body}");
    wait_state(&api, "parked", "STOPPED");
    wait_state(&api, "sim", "RUNNING");
    api
}

fn fetch_document(api: &Api) -> Value {
    let (code, content_type, body) = call(api, "GET", "/openapi.json", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).expect("the document is JSON")
}

const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
document = json.load(sys.stdin)
validate(document)
print(document["openapi"])
"#;

/// Parameter values that name something that exists.
fn known_value(parameter: &str) -> &'static str {
    match parameter {
        "name" => "sim",
        "task" => "0",
        "plugin" => "SimulatorSource",
        "logger" => "root",
        other => panic!("a path parameter the test does not know: {other}"),
    }
}

#[test]
fn openapi_document_is_valid_and_every_documented_operation_is_served() {
    let s = Scratch::new();
    let api = start_with_connectors(&s);
    let doc = fetch_document(&api);

    // Valid OpenAPI 3, by a validator written elsewhere.
    let mut child = Command::new("python3")
        .args(["-c", VALIDATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test-deps installs openapi-spec-validator)");
    let text = doc.to_string();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("3."));

    // What the server answers for a path it has no route for.
    let (code, _, unknown) = call(&api, "GET", "/no/such/route", None);
    assert_eq!(code, 404);
    let unknown = json_of(&unknown)["message"].clone();
    assert!(unknown.is_string());

    // Every documented operation, with names that exist: served (neither the unknown
    // route's 404 nor a 405), answering a status code its operation documents, errors in
    // the error shape. Deletions last, so the connectors stay for the others.
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    operations.sort_by_key(|(method, path, _)| (method == "DELETE", path.clone()));
    assert!(operations.len() >= 30, "{} operations", operations.len());
    for (method, path, operation) in &operations {
        let url: String = path
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(parameter) => known_value(parameter).to_string(),
                    None => segment.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        let body = operation.get("requestBody").map(|_| "{}");
        let (code, content_type, answer) = call(&api, method, &url, body);
        let answer_json = json_of(&answer);
        assert!(
            !(code == 404 && answer_json["message"] == unknown) && code != 405 && code != 0,
            "{method} {url} ({path}) is documented but not served: {code} {answer}"
        );
        assert!(
            code < 500,
            "{method} {url}: {code} {answer}\n{}",
            api.log_tail(40)
        );
        let documented = &operation["responses"];
        assert!(
            documented.get(code.to_string()).is_some(),
            "{method} {url} answered {code}, which its operation does not document: {answer}"
        );
        if code >= 400 {
            assert_eq!(
                answer_json["error_code"],
                json!(code),
                "{method} {url}: {answer}"
            );
            assert!(
                answer_json["message"].is_string(),
                "{method} {url}: {answer}"
            );
        } else if code != 204 && code != 202 || !answer.is_empty() {
            let declared = documented[code.to_string()]["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default();
            assert!(
                declared.iter().any(|d| d == &content_type),
                "{method} {url}: {code} {content_type}, documented {declared:?}"
            );
        }
    }
}

/// `[parameters]` of the fuzz run: path parameters draw from these names 70% of the time,
/// so requests reach the connectors (and plugins, loggers) that exist, not only 404s.
const SCHEMATHESIS_CONFIG: &str = r#"
[dictionaries.connectors]
values = ["sim", "files", "parked"]
[dictionaries.plugins]
values = ["SimulatorSource", "FileSink", "Filter"]
[dictionaries.loggers]
values = ["root", "sluice_runtime", "sluice_runtime::worker"]
[dictionaries.tasks]
values = [0, 1]

[parameters]
"path.name" = { dictionary = "connectors", probability = 0.7 }
"path.plugin" = { dictionary = "plugins", probability = 0.7 }
"path.logger" = { dictionary = "loggers", probability = 0.7 }
"path.task" = { dictionary = "tasks", probability = 0.7 }
"#;

/// Test cases per operation and phase; about 25 s on 2 cores.
const MAX_EXAMPLES: &str = "40";
const SEED: &str = "20261129";
const FUZZ_TIMEOUT: Duration = Duration::from_secs(150);

#[test]
fn schemathesis_fuzzing_finds_no_server_error() {
    let s = Scratch::new();
    let api = start_with_connectors(&s);
    fetch_document(&api);
    let config = s.write("schemathesis.toml", SCHEMATHESIS_CONFIG);
    let report = s.path("report");
    let started = Instant::now();
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        ])
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{}/openapi.json", api.base),
            "--checks",
            "not_a_server_error",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "15",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report)
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test-deps installs schemathesis)");
    // Read its output on threads (it may be long), and bound the run.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > FUZZ_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    let elapsed = started.elapsed();
    let Some(status) = status else {
        panic!(
            "schemathesis did not finish within {FUZZ_TIMEOUT:?}\n{out}\n{err}\n--- sluice:\n{}",
            api.log_tail(40)
        );
    };
    assert!(
        out.contains("Test cases:") && out.contains("generated"),
        "schemathesis did not run (exit {status}):\n{out}\n{err}"
    );
    assert!(
        status.success(),
        "schemathesis found failures (exit {status}):\n{out}\n{err}\n--- sluice:\n{}",
        api.log_tail(40)
    );
    eprintln!("schemathesis ran for {elapsed:?}");
    // The worker is still up and answering.
    let (code, _, body) = call(&api, "GET", "/", None);
    assert_eq!(code, 200, "{body}\n{}", api.log_tail(40));
}
