//! The traits a running task implements. Batches cross this boundary, never single records
//! (except through [`Transform`], which is pure and in-process), and every call that may do
//! I/O is async.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{ConnectError, Record, SourceOffset, SourceRecord};

/// What a source task is told when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTaskContext {
    pub connector: String,
    pub task_id: u32,
    /// The committed offsets of this connector, one per source partition it wrote before.
    /// A task resumes after the offset it finds for its partition.
    pub offsets: Vec<SourceOffset>,
}

impl SourceTaskContext {
    /// The committed offset of one source partition, if any.
    pub fn offset(&self, partition: &serde_json::Value) -> Option<&serde_json::Value> {
        self.offsets
            .iter()
            .find(|o| &o.partition == partition)
            .map(|o| &o.offset)
    }
}

/// What a source task's `poll` returns.
#[derive(Debug, Clone, PartialEq)]
pub enum SourcePoll {
    /// Records to send (possibly none: nothing arrived within the task's own wait).
    Records(Vec<SourceRecord>),
    /// The source has nothing more, ever (a bounded simulation reached its end). The
    /// worker keeps the task idle; `--drain` ends the run once all sources are exhausted.
    Exhausted,
}

#[async_trait]
pub trait SourceTask: Send {
    async fn start(&mut self, context: SourceTaskContext) -> Result<(), ConnectError>;

    /// Returns the next batch. Waits a short while (well under a second) when there is no
    /// data, then returns an empty batch so the worker can check for shutdown.
    async fn poll(&mut self) -> Result<SourcePoll, ConnectError>;

    /// Told after these offsets were committed: everything up to them is durable.
    async fn commit(&mut self, _committed: &[SourceOffset]) -> Result<(), ConnectError> {
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectError> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkTaskContext {
    pub connector: String,
    pub task_id: u32,
    /// Whether the records' (topic, partition, offset) stay the same across worker
    /// restarts (Kafka), so a sink may store them to recognise a record it already wrote.
    /// False on the embedded bus, whose offsets start over in every process, and when
    /// `sluice dlq replay` redelivers records.
    pub durable_offsets: bool,
}

/// A record a sink could not write, by its index in the batch given to `put`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordFailure {
    pub index: usize,
    pub error: ConnectError,
}

/// The outcome of a `put`: every record not listed in `failed` was accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutResult {
    pub failed: Vec<RecordFailure>,
}

#[async_trait]
pub trait SinkTask: Send {
    async fn start(&mut self, _context: SinkTaskContext) -> Result<(), ConnectError> {
        Ok(())
    }

    /// Takes a batch. The sink may buffer it; it becomes durable at the next `flush`.
    /// A record the sink cannot accept because of its data is returned in
    /// [`PutResult::failed`] (the rest of the batch still counts as accepted); an `Err`
    /// means the whole batch was not accepted (and, if retriable, will be put again,
    /// which is why the batch is lent rather than given). Records are shared (`Arc`): the
    /// bus may still hold them for redelivery or for other sinks, so passing them on
    /// costs no copy.
    async fn put(&mut self, records: &[Arc<Record>]) -> Result<PutResult, ConnectError>;

    /// Makes everything accepted so far durable. After it returns `Ok`, the worker commits
    /// the offsets of those records.
    async fn flush(&mut self) -> Result<(), ConnectError>;

    async fn stop(&mut self) -> Result<(), ConnectError> {
        Ok(())
    }
}

/// A single-message transform. Pure and synchronous: it never does I/O.
///
/// Most transforms only implement `apply`. A stateful one (a windowed aggregate) also
/// implements the other methods: the worker saves its `checkpoint` together with the
/// source offsets it covers, and gives it back through `restore` after a restart, so the
/// state never counts a record twice or misses one.
pub trait Transform: Send {
    /// Transforms one record, pushing zero (dropped), one or more records to `out`.
    fn apply(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError>;

    /// True for a filter: a transform that only keeps or drops records, never changes,
    /// adds or holds one back, and answers [`Transform::keeps`]. The runtime then decides
    /// by reference, so the record stays with it for a dead letter without being copied.
    fn is_filter(&self) -> bool {
        false
    }

    /// For a filter ([`Transform::is_filter`]): whether `apply` would keep `record`
    /// (`Ok(false)`: dropped; an error as `apply` would return it).
    fn keeps(&mut self, _record: &Record) -> Result<bool, ConnectError> {
        Err(ConnectError::fatal(
            "Transform::keeps called on a transform that is not a filter",
        ))
    }

    /// Called regularly with the wall-clock time (epoch ms), also when no record arrives,
    /// so processing-time windows can close. Pushes what is now due.
    fn tick(&mut self, _now_ms: i64, _out: &mut Vec<Record>) -> Result<(), ConnectError> {
        Ok(())
    }

    /// The input has ended (a bounded source is exhausted): push everything held back.
    fn flush(&mut self, _out: &mut Vec<Record>) -> Result<(), ConnectError> {
        Ok(())
    }

    /// The state to save, as JSON; `None` for a stateless transform.
    fn checkpoint(&self) -> Option<serde_json::Value> {
        None
    }

    /// Replaces the state with a saved checkpoint, before any record is applied.
    fn restore(&mut self, _state: serde_json::Value) -> Result<(), ConnectError> {
        Ok(())
    }
}
