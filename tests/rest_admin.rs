//! The REST API's admin side against the real binary, driven with curl: log levels changed
//! at runtime (`/admin/loggers`), optional authentication (`rest.auth`), and KIP-558's
//! active topics (`/connectors/{name}/topics`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::rest::{self, Answer, Api, free_port, worker_file};
use common::*;
use serde_json::{Value, json};

/// The binary with `extra` worker keys and `connectors`, its stderr in `stderr.log`.
fn start(s: &Scratch, extra: Value, connectors: &[&Path]) -> Api {
    Api::builder(s)
        .worker(extra)
        .log("stderr.log")
        .start(connectors)
}

fn assert_error(answer: &Answer, expected: u16) {
    rest::assert_error(answer.code, &answer.body, expected);
}

/// A simulator source on `shop` at 200 records/s and a FileSink reading it.
fn pipeline(s: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let mut sim = simulator("shop", 0);
    sim["rate"] = json!("200");
    let source = s.connector("sim", sim);
    let out = s.path("out.jsonl");
    let sink = s.connector("files", file_sink("shop", &out, "value"));
    (source, sink, out)
}

/// Lines of `log` at DEBUG level.
fn debug_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" DEBUG ")).collect()
}

const SOURCE_DRIVER: &str = "sluice_runtime::source_driver";

