//! Retries and error tolerance: one operator around every stage of a task.
//!
//! Retriable errors are retried with capped exponential backoff and jitter for up to
//! `errors.retry.timeout`; what still fails is then handled by `errors.tolerance`: `none`
//! fails the task (the failure, with its stage and context, goes into the task's status),
//! `all` skips the record, dead-lettering it when `errors.deadletterqueue.topic.name` is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_api::{ConnectError, Header, Record};

use crate::connector::{CommonConfig, Tolerance};
use crate::metrics::TaskMetrics;
use crate::status::{Retrying, StatusStore};
use crate::stop::StopSignal;

/// Where in a task an error happened, named as in Kafka Connect's `__connect.errors.stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Creating or starting the task (config, placeholders, the plugin's own start).
    TaskStart,
    KeyConverter,
    ValueConverter,
    Transformation,
    TaskPoll,
    TaskPut,
    TaskFlush,
    Produce,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::TaskStart => "TASK_START",
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPoll => "TASK_POLL",
            Stage::TaskPut => "TASK_PUT",
            Stage::TaskFlush => "TASK_FLUSH",
            Stage::Produce => "KAFKA_PRODUCE",
        }
    }
}

/// An error that survived its retries, with where it happened.
#[derive(Debug, Clone)]
pub struct Failure {
    pub stage: Stage,
    /// The component that failed: a converter class, `transforms.<alias>`, the connector class.
    pub component: String,
    pub error: ConnectError,
    pub attempts: u32,
}

impl Failure {
    pub fn new(
        stage: Stage,
        component: impl Into<String>,
        error: ConnectError,
        attempts: u32,
    ) -> Self {
        Failure {
            stage,
            component: component.into(),
            error,
            attempts,
        }
    }

