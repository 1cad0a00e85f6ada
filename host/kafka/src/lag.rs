//! A sink task's consumer lag on Kafka, for `GET /metrics`.
//!
//! librdkafka learns each partition's end (the high watermark) from every fetch response
//! and its committed offset from the group and from our own commits; it reports both in
//! its statistics every `statistics.interval.ms`, on the consumer's own thread (inside
//! its poll). [`LagBook::record`] keeps what they said; a scrape only reads that, so it
//! never waits for a broker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::statistics::Statistics;
use sluice_runtime::metrics::{LagProbe, PartitionLag};

use crate::consumer::ConsumerProgress;
use crate::lock;

/// How often librdkafka reports, unless `consumer.statistics.interval.ms` says otherwise
/// (`0` turns the statistics, and with them the lag, off).
const STATISTICS_INTERVAL_MS: &str = "1000";

/// Asks librdkafka for the statistics the lag is read from.
pub(crate) fn enable_statistics(config: &mut ClientConfig) {
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
}

/// The lag of one consumer's partitions, as librdkafka last reported it.
pub(crate) struct LagBook {
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Which partitions the member owns now: a revoked partition's series goes at once,
    /// not at the next report.
    progress: Arc<ConsumerProgress>,
}

impl LagBook {
    pub(crate) fn new(progress: Arc<ConsumerProgress>) -> LagBook {
        LagBook {
            lag: Mutex::default(),
            progress,
        }
    }

    /// Keeps the lag of every partition librdkafka fetches for this member.
    pub(crate) fn record(&self, statistics: &Statistics) {
        let mut lag = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for p in t.partitions.values() {
                // -1 is librdkafka's internal "unassigned" partition.
                if p.partition < 0 || !p.desired {
                    continue;
                }
                if let Some(n) =
                    partition_lag(p.hi_offset, p.app_offset, p.committed_offset, p.lo_offset)
                {
                    lag.insert((topic.clone(), p.partition), n);
                }
            }
        }
        *lock(&self.lag) = lag;
    }
}

/// Records after the committed offset: the end is the high watermark of the last fetch
/// (or what was already handed to the task, if that is further: a broker may under-report
/// its end), and a partition the group never committed counts from its first record (a
/// new group starts there). `None` (librdkafka's -1001) until a fetch told the end.
fn partition_lag(hi: i64, consumed: i64, committed: i64, low: i64) -> Option<i64> {
    if hi < 0 {
        return None;
    }
    let end = hi.max(consumed);
    let from = if committed >= 0 {
        committed
    } else {
        low.max(0)
    };
    Some((end - from).max(0))
}

/// What the sink driver reads at scrape time.
pub(crate) struct LagView(pub(crate) Arc<LagBook>);

impl LagProbe for LagView {
    fn lag(&self) -> Vec<PartitionLag> {
        let owned = self.0.progress.assigned().unwrap_or_default();
        lock(&self.0.lag)
            .iter()
            .filter(|(tp, _)| owned.contains(tp))
            .map(|((topic, partition), lag)| PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                lag: *lag,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::partition_lag;

    const INVALID: i64 = -1001;

    #[test]
    fn lag_counts_from_the_commit_to_the_end() {
        assert_eq!(partition_lag(80, 50, 50, 0), Some(30));
        assert_eq!(partition_lag(80, 80, 80, 0), Some(0));
        // Nothing committed yet: the group starts at the partition's first record.
        assert_eq!(partition_lag(100, 100, INVALID, 0), Some(100));
        assert_eq!(partition_lag(100, 40, INVALID, 20), Some(80));
        // A high watermark below what was already consumed (tansu's answer for a batch).
        assert_eq!(partition_lag(51, 80, 80, 0), Some(0));
        // No fetch answered yet: unknown, not zero.
        assert_eq!(partition_lag(INVALID, INVALID, 50, INVALID), None);
    }
}