#[test]
fn log_levels_change_at_runtime() {
    let s = Scratch::new();
    let (source, sink, out) = pipeline(&s);
    // The tests' RUST_LOG is `warn`.
    let api = start(&s, json!({}), &[&source, &sink]);

    let all = api.fetch("/admin/loggers");
    assert_eq!(all.code, 200);
    assert_eq!(
        all.body,
        json!({"root": {"level": "WARN", "last_modified": null}})
    );
    let root = api.fetch("/admin/loggers/root");
    assert_eq!(
        (root.code, root.body),
        (200, json!({"level": "WARN", "last_modified": null}))
    );
    assert_error(&api.fetch("/admin/loggers/nobody::here"), 404);

    // Records flow and offsets are committed every 200 ms, without a DEBUG line.
    let started = Instant::now();
    while read_lines(&out).len() < 50 {
        assert!(started.elapsed() < Duration::from_secs(20), "no records");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        debug_lines(&api.log()).is_empty(),
        "DEBUG lines at level WARN:\n{}",
        api.log()
    );

    // DEBUG for the source driver: its "offsets committed" lines appear, nobody else's.
    let before = api.log().len();
    let put = api.request(
        "PUT",
        &format!("/admin/loggers/{SOURCE_DRIVER}"),
        Some(r#"{"level": "DEBUG"}"#),
    );
    assert_eq!(put.code, 200, "{}", put.body);
    assert_eq!(put.body, json!([SOURCE_DRIVER]));
    let one = api.fetch(&format!("/admin/loggers/{SOURCE_DRIVER}"));
    assert_eq!(one.code, 200);
    assert_eq!(one.body["level"], "DEBUG");
    assert!(
        one.body["last_modified"].as_u64().is_some_and(|t| t > 0),
        "{}",
        one.body
    );
    let all = api.fetch("/admin/loggers").body;
    assert_eq!(all[SOURCE_DRIVER]["level"], "DEBUG", "{all}");
    assert_eq!(all["root"], json!({"level": "WARN", "last_modified": null}));
    let started = Instant::now();
    loop {
        let log = api.log();
        let new = &log[before..];
        if debug_lines(new)
            .iter()
            .any(|l| l.contains(SOURCE_DRIVER) && l.contains("offsets committed"))
        {
            let others: Vec<&str> = debug_lines(new)
                .into_iter()
                .filter(|l| !l.contains(SOURCE_DRIVER))
                .collect();
            assert!(
                others.is_empty(),
                "DEBUG lines of other targets: {others:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no DEBUG line from {SOURCE_DRIVER} after the change:\n{new}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Down again, through the parent namespace (which changes the child too).
    let put = api.request(
        "PUT",
        "/admin/loggers/sluice_runtime",
        Some(r#"{"level": "info"}"#),
    );
    assert_eq!(put.code, 200, "{}", put.body);
    let changed: Vec<&str> = put
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        changed.contains(&"sluice_runtime") && changed.contains(&SOURCE_DRIVER),
        "{changed:?}"
    );
    assert!(
        changed.windows(2).all(|w| w[0] <= w[1]),
        "sorted: {changed:?}"
    );
    assert_eq!(
        api.fetch(&format!("/admin/loggers/{SOURCE_DRIVER}")).body["level"],
        "INFO"
    );
    std::thread::sleep(Duration::from_millis(300));
    let quiet_from = api.log().len();
    std::thread::sleep(Duration::from_millis(1000));
    let log = api.log();
    assert!(
        debug_lines(&log[quiet_from..]).is_empty(),
        "DEBUG lines after going back to INFO:\n{}",
        &log[quiet_from..]
    );

    // scope=cluster: a standalone worker is its own cluster; 204 as Kafka Connect.
    let put = api.request(
        "PUT",
        "/admin/loggers/sluice_runtime?scope=cluster",
        Some(r#"{"level": "WARN"}"#),
    );
    assert_eq!(put.code, 204, "{}", put.body);
    assert_eq!(
        api.fetch("/admin/loggers/sluice_runtime").body["level"],
        "WARN"
    );

    // Bad requests: 400 with the error shape, nothing changed.
    for body in [
        r#"{"level": "LOUD"}"#,
        r#"{"level": ""}"#,
        r#"{"lvl": "DEBUG"}"#,
        r#"{"level": 3}"#,
        r#"["DEBUG"]"#,
        "not json",
    ] {
        let put = api.request("PUT", "/admin/loggers/sluice_runtime", Some(body));
        assert_error(&put, 400);
    }
    assert_error(
        &api.request(
            "PUT",
            "/admin/loggers/bad=name",
            Some(r#"{"level": "DEBUG"}"#),
        ),
        400,
    );
    assert_eq!(
        api.fetch("/admin/loggers/sluice_runtime").body["level"],
        "WARN"
    );
}

#[test]
fn basic_authentication() {
    let s = Scratch::new();
    let users = s.write("users.txt", "# REST users\nadmin:s3cret:pw\nops:other\n");
    let api = Api::builder(&s)
        .worker(json!({"rest.auth": "basic", "rest.auth.credentials.file": users}))
        .log("stderr.log")
        .credentials(&["-u", "admin:s3cret:pw"])
        .start(&[]);

    for (who, extra) in [
        ("nobody", vec![]),
        ("a wrong password", vec!["-u", "admin:s3cret"]),
        ("an unknown user", vec!["-u", "root:s3cret:pw"]),
        (
            "a bearer token",
            vec!["-H", "Authorization: Bearer s3cret:pw"],
        ),
    ] {
        for path in ["/connectors", "/", "/admin/loggers", "/no/such/path"] {
            let answer = api.request_as(&extra, "GET", path, None);
            assert_error(&answer, 401);
            let challenge = answer
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("401 for {who} on {path} without WWW-Authenticate"));
            assert!(challenge.starts_with("Basic realm="), "{challenge}");
        }
        // Changes are refused too.
        let answer = api.request_as(
            &extra,
            "PUT",
            "/admin/loggers/root",
            Some(r#"{"level": "TRACE"}"#),
        );
        assert_error(&answer, 401);
    }
    assert_eq!(api.fetch("/admin/loggers/root").body["level"], "WARN");

    // The right credentials (either user), and /health for everyone.
    assert_eq!(api.fetch("/connectors").body, json!([]));
    assert_eq!(api.fetch("/connectors").code, 200);
    assert_eq!(
        api.request_as(&["-u", "ops:other"], "GET", "/", None).code,
        200
    );
    let health = api.request_as(&[], "GET", "/health", None);
    assert_eq!(health.code, 200, "{}", health.body);
    assert_eq!(health.body["status"], "healthy");
}

#[test]
fn bearer_authentication() {
    let s = Scratch::new();
    let tokens = s.write("tokens.txt", "token-one\n\ntoken-two\n");
    let api = Api::builder(&s)
        .worker(json!({"rest.auth": "bearer", "rest.auth.token.file": tokens}))
        .log("stderr.log")
        .credentials(&["-H", "Authorization: Bearer token-two"])
        .start(&[]);

    for (who, extra) in [
        ("nobody", vec![]),
        (
            "a wrong token",
            vec!["-H", "Authorization: Bearer token-three"],
        ),
        (
            "a token's prefix",
            vec!["-H", "Authorization: Bearer token"],
        ),
        ("basic credentials", vec!["-u", "token-one:token-one"]),
    ] {
        for path in ["/connectors", "/connector-plugins", "/no/such/path"] {
            let answer = api.request_as(&extra, "GET", path, None);
            assert_error(&answer, 401);
            let challenge = answer
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("401 for {who} without WWW-Authenticate"));
            assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        }
    }
    let create = json!({"name": "files", "config": file_sink("shop", &s.path("o.jsonl"), "value")})
        .to_string();
    assert_error(
        &api.request_as(&[], "POST", "/connectors", Some(&create)),
        401,
    );
    assert_eq!(
        api.fetch("/connectors").body,
        json!([]),
        "nothing was created"
    );

    let created = api.request("POST", "/connectors", Some(&create));
    assert_eq!(created.code, 201, "{}", created.body);
    let other = api.request_as(
        &["-H", "Authorization: Bearer token-one"],
        "GET",
        "/connectors",
        None,
    );
    assert_eq!((other.code, other.body), (200, json!(["files"])));
    assert_eq!(api.request_as(&[], "GET", "/health", None).code, 200);
}

#[test]
fn authentication_without_its_file_refuses_to_start() {
    let s = Scratch::new();
    for (extra, expected) in [
        (json!({"rest.auth": "basic"}), "rest.auth.credentials.file"),
        (json!({"rest.auth": "bearer"}), "rest.auth.token.file"),
        (
            json!({"rest.auth": "bearer", "rest.auth.token.file": s.path("missing")}),
            "cannot read",
        ),
        (json!({"rest.auth": "digest"}), "rest.auth"),
    ] {
        worker_file(&s, free_port(), extra.clone());
        let output = sluice()
            .args(["standalone", "--progress", "never", "--worker"])
            .arg(s.path("worker.json"))
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(1),
            "{extra}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{extra}: {}",
            stderr(&output)
        );
    }
}

fn topics_of(answer: &Answer, name: &str) -> Vec<String> {
    assert_eq!(answer.code, 200, "{}", answer.body);
    let object = answer.body.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{}", answer.body);
    answer.body[name]["topics"]
        .as_array()
        .unwrap_or_else(|| panic!("no topics list: {}", answer.body))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn active_topics_of_a_pipeline() {
    let s = Scratch::new();
    let (source, sink, out) = pipeline(&s);
    let api = start(&s, json!({}), &[&source, &sink]);

    // Both ends have seen "shop" once records flowed.
    for name in ["sim", "files"] {
        let answer = api.wait_until(&format!("/connectors/{name}/topics"), |a| {
            a.code == 200 && a.body[name]["topics"] == json!(["shop"])
        });
        assert_eq!(topics_of(&answer, name), ["shop"]);
    }

    // Pause the source; once the sink has caught up, reset both: they stay empty while
    // nothing moves.
    assert_eq!(api.request("PUT", "/connectors/sim/pause", None).code, 202);
    api.wait_until("/connectors/sim/status", |a| {
        a.body["tasks"][0]["state"] == "PAUSED"
    });
    let mut lines = read_lines(&out).len();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = read_lines(&out).len();
        if now == lines {
            break;
        }
        lines = now;
    }
    for name in ["sim", "files"] {
        let reset = api.request("PUT", &format!("/connectors/{name}/topics/reset"), None);
        assert_eq!(reset.code, 202, "{}", reset.body);
        assert_eq!(reset.body, Value::Null, "no body");
    }
    std::thread::sleep(Duration::from_millis(500));
    for name in ["sim", "files"] {
        let answer = api.fetch(&format!("/connectors/{name}/topics"));
        assert!(topics_of(&answer, name).is_empty(), "{}", answer.body);
    }

    // Resumed, the topic comes back on both sides.
    assert_eq!(api.request("PUT", "/connectors/sim/resume", None).code, 202);
    for name in ["sim", "files"] {
        api.wait_until(&format!("/connectors/{name}/topics"), |a| {
            a.body[name]["topics"] == json!(["shop"])
        });
    }

    // A connector created later starts with no topics; it gains its own.
    let mut second = simulator("clicks", 0);
    second["rate"] = json!("100");
    let create = json!({"name": "sim2", "config": second}).to_string();
    assert_eq!(api.request("POST", "/connectors", Some(&create)).code, 201);
    api.wait_until("/connectors/sim2/topics", |a| {
        a.body["sim2"]["topics"] == json!(["clicks"])
    });
    assert_eq!(
        topics_of(&api.fetch("/connectors/sim/topics"), "sim"),
        ["shop"]
    );

    // Unknown connectors: 404 with the error shape.
    assert_error(&api.fetch("/connectors/nope/topics"), 404);
    assert_error(
        &api.request("PUT", "/connectors/nope/topics/reset", None),
        404,
    );
    assert_eq!(api.request("DELETE", "/connectors/sim2", None).code, 204);
    assert_error(&api.fetch("/connectors/sim2/topics"), 404);
}

#[test]
fn topic_tracking_switches() {
    let s = Scratch::new();
    let (source, sink, _) = pipeline(&s);
    let api = start(
        &s,
        json!({"topic.tracking.allow.reset": "false"}),
        &[&source, &sink],
    );
    api.wait_until("/connectors/files/topics", |a| {
        a.body["files"]["topics"] == json!(["shop"])
    });
    assert_error(
        &api.request("PUT", "/connectors/files/topics/reset", None),
        403,
    );
    assert_eq!(
        topics_of(&api.fetch("/connectors/files/topics"), "files"),
        ["shop"]
    );
    drop(api);

    let s = Scratch::new();
    let (source, sink, out) = pipeline(&s);
    let api = start(
        &s,
        json!({"topic.tracking.enable": "false"}),
        &[&source, &sink],
    );
    let started = Instant::now();
    while read_lines(&out).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no records");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_error(&api.fetch("/connectors/files/topics"), 403);
    assert_error(
        &api.request("PUT", "/connectors/files/topics/reset", None),
        403,
    );
}
