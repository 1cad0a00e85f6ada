//! Kafka Connect's `Filter` transform and its standard predicates: `TopicNameMatches`,
//! `HasHeaderKey`, `RecordIsTombstone`.

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_api::{ConfigIssue, ConnectError, Predicate, Record, Transform};

use crate::common::{Pred, Side, Smt, is_tombstone, non_blank};
use crate::regex_router::whole_match;

/// `Filter` takes no keys: it drops every record it is applied to. Use it with a
/// predicate (`transforms.<alias>.predicate`), optionally negated.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FilterConfig {}

pub(crate) struct Filter;

impl Smt for Filter {
    type Config = FilterConfig;
    const NAME: &'static str = "Filter";
    const DESCRIPTION: &'static str =
        "Kafka Connect's Filter: drops every record it is applied to (use with a predicate).";
    // sluice has its own expression `Filter`; this one answers to its full class name only.
    const SHORT_ALIAS: bool = false;

    fn build(_config: FilterConfig, _side: Side, _issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        Some(Filter)
    }
}

impl Transform for Filter {
    fn apply(&mut self, _record: Record, _out: &mut Vec<Record>) -> Result<(), ConnectError> {
        Ok(())
    }
}

/// Keys of `TopicNameMatches`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TopicNameMatchesConfig {
    /// A regular expression the whole topic name must match.
    pub pattern: String,
}

pub(crate) struct TopicNameMatches(Regex);

impl Pred for TopicNameMatches {
    type Config = TopicNameMatchesConfig;
    const NAME: &'static str = "TopicNameMatches";
    const DESCRIPTION: &'static str = "True for records whose whole topic name matches a regex.";

    fn build(config: TopicNameMatchesConfig, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        non_blank("pattern", &config.pattern, issues);
        whole_match("pattern", &config.pattern, issues).map(TopicNameMatches)
    }
}

impl Predicate for TopicNameMatches {
    fn test(&self, record: &Record) -> Result<bool, ConnectError> {
        Ok(self.0.is_match(&record.topic))
    }
}

/// Keys of `HasHeaderKey`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HasHeaderKeyConfig {
    /// The header name.
    pub name: String,
}

pub(crate) struct HasHeaderKey(String);

impl Pred for HasHeaderKey {
    type Config = HasHeaderKeyConfig;
    const NAME: &'static str = "HasHeaderKey";
    const DESCRIPTION: &'static str = "True for records with at least one header of a name.";

    fn build(config: HasHeaderKeyConfig, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        non_blank("name", &config.name, issues);
        Some(HasHeaderKey(config.name))
    }
}

impl Predicate for HasHeaderKey {
    fn test(&self, record: &Record) -> Result<bool, ConnectError> {
        Ok(record.headers.iter().any(|h| h.key == self.0))
    }
}

/// `RecordIsTombstone` takes no keys.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RecordIsTombstoneConfig {}

pub(crate) struct RecordIsTombstone;

impl Pred for RecordIsTombstone {
    type Config = RecordIsTombstoneConfig;
    const NAME: &'static str = "RecordIsTombstone";
    const DESCRIPTION: &'static str = "True for tombstones (records with a null value).";

    fn build(_config: RecordIsTombstoneConfig, _issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        Some(RecordIsTombstone)
    }
}

impl Predicate for RecordIsTombstone {
    fn test(&self, record: &Record) -> Result<bool, ConnectError> {
        Ok(is_tombstone(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::PredPlugin;
    use crate::common::testing::*;
    use serde_json::json;
    use sluice_api::{Header, Plugin, PredicatePlugin};

    fn pred<P: Pred>(pairs: &[(&str, &str)]) -> Box<dyn Predicate> {
        let plugin = PredPlugin::<P>::new();
        assert_eq!(plugin.validate(&config(pairs)), vec![]);
        plugin.create(&config(pairs)).unwrap()
    }

    #[test]
    fn predicates() {
        let p = pred::<TopicNameMatches>(&[("pattern", "ord.*")]);
        assert!(p.test(&record(json!(1), json!(1))).unwrap());
        let p = pred::<TopicNameMatches>(&[("pattern", "ord")]);
        assert!(!p.test(&record(json!(1), json!(1))).unwrap());
        let mut r = record(json!(1), json!(1));
        let p = pred::<HasHeaderKey>(&[("name", "trace")]);
        assert!(!p.test(&r).unwrap());
        r.headers.push(Header::new("trace", json!(null)));
        assert!(p.test(&r).unwrap());
        let p = pred::<RecordIsTombstone>(&[]);
        assert!(!p.test(&r).unwrap());
        r.value = None;
        assert!(p.test(&r).unwrap());
    }

    #[test]
    fn predicate_config_errors() {
        let plugin = PredPlugin::<TopicNameMatches>::new();
        let bad = plugin.validate(&config(&[("pattern", "(")]));
        assert_eq!(bad[0].key.as_deref(), Some("pattern"));
        assert!(plugin.create(&config(&[("pattern", "(")])).is_err());
        let bad = PredPlugin::<HasHeaderKey>::new().validate(&config(&[]));
        assert_eq!(bad[0].key.as_deref(), Some("name"));
    }

    #[test]
    fn filter_with_predicate_drops_only_matching_records() {
        // transforms.drop.type=org.apache.kafka.connect.transforms.Filter
        // transforms.drop.predicate=isTombstone; predicates.isTombstone.type=RecordIsTombstone
        let mut filter = build::<Filter>(None, &[]);
        let p = pred::<RecordIsTombstone>(&[]);
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        let mut out = Vec::new();
        for (i, r) in [record(json!(1), json!(1)), tomb, record(json!(3), json!(3))]
            .into_iter()
            .enumerate()
        {
            if p.test(&r).unwrap() {
                filter.apply(r, &mut out).unwrap();
            } else {
                out.push(r);
            }
            assert!(out.len() <= i + 1);
        }
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.value.is_some()));
    }
}
