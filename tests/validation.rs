//! Bad input: clear messages naming file, connector and key; non-zero exits; no panics;
//! nothing started and nothing written when any connector is invalid.

mod common;

use common::*;
use serde_json::json;

fn validate(files: &[&std::path::Path]) -> (Option<i32>, String) {
    let output = sluice().arg("validate").args(files).output().unwrap();
    let err = stderr(&output);
    assert!(!err.contains("panicked"), "{err}");
    (output.status.code(), err)
}

#[test]
fn a_valid_file_passes_and_unknown_keys_only_warn() {
    let s = Scratch::new();
    let mut config = simulator("t", 10);
    config["no.such.key"] = json!("x");
    let file = s.connector("sim", config);
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning") && err.contains("key \"no.such.key\""),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let s = Scratch::new();
    let missing = s.path("nope.json");
    let (code, err) = validate(&[&missing]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("nope.json") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn invalid_json_is_located() {
    let s = Scratch::new();
    let file = s.write("broken.json", "{\"name\": \"x\", \"config\": {");
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("broken.json: invalid JSON") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn an_unknown_class_names_file_connector_and_key() {
    let s = Scratch::new();
    let file = s.connector(
        "mystery",
        json!({"connector.class": "com.example.Nope", "topic": "t"}),
    );
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("mystery.json: connector \"mystery\": key \"connector.class\": unknown connector class \"com.example.Nope\""),
        "{err}"
    );
    assert!(
        err.contains("SimulatorSource") && err.contains("FileSink"),
        "lists the known classes: {err}"
    );
}

#[test]
fn a_missing_required_key_is_named() {
    let s = Scratch::new();
    let file = s.connector("sim", json!({"connector.class": "SimulatorSource"}));
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(1));
    assert!(err.contains("connector \"sim\": key \"topic\""), "{err}");
    let file = s.connector("sink", json!({"connector.class": "FileSink", "file": "x"}));
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(1));
    assert!(err.contains("connector \"sink\": key \"topics\""), "{err}");
}

#[test]
fn a_wrong_type_is_named() {
    let s = Scratch::new();
    let mut config = simulator("t", 10);
    config["tasks.max"] = json!("many");
    let file = s.connector("sim", config);
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("key \"tasks.max\": expected an integer, got \"many\""),
        "{err}"
    );
}

#[test]
fn two_connectors_with_one_name_are_refused() {
    let s = Scratch::new();
    let a = s.connector("same", simulator("t", 10));
    let b = s.write(
        "other.json",
        &json!({"name": "same", "config": simulator("u", 10)}).to_string(),
    );
    let (code, err) = validate(&[&a, &b]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("other.json: connector \"same\": key \"name\": is already used"),
        "{err}"
    );
}

#[test]
fn an_unresolvable_placeholder_is_named() {
    let s = Scratch::new();
    let mut config = simulator("t", 10);
    config["seed"] = json!("${env:SLUICE_TEST_SURELY_UNSET}");
    let file = s.connector("sim", config);
    let (code, err) = validate(&[&file]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("key \"seed\"") && err.contains("SLUICE_TEST_SURELY_UNSET"),
        "{err}"
    );
}

#[test]
fn placeholders_resolve_when_the_task_starts_and_are_never_written_back() {
    let s = Scratch::new();
    s.worker(1_000);
    let out = s.path("out.jsonl");
    let mut config = simulator("t", 0);
    config["max.events"] = json!("${env:SLUICE_TEST_EVENTS}");
    let source = s.connector("sim", config);
    let sink = s.connector("file", file_sink("t", &out, "value"));
    let before = std::fs::read_to_string(&source).unwrap();
    let output = s
        .standalone(true, &[&source, &sink])
        .env("SLUICE_TEST_EVENTS", "123")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(read_lines(&out).len(), 123);
    assert_eq!(std::fs::read_to_string(&source).unwrap(), before);
}

#[test]
fn standalone_with_one_bad_connector_starts_nothing() {
    let s = Scratch::new();
    s.worker(1_000);
    let out = s.path("out.jsonl");
    let good = s.connector("sim", simulator("t", 100));
    let sink = s.connector("file", file_sink("t", &out, "value"));
    let mut bad = simulator("u", 10);
    bad["malformed.rate"] = json!("2");
    let bad = s.connector("bad", bad);
    let output = s.run(true, &[&good, &sink, &bad]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("bad.json: connector \"bad\": key \"malformed.rate\""),
        "{err}"
    );
    assert!(
        !out.exists(),
        "no output may be written when a connector is invalid"
    );
    assert!(
        !s.path("offsets.json").exists(),
        "no offsets may be written either"
    );
}

#[test]
fn a_bad_worker_file_is_named() {
    let s = Scratch::new();
    let worker = s.write("worker.json", r#"{"offset.flush.interval.ms": "soon"}"#);
    let sim = s.connector("sim", simulator("t", 1));
    let output = sluice()
        .arg("standalone")
        .arg("--worker")
        .arg(&worker)
        .arg(&sim)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("worker.json") && err.contains("offset.flush.interval.ms"),
        "{err}"
    );
}

#[test]
fn a_corrupt_offset_file_stops_the_start_instead_of_resetting() {
    let s = Scratch::new();
    s.worker(1_000);
    s.write("offsets.json", "{not an offset file");
    let sim = s.connector("sim", simulator("t", 1));
    let sink = s.connector("file", file_sink("t", &s.path("o.jsonl"), "value"));
    let output = s.run(true, &[&sim, &sink]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("offsets.json"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(s.path("offsets.json")).unwrap(),
        "{not an offset file"
    );
}

#[test]
fn plugins_lists_builtins_with_kind_and_version() {
    let output = sluice().arg("plugins").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let line = |class: &str| {
        text.lines()
            .find(|l| l.contains(class))
            .unwrap_or_else(|| panic!("{class}: {text}"))
            .to_string()
    };
    assert!(line("SimulatorSource").starts_with("source"));
    let file = line("FileSink");
    assert!(
        file.starts_with("sink")
            && file.contains(env!("CARGO_PKG_VERSION"))
            && file.contains("FileStreamSinkConnector")
    );
}

#[test]
fn kafka_connect_properties_files_run_unchanged() {
    let s = Scratch::new();
    s.worker(1_000);
    let out = s.path("out.txt");
    let source = s.write(
        "sim.properties",
        "name=sim\nconnector.class=SimulatorSource\ntasks.max=1\ntopic=connect-test\nmax.events=250\n",
    );
    // connect-file-sink.properties as Kafka Connect ships it, but for the file path.
    let sink = s.write(
        "sink.properties",
        &format!(
            "name=local-file-sink\nconnector.class=FileStreamSink\ntasks.max=1\nfile={}\ntopics=connect-test\n",
            out.display()
        ),
    );
    let output = s.run(true, &[&source, &sink]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(read_lines(&out).len(), 250);
}
