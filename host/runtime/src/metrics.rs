//! Per-connector counters, read by the progress display (and later the metrics endpoint).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    /// Source: records polled from the task. Sink: records consumed from the bus.
    pub records_in: AtomicU64,
    /// Source: records sent to the bus. Sink: records accepted by `put`.
    pub records_out: AtomicU64,
    /// Records that failed a stage (after retries).
    pub errors: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Source offsets commits written.
    pub commits: AtomicU64,
    /// KIP-558: the topics produced to or consumed from since the last reset.
    pub topics: crate::active_topics::ActiveTopics,
}

impl ConnectorMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
        }
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

#[derive(Default)]
pub struct MetricsRegistry {
    connectors: Mutex<BTreeMap<String, (bool, Arc<ConnectorMetrics>)>>,
}

impl MetricsRegistry {
    /// The counters of one connector (created on first use). `is_source` is kept for display.
    pub fn connector(&self, name: &str, is_source: bool) -> Arc<ConnectorMetrics> {
        let mut map = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| (is_source, Arc::new(ConnectorMetrics::default())))
            .1
            .clone()
    }

    /// (name, is_source, counters) for every connector, by name.
    pub fn snapshot(&self) -> Vec<(String, bool, MetricsSnapshot)> {
        let map = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(n, (s, m))| (n.clone(), *s, m.snapshot()))
            .collect()
    }
}
