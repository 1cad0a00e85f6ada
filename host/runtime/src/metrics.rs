//! Per-connector and per-task measurements, read by the progress display and by the REST
//! API's `GET /metrics`.
//!
//! Drivers record with relaxed atomic adds, once per batch where they can (a histogram
//! observation is a few atomic adds too); nothing here locks on the record path. What is
//! cheaper to compute when asked (consumer lag, the age of the last commit) is computed at
//! scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds of the batch-size histogram, in records.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// Upper bounds of the latency histograms, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A histogram of fixed buckets, lock-free: an observation is a bucket search and two
/// atomic adds (plus a compare-and-swap for the sum, uncontended: one task writes it).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// What a histogram held when read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, observations in that bucket alone), the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// The count is the sum of the buckets read, so the `+Inf` bucket always equals it.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

/// How far one consumer-group partition's committed position is behind its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Records after the group's committed offset.
    pub lag: i64,
}

/// A sink task's consumer lag, read when metrics are scraped (see
/// [`crate::bus::BusConsumer::lag_probe`]).
pub trait LagProbe: Send + Sync {
    fn lag(&self) -> Vec<PartitionLag>;
}

/// The measurements of one task, kept across its restarts.
pub struct TaskMetrics {
    /// Source: records polled from the task. Sink: records consumed from the bus.
    pub polled: AtomicU64,
    /// Source: records sent to the bus. Sink: records accepted by `put`.
    pub written: AtomicU64,
    /// Records the transforms dropped (no output, no error).
    pub filtered: AtomicU64,
    /// Records that failed a stage for good (after retries).
    pub failed: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Attempts retried after a retriable error (any stage).
    pub retries: AtomicU64,
    /// Successful commits: source offsets written, or sink positions acknowledged.
    pub commits: AtomicU64,
    /// Source: records per `poll`. Sink: records per `put`.
    pub batch_size: Histogram,
    /// Source: each `poll` call.
    pub poll_seconds: Histogram,
    /// Sink: each `put` call.
    pub put_seconds: Histogram,
    /// Sink: each `flush` call.
    pub flush_seconds: Histogram,
    /// Epoch ms of the last commit, or of the first progress after it (see
    /// [`TaskMetrics::commit_age`]).
    committed_at_ms: AtomicU64,
    /// Something was consumed or sent since the last commit that covered everything.
    uncommitted: AtomicBool,
    lag: Mutex<Option<Arc<dyn LagProbe>>>,
}

impl std::fmt::Debug for TaskMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskMetrics")
            .field("polled", &self.polled)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            polled: AtomicU64::new(0),
            written: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            poll_seconds: Histogram::new(LATENCY_BUCKETS),
            put_seconds: Histogram::new(LATENCY_BUCKETS),
            flush_seconds: Histogram::new(LATENCY_BUCKETS),
            committed_at_ms: AtomicU64::new(now_ms()),
            uncommitted: AtomicBool::new(false),
            lag: Mutex::new(None),
        }
    }
}

impl TaskMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records were consumed or sent that no commit covers yet. Once per batch: only the
    /// first call after a commit reads the clock.
    pub fn progressed(&self) {
        if !self.uncommitted.swap(true, Ordering::Relaxed) {
            self.committed_at_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A commit succeeded (or found nothing to commit); `covers_all` when nothing is left
    /// uncommitted after it.
    pub fn committed(&self, covers_all: bool) {
        self.committed_at_ms.store(now_ms(), Ordering::Relaxed);
        self.uncommitted.store(!covers_all, Ordering::Relaxed);
    }

    /// Seconds since the task last committed, counted from its first uncommitted progress
    /// after that; zero while it has nothing left to commit.
    pub fn commit_age(&self) -> f64 {
        if !self.uncommitted.load(Ordering::Relaxed) {
            return 0.0;
        }
        let since = self.committed_at_ms.load(Ordering::Relaxed);
        now_ms().saturating_sub(since) as f64 / 1000.0
    }

    /// Where this (sink) task's consumer lag is read from while it runs.
    pub fn set_lag_probe(&self, probe: Option<Arc<dyn LagProbe>>) {
        *lock(&self.lag) = probe;
    }

    /// The consumer lag per partition; empty for sources, stopped tasks and buses that do
    /// not know it cheaply.
    pub fn lag(&self) -> Vec<PartitionLag> {
        let probe = lock(&self.lag).clone();
        probe.map(|p| p.lag()).unwrap_or_default()
    }
}

/// One connector's tasks (by id), kept across restarts and reconfigurations.
#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    tasks: Mutex<BTreeMap<u32, Arc<TaskMetrics>>>,
    /// KIP-558: the topics produced to or consumed from since the last reset.
    pub topics: crate::active_topics::ActiveTopics,
}

