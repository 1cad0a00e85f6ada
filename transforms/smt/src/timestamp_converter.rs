//! `TimestampConverter$Key` / `TimestampConverter$Value`: converts timestamps between
//! formatted strings, Unix epoch numbers, and Kafka Connect's Date / Time / Timestamp.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt, not_an_object, type_name};
use crate::java::{DateFormat, parse_iso8601};

const DAY_MS: i64 = 86_400_000;

/// What to convert to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TargetType {
    /// A string formatted with `format`.
    #[serde(rename = "string")]
    String,
    /// A Unix epoch number in `unix.precision`.
    #[serde(rename = "unix")]
    Unix,
    /// Kafka Connect's Date: epoch milliseconds of midnight UTC of the day.
    Date,
    /// Kafka Connect's Time: milliseconds since midnight UTC.
    Time,
    /// Kafka Connect's Timestamp: epoch milliseconds.
    Timestamp,
}

/// The unit of Unix epoch numbers, read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnixPrecision {
    Seconds,
    #[default]
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

/// Keys of `TimestampConverter$Key` / `TimestampConverter$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TimestampConverterConfig {
    /// The field containing the timestamp, or empty (the default) if the entire key or
    /// value is the timestamp.
    #[serde(default)]
    pub field: String,
    /// The desired timestamp representation: string, unix, Date, Time, or Timestamp.
    #[serde(rename = "target.type")]
    pub target_type: TargetType,
    /// A `java.text.SimpleDateFormat` pattern, used to format when `target.type=string`
    /// (then required) and to parse string input. Supported letters: yyyy yy M MM MMM
    /// MMMM d dd H HH h hh m mm s ss SSS E EEEE a D Z X, and 'quoted' text. Without it,
    /// string input is read as ISO-8601.
    #[serde(default)]
    pub format: Option<String>,
    /// The unit of Unix epoch numbers: seconds, milliseconds (default), microseconds or
    /// nanoseconds.
    #[serde(rename = "unix.precision", default)]
    pub unix_precision: UnixPrecision,
    /// Accepted for compatibility and ignored: schemaless JSON has no defaults.
    #[serde(rename = "replace.null.with.default", default)]
    pub replace_null_with_default: Option<bool>,
}

pub(crate) struct TimestampConverter {
    side: Side,
    field: Option<String>,
    target: TargetType,
    format: Option<DateFormat>,
    precision: UnixPrecision,
}

impl Smt for TimestampConverter {
    type Config = TimestampConverterConfig;
    const NAME: &'static str = "TimestampConverter";
    const DESCRIPTION: &'static str =
        "Converts timestamps between strings, Unix epoch numbers, Date, Time and Timestamp.";

    fn build(
        config: TimestampConverterConfig,
        side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        let format = match config.format.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(pattern) => match DateFormat::new(pattern) {
                Ok(f) => Some(f),
                Err(message) => {
                    issues.push(ConfigIssue::error("format", message));
                    return None;
                }
            },
        };
        if config.target_type == TargetType::String && format.is_none() {
            issues.push(ConfigIssue::error(
                "format",
                "is required when target.type is string",
            ));
        }
        Some(TimestampConverter {
            side,
            field: Some(config.field).filter(|f| !f.is_empty()),
            target: config.target_type,
            format,
            precision: config.unix_precision,
        })
    }
}

impl TimestampConverter {
    fn to_millis(&self, value: &Value, what: &str) -> Result<i64, ConnectError> {
        match value {
            Value::Number(n) => {
                let n = n.as_i64().ok_or_else(|| {
                    ConnectError::data(format!(
                        "TimestampConverter: {what}: {n} is not an integer Unix timestamp"
                    ))
                })?;
                Ok(match self.precision {
                    UnixPrecision::Seconds => n.saturating_mul(1000),
                    UnixPrecision::Milliseconds => n,
                    UnixPrecision::Microseconds => n / 1000,
                    UnixPrecision::Nanoseconds => n / 1_000_000,
                })
            }
            Value::String(s) => match &self.format {
                Some(f) => f.parse(s).map_err(|e| {
                    ConnectError::data(format!(
                        "TimestampConverter: {what}: could not parse \"{s}\" with the configured \
                         format: {e}"
                    ))
                }),
                None => parse_iso8601(s).ok_or_else(|| {
                    ConnectError::data(format!(
                        "TimestampConverter: {what}: \"{s}\" is not an ISO-8601 timestamp (set \
                         \"format\" to parse other strings)"
                    ))
                }),
            },
            other => Err(ConnectError::data(format!(
                "TimestampConverter: {what}: expected a timestamp string or number, got {}",
                type_name(other)
            ))),
        }
    }

