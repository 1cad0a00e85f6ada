//! Live progress: a redrawn status line on a terminal, periodic log lines otherwise.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_runtime::metrics::{MetricsRegistry, MetricsSnapshot};
use sluice_runtime::status::{StatusStore, TaskState};

fn human(n: f64) -> String {
    if n >= 1_000_000.0 {
        format!("{:.2}M", n / 1_000_000.0)
    } else if n >= 10_000.0 {
        format!("{:.1}k", n / 1_000.0)
    } else {
        format!("{n:.0}")
    }
}

/// Tasks that are not simply running, and how often they were restarted.
fn task_states(status: &dyn StatusStore, connector: &str) -> String {
    let mut notes = Vec::new();
    let mut restarts = 0;
    for (task, s) in status.tasks(connector) {
        restarts += s.restarts;
        if matches!(s.state, TaskState::Failed | TaskState::Restarting) {
            notes.push(format!("task {task} {}", s.state.as_str()));
        }
        if let Some(r) = &s.retrying {
            notes.push(format!(
                "task {task} retrying {} (attempt {}): {}",
                r.stage, r.attempts, r.last_error
            ));
        }
    }
    if restarts > 0 {
        notes.push(format!("{restarts} restarts"));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!(" [{}]", notes.join(", "))
    }
}

fn describe(name: &str, is_source: bool, now: &MetricsSnapshot, rate: f64) -> String {
    let verb = if is_source { "sent" } else { "written" };
    let mut line = format!(
        "{name}: {} {verb} ({}/s)",
        human(now.records_out as f64),
        human(rate)
    );
    if now.errors > 0 {
        line.push_str(&format!(", {} errors", now.errors));
    }
    if now.dead_lettered > 0 {
        line.push_str(&format!(", {} dead-lettered", now.dead_lettered));
    }
    line
}

/// Reports until the returned handle is aborted.
pub fn spawn(
    metrics: Arc<MetricsRegistry>,
    status: Arc<dyn StatusStore>,
    tty: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        let mut previous = metrics.snapshot();
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let current = metrics.snapshot();
            let elapsed = last.elapsed().as_secs_f64().max(1e-9);
            last = Instant::now();
            let parts: Vec<String> = current
                .iter()
                .map(|(name, is_source, now)| {
                    let before = previous
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map_or(0, |(_, _, s)| s.records_out);
                    let rate = now.records_out.saturating_sub(before) as f64 / elapsed;
                    describe(name, *is_source, now, rate) + &task_states(status.as_ref(), name)
                })
                .collect();
            previous = current;
            if tty {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{}", parts.join(" | "));
                let _ = err.flush();
            } else {
                tracing::info!("progress: {}", parts.join(" | "));
            }
        }
    })
}

/// The closing summary: totals and average rates over the whole run.
pub fn summary(metrics: &MetricsRegistry, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    metrics
        .snapshot()
        .iter()
        .map(|(name, is_source, s)| describe(name, *is_source, s, s.records_out as f64 / secs))
        .collect::<Vec<_>>()
        .join(" | ")
}
