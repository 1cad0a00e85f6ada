//! `GET /metrics`: the worker's measurements in the Prometheus text format (0.0.4), encoded
//! by the Prometheus client library (`prometheus-client`), never by hand.
//!
//! Everything is read when scraped: the counters and histograms the task drivers keep
//! ([`sluice_runtime::metrics`]), task states from the status store, consumer lag from the
//! bus (where it knows it cheaply), and the process's resident memory and uptime. Tasks
//! are those the status shows: a deleted or stopped connector's series go away.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::Value;
use sluice_runtime::metrics::{HistogramSnapshot, PartitionLag, TaskMetrics};
use sluice_runtime::status::TaskState;

use crate::{ApiError, ApiState};

const TASK_STATES: [TaskState; 6] = [
    TaskState::Unassigned,
    TaskState::Running,
    TaskState::Paused,
    TaskState::Stopped,
    TaskState::Failed,
    TaskState::Restarting,
];

#[utoipa::path(get, path = "/metrics", tag = "server",
    responses(
        (status = 200, description = "The worker's metrics (docs/rest.md)",
         content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 500, description = "The metrics could not be encoded",
         body = crate::types::ErrorBody),
    ))]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape::take(&state)));
    let mut body = String::new();
    match prometheus_text::encode(&mut body, &registry) {
        Ok(()) => ([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], body).into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        )
        .into_response(),
    }
}

/// One task as scraped.
#[derive(Debug)]
struct TaskRow {
    connector: String,
    task: String,
    is_source: bool,
    /// `None` for a task that never started (its connector's clients could not be made).
    metrics: Option<Arc<TaskMetrics>>,
    state: Option<TaskState>,
    lag: Vec<PartitionLag>,
}

impl TaskRow {
    fn labels(&self) -> [(&str, &str); 2] {
        [
            ("connector", self.connector.as_str()),
            ("task", self.task.as_str()),
        ]
    }
}

/// Everything one scrape shows, read before encoding.
#[derive(Debug)]
struct Scrape {
    tasks: Vec<TaskRow>,
    uptime_seconds: f64,
    resident_bytes: Option<u64>,
}

impl Scrape {
    fn take(state: &ApiState) -> Scrape {
        let connectors = state.metrics.connectors();
        let mut tasks = Vec::new();
        if let Value::Object(all) = state.status.all() {
            for (name, entry) in all {
                let status = &entry["status"];
                let is_source = status["type"] == "source";
                let measured = connectors
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map(|(_, _, m)| m.tasks())
                    .unwrap_or_default();
                for task in status["tasks"].as_array().into_iter().flatten() {
                    let Some(id) = task["id"].as_u64() else {
                        continue;
                    };
                    let metrics = measured
                        .iter()
                        .find(|(t, _)| u64::from(*t) == id)
                        .map(|(_, m)| m.clone());
                    let state = task["state"]
                        .as_str()
                        .and_then(|s| TASK_STATES.into_iter().find(|t| t.as_str() == s));
                    let lag = metrics.as_ref().map(|m| m.lag()).unwrap_or_default();
                    tasks.push(TaskRow {
                        connector: name.clone(),
                        task: id.to_string(),
                        is_source,
                        metrics,
                        state,
                        lag,
                    });
                }
            }
        }
        Scrape {
            tasks,
            uptime_seconds: state.metrics.uptime().as_secs_f64(),
            resident_bytes: resident_bytes(),
        }
    }

    fn counter(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&TaskMetrics) -> u64,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for row in &self.tasks {
            if let Some(m) = &row.metrics {
                family
                    .encode_family(&row.labels())?
                    .encode_counter::<NoLabelSet, u64, u64>(&value(m), None)?;
            }
        }
        Ok(())
    }

    /// A histogram of the tasks `applies` selects (by `is_source`).
    fn histogram(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        applies: impl Fn(bool) -> bool,
        value: impl Fn(&TaskMetrics) -> HistogramSnapshot,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for row in self.tasks.iter().filter(|r| applies(r.is_source)) {
            if let Some(m) = &row.metrics {
                let h = value(m);
                family
                    .encode_family(&row.labels())?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
            }
        }
        Ok(())
    }
}

