//! The REST API against the real binary, driven with curl (a client written elsewhere):
//! Kafka Connect's paths, bodies, status codes and error shape.

mod common;

use std::time::{Duration, Instant};

use common::rest::{Api, assert_error, task_states};
use common::*;
use serde_json::{Value, json};

#[test]
fn connector_lifecycle_over_http() {
    let s = Scratch::new();
    let mut sim = simulator("shop", 0);
    sim["rate"] = json!("200");
    let source = s.connector("sim", sim);
    let api = Api::start(&s, &[&source]);

    let (code, root) = api.get("/");
    assert_eq!(code, 200);
    assert!(
        root["version"].is_string()
            && root.get("commit").is_some()
            && root.get("kafka_cluster_id").is_some(),
        "{root}"
    );
    assert_eq!(api.get("/health").0, 200);
    assert_eq!(api.get("/connectors"), (200, json!(["sim"])));

    // Create a sink: 201 with its info; the same name again: 409.
    let file = s.path("out.jsonl");
    let create = json!({"name": "files", "config": {
        "connector.class": "FileSink", "topics": "shop", "file": file, "format": "value",
        "tasks.max": "1"}})
    .to_string();
    let (code, info) = api.call("POST", "/connectors", Some(&create));
    assert_eq!(code, 201, "{info}");
    assert_eq!(info["name"], "files");
    assert_eq!(info["type"], "sink");
    assert_eq!(info["tasks"], json!([{"connector": "files", "task": 0}]));
    assert_eq!(info["config"]["name"], "files");
    assert_eq!(info["config"]["topics"], "shop");
    let (code, body) = api.call("POST", "/connectors", Some(&create));
    assert_error(code, &body, 409);

    // Records flow to the new sink.
    let started = Instant::now();
    while read_lines(&file).len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no records reached the sink"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Expand both.
    let (code, all) = api.get("/connectors?expand=status&expand=info");
    assert_eq!(code, 200);
    assert_eq!(all["files"]["info"]["type"], "sink");
    assert_eq!(all["sim"]["status"]["connector"]["state"], "RUNNING");
    assert_eq!(all["sim"]["status"]["type"], "source");

    // Status, pause, resume, stop.
    let status = api.wait_status("files", |s| task_states(s) == ["RUNNING"]);
    assert_eq!(status["name"], "files");
    assert_eq!(status["connector"]["worker_id"], "standalone");
    assert_eq!(api.call("PUT", "/connectors/sim/pause", None).0, 202);
    let status = api.wait_status("sim", |s| task_states(s) == ["PAUSED"]);
    assert_eq!(status["connector"]["state"], "PAUSED");
    // Paused: nothing more arrives.
    std::thread::sleep(Duration::from_millis(700));
    let at_pause = read_lines(&file).len();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        read_lines(&file).len(),
        at_pause,
        "records flowed while paused"
    );
    assert_eq!(api.call("PUT", "/connectors/sim/resume", None).0, 202);
    api.wait_status("sim", |s| task_states(s) == ["RUNNING"]);
    let started = Instant::now();
    while read_lines(&file).len() <= at_pause {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no records after resume"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(api.call("PUT", "/connectors/files/stop", None).0, 204);
    let status = api.wait_status("files", |s| s["connector"]["state"] == "STOPPED");
    assert_eq!(status["tasks"], json!([]));
    assert_eq!(api.call("PUT", "/connectors/files/resume", None).0, 202);
    api.wait_status("files", |s| task_states(s) == ["RUNNING"]);

    // Restart: 204 plain, 202 with the status when includeTasks.
    assert_eq!(api.call("POST", "/connectors/files/restart", None).0, 204);
    let (code, status) = api.call(
        "POST",
        "/connectors/files/restart?includeTasks=true&onlyFailed=false",
        None,
    );
    assert_eq!(code, 202, "{status}");
    assert_eq!(status["name"], "files");

    // Tasks and their status.
    let (code, tasks) = api.get("/connectors/files/tasks");
    assert_eq!(code, 200);
    assert_eq!(tasks[0]["id"], json!({"connector": "files", "task": 0}));
    assert_eq!(tasks[0]["config"]["topics"], "shop");
    let (code, task) = api.get("/connectors/files/tasks/0/status");
    assert_eq!(code, 200, "{task}");
    assert_eq!(task["id"], 0);
    let (code, body) = api.get("/connectors/files/tasks/7/status");
    assert_error(code, &body, 404);
    // One task restarted on its own: the connector's other task keeps running.
    let two = json!({"connector.class": "SimulatorSource", "topic": "two", "seed": "3",
        "rate": "50", "tasks.max": "2"});
    assert_eq!(
        api.call("PUT", "/connectors/two/config", Some(&two.to_string()))
            .0,
        201
    );
    api.wait_status("two", |s| task_states(s) == ["RUNNING", "RUNNING"]);
    assert_eq!(
        api.call("POST", "/connectors/two/tasks/1/restart", None).0,
        204
    );
    api.wait_status("two", |s| task_states(s) == ["RUNNING", "RUNNING"]);
    assert_eq!(api.call("DELETE", "/connectors/two", None).0, 204);

    // Config: GET, PUT (200 for an existing connector, 201 for a new one), PATCH.
    let (code, config) = api.get("/connectors/files/config");
    assert_eq!(code, 200);
    assert_eq!(config["connector.class"], "FileSink");
    let mut replaced = config.clone();
    replaced["format"] = json!("envelope");
    let (code, info) = api.call(
        "PUT",
        "/connectors/files/config",
        Some(&replaced.to_string()),
    );
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["config"]["format"], "envelope");
    let second =
        json!({"connector.class": "FileSink", "topics": "shop", "file": s.path("second.jsonl")});
    let (code, info) = api.call(
        "PUT",
        "/connectors/second/config",
        Some(&second.to_string()),
    );
    assert_eq!(code, 201, "{info}");
    let (code, info) = api.call(
        "PATCH",
        "/connectors/second/config",
        Some(r#"{"format": "envelope", "tasks.max": null}"#),
    );
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["config"]["format"], "envelope");

    // Validation: a good and a bad config.
    let (code, good) = api.call(
        "PUT",
        "/connector-plugins/FileSink/config/validate",
        Some(&json!({"connector.class": "FileSink", "topics": "t", "file": "/tmp/x"}).to_string()),
    );
    assert_eq!(code, 200);
    assert_eq!(good["name"], "FileSink");
    assert_eq!(good["error_count"], 0, "{good}");
    let (code, bad) = api.call(
        "PUT",
        "/connector-plugins/FileSink/config/validate",
        Some(&json!({"connector.class": "FileSink", "topics": "t", "format": "xml", "nonsense.key": "1"}).to_string()),
    );
    assert_eq!(
        code, 200,
        "invalid configs answer 200 with the errors inside"
    );
    assert!(bad["error_count"].as_u64().unwrap() >= 1, "{bad}");
    let configs = bad["configs"].as_array().unwrap();
    let errors_of = |key: &str| -> Vec<Value> {
        configs
            .iter()
            .find(|c| c["value"]["name"] == key)
            .map(|c| c["value"]["errors"].as_array().unwrap().clone())
            .unwrap_or_default()
    };
    assert!(
        !errors_of("file").is_empty(),
        "missing required key reported"
    );
    let (_, bad_format) = api.call(
        "PUT",
        "/connector-plugins/FileSink/config/validate",
        Some(&json!({"connector.class": "FileSink", "topics": "t", "file": "/tmp/x", "format": "xml"}).to_string()),
    );
    let format_errors = bad_format["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["value"]["name"] == "format")
        .map(|c| c["value"]["errors"].clone())
        .unwrap();
    assert_eq!(bad_format["error_count"], 1, "{bad_format}");
    assert!(
        format_errors[0].as_str().unwrap().contains("xml"),
        "{format_errors}"
    );
    let unknown = configs
        .iter()
        .find(|c| c["value"]["name"] == "nonsense.key")
        .unwrap();
    assert_eq!(unknown["definition"], Value::Null);
    let file_def = configs
        .iter()
        .find(|c| c["value"]["name"] == "file")
        .unwrap();
    assert_eq!(file_def["definition"]["required"], true);

    // Plugins.
    let (code, plugins) = api.get("/connector-plugins");
    assert_eq!(code, 200);
    let classes: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_str().unwrap())
        .collect();
    assert!(
        classes.contains(&"FileSink") && classes.contains(&"SimulatorSource"),
        "{plugins}"
    );
    assert!(!classes.contains(&"Filter"));
    let (_, all) = api.get("/connector-plugins?connectorsOnly=false");
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|p| p["class"] == "Filter" && p["type"] == "transformation"),
        "{all}"
    );

    // Delete.
    assert_eq!(api.call("DELETE", "/connectors/second", None).0, 204);
    let (code, body) = api.get("/connectors/second");
    assert_error(code, &body, 404);
    let (code, list) = api.get("/connectors");
    assert_eq!(code, 200);
    assert_eq!(list, json!(["files", "sim"]));
}

