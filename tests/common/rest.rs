//! The REST API of a running `sluice standalone`, driven with curl (a client written
//! elsewhere): the binary started with a worker file whose `listeners` is a free port,
//! requests with their body on curl's stdin, and the polling the tests need.

use std::ffi::OsString;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Scratch, file_sink, read_lines, sluice};

/// One answer: status, content type, the body as text and as JSON (a string when it is
/// not JSON, null when empty), and the response headers (lower-case names).
pub struct Answer {
    pub code: u16,
    pub content_type: String,
    pub text: String,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One curl call; `extra` are more curl arguments (credentials). The body goes through
/// stdin: it may be larger than an argument may be. The response headers are read from
/// `headers_file`, when given.
pub fn curl(
    method: &str,
    url: &str,
    body: Option<&str>,
    extra: &[&str],
    headers_file: Option<&Path>,
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
        "-X",
        method,
    ]);
    if let Some(file) = headers_file {
        cmd.arg("-D").arg(file);
    }
    cmd.args(extra).arg(url);
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
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    let (text, tail) = all.rsplit_once('\n').unwrap_or(("", &all));
    let (code, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    };
    let headers = match headers_file {
        Some(file) => {
            let headers = std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let _ = std::fs::remove_file(file);
            headers
        }
        None => Vec::new(),
    };
    Answer {
        code: code.trim().parse().unwrap_or(0),
        content_type: content_type.trim().to_string(),
        text: text.to_string(),
        body,
        headers,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker file `<scratch>/worker.json`: the listener on `port`, offsets in the scratch
/// directory flushed every 200 ms, and `extra` keys (which win).
pub fn worker_file(s: &Scratch, port: u16, extra: Value) -> PathBuf {
    let mut config = json!({
        "listeners": format!("http://127.0.0.1:{port}"),
        "offset.storage.file.filename": s.path("offsets.json"),
        "offset.flush.interval.ms": "200",
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
        c.extend(e);
    }
    let path = s.path("worker.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// Polls `check` every 50 ms until it returns something (`within` at most).
pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The states of a connector status's tasks.
pub fn task_states(status: &Value) -> Vec<String> {
    status["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["state"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Kafka Connect's error shape: the status, `error_code` the same, and a message.
pub fn assert_error(code: u16, body: &Value, expected: u16) {
    assert_eq!(code, expected, "{body}");
    assert_eq!(body["error_code"], json!(expected), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// How to start the binary: see [`Api::builder`].
pub struct ApiBuilder<'a> {
    scratch: &'a Scratch,
    worker: Value,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    credentials: Vec<String>,
    ready_within: Duration,
}

impl ApiBuilder<'_> {
    /// More worker keys (they win over the listener and offset keys).
    pub fn worker(mut self, keys: Value) -> Self {
        if let (Value::Object(w), Value::Object(k)) = (&mut self.worker, keys) {
            w.extend(k);
        }
        self
    }

    /// One more argument to `sluice standalone`, after the worker file.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The process's stderr goes to `<scratch>/<file>` (read with [`Api::log`]).
    pub fn log(mut self, file: &str) -> Self {
        self.log = Some(self.scratch.path(file));
        self
    }

    /// curl arguments sent with every call (credentials), unless a call gives its own.
    pub fn credentials(mut self, credentials: &[&str]) -> Self {
        self.credentials = credentials.iter().map(|c| c.to_string()).collect();
        self
    }

    /// How long the REST API may take to come up (20 s unless told).
    pub fn ready_within(mut self, within: Duration) -> Self {
        self.ready_within = within;
        self
    }

    /// Starts `sluice standalone --progress never --worker <file> [args] [connectors]` in
    /// the scratch directory and waits until `GET /` answers 200.
    pub fn start(self, connectors: &[&Path]) -> Api {
        let s = self.scratch;
        let port = free_port();
        let worker = worker_file(s, port, self.worker);
        let mut cmd = sluice();
        cmd.args(["standalone", "--progress", "never", "--worker"])
            .arg(&worker)
            .args(&self.args)
            .args(connectors)
            .current_dir(s.dir.path())
            .stdout(Stdio::null());
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        if let Some(log) = &self.log {
            cmd.stderr(std::fs::File::create(log).unwrap());
        }
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            child: cmd.spawn().expect("spawn sluice"),
            log: self.log,
            scratch: s.dir.path().to_path_buf(),
            credentials: self.credentials,
        };
        let started = Instant::now();
        while api.get("/").0 != 200 {
            assert!(
                started.elapsed() < self.ready_within,
                "REST API did not come up: {}",
                api.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        api
    }
}

/// A running `sluice standalone` with its REST API, killed when dropped.
pub struct Api {
    pub base: String,
    pub child: Child,
    /// Where its stderr goes, when [`ApiBuilder::log`] said so.
    pub log: Option<PathBuf>,
    scratch: PathBuf,
    credentials: Vec<String>,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    pub fn builder(s: &Scratch) -> ApiBuilder<'_> {
        ApiBuilder {
            scratch: s,
            worker: json!({}),
            args: Vec::new(),
            env: Vec::new(),
            log: None,
            credentials: Vec::new(),
            ready_within: Duration::from_secs(20),
        }
    }

    /// The binary with `connectors` (files), its stderr inherited.
    pub fn start(s: &Scratch, connectors: &[&Path]) -> Api {
        Api::builder(s).start(connectors)
    }

    /// (status, body) of `GET path`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    /// (status, body) of one call.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let answer = self.request(method, path, body);
        (answer.code, answer.body)
    }

    /// `GET path`, with the default credentials.
    pub fn fetch(&self, path: &str) -> Answer {
        self.request("GET", path, None)
    }

    /// One call, with the default credentials.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let extra: Vec<&str> = self.credentials.iter().map(String::as_str).collect();
        self.request_as(&extra, method, path, body)
    }

    /// One call with `extra` curl arguments instead of the default credentials; the
    /// answer's headers are read too.
    pub fn request_as(
        &self,
        extra: &[&str],
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Answer {
        let headers_file = self.scratch.join(format!(
            "headers-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        curl(
            method,
            &format!("{}{path}", self.base),
            body,
            extra,
            Some(&headers_file),
        )
    }

    /// What the process wrote to stderr so far (empty when it was not sent to a file).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `GET path` until `check` holds (20 s at most).
    pub fn wait_until(&self, path: &str, check: impl Fn(&Answer) -> bool) -> Answer {
        let started = Instant::now();
        loop {
            let answer = self.fetch(path);
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

    /// Polls the status until `check` holds (tasks start and stop asynchronously).
    pub fn wait_status(&self, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (code, status) = self.get(&format!("/connectors/{name}/status"));
            if code == 200 && check(&status) {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "status of {name} never matched: {code} {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET /metrics`, parsed by the Python Prometheus client's text-format parser (written
/// elsewhere; scripts/test-deps installs it).
/// A FileSink of `topic` (one task, envelope lines) reading records as Python's
/// confluent-kafka produced them: string keys, schemaless JSON values.
pub fn python_records_file_sink(topic: &str, out: &Path) -> Value {
    let mut sink = file_sink(topic, out, "envelope");
    sink["key.converter"] = json!("org.apache.kafka.connect.storage.StringConverter");
    sink["value.converter.schemas.enable"] = json!("false");
    sink
}

/// The worker on `broker`'s Kafka bus serving the REST API, logging at info to
/// `sluice.log`, with `connectors` given on its command line.
pub fn kafka_api(broker: &super::kafka::Broker, s: &Scratch, connectors: &[&Path]) -> Api {
    let keys = broker.worker(s, json!({}));
    let keys: Value = serde_json::from_slice(&std::fs::read(keys).unwrap()).unwrap();
    Api::builder(s)
        .worker(keys)
        .env("RUST_LOG", "info")
        .log("sluice.log")
        .ready_within(Duration::from_secs(60))
        .start(connectors)
}

/// Waits (two minutes at most) until the JSON-lines file `path` has `n` lines, and checks
/// it has no more.
pub fn wait_lines(api: &Api, path: &Path, n: usize) {
    let started = Instant::now();
    while read_lines(path).len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} of {n} lines in {}; log:\n{}",
            read_lines(path).len(),
            path.display(),
            api.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_lines(path).len(), n, "{}", path.display());
}

pub fn scrape(api: &Api) -> Metrics {
    let answer = api.request("GET", "/metrics", None);
    assert_eq!(answer.code, 200, "{}", answer.text);
    assert!(
        answer.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        answer.content_type
    );
    Metrics::parse(&answer.text)
}

/// One sample as the Python parser read it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub family: String,
    pub kind: String,
    pub name: String,
    pub labels: Value,
    pub value: f64,
}

/// The samples of one `GET /metrics`.
#[derive(Debug)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

impl Metrics {
    /// Parses the text with `prometheus_client.parser.text_string_to_metric_families`.
    pub fn parse(text: &str) -> Metrics {
        let mut child = Command::new("python3")
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/test-deps installs prometheus-client)");
        let mut stdin = child.stdin.take().unwrap();
        let payload = text.as_bytes().to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&payload);
        });
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        assert!(
            out.status.success(),
            "the Prometheus parser refused the text: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let samples = parsed
            .into_iter()
            .map(|s| Sample {
                family: s["family"].as_str().unwrap().to_string(),
                kind: s["type"].as_str().unwrap().to_string(),
                name: s["name"].as_str().unwrap().to_string(),
                labels: s["labels"].clone(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect();
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
            .collect()
    }

    /// The one sample of `name` for a task (connector, task 0) with `more` labels.
    pub fn task_value(&self, name: &str, connector: &str, more: &[(&str, &str)]) -> f64 {
        let mut labels = vec![("connector", connector), ("task", "0")];
        labels.extend_from_slice(more);
        let found = self.find(name, &labels);
        assert_eq!(found.len(), 1, "{name} {labels:?}:\n{}", self.text);
        found[0].value
    }

    pub fn counter(&self, name: &str, connector: &str) -> u64 {
        self.task_value(name, connector, &[]) as u64
    }

    /// The consumer lag of every partition of a sink's task.
    pub fn lags(&self, connector: &str) -> Vec<f64> {
        self.find(
            "sluice_consumer_lag_records",
            &[("connector", connector), ("task", "0")],
        )
        .iter()
        .map(|s| s.value)
        .collect()
    }

    /// Every consumer-lag series of a connector: (task, topic, partition, lag), sorted.
    pub fn lag_series(&self, connector: &str) -> Vec<(String, String, i64, f64)> {
        let mut series: Vec<(String, String, i64, f64)> = self
            .find("sluice_consumer_lag_records", &[("connector", connector)])
            .iter()
            .map(|s| {
                let label = |k: &str| s.labels[k].as_str().unwrap_or_default().to_string();
                (
                    label("task"),
                    label("topic"),
                    label("partition").parse().unwrap_or(-1),
                    s.value,
                )
            })
            .collect();
        series.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        series
    }
}
