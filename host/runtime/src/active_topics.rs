//! KIP-558: the topics each connector has produced to (source) or consumed from (sink)
//! since its topics were last reset, shown by `GET /connectors/{name}/topics`.
//!
//! The set lives with the connector's counters ([`crate::metrics::ConnectorMetrics`]); each
//! task notes topics through a [`TopicTracker`] that remembers what it already noted, so a
//! record costs a string comparison with the previous record's topic, and the shared set
//! is locked only the first time a task sees a topic after a reset.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One connector's active topics.
#[derive(Debug, Default)]
pub struct ActiveTopics {
    topics: Mutex<BTreeSet<String>>,
    /// Bumped by every reset: the caches of the trackers go stale with it.
    generation: AtomicU64,
}

impl ActiveTopics {
    /// The topics, sorted.
    pub fn list(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    /// Forgets every topic (`PUT /connectors/{name}/topics/reset`, or the connector was
    /// deleted); tasks note them again as their next records go by.
    pub fn reset(&self) {
        let mut topics = self.lock();
        topics.clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a topic; returns the generation the set was in, read under the lock, so a
    /// reset racing with this call always invalidates the caller's cache.
    fn insert(&self, topic: &str) -> u64 {
        let mut topics = self.lock();
        if !topics.contains(topic) {
            topics.insert(topic.to_string());
        }
        self.generation.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A task's side of [`ActiveTopics`]: the topics this task has noted since the last reset.
#[derive(Debug, Default)]
pub struct TopicTracker {
    /// Index in `seen` of the topic noted last.
    last: Option<usize>,
    seen: Vec<String>,
    generation: u64,
}

impl TopicTracker {
    /// Notes that the task produced to, or consumed from, `topic`.
    #[inline]
    pub fn note(&mut self, topics: &ActiveTopics, topic: &str) {
        let generation = topics.generation.load(Ordering::Relaxed);
        if generation == self.generation
            && let Some(last) = self.last
            && self.seen[last] == topic
        {
            return;
        }
        self.note_other(topics, topic, generation);
    }

    #[cold]
    fn note_other(&mut self, topics: &ActiveTopics, topic: &str, generation: u64) {
        if generation != self.generation {
            self.seen.clear();
            self.last = None;
            self.generation = generation;
        }
        if let Some(i) = self.seen.iter().position(|t| t == topic) {
            self.last = Some(i);
            return;
        }
        let inserted_in = topics.insert(topic);
        if inserted_in != self.generation {
            // A reset came between the load above and the insert: start over from it.
            self.seen.clear();
            self.generation = inserted_in;
        }
        self.seen.push(topic.to_string());
        self.last = Some(self.seen.len() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_topics_and_notes_them_again_after_a_reset() {
        let topics = ActiveTopics::default();
        let mut a = TopicTracker::default();
        let mut b = TopicTracker::default();
        a.note(&topics, "orders");
        a.note(&topics, "orders");
        b.note(&topics, "clicks");
        a.note(&topics, "clicks");
        a.note(&topics, "orders");
        assert_eq!(topics.list(), ["clicks", "orders"]);

        topics.reset();
        assert!(topics.list().is_empty());
        // The trackers' caches are stale: the next record of a topic adds it again.
        a.note(&topics, "orders");
        assert_eq!(topics.list(), ["orders"]);
        b.note(&topics, "clicks");
        b.note(&topics, "clicks");
        assert_eq!(topics.list(), ["clicks", "orders"]);
    }
}
