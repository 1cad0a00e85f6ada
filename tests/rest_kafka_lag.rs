//! `sluice_consumer_lag_records` with Kafka as the bus (tansu on a free port, or
//! `KAFKA_BOOTSTRAP_SERVERS`): records produced by Python's confluent-kafka (a client
//! written elsewhere) to a three-partition topic, a FileSink consuming them, and
//! `GET /metrics` read by the Python Prometheus client's parser. Each partition the group
//! assigned has exactly one series, on the task that owns it; the lag is 0 once the sink
//! committed everything, counts the records waiting while the connector is paused, and a
//! partition taken away by a rebalance leaves its old owner's series.

mod common;

use std::time::{Duration, Instant};

use common::kafka::{Broker, python, topic};
use common::rest::{Api, Metrics, kafka_api, python_records_file_sink, scrape, wait_lines};
use common::*;
use serde_json::json;

const PARTITIONS: i64 = 3;

/// Creates `topic` with three partitions.
const CREATE: &str = r#"
import os, sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]})
for f in admin.create_topics([NewTopic(sys.argv[1], int(sys.argv[2]), 1)]).values():
    f.result()
"#;

/// Produces `n` records to each partition of `topic`, one request at a time.
const PRODUCE: &str = r#"
import os, sys
from confluent_kafka import Producer
topic, partitions, n, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "linger.ms": 0})
for i in range(n):
    for part in range(partitions):
        p.produce(topic, key=f"{tag}-{part}-{i}", value='{"n": %d}' % i, partition=part)
        p.flush(10)
assert len(p) == 0, "records not delivered"
"#;

/// (task, partition, lag) of every lag series of `connector` on `topic`.
fn lags(m: &Metrics, connector: &str, topic: &str) -> Vec<(String, i64, f64)> {
    m.lag_series(connector)
        .into_iter()
        .map(|(task, t, partition, lag)| {
            assert_eq!(t, topic, "{}", m.text);
            (task, partition, lag)
        })
        .collect()
}

/// Polls `GET /metrics` until `check` holds (60 s at most: groups take seconds to form and
/// librdkafka reports every second).
fn wait_metrics(api: &Api, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let started = Instant::now();
    loop {
        let m = scrape(api);
        if check(&m) {
            return m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never held; last scrape:\n{}\nlog:\n{}",
            m.text,
            api.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The partitions of the series, each once, and every lag `lag`.
fn each_partition_once(series: &[(String, i64, f64)], lag: f64) -> bool {
    let mut partitions: Vec<i64> = series.iter().map(|(_, p, _)| *p).collect();
    partitions.sort_unstable();
    partitions == (0..PARTITIONS).collect::<Vec<_>>() && series.iter().all(|(_, _, l)| *l == lag)
}

#[test]
fn consumer_lag_per_partition_on_kafka() {
    const N: usize = 30;
    let broker = Broker::start();
    let events = topic("lag");
    python(&broker, CREATE, &[&events, &PARTITIONS.to_string()]);
    let per_partition = (N as i64 / PARTITIONS).to_string();
    python(
        &broker,
        PRODUCE,
        &[&events, &PARTITIONS.to_string(), &per_partition, "a"],
    );

    let s = Scratch::new();
    let out = s.path("out.jsonl");
    let sink = s.connector("files", python_records_file_sink(&events, &out));
    let api = kafka_api(&broker, &s, &[&sink]);

    // Caught up: every partition has one series, on the task, at 0.
    wait_lines(&api, &out, N);
    let m = wait_metrics(&api, "a lag of 0 on every partition", |m| {
        each_partition_once(&lags(m, "files", &events), 0.0)
    });
    assert!(
        lags(&m, "files", &events)
            .iter()
            .all(|(task, _, _)| task == "0"),
        "{}",
        m.text
    );
    assert_eq!(
        m.find("sluice_consumer_lag_records", &[("connector", "files")])
            .iter()
            .map(|s| s.kind.as_str())
            .collect::<Vec<_>>(),
        ["gauge"; PARTITIONS as usize]
    );

    // Paused, 7 more records per partition wait: the lag counts them.
    let (code, body) = api.call("PUT", "/connectors/files/pause", None);
    assert_eq!(code, 202, "{body}");
    api.wait_status("files", |st| st["connector"]["state"] == "PAUSED");
    python(
        &broker,
        PRODUCE,
        &[&events, &PARTITIONS.to_string(), "7", "b"],
    );
    wait_metrics(&api, "a lag of 7 on every partition while paused", |m| {
        each_partition_once(&lags(m, "files", &events), 7.0)
    });
    assert_eq!(read_lines(&out).len(), N, "a paused sink wrote");

    // Resumed: it writes them, commits, and the lag is 0 again.
    let (code, body) = api.call("PUT", "/connectors/files/resume", None);
    assert_eq!(code, 202, "{body}");
    wait_lines(&api, &out, N + 7 * PARTITIONS as usize);
    wait_metrics(&api, "a lag of 0 after resuming", |m| {
        each_partition_once(&lags(m, "files", &events), 0.0)
    });

    // A second connector joins the same consumer group: the rebalance shares the
    // partitions out between two members, and each partition still has exactly one
    // series, on its owner; the task dropped the partitions it gave away.
    let mut joiner = python_records_file_sink(&events, &s.path("joiner.jsonl"));
    joiner["consumer.override.group.id"] = json!("connect-files");
    let (code, body) = api.call(
        "POST",
        "/connectors",
        Some(&json!({"name": "joiner", "config": joiner}).to_string()),
    );
    assert_eq!(code, 201, "{body}");
    let m = wait_metrics(&api, "the partitions shared between two members", |m| {
        let mut all = lags(m, "files", &events);
        let joined = lags(m, "joiner", &events);
        let shared = !joined.is_empty() && !all.is_empty();
        all.extend(joined);
        shared && each_partition_once(&all, 0.0)
    });
    assert!(
        read_lines(&s.path("joiner.jsonl")).is_empty(),
        "the group had committed everything: the joiner had nothing to write\n{}",
        m.text
    );

    // A deleted connector's series go.
    let (code, body) = api.call("DELETE", "/connectors/joiner", None);
    assert_eq!(code, 204, "{body}");
    let (code, body) = api.call("DELETE", "/connectors/files", None);
    assert_eq!(code, 204, "{body}");
    wait_metrics(&api, "no lag series after deleting", |m| {
        m.find("sluice_consumer_lag_records", &[]).is_empty()
    });
}