    /// The text kept in the task status and the dead-letter stack-trace header.
    pub fn trace(&self) -> String {
        format!(
            "{}: {}\n\tat stage {} in {} (after {} attempt{})",
            self.error.kind().class_name(),
            self.error.message(),
            self.stage.as_str(),
            self.component,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

#[derive(Debug, Clone)]
pub struct ErrorPolicy {
    /// `None` retries forever.
    pub retry_timeout: Option<Duration>,
    pub max_delay: Duration,
    pub tolerance: Tolerance,
    pub dlq_topic: Option<String>,
    pub context_headers: bool,
    pub log_errors: bool,
    pub log_messages: bool,
}

impl ErrorPolicy {
    pub fn from_config(common: &CommonConfig) -> Self {
        ErrorPolicy {
            retry_timeout: match common.retry_timeout_ms {
                ms if ms < 0 => None,
                ms => Some(Duration::from_millis(ms as u64)),
            },
            max_delay: Duration::from_millis(common.retry_delay_max_ms),
            tolerance: common.tolerance,
            dlq_topic: common.dlq_topic.clone().filter(|t| !t.trim().is_empty()),
            context_headers: common.dlq_context_headers,
            log_errors: common.log_errors,
            log_messages: common.log_include_messages,
        }
    }
}

/// The first retry waits this long; each next one twice as long, up to the policy's cap.
const FIRST_DELAY: Duration = Duration::from_millis(300);

/// The wait before retry number `attempt` (1-based): capped exponential, with jitter
/// in its upper half so that many failing tasks do not retry in lockstep.
pub fn backoff(attempt: u32, max_delay: Duration) -> Duration {
    let exp = FIRST_DELAY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(max_delay);
    let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
    capped.mul_f64(jitter)
}

/// Errors that say whether trying again may help.
pub trait Retriable {
    fn is_retriable(&self) -> bool;
}

impl Retriable for ConnectError {
    fn is_retriable(&self) -> bool {
        ConnectError::is_retriable(self)
    }
}

impl Retriable for Failure {
    fn is_retriable(&self) -> bool {
        self.error.is_retriable()
    }
}

pub struct RetryOperator {
    pub policy: ErrorPolicy,
    connector: String,
    task: u32,
    /// Where an ongoing retry is shown (the task's status), when the task has one.
    status: Option<Arc<dyn StatusStore>>,
    /// Whether the status currently says "retrying", so recovery clears it once.
    retrying: AtomicBool,
    /// Where retried attempts are counted, when the task has metrics.
    metrics: Option<Arc<TaskMetrics>>,
}

/// What to do with a record whose processing failed for good.
pub enum Disposition {
    /// Skip it, sending this dead letter first when there is one.
    Skip(Option<Record>),
    /// Fail the task.
    Fail(Failure),
}

impl RetryOperator {
    pub fn new(policy: ErrorPolicy, connector: &str, task: u32) -> Self {
        RetryOperator {
            policy,
            connector: connector.to_string(),
            task,
            status: None,
            retrying: AtomicBool::new(false),
            metrics: None,
        }
    }

    /// Counts retried attempts in the task's `retries`.
    pub fn with_metrics(mut self, metrics: Arc<TaskMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_retry(&self) {
        if let Some(m) = &self.metrics {
            TaskMetrics::add(&m.retries, 1);
        }
    }

    /// Shows ongoing retries in the task's status (and clears them on recovery).
    pub fn with_status(mut self, status: Arc<dyn StatusStore>) -> Self {
        self.status = Some(status);
        self
    }

    fn report_retrying(&self, stage: Stage, error: &ConnectError, attempts: u32) {
        self.retrying.store(true, Ordering::Relaxed);
        let Some(status) = &self.status else { return };
        status.update_task(&self.connector, self.task, &mut |s| {
            let since_ms = s
                .retrying
                .as_ref()
                .map_or_else(crate::source_driver::now_ms, |r| r.since_ms);
            s.retrying = Some(Retrying {
                stage: stage.as_str().to_string(),
                attempts,
                since_ms,
                last_error: error.to_string(),
            });
        });
    }

    /// Called after an operation that may have been retried succeeded: clears the
    /// "retrying" shown in the status, if any.
    pub fn recovered(&self) {
        if !self.retrying.swap(false, Ordering::Relaxed) {
            return;
        }
        tracing::info!(connector = %self.connector, task = self.task, "recovered; retries over");
        if let Some(status) = &self.status {
            status.update_task(&self.connector, self.task, &mut |s| s.retrying = None);
        }
    }

    /// Runs a synchronous stage, retrying retriable errors within `errors.retry.timeout`.
    pub async fn run<T, E: Retriable>(
        &self,
        stop: &mut StopSignal,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, (E, u32)> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && self.may_retry(started, attempt, stop).await => {
                    self.count_retry();
                    attempt += 1
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    /// Decides after failed attempt number `attempt` (of an operation first tried at
    /// `started`) whether to try again, and waits the backoff if so. With `forever`,
    /// retriable errors are retried until they stop or the task is asked to stop, whatever
    /// `errors.retry.timeout` says: that is Kafka Connect's treatment of a sink's `put`
    /// (an outage must not drop data).
    pub async fn should_retry(
        &self,
        stage: Stage,
        error: &ConnectError,
        started: Instant,
        attempt: u32,
        forever: bool,
        stop: &mut StopSignal,
    ) -> bool {
        if !error.is_retriable() {
            return false;
        }
        if attempt.is_power_of_two() {
            tracing::warn!(connector = %self.connector, task = self.task, attempt, error = %error, "retriable error, retrying");
        }
        self.report_retrying(stage, error, attempt);
        let retry = if forever {
            stop.sleep(backoff(attempt, self.policy.max_delay)).await
        } else {
            self.may_retry(started, attempt, stop).await
        };
        if retry {
            self.count_retry();
        }
        retry
    }

    /// Waits before the next attempt; false when the retry budget is spent or a stop came.
    async fn may_retry(&self, started: Instant, attempt: u32, stop: &mut StopSignal) -> bool {
        let remaining = match self.policy.retry_timeout {
            None => Duration::MAX,
            Some(timeout) => match timeout.checked_sub(started.elapsed()) {
                Some(r) if !r.is_zero() => r,
                _ => return false,
            },
        };
        stop.sleep(backoff(attempt, self.policy.max_delay).min(remaining))
            .await
    }

    /// Applies `errors.tolerance` to a record that failed for good.
    pub fn dispose(&self, failure: Failure, original: &Record) -> Disposition {
        if self.policy.log_errors || self.policy.tolerance == Tolerance::None {
            if self.policy.log_messages {
                tracing::error!(
                    connector = %self.connector, task = self.task, stage = failure.stage.as_str(),
                    topic = %original.topic, partition = ?original.partition, offset = ?original.offset,
                    key = ?original.key, value = ?original.value, "{}", failure.trace()
                );
            } else {
                tracing::error!(
                    connector = %self.connector, task = self.task, stage = failure.stage.as_str(),
                    topic = %original.topic, partition = ?original.partition, offset = ?original.offset,
                    "{}", failure.trace()
                );
            }
        }
        match self.policy.tolerance {
            Tolerance::None => Disposition::Fail(failure),
            Tolerance::All => Disposition::Skip(
                self.policy
                    .dlq_topic
                    .as_ref()
                    .map(|topic| self.dead_letter(topic, &failure, original)),
            ),
        }
    }

    /// The dead letter: the original key, value and headers, untouched, plus the context
    /// headers Kafka Connect writes (`__connect.errors.*`) and the attempt count and time.
    pub fn dead_letter(&self, topic: &str, failure: &Failure, original: &Record) -> Record {
        let mut headers = original.headers.clone();
        if self.policy.context_headers {
            let mut add =
                |key: &str, value: String| headers.push(Header::new(key, Value::String(value)));
            add("__connect.errors.topic", original.topic.clone());
            if let Some(p) = original.partition {
                add("__connect.errors.partition", p.to_string());
            }
            if let Some(o) = original.offset {
                add("__connect.errors.offset", o.to_string());
            }
            add("__connect.errors.connector.name", self.connector.clone());
            add("__connect.errors.task.id", self.task.to_string());
            add("__connect.errors.stage", failure.stage.as_str().to_string());
            add("__connect.errors.class.name", failure.component.clone());
            add(
                "__connect.errors.exception.class.name",
                failure.error.kind().class_name().to_string(),
            );
            add(
                "__connect.errors.exception.message",
                failure.error.message().to_string(),
            );
            add("__connect.errors.exception.stacktrace", failure.trace());
            add("sluice.errors.attempts", failure.attempts.to_string());
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            add("sluice.errors.timestamp", now.to_string());
        }
        Record {
            topic: topic.to_string(),
            partition: None,
            offset: None,
            timestamp: original.timestamp,
            key: original.key.clone(),
            value: original.value.clone(),
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stop::stop_pair;
    use serde_json::json;
    use sluice_api::Payload;

    fn policy(tolerance: Tolerance, timeout_ms: i64) -> ErrorPolicy {
        ErrorPolicy {
            retry_timeout: if timeout_ms < 0 {
                None
            } else {
                Some(Duration::from_millis(timeout_ms as u64))
            },
            max_delay: Duration::from_millis(20),
            tolerance,
            dlq_topic: Some("dlq".into()),
            context_headers: true,
            log_errors: false,
            log_messages: false,
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(2);
        for attempt in 1..20 {
            let d = backoff(attempt, cap);
            assert!(d <= cap);
            let full = FIRST_DELAY
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(cap);
            assert!(d >= full / 2, "attempt {attempt}: {d:?} < half of {full:?}");
        }
    }

    #[tokio::test]
    async fn retriable_errors_are_retried_until_success() {
        let (_h, mut stop) = stop_pair();
        let metrics = Arc::new(TaskMetrics::default());
        let op = RetryOperator::new(policy(Tolerance::None, 5_000), "c", 0)
            .with_metrics(metrics.clone());
        let mut calls = 0;
        let result = op
            .run(&mut stop, || {
                calls += 1;
                if calls < 3 {
                    Err(ConnectError::retriable("busy"))
                } else {
                    Ok::<_, ConnectError>(calls)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(
            TaskMetrics::get(&metrics.retries),
            2,
            "two attempts retried"
        );
    }

    #[tokio::test]
    async fn data_errors_are_not_retried_and_timeouts_end_retries() {
        let (_h, mut stop) = stop_pair();
        let op = RetryOperator::new(policy(Tolerance::None, 0), "c", 0);
        let mut calls = 0;
        let err = op
            .run::<(), _>(&mut stop, || {
                calls += 1;
                Err(ConnectError::retriable("busy"))
            })
            .await
            .unwrap_err();
        assert_eq!((calls, err.1), (1, 1));
        let mut calls = 0;
        let err = op
            .run::<(), _>(&mut stop, || {
                calls += 1;
                Err(ConnectError::data("bad"))
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(err.0.kind(), sluice_api::ErrorKind::Data);
    }

    #[test]
    fn tolerance_all_dead_letters_with_context_and_original_bytes() {
        let op = RetryOperator::new(policy(Tolerance::All, 0), "conn", 3);
        let mut original = Record::new("orders", json!(null));
        original.value = Some(Payload::Bytes(b"{not json".to_vec()));
        original.partition = Some(1);
        original.offset = Some(42);
        original.headers.push(Header::new("h", "v"));
        let failure = Failure::new(
            Stage::ValueConverter,
            "JsonConverter",
            ConnectError::data("bad"),
            1,
        );
        let Disposition::Skip(Some(dead)) = op.dispose(failure, &original) else {
            panic!("expected a dead letter")
        };
        assert_eq!(dead.topic, "dlq");
        assert_eq!(dead.value, Some(Payload::Bytes(b"{not json".to_vec())));
        assert_eq!(dead.header("h"), Some(&json!("v")));
        assert_eq!(
            dead.header("__connect.errors.topic"),
            Some(&json!("orders"))
        );
        assert_eq!(dead.header("__connect.errors.partition"), Some(&json!("1")));
        assert_eq!(dead.header("__connect.errors.offset"), Some(&json!("42")));
        assert_eq!(dead.header("__connect.errors.task.id"), Some(&json!("3")));
        assert_eq!(
            dead.header("__connect.errors.stage"),
            Some(&json!("VALUE_CONVERTER"))
        );
        assert_eq!(
            dead.header("__connect.errors.exception.class.name"),
            Some(&json!("org.apache.kafka.connect.errors.DataException"))
        );
        assert_eq!(
            dead.header("__connect.errors.exception.message"),
            Some(&json!("bad"))
        );
    }

    #[test]
    fn tolerance_none_fails() {
        let op = RetryOperator::new(policy(Tolerance::None, 0), "conn", 0);
        let failure = Failure::new(Stage::TaskPut, "FileSink", ConnectError::data("bad"), 1);
        assert!(matches!(
            op.dispose(failure, &Record::new("t", json!(1))),
            Disposition::Fail(_)
        ));
    }
}
