//! The running task: resumes after its committed sequence number, paces to `rate`, and
//! stops at its share of `max.events`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_api::{ConnectError, SourcePoll, SourceTask, SourceTaskContext};
use tokio::time::Instant;

use crate::SimulatorConfig;
use crate::generate::Generator;

/// The longest a poll waits when nothing is due yet.
const MAX_WAIT: Duration = Duration::from_millis(100);

pub(crate) struct SimulatorTask {
    generator: Generator,
    /// This task's share of `max.events`; `None` = endless.
    limit: Option<u64>,
    batch_size: u64,
    rate: f64,
    running: Option<Running>,
}

/// State from `start` on.
struct Running {
    task: u32,
    /// Shared by every record of the task.
    partition: Arc<Value>,
    /// The sequence number of the next event.
    next_seq: u64,
    /// Where this run started (for pacing).
    first_seq: u64,
    started: Instant,
    /// Set when the sequence numbers ran out (u64::MAX reached).
    finished: bool,
    /// Wallclock mode: the latest time handed out, so times never go backwards.
    last_wall_ms: i64,
}

impl SimulatorTask {
    pub(crate) fn new(config: &SimulatorConfig) -> Result<Self, ConnectError> {
        if !(config.rate.is_finite() && config.rate >= 0.0) {
            return Err(ConnectError::config(format!(
                "rate must be a number of at least 0, got {}",
                config.rate
            )));
        }
        Ok(SimulatorTask {
            generator: Generator::new(config),
            limit: (config.max_events > 0).then_some(config.max_events),
            batch_size: u64::from(config.batch_size.max(1)),
            rate: config.rate,
            running: None,
        })
    }
}

/// The sequence number in a committed offset `{"seq": n}` (a number, or a numeric string).
fn committed_seq(offset: &Value) -> Option<u64> {
    match offset.get("seq")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[async_trait]
impl SourceTask for SimulatorTask {
    async fn start(&mut self, context: SourceTaskContext) -> Result<(), ConnectError> {
        let task = context.task_id;
        let partition = json!({"scenario": self.generator.scenario().as_str(), "task": task});
        let (next_seq, finished) = match context.offset(&partition) {
            None => (0, false),
            Some(offset) => match committed_seq(offset) {
                Some(seq) => match seq.checked_add(1) {
                    Some(next) => (next, false),
                    None => (u64::MAX, true),
                },
                None => {
                    return Err(ConnectError::fatal(format!(
                        "committed offset {offset} of source partition {partition} has no \
                         numeric \"seq\""
                    )));
                }
            },
        };
        tracing::debug!(
            connector = %context.connector, task, next_seq,
            limit = ?self.limit, "simulator task starting"
        );
        self.running = Some(Running {
            task,
            partition: Arc::new(partition),
            next_seq,
            first_seq: next_seq,
            started: Instant::now(),
            finished,
            last_wall_ms: i64::MIN,
        });
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll, ConnectError> {
        let Some(run) = self.running.as_mut() else {
            return Err(ConnectError::fatal("poll called before start"));
        };
        let remaining = match self.limit {
            _ if run.finished => 0,
            Some(limit) => limit.saturating_sub(run.next_seq),
            None => u64::MAX - run.next_seq,
        };
        if remaining == 0 {
            return Ok(SourcePoll::Exhausted);
        }
        let mut count = remaining.min(self.batch_size);

        if self.rate > 0.0 {
            let sent = run.next_seq - run.first_seq;
            let mut due = due_count(run.started, self.rate);
            if due <= sent {
                // Nothing due: wait for the next event (at most MAX_WAIT), then look again.
                let next_at = sent as f64 / self.rate;
                let wait = next_at - run.started.elapsed().as_secs_f64();
                let wait = Duration::try_from_secs_f64(wait.clamp(0.001, MAX_WAIT.as_secs_f64()))
                    .unwrap_or(MAX_WAIT);
                tokio::time::sleep(wait).await;
                due = due_count(run.started, self.rate);
                if due <= sent {
                    return Ok(SourcePoll::Records(Vec::new()));
                }
            }
            // After a stall (a full bus held the task back), catch up by at most one
            // second of events instead of bursting everything that fell due meanwhile.
            let backlog_cap = self.rate.max(1.0).ceil() as u64;
            if due - sent > backlog_cap {
                let skipped = (due - sent - backlog_cap) as f64 / self.rate;
                run.started += Duration::try_from_secs_f64(skipped).unwrap_or_default();
                due = sent + backlog_cap;
            }
            count = count.min(due - sent);
        }

        let mut records = Vec::with_capacity(count as usize);
        let wallclock = self.generator.is_wallclock();
        for _ in 0..count {
            let seq = run.next_seq;
            let wall_ms = if wallclock {
                run.last_wall_ms = run.last_wall_ms.max(chrono::Utc::now().timestamp_millis());
                run.last_wall_ms
            } else {
                0
            };
            records.push(
                self.generator
                    .record(run.task, seq, &run.partition, wall_ms),
            );
            match seq.checked_add(1) {
                Some(next) => run.next_seq = next,
                None => {
                    run.finished = true;
                    break;
                }
            }
        }
        Ok(SourcePoll::Records(records))
    }
}

/// How many events are due since `started` at `rate` per second: event k (counted from
/// the first of this run) is due at k / rate seconds.
fn due_count(started: Instant, rate: f64) -> u64 {
    let due = started.elapsed().as_secs_f64() * rate;
    // `as` saturates (and maps NaN to 0).
    (due.floor() as u64).saturating_add(1)
}
