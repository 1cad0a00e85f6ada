//! `TimestampRouter`: renames the topic from the topic and the record timestamp.

use schemars::JsonSchema;
use serde::Deserialize;
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt};
use crate::java::DateFormat;

/// Keys of `TimestampRouter`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TimestampRouterConfig {
    /// Format string for the topic; `${topic}` and `${timestamp}` are replaced by the
    /// original topic and the formatted record timestamp.
    #[serde(rename = "topic.format", default = "default_topic_format")]
    pub topic_format: String,
    /// A `java.text.SimpleDateFormat` pattern for the timestamp, in UTC.
    #[serde(rename = "timestamp.format", default = "default_timestamp_format")]
    pub timestamp_format: String,
}

fn default_topic_format() -> String {
    "${topic}-${timestamp}".into()
}

fn default_timestamp_format() -> String {
    "yyyyMMdd".into()
}

enum Part {
    Text(String),
    Topic,
    Timestamp,
}

pub(crate) struct TimestampRouter {
    parts: Vec<Part>,
    format: DateFormat,
}

impl Smt for TimestampRouter {
    type Config = TimestampRouterConfig;
    const NAME: &'static str = "TimestampRouter";
    const DESCRIPTION: &'static str =
        "Renames the topic from the topic and the record timestamp (e.g. orders-20240501).";

    fn build(
        config: TimestampRouterConfig,
        _side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        let format = match DateFormat::new(&config.timestamp_format) {
            Ok(f) => f,
            Err(message) => {
                issues.push(ConfigIssue::error("timestamp.format", message));
                return None;
            }
        };
        let mut parts = Vec::new();
        let mut rest = config.topic_format.as_str();
        while !rest.is_empty() {
            let next = [("${topic}", true), ("${timestamp}", false)]
                .into_iter()
                .filter_map(|(token, topic)| rest.find(token).map(|i| (i, token.len(), topic)))
                .min_by_key(|(i, _, _)| *i);
            match next {
                Some((i, len, topic)) => {
                    if i > 0 {
                        parts.push(Part::Text(rest[..i].to_string()));
                    }
                    parts.push(if topic { Part::Topic } else { Part::Timestamp });
                    rest = &rest[i + len..];
                }
                None => {
                    parts.push(Part::Text(rest.to_string()));
                    rest = "";
                }
            }
        }
        Some(TimestampRouter { parts, format })
    }
}

impl Transform for TimestampRouter {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let Some(millis) = record.timestamp else {
            return Err(ConnectError::data(format!(
                "TimestampRouter: timestamp missing on record (topic \"{}\")",
                record.topic
            )));
        };
        let formatted = self.format.format(millis).ok_or_else(|| {
            ConnectError::data(format!(
                "TimestampRouter: timestamp {millis} is out of range"
            ))
        })?;
        let mut topic = String::with_capacity(record.topic.len() + formatted.len() + 8);
        for part in &self.parts {
            match part {
                Part::Text(t) => topic.push_str(t),
                Part::Topic => topic.push_str(&record.topic),
                Part::Timestamp => topic.push_str(&formatted),
            }
        }
        record.topic = topic;
        out.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::testing::*;
    use serde_json::json;

    #[test]
    fn default_and_custom_formats() {
        let mut t = build::<TimestampRouter>(None, &[]);
        let mut r = record(json!(1), json!(1));
        r.timestamp = Some(1483228800000); // 2017-01-01
        assert_eq!(one(&mut t, r.clone()).topic, "orders-20170101");
        let mut t = build::<TimestampRouter>(
            None,
            &[
                ("topic.format", "daily_${timestamp}_${topic}"),
                ("timestamp.format", "yyyy.MM"),
            ],
        );
        assert_eq!(one(&mut t, r).topic, "daily_2017.01_orders");
    }

    #[test]
    fn errors() {
        let mut t = build::<TimestampRouter>(None, &[]);
        let err = fail(&mut t, record(json!(1), json!(1)));
        assert!(err.message().contains("timestamp missing"), "{err}");
        let bad = issues::<TimestampRouter>(None, &[("timestamp.format", "yyyy-QQ")]);
        assert!(bad[0].starts_with("timestamp.format:"), "{bad:?}");
    }
}