#[test]
fn bad_requests_answer_4xx_with_the_error_shape_and_change_nothing() {
    let s = Scratch::new();
    let sink = s.connector("files", file_sink("shop", &s.path("out.jsonl"), "value"));
    let api = Api::start(&s, &[&sink]);
    let before = api.get("/connectors?expand=info");
    let huge = format!(
        "{{\"name\":\"h\",\"config\":{{\"x\":\"{}\"}}}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        ("POST", "/connectors".into(), Some("{not json".into()), 400),
        ("POST", "/connectors".into(), Some("".into()), 400),
        ("POST", "/connectors".into(), Some("[]".into()), 400),
        ("POST", "/connectors".into(), Some("\"text\"".into()), 400),
        ("POST", "/connectors".into(), Some("{}".into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x"}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":[]}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"","config":{"connector.class":"FileSink"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"a\u0001b","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"NoSuchClass"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"FileSink","topics":"t"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f","tasks.max":"-3"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f","errors.tolerance":"some"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f","transforms":"a"}}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f"},"initial_state":"SLEEPING"}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"x","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f"},"surprise":1}"#.into()), 400),
        ("POST", "/connectors".into(), Some(r#"{"name":"files","config":{"connector.class":"FileSink","topics":"t","file":"/tmp/f"}}"#.into()), 409),
        ("POST", "/connectors".into(), Some(huge.clone()), 413),
        ("PUT", "/connectors/files/config".into(), Some("{oops".into()), 400),
        ("PUT", "/connectors/files/config".into(), Some(r#"{"connector.class":"FileSink","topics":"t"}"#.into()), 400),
        ("PUT", "/connectors/files/config".into(), Some(r#"{"name":"other","connector.class":"FileSink","topics":"t","file":"/tmp/f"}"#.into()), 400),
        ("PUT", "/connectors/files/config".into(), Some("42".into()), 400),
        ("PATCH", "/connectors/files/config".into(), Some(r#"{"file": null}"#.into()), 400),
        ("PATCH", "/connectors/files/config".into(), Some("[1]".into()), 400),
        ("PATCH", "/connectors/nobody/config".into(), Some("{}".into()), 404),
        ("GET", "/connectors/nobody".into(), None, 404),
        ("GET", "/connectors/nobody/status".into(), None, 404),
        ("DELETE", "/connectors/nobody".into(), None, 404),
        ("PUT", "/connectors/nobody/pause".into(), None, 404),
        ("POST", "/connectors/nobody/restart".into(), None, 404),
        ("POST", "/connectors/files/restart?includeTasks=maybe".into(), None, 400),
        ("GET", "/connectors/files/tasks/x/status".into(), None, 400),
        ("GET", "/connectors/files/tasks/99/status".into(), None, 404),
        ("POST", "/connectors/files/tasks/99/restart".into(), None, 404),
        ("GET", "/connectors?expand=everything".into(), None, 400),
        ("GET", "/connector-plugins/NoSuch/config".into(), None, 404),
        ("PUT", "/connector-plugins/FileSink/config/validate".into(), Some("nope".into()), 400),
        ("PUT", "/connector-plugins/FileSink/config/validate".into(), Some(r#"{"connector.class":"PostgresSink"}"#.into()), 400),
        ("GET", "/no/such/path".into(), None, 404),
        ("GET", "/connectors/a%01b".into(), None, 400),
    ];
    assert!(cases.len() >= 30);
    for (method, path, body, expected) in &cases {
        let (code, answer) = api.call(method, path, body.as_deref());
        assert!(
            (400..500).contains(&code),
            "{method} {path}: {code} {answer}"
        );
        assert_eq!(code, *expected, "{method} {path}: {answer}");
        assert_eq!(
            answer["error_code"],
            json!(code),
            "{method} {path}: {answer}"
        );
        assert!(answer["message"].is_string(), "{method} {path}: {answer}");
    }
    // Still serving, and nothing changed.
    assert_eq!(api.get("/connectors?expand=info"), before);
    let (code, _) = api.get("/health");
    assert_eq!(code, 200);
}

#[test]
fn connectors_created_over_rest_come_back_after_a_restart_in_their_state() {
    let s = Scratch::new();
    let created = {
        let api = Api::start(&s, &[]);
        assert_eq!(api.get("/connectors"), (200, json!([])));
        let sim = json!({"name": "sim", "config": {
            "connector.class": "SimulatorSource", "topic": "shop", "seed": "1",
            "rate": "100", "connection.password": "s3cret"}});
        assert_eq!(
            api.call("POST", "/connectors", Some(&sim.to_string())).0,
            201
        );
        let sink = json!({"name": "files", "config": {
            "connector.class": "FileSink", "topics": "shop", "file": s.path("out.jsonl")}});
        assert_eq!(
            api.call("POST", "/connectors", Some(&sink.to_string())).0,
            201
        );
        let gone = json!({"name": "gone", "config": {
            "connector.class": "FileSink", "topics": "shop", "file": s.path("gone.jsonl")},
            "initial_state": "STOPPED"});
        assert_eq!(
            api.call("POST", "/connectors", Some(&gone.to_string())).0,
            201
        );
        assert_eq!(api.call("PUT", "/connectors/sim/pause", None).0, 202);
        assert_eq!(api.call("DELETE", "/connectors/gone", None).0, 204);
        // Secrets never show.
        let (_, config) = api.get("/connectors/sim/config");
        assert_eq!(config["connection.password"], "[hidden]");
        api.get("/connectors?expand=info").1
    };
    // The process is gone (killed); a new one on the same data directory.
    let api = Api::start(&s, &[]);
    assert_eq!(api.get("/connectors"), (200, json!(["files", "sim"])));
    assert_eq!(api.get("/connectors?expand=info").1, created);
    let status = api.wait_status("sim", |s| s["connector"]["state"] == "PAUSED");
    assert_eq!(task_states(&status), ["PAUSED"]);
    api.wait_status("files", |s| task_states(s) == ["RUNNING"]);
    // The stored file keeps the secret as given (the data directory is the operator's).
    let stored = std::fs::read_to_string(s.path("connectors/sim.json")).unwrap();
    assert!(stored.contains("\"PAUSED\""), "{stored}");
}

#[test]
fn offsets_can_be_read_any_time_and_changed_when_stopped() {
    let s = Scratch::new();
    let mut sim = simulator("shop", 0);
    sim["rate"] = json!("500");
    let source = s.connector("sim", sim);
    let sink = s.connector("files", file_sink("shop", &s.path("out.jsonl"), "envelope"));
    let api = Api::start(&s, &[&source, &sink]);
    // Offsets get committed as records become durable.
    let started = Instant::now();
    let first = loop {
        let (code, body) = api.get("/connectors/sim/offsets");
        assert_eq!(code, 200, "{body}");
        if let Some(o) = body["offsets"].as_array().and_then(|a| a.first()) {
            break o.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no offsets committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        first["partition"].is_object() && first["offset"].is_object(),
        "{first}"
    );
    // Running: changes are refused.
    let change =
        json!({"offsets": [{"partition": first["partition"], "offset": {"seq": 9}}]}).to_string();
    let (code, body) = api.call("PATCH", "/connectors/sim/offsets", Some(&change));
    assert_error(code, &body, 400);
    assert!(
        body["message"].as_str().unwrap().contains("STOPPED"),
        "{body}"
    );
    let (code, body) = api.call("DELETE", "/connectors/sim/offsets", None);
    assert_error(code, &body, 400);
    // Stopped: altered, then reset.
    assert_eq!(api.call("PUT", "/connectors/sim/stop", None).0, 204);
    let (code, body) = api.call("PATCH", "/connectors/sim/offsets", Some(&change));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"],
        "The offsets for this connector have been altered successfully"
    );
    let (_, now) = api.get("/connectors/sim/offsets");
    assert_eq!(
        now["offsets"],
        json!([{"partition": first["partition"], "offset": {"seq": 9}}])
    );
    let (code, body) = api.call("DELETE", "/connectors/sim/offsets", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"],
        "The offsets for this connector have been reset successfully"
    );
    assert_eq!(api.get("/connectors/sim/offsets").1, json!({"offsets": []}));
    // Resumed after the reset, the source starts over: sequence 0 is written again.
    let before = read_lines(&s.path("out.jsonl")).len();
    assert_eq!(api.call("PUT", "/connectors/sim/resume", None).0, 202);
    let started = Instant::now();
    loop {
        let lines = read_lines(&s.path("out.jsonl"));
        if lines[before..].iter().any(|l| task_seq(l).1 == 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the source did not start over"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A sink on the embedded bus has no offsets to change.
    assert_eq!(api.call("PUT", "/connectors/files/stop", None).0, 204);
    let sink_change = json!({"offsets": [{"partition": {"kafka_topic": "shop", "kafka_partition": 0}, "offset": {"kafka_offset": 1}}]}).to_string();
    let (code, body) = api.call("PATCH", "/connectors/files/offsets", Some(&sink_change));
    assert_error(code, &body, 400);
    // Malformed changes.
    for bad in [
        r#"{"offsets": []}"#,
        r#"{"offsets": [{"offset": {}}]}"#,
        r#"{"offsets": [{"partition": {}, "offset": 5}]}"#,
        r#"{"timestamp": "soon"}"#,
        "[]",
    ] {
        let (code, body) = api.call("PATCH", "/connectors/sim/offsets", Some(bad));
        assert_error(code, &body, 400);
    }
    let (code, body) = api.get("/connectors/nobody/offsets");
    assert_error(code, &body, 404);
}
