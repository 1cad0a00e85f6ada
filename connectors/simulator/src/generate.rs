//! Event generation: one record as a pure function of (seed, task, seq).
//!
//! Each event gets a fresh `Pcg64Mcg` seeded from a splitmix64 hash of (seed, task, seq).
//! The draws are made in a fixed order: first the timestamp offset, then the scenario's
//! fields, then whether and how the record is broken. So `malformed.*` and
//! `timestamp.mode` never change the content of the events themselves, only which of them
//! are broken and what their timestamps are.
//!
//! Uniform integers and floats are derived from `next_u64` here (multiply-shift and the top
//! 53 bits), not through `rand`'s distributions, so the output depends only on PCG's
//! specified algorithm and this file, not on the version of a sampling library.

use std::sync::Arc;

use rand::Rng;
use rand_pcg::Pcg64Mcg;
use serde_json::{Map, Value};
use sluice_api::{Header, Payload, Record, SourceRecord};

use crate::{EventType, MalformedKind, Scenario, SimulatorConfig, TimestampMode};

/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the range RFC 3339 can write.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

pub(crate) const HEADER_TASK: &str = "sluice.simulator.task";
pub(crate) const HEADER_SEQ: &str = "sluice.simulator.seq";
pub(crate) const HEADER_MALFORMED: &str = "sluice.simulator.malformed";

const PRODUCTS: [&str; 5] = [
    "Laptop_X1",
    "Phone_Y2",
    "Headphone_Z3",
    "Monitor_A4",
    "Keyboard_B5",
];
const SENSORS: [&str; 5] = [
    "temperature",
    "humidity",
    "pressure",
    "cpu_usage",
    "memory_usage",
];
const LOCATIONS: [&str; 3] = ["server1", "server2", "server3"];
const ACTIONS: [(&str, u64); 6] = [
    ("login", 10),
    ("logout", 8),
    ("click", 30),
    ("view", 35),
    ("purchase", 5),
    ("search", 12),
];
const DEVICES: [(&str, u64); 3] = [("mobile", 50), ("desktop", 40), ("tablet", 10)];
const CLICK_ACTIONS: [(&str, u64); 2] = [("view", 80), ("rating", 20)];
const PAGES: [&str; 10] = [
    "/page/1", "/page/2", "/page/3", "/page/4", "/page/5", "/page/6", "/page/7", "/page/8",
    "/page/9", "/page/10",
];

/// Everything needed to generate a task's records; immutable once built.
#[derive(Debug, Clone)]
pub(crate) struct Generator {
    topic: String,
    scenario: Scenario,
    seed: u64,
    key_field: Option<String>,
    /// The `ecommerce` event types drawn from, with their weights.
    event_types: Vec<(&'static str, u64)>,
    malformed_rate: f64,
    malformed_kinds: Vec<MalformedKind>,
    mode: TimestampMode,
    start_ms: i64,
    interval_ms: u64,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The PRNG of one event: a fresh generator seeded from a hash of (seed, task, seq).
pub(crate) fn event_rng(seed: u64, task: u32, seq: u64) -> Pcg64Mcg {
    let h = splitmix64(seed);
    let h = splitmix64(h ^ u64::from(task));
    let h = splitmix64(h ^ seq);
    let lo = splitmix64(h ^ 0x5EED_5EED_5EED_5EED);
    Pcg64Mcg::new((u128::from(h) << 64) | u128::from(lo))
}

/// Uniform in `0..n` (`n` > 0) by multiply-shift; the bias is below 2^-40 for our ranges.
fn below(rng: &mut Pcg64Mcg, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// Uniform in [0, 1).
fn unit(rng: &mut Pcg64Mcg) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn pick<'a>(rng: &mut Pcg64Mcg, items: &[&'a str]) -> &'a str {
    let i = below(rng, items.len() as u64) as usize;
    items.get(i).copied().unwrap_or_default()
}

fn weighted<'a>(rng: &mut Pcg64Mcg, items: &[(&'a str, u64)]) -> &'a str {
    let total: u64 = items.iter().map(|(_, w)| w).sum();
    let mut x = below(rng, total.max(1));
    for (item, weight) in items {
        if x < *weight {
            return item;
        }
        x -= weight;
    }
    items.last().map(|(item, _)| *item).unwrap_or_default()
}

/// An integer in `lo..=hi` (`lo` <= `hi`).
fn between(rng: &mut Pcg64Mcg, lo: u64, hi: u64) -> u64 {
    lo + below(rng, hi - lo + 1)
}

/// A number with two decimals from `lo_cents..=hi_cents` hundredths.
fn cents(rng: &mut Pcg64Mcg, lo_cents: u64, hi_cents: u64) -> Value {
    let c = between(rng, lo_cents, hi_cents);
    serde_json::Number::from_f64(c as f64 / 100.0).map_or(Value::Null, Value::Number)
}