    fn convert(&self, value: &Value, what: &str) -> Result<Value, ConnectError> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        let millis = self.to_millis(value, what)?;
        Ok(match self.target {
            TargetType::Timestamp => Value::from(millis),
            TargetType::Date => Value::from(millis - millis.rem_euclid(DAY_MS)),
            TargetType::Time => Value::from(millis.rem_euclid(DAY_MS)),
            TargetType::Unix => Value::from(match self.precision {
                UnixPrecision::Seconds => millis / 1000,
                UnixPrecision::Milliseconds => millis,
                UnixPrecision::Microseconds => millis.saturating_mul(1000),
                UnixPrecision::Nanoseconds => millis.saturating_mul(1_000_000),
            }),
            TargetType::String => {
                let formatted = self.format.as_ref().and_then(|f| f.format(millis));
                Value::String(formatted.ok_or_else(|| {
                    ConnectError::data(format!(
                        "TimestampConverter: {what}: {millis} ms is out of the formattable range"
                    ))
                })?)
            }
        })
    }
}

impl Transform for TimestampConverter {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let side = self.side.name();
        if let Some(json) = self.side.json_mut(&mut record, "TimestampConverter")? {
            match &self.field {
                None => *json = self.convert(json, &format!("the record {side}"))?,
                Some(field) => {
                    let Value::Object(map) = json else {
                        return Err(not_an_object("TimestampConverter", side, json));
                    };
                    // As Kafka Connect (schemaless): a missing field is put as null.
                    let value = map.entry(field.clone()).or_insert(Value::Null);
                    *value = self.convert(value, &format!("field \"{field}\""))?;
                }
            }
        }
        out.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::*;
    use serde_json::json;

    const ISO: &str = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'";

    #[test]
    fn string_to_unix_and_back() {
        let mut t = build::<TimestampConverter>(
            Some(Side::Value),
            &[("field", "ts"), ("target.type", "unix"), ("format", ISO)],
        );
        let r = one(
            &mut t,
            record(json!(1), json!({"ts": "2017-01-01T00:00:00.123Z"})),
        );
        assert_eq!(r.value_json().unwrap(), &json!({"ts": 1483228800123i64}));
        let mut back = build::<TimestampConverter>(
            Some(Side::Value),
            &[("field", "ts"), ("target.type", "string"), ("format", ISO)],
        );
        let r = one(&mut back, r);
        assert_eq!(
            r.value_json().unwrap(),
            &json!({"ts": "2017-01-01T00:00:00.123Z"})
        );
    }

    #[test]
    fn precisions_and_logical_types() {
        let mut t = build::<TimestampConverter>(
            Some(Side::Key),
            &[("target.type", "unix"), ("unix.precision", "seconds")],
        );
        // ISO-8601 input needs no format.
        let r = one(&mut t, record(json!("2017-01-01T00:00:00Z"), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!(1483228800));
        let mut t = build::<TimestampConverter>(
            Some(Side::Value),
            &[("target.type", "Date"), ("unix.precision", "microseconds")],
        );
        let r = one(
            &mut t,
            record(json!(1), json!(1483228800123000i64 + 3_600_000_000)),
        );
        assert_eq!(r.value_json().unwrap(), &json!(1483228800000i64));
        let mut t = build::<TimestampConverter>(Some(Side::Value), &[("target.type", "Time")]);
        let r = one(&mut t, record(json!(1), json!(1483232400123i64)));
        assert_eq!(r.value_json().unwrap(), &json!(3_600_123));
        let mut t = build::<TimestampConverter>(Some(Side::Value), &[("target.type", "Timestamp")]);
        let r = one(&mut t, record(json!(1), json!("2017-01-01")));
        assert_eq!(r.value_json().unwrap(), &json!(1483228800000i64));
    }

    #[test]
    fn errors() {
        let mut t = build::<TimestampConverter>(
            Some(Side::Value),
            &[
                ("field", "ts"),
                ("target.type", "unix"),
                ("format", "yyyy-MM-dd"),
            ],
        );
        let err = fail(&mut t, record(json!(1), json!({"ts": "01/02/2017"})));
        assert!(err.message().contains("field \"ts\""), "{err}");
        let err = fail(&mut t, record(json!(1), json!({"ts": true})));
        assert!(err.message().contains("a boolean"), "{err}");
        fail(&mut t, record(json!(1), json!([1])));
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        assert_eq!(one(&mut t, tomb.clone()), tomb);
        assert_eq!(
            issues::<TimestampConverter>(Some(Side::Value), &[("target.type", "string")]),
            vec!["format: is required when target.type is string"]
        );
        let bad = issues::<TimestampConverter>(
            Some(Side::Value),
            &[("target.type", "unix"), ("format", "yyyy-ww")],
        );
        assert!(bad[0].starts_with("format: pattern letter 'ww'"), "{bad:?}");
        assert_eq!(
            issues::<TimestampConverter>(Some(Side::Value), &[("target.type", "date")]).len(),
            1
        );
        assert_eq!(
            issues::<TimestampConverter>(Some(Side::Value), &[]),
            vec!["target.type: is required but missing"]
        );
    }
}
