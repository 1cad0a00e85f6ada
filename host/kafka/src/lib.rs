//! Kafka as sluice's data bus, through rust-rdkafka: [`KafkaBus`] (sources produce, sinks
//! consume in consumer groups) and [`KafkaOffsetStore`] (source offsets in a compacted
//! topic, keyed as Kafka Connect's).

mod bus;
mod consumer;
mod lag;
mod message;
mod offsets;
mod settings;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

pub use bus::{KafkaBus, create_topic};
pub use consumer::parse_start_timestamp;
pub use offsets::KafkaOffsetStore;
pub use settings::KafkaSettings;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds on a monotonic clock (since the first call), to order events across
/// threads.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}