impl ConnectorMetrics {
    /// The measurements of task `id` (created on first use).
    pub fn task(&self, id: u32) -> Arc<TaskMetrics> {
        lock(&self.tasks).entry(id).or_default().clone()
    }

    /// (task id, measurements) of every task that ran, by id.
    pub fn tasks(&self) -> Vec<(u32, Arc<TaskMetrics>)> {
        lock(&self.tasks)
            .iter()
            .map(|(id, m)| (*id, m.clone()))
            .collect()
    }

    /// The connector's totals over its tasks.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        for (_, t) in self.tasks() {
            s.records_in += TaskMetrics::get(&t.polled);
            s.records_out += TaskMetrics::get(&t.written);
            s.errors += TaskMetrics::get(&t.failed);
            s.dead_lettered += TaskMetrics::get(&t.dead_lettered);
            s.commits += TaskMetrics::get(&t.commits);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub dead_lettered: u64,
    pub commits: u64,
}

pub struct MetricsRegistry {
    connectors: Mutex<BTreeMap<String, (bool, Arc<ConnectorMetrics>)>>,
    started: Instant,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        MetricsRegistry {
            connectors: Mutex::default(),
            started: Instant::now(),
        }
    }
}

impl MetricsRegistry {
    /// The measurements of one connector (created on first use). `is_source` is kept for
    /// display.
    pub fn connector(&self, name: &str, is_source: bool) -> Arc<ConnectorMetrics> {
        let mut map = lock(&self.connectors);
        map.entry(name.to_string())
            .or_insert_with(|| (is_source, Arc::new(ConnectorMetrics::default())))
            .1
            .clone()
    }

    /// (name, is_source, measurements) of every connector that ran, by name.
    pub fn connectors(&self) -> Vec<(String, bool, Arc<ConnectorMetrics>)> {
        lock(&self.connectors)
            .iter()
            .map(|(n, (s, m))| (n.clone(), *s, m.clone()))
            .collect()
    }

    /// (name, is_source, totals) for every connector, by name.
    pub fn snapshot(&self) -> Vec<(String, bool, MetricsSnapshot)> {
        self.connectors()
            .into_iter()
            .map(|(n, s, m)| (n, s, m.snapshot()))
            .collect()
    }

    /// Time since the worker was created.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound_and_counts_the_overflow() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 3.0, 10.0, 11.0, 500.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (10.0, 2), (f64::INFINITY, 2)]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 525.5);
    }

    #[test]
    fn connector_totals_sum_their_tasks() {
        let registry = MetricsRegistry::default();
        let c = registry.connector("c", true);
        TaskMetrics::add(&c.task(0).written, 3);
        TaskMetrics::add(&c.task(1).written, 4);
        TaskMetrics::add(&c.task(1).failed, 1);
        assert!(Arc::ptr_eq(
            &c.task(1),
            &registry.connector("c", true).task(1)
        ));
        let (name, is_source, totals) = registry.snapshot().remove(0);
        assert_eq!((name.as_str(), is_source), ("c", true));
        assert_eq!(totals.records_out, 7);
        assert_eq!(totals.errors, 1);
    }

    #[test]
    fn commit_age_is_zero_when_nothing_is_left_to_commit() {
        let t = TaskMetrics::default();
        assert_eq!(t.commit_age(), 0.0);
        t.progressed();
        t.committed_at_ms.store(now_ms() - 5_000, Ordering::Relaxed);
        let age = t.commit_age();
        assert!((4.9..60.0).contains(&age), "{age}");
        t.committed(false);
        assert!(t.commit_age() < 1.0);
        t.committed(true);
        assert_eq!(t.commit_age(), 0.0);
    }
}