/// The resident set size, from `/proc/self/status` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        self.counter(
            e,
            "sluice_records_polled",
            "Records taken in: polled from a source task, or consumed from the bus by a sink task.",
            |m| TaskMetrics::get(&m.polled),
        )?;
        self.counter(
            e,
            "sluice_records_written",
            "Records passed on: sent to the bus by a source task, or accepted by a sink task's put.",
            |m| TaskMetrics::get(&m.written),
        )?;
        self.counter(
            e,
            "sluice_records_filtered",
            "Records the transforms dropped (no output, no error).",
            |m| TaskMetrics::get(&m.filtered),
        )?;
        self.counter(
            e,
            "sluice_records_failed",
            "Records that failed a stage for good, after retries.",
            |m| TaskMetrics::get(&m.failed),
        )?;
        self.counter(
            e,
            "sluice_records_dead_lettered",
            "Failed records sent to the dead-letter topic.",
            |m| TaskMetrics::get(&m.dead_lettered),
        )?;
        self.counter(
            e,
            "sluice_retries",
            "Attempts retried after a retriable error, in any stage.",
            |m| TaskMetrics::get(&m.retries),
        )?;
        self.counter(
            e,
            "sluice_offset_commits",
            "Successful commits: source offsets written, or sink positions acknowledged.",
            |m| TaskMetrics::get(&m.commits),
        )?;
        self.histogram(
            e,
            "sluice_batch_size_records",
            "Records per batch: per poll of a source task, per put of a sink task.",
            |_| true,
            |m| m.batch_size.snapshot(),
        )?;
        self.histogram(
            e,
            "sluice_poll_duration_seconds",
            "Duration of a source task's poll calls.",
            |is_source| is_source,
            |m| m.poll_seconds.snapshot(),
        )?;
        self.histogram(
            e,
            "sluice_put_duration_seconds",
            "Duration of a sink task's put calls.",
            |is_source| !is_source,
            |m| m.put_seconds.snapshot(),
        )?;
        self.histogram(
            e,
            "sluice_flush_duration_seconds",
            "Duration of a sink task's flush calls.",
            |is_source| !is_source,
            |m| m.flush_seconds.snapshot(),
        )?;
        {
            let mut family = e.encode_descriptor(
                "sluice_offset_commit_age_seconds",
                "Seconds since the task last committed (source offsets, sink positions), \
                 counted from its first uncommitted record after that; 0 when nothing is left \
                 to commit.",
                None,
                MetricType::Gauge,
            )?;
            for row in &self.tasks {
                if let Some(m) = &row.metrics {
                    family
                        .encode_family(&row.labels())?
                        .encode_gauge(&m.commit_age())?;
                }
            }
        }
        {
            let mut family = e.encode_descriptor(
                "sluice_consumer_lag_records",
                "Records after the sink's committed offset, per partition the task owns.",
                None,
                MetricType::Gauge,
            )?;
            for row in &self.tasks {
                for lag in &row.lag {
                    let partition = lag.partition.to_string();
                    let labels = [
                        ("connector", row.connector.as_str()),
                        ("task", row.task.as_str()),
                        ("topic", lag.topic.as_str()),
                        ("partition", partition.as_str()),
                    ];
                    family.encode_family(&labels)?.encode_gauge(&lag.lag)?;
                }
            }
        }
        {
            let mut family = e.encode_descriptor(
                "sluice_task_state",
                "The task's state: 1 for the current one, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for row in &self.tasks {
                for state in TASK_STATES {
                    let labels = [
                        ("connector", row.connector.as_str()),
                        ("task", row.task.as_str()),
                        ("state", state.as_str()),
                    ];
                    let value = i64::from(row.state == Some(state));
                    family.encode_family(&labels)?.encode_gauge(&value)?;
                }
            }
        }
        if let Some(bytes) = self.resident_bytes {
            e.encode_descriptor(
                "sluice_process_resident_memory_bytes",
                "Resident memory of the sluice process.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&bytes)?;
        }
        e.encode_descriptor(
            "sluice_uptime_seconds",
            "Seconds since the worker started.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&self.uptime_seconds)?;
        Ok(())
    }
}