fn uuid(rng: &mut Pcg64Mcg) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_string()
}

fn ipv4(rng: &mut Pcg64Mcg) -> String {
    let a = between(rng, 1, 223);
    let b = below(rng, 256);
    let c = below(rng, 256);
    let d = between(rng, 1, 254);
    format!("{a}.{b}.{c}.{d}")
}

/// The weights `event.types` selects, in a fixed order; all types when none is valid
/// (validation refuses that config before a generator is built).
fn event_weights(types: &[EventType]) -> Vec<(&'static str, u64)> {
    let chosen: Vec<EventType> = if types.is_empty() {
        EventType::ALL.to_vec()
    } else {
        types.to_vec()
    };
    EventType::ALL
        .into_iter()
        .filter(|t| chosen.contains(t))
        .map(|t| (t.as_str(), t.weight()))
        .collect()
}

/// `2024-01-01T00:00:01.234Z`. `ms` must be within [MIN_MS, MAX_MS].
pub(crate) fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl Generator {
    /// From a config whose cross-field checks passed (an unparsable start falls back to
    /// the default start rather than failing).
    pub(crate) fn new(config: &SimulatorConfig) -> Self {
        Generator {
            topic: config.topic.clone(),
            scenario: config.scenario,
            seed: config.seed,
            key_field: config.resolved_key_field(),
            event_types: event_weights(&config.types()),
            malformed_rate: config.malformed_rate,
            malformed_kinds: config.kinds(),
            mode: config.timestamp_mode,
            start_ms: crate::parse_start(&config.timestamp_start).unwrap_or(1_704_067_200_000),
            interval_ms: config.timestamp_interval_ms,
        }
    }

    pub(crate) fn scenario(&self) -> Scenario {
        self.scenario
    }

    pub(crate) fn is_wallclock(&self) -> bool {
        self.mode == TimestampMode::Wallclock
    }

    /// The simulated time of event `seq`: start + seq·interval + offset, offset uniform
    /// in [0, interval), clamped to the years 0000–9999.
    fn simulated_ms(&self, seq: u64, offset: u64) -> i64 {
        let ms = i128::from(seq)
            .saturating_mul(i128::from(self.interval_ms))
            .saturating_add(i128::from(self.start_ms))
            .saturating_add(i128::from(offset));
        ms.clamp(i128::from(MIN_MS), i128::from(MAX_MS)) as i64
    }

    /// The record of event `seq` of task `task`. `wall_ms` is used only in wallclock mode.
    pub(crate) fn record(
        &self,
        task: u32,
        seq: u64,
        partition: &Arc<Value>,
        wall_ms: i64,
    ) -> SourceRecord {
        let mut rng = event_rng(self.seed, task, seq);

        // 1. Time.
        let offset = below(&mut rng, self.interval_ms.max(1));
        let time_ms = match self.mode {
            TimestampMode::Simulated => self.simulated_ms(seq, offset),
            TimestampMode::Wallclock => wall_ms.clamp(MIN_MS, MAX_MS),
        };
        let timestamp = Value::String(format_ms(time_ms));

        // 2. The event. Fields are drawn in their fixed order; the ecommerce ones are then
        // inserted from the greatest key down, so each insertion into the map's sorted
        // node compares with one key instead of walking past the smaller ones.
        let mut event = Map::new();
        match self.scenario {
            Scenario::Ecommerce => {
                let event_id = uuid(&mut rng);
                let user_id = between(&mut rng, 1000, 9999);
                // One draw whatever the types, so the other fields stay those of the
                // unrestricted stream.
                let event_type = weighted(&mut rng, &self.event_types);
                let product_id = pick(&mut rng, &PRODUCTS);
                let price = if unit(&mut rng) < 0.3 {
                    Value::Null
                } else {
                    cents(&mut rng, 1_000, 200_000)
                };
                event.insert("user_id".into(), user_id.into());
                event.insert("timestamp".into(), timestamp);
                event.insert("product_id".into(), product_id.into());
                event.insert("price".into(), price);
                event.insert("event_type".into(), event_type.into());
                event.insert("event_id".into(), Value::String(event_id));
            }
            Scenario::Sensors => {
                event.insert("sensor_id".into(), pick(&mut rng, &SENSORS).into());
                event.insert("value".into(), cents(&mut rng, 0, 10_000));
                event.insert("timestamp".into(), timestamp);
                event.insert("location".into(), pick(&mut rng, &LOCATIONS).into());
            }
            Scenario::UserActivity => {
                event.insert("user_id".into(), between(&mut rng, 1000, 9999).into());
                event.insert("action".into(), weighted(&mut rng, &ACTIONS).into());
                event.insert("page".into(), pick(&mut rng, &PAGES).into());
                event.insert("timestamp".into(), timestamp);
                event.insert("ip".into(), Value::String(ipv4(&mut rng)));
                event.insert("device".into(), weighted(&mut rng, &DEVICES).into());
            }
            Scenario::Clickstream => {
                event.insert("timestamp".into(), timestamp);
                event.insert("userid".into(), between(&mut rng, 1000, 9999).into());
                event.insert("page".into(), pick(&mut rng, &PAGES).into());
                event.insert("action".into(), weighted(&mut rng, &CLICK_ACTIONS).into());
            }
        }

        // 3. Broken on purpose?
        let malformed = if self.malformed_rate > 0.0 && unit(&mut rng) < self.malformed_rate {
            let kinds = &self.malformed_kinds;
            kinds
                .get(below(&mut rng, kinds.len() as u64) as usize)
                .copied()
        } else {
            None
        };
        match malformed {
            Some(MalformedKind::MissingField) => {
                event.remove(self.required_field());
            }
            Some(MalformedKind::WrongType) => {
                let (field, text) = match self.scenario {
                    Scenario::Ecommerce | Scenario::UserActivity => ("user_id", None),
                    Scenario::Clickstream => ("userid", None),
                    Scenario::Sensors => ("value", Some("n/a")),
                };
                let text = match text {
                    Some(t) => t.to_string(),
                    None => format!("user-{}", event.get(field).unwrap_or(&Value::Null)),
                };
                event.insert(field.into(), Value::String(text));
            }
            Some(MalformedKind::InvalidJson) | None => {}
        }

        let key = self
            .key_field
            .as_deref()
            .and_then(|f| event.get(f))
            .map(|v| Payload::Json(v.clone()));

        let value = if malformed == Some(MalformedKind::InvalidJson) {
            // Any proper prefix of an object's text lacks its closing brace: never JSON.
            let mut text = serde_json::to_vec(&event).unwrap_or_default();
            let len = text.len() as u64;
            let cut = len / 2 + below(&mut rng, len - len / 2);
            text.truncate(cut.max(1) as usize);
            Payload::Bytes(text)
        } else {
            Payload::Json(Value::Object(event))
        };

        let mut headers = Vec::with_capacity(3);
        headers.push(Header::new(HEADER_TASK, task));
        headers.push(Header::new(HEADER_SEQ, seq));
        if let Some(kind) = malformed {
            headers.push(Header::new(HEADER_MALFORMED, kind.as_str()));
        }

        SourceRecord {
            record: Record {
                topic: self.topic.clone(),
                partition: None,
                offset: None,
                timestamp: Some(time_ms),
                key,
                value: Some(value),
                headers,
            },
            source_partition: partition.clone(),
            source_offset: serde_json::json!({ "seq": seq }),
        }
    }

    /// The field a `missing_field` record lacks.
    fn required_field(&self) -> &'static str {
        match self.scenario {
            Scenario::Ecommerce => "event_type",
            Scenario::Sensors => "sensor_id",
            Scenario::UserActivity | Scenario::Clickstream => "action",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_stay_in_range() {
        let mut rng = event_rng(1, 2, 3);
        for _ in 0..10_000 {
            assert!(below(&mut rng, 7) < 7);
            let u = unit(&mut rng);
            assert!((0.0..1.0).contains(&u));
            assert!((1000..=9999).contains(&between(&mut rng, 1000, 9999)));
        }
        assert_eq!(below(&mut rng, 1), 0);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let mut counts = [0u32; 3];
        for seq in 0..30_000 {
            let mut rng = event_rng(9, 0, seq);
            match weighted(&mut rng, &event_weights(&EventType::ALL)) {
                "view" => counts[0] += 1,
                "add_to_cart" => counts[1] += 1,
                "purchase" => counts[2] += 1,
                other => panic!("{other}"),
            }
        }
        assert!((20_000..22_000).contains(&counts[0]), "{counts:?}");
        assert!((5_400..6_600).contains(&counts[1]), "{counts:?}");
        assert!((2_600..3_400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn event_rngs_differ_by_each_input() {
        let first = |s, t, q| event_rng(s, t, q).next_u64();
        let base = first(42, 0, 0);
        assert_eq!(base, first(42, 0, 0));
        assert_ne!(base, first(43, 0, 0));
        assert_ne!(base, first(42, 1, 0));
        assert_ne!(base, first(42, 0, 1));
        // Swapping task and seq must not give the same stream.
        assert_ne!(first(42, 1, 2), first(42, 2, 1));
    }

    #[test]
    fn timestamps_are_clamped_and_formatted() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(MIN_MS), "0000-01-01T00:00:00.000Z");
        let config: SimulatorConfig = sluice_api::parse_config(
            &serde_json::from_value(serde_json::json!({
                "topic": "t", "timestamp.interval.ms": u64::MAX.to_string()
            }))
            .unwrap(),
        )
        .unwrap();
        let g = Generator::new(&config);
        let p = Arc::new(Value::Null);
        let r = g.record(0, u64::MAX, &p, 0);
        assert_eq!(r.record.timestamp, Some(MAX_MS));
    }
}
