//! The REST API's admin side against the real binary, driven with curl: log levels changed
//! at runtime (`/admin/loggers`), optional authentication (`rest.auth`), and KIP-558's
//! active topics (`/connectors/{name}/topics`).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One answer: status, body (JSON when it parses), response headers (lower-case names).
struct Answer {
    code: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One curl call; `extra` are more curl arguments (credentials).
fn curl(method: &str, url: &str, body: Option<&str>, extra: &[&str], scratch: &Path) -> Answer {
    let headers_file = scratch.join(format!(
        "headers-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("-D")
        .arg(&headers_file)
        .args(extra)
        .arg(url);
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("curl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let payload = body.unwrap_or("").as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    let out = child.wait_with_output().expect("curl runs");
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or(0);
    let body = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
    };
    let headers = std::fs::read_to_string(&headers_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let _ = std::fs::remove_file(&headers_file);
    Answer {
        code,
        body,
        headers,
    }
}

/// A running `sluice standalone` with its REST API; its stderr goes to a file.
struct Api {
    base: String,
    child: Child,
    stderr: PathBuf,
    scratch: PathBuf,
    /// curl arguments sent with every call (credentials), unless a call gives its own.
    credentials: Vec<String>,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker file: listener, offsets in the scratch directory, and `extra` keys.
fn worker_file(s: &Scratch, port: u16, extra: Value) -> PathBuf {
    let mut config = json!({
        "listeners": format!("http://127.0.0.1:{port}"),
        "offset.storage.file.filename": s.path("offsets.json"),
        "offset.flush.interval.ms": "200",
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = s.path("worker.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

impl Api {
    fn start(s: &Scratch, extra: Value, connectors: &[&Path]) -> Api {
        Self::start_with(s, extra, connectors, &[])
    }

    fn start_with(s: &Scratch, extra: Value, connectors: &[&Path], credentials: &[&str]) -> Api {
        let port = free_port();
        let worker = worker_file(s, port, extra);
        let stderr = s.path("stderr.log");
        let child = sluice()
            .args(["standalone", "--progress", "never", "--worker"])
            .arg(&worker)
            .args(connectors)
            .current_dir(s.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            child,
            stderr,
            scratch: s.dir.path().to_path_buf(),
            credentials: credentials.iter().map(|c| c.to_string()).collect(),
        };
        let started = Instant::now();
        while api.get("/health").code != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "REST API did not come up: {}",
                api.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let extra: Vec<&str> = self.credentials.iter().map(String::as_str).collect();
        self.call_as(&extra, method, path, body)
    }

    fn call_as(&self, extra: &[&str], method: &str, path: &str, body: Option<&str>) -> Answer {
        curl(
            method,
            &format!("{}{path}", self.base),
            body,
            extra,
            &self.scratch,
        )
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    /// What the process wrote to stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `GET path` until `check` holds.
    fn wait_for(&self, path: &str, check: impl Fn(&Answer) -> bool) -> Answer {
        let started = Instant::now();
        loop {
            let answer = self.get(path);
            if check(&answer) {
                return answer;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "GET {path} never matched: {} {}",
                answer.code,
                answer.body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn assert_error(answer: &Answer, expected: u16) {
    assert_eq!(answer.code, expected, "{}", answer.body);
    assert_eq!(
        answer.body["error_code"],
        json!(expected),
        "{}",
        answer.body
    );
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {}",
        answer.body
    );
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
    let api = Api::start(&s, json!({}), &[&source, &sink]);

    let all = api.get("/admin/loggers");
    assert_eq!(all.code, 200);
    assert_eq!(
        all.body,
        json!({"root": {"level": "WARN", "last_modified": null}})
    );
    let root = api.get("/admin/loggers/root");
    assert_eq!(
        (root.code, root.body),
        (200, json!({"level": "WARN", "last_modified": null}))
    );
    assert_error(&api.get("/admin/loggers/nobody::here"), 404);

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
    let put = api.call(
        "PUT",
        &format!("/admin/loggers/{SOURCE_DRIVER}"),
        Some(r#"{"level": "DEBUG"}"#),
    );
    assert_eq!(put.code, 200, "{}", put.body);
    assert_eq!(put.body, json!([SOURCE_DRIVER]));
    let one = api.get(&format!("/admin/loggers/{SOURCE_DRIVER}"));
    assert_eq!(one.code, 200);
    assert_eq!(one.body["level"], "DEBUG");
    assert!(
        one.body["last_modified"].as_u64().is_some_and(|t| t > 0),
        "{}",
        one.body
    );
    let all = api.get("/admin/loggers").body;
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
    let put = api.call(
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
        api.get(&format!("/admin/loggers/{SOURCE_DRIVER}")).body["level"],
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
    let put = api.call(
        "PUT",
        "/admin/loggers/sluice_runtime?scope=cluster",
        Some(r#"{"level": "WARN"}"#),
    );
    assert_eq!(put.code, 204, "{}", put.body);
    assert_eq!(
        api.get("/admin/loggers/sluice_runtime").body["level"],
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
        let put = api.call("PUT", "/admin/loggers/sluice_runtime", Some(body));
        assert_error(&put, 400);
    }
    assert_error(
        &api.call(
            "PUT",
            "/admin/loggers/bad=name",
            Some(r#"{"level": "DEBUG"}"#),
        ),
        400,
    );
    assert_eq!(
        api.get("/admin/loggers/sluice_runtime").body["level"],
        "WARN"
    );
}

#[test]
fn basic_authentication() {
    let s = Scratch::new();
    let users = s.write("users.txt", "# REST users\nadmin:s3cret:pw\nops:other\n");
    let api = Api::start_with(
        &s,
        json!({"rest.auth": "basic", "rest.auth.credentials.file": users}),
        &[],
        &["-u", "admin:s3cret:pw"],
    );

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
            let answer = api.call_as(&extra, "GET", path, None);
            assert_error(&answer, 401);
            let challenge = answer
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("401 for {who} on {path} without WWW-Authenticate"));
            assert!(challenge.starts_with("Basic realm="), "{challenge}");
        }
        // Changes are refused too.
        let answer = api.call_as(
            &extra,
            "PUT",
            "/admin/loggers/root",
            Some(r#"{"level": "TRACE"}"#),
        );
        assert_error(&answer, 401);
    }
    assert_eq!(api.get("/admin/loggers/root").body["level"], "WARN");

    // The right credentials (either user), and /health for everyone.
    assert_eq!(api.get("/connectors").body, json!([]));
    assert_eq!(api.get("/connectors").code, 200);
    assert_eq!(
        api.call_as(&["-u", "ops:other"], "GET", "/", None).code,
        200
    );
    let health = api.call_as(&[], "GET", "/health", None);
    assert_eq!(health.code, 200, "{}", health.body);
    assert_eq!(health.body["status"], "healthy");
}

#[test]
fn bearer_authentication() {
    let s = Scratch::new();
    let tokens = s.write("tokens.txt", "token-one\n\ntoken-two\n");
    let api = Api::start_with(
        &s,
        json!({"rest.auth": "bearer", "rest.auth.token.file": tokens}),
        &[],
        &["-H", "Authorization: Bearer token-two"],
    );

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
            let answer = api.call_as(&extra, "GET", path, None);
            assert_error(&answer, 401);
            let challenge = answer
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("401 for {who} without WWW-Authenticate"));
            assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        }
    }
    let create = json!({"name": "files", "config": file_sink("shop", &s.path("o.jsonl"), "value")})
        .to_string();
    assert_error(&api.call_as(&[], "POST", "/connectors", Some(&create)), 401);
    assert_eq!(
        api.get("/connectors").body,
        json!([]),
        "nothing was created"
    );

    let created = api.call("POST", "/connectors", Some(&create));
    assert_eq!(created.code, 201, "{}", created.body);
    let other = api.call_as(
        &["-H", "Authorization: Bearer token-one"],
        "GET",
        "/connectors",
        None,
    );
    assert_eq!((other.code, other.body), (200, json!(["files"])));
    assert_eq!(api.call_as(&[], "GET", "/health", None).code, 200);
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
    let api = Api::start(&s, json!({}), &[&source, &sink]);

    // Both ends have seen "shop" once records flowed.
    for name in ["sim", "files"] {
        let answer = api.wait_for(&format!("/connectors/{name}/topics"), |a| {
            a.code == 200 && a.body[name]["topics"] == json!(["shop"])
        });
        assert_eq!(topics_of(&answer, name), ["shop"]);
    }

    // Pause the source; once the sink has caught up, reset both: they stay empty while
    // nothing moves.
    assert_eq!(api.call("PUT", "/connectors/sim/pause", None).code, 202);
    api.wait_for("/connectors/sim/status", |a| {
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
        let reset = api.call("PUT", &format!("/connectors/{name}/topics/reset"), None);
        assert_eq!(reset.code, 202, "{}", reset.body);
        assert_eq!(reset.body, Value::Null, "no body");
    }
    std::thread::sleep(Duration::from_millis(500));
    for name in ["sim", "files"] {
        let answer = api.get(&format!("/connectors/{name}/topics"));
        assert!(topics_of(&answer, name).is_empty(), "{}", answer.body);
    }

    // Resumed, the topic comes back on both sides.
    assert_eq!(api.call("PUT", "/connectors/sim/resume", None).code, 202);
    for name in ["sim", "files"] {
        api.wait_for(&format!("/connectors/{name}/topics"), |a| {
            a.body[name]["topics"] == json!(["shop"])
        });
    }

    // A connector created later starts with no topics; it gains its own.
    let mut second = simulator("clicks", 0);
    second["rate"] = json!("100");
    let create = json!({"name": "sim2", "config": second}).to_string();
    assert_eq!(api.call("POST", "/connectors", Some(&create)).code, 201);
    api.wait_for("/connectors/sim2/topics", |a| {
        a.body["sim2"]["topics"] == json!(["clicks"])
    });
    assert_eq!(
        topics_of(&api.get("/connectors/sim/topics"), "sim"),
        ["shop"]
    );

    // Unknown connectors: 404 with the error shape.
    assert_error(&api.get("/connectors/nope/topics"), 404);
    assert_error(&api.call("PUT", "/connectors/nope/topics/reset", None), 404);
    assert_eq!(api.call("DELETE", "/connectors/sim2", None).code, 204);
    assert_error(&api.get("/connectors/sim2/topics"), 404);
}

#[test]
fn topic_tracking_switches() {
    let s = Scratch::new();
    let (source, sink, _) = pipeline(&s);
    let api = Api::start(
        &s,
        json!({"topic.tracking.allow.reset": "false"}),
        &[&source, &sink],
    );
    api.wait_for("/connectors/files/topics", |a| {
        a.body["files"]["topics"] == json!(["shop"])
    });
    assert_error(
        &api.call("PUT", "/connectors/files/topics/reset", None),
        403,
    );
    assert_eq!(
        topics_of(&api.get("/connectors/files/topics"), "files"),
        ["shop"]
    );
    drop(api);

    let s = Scratch::new();
    let (source, sink, out) = pipeline(&s);
    let api = Api::start(
        &s,
        json!({"topic.tracking.enable": "false"}),
        &[&source, &sink],
    );
    let started = Instant::now();
    while read_lines(&out).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no records");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_error(&api.get("/connectors/files/topics"), 403);
    assert_error(
        &api.call("PUT", "/connectors/files/topics/reset", None),
        403,
    );
}
