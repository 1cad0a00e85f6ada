//! `RegexRouter`: renames the topic when the whole topic matches a regex.

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt};
use crate::java::Replacement;

/// Keys of `RegexRouter`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RegexRouterConfig {
    /// Regular expression the whole topic must match (Rust `regex` syntax, which covers
    /// Java's except look-around and backreferences).
    pub regex: String,
    /// Replacement topic, with Java group references: `$1`, `${name}`; `\$` is a dollar.
    pub replacement: String,
}

pub(crate) struct RegexRouter {
    regex: Regex,
    replacement: Replacement,
    buf: String,
}

/// Compiles `pattern` to match a whole string, as Java's `Matcher.matches()`.
pub(crate) fn whole_match(
    key: &str,
    pattern: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Regex> {
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(re) => Some(re),
        Err(e) => {
            issues.push(ConfigIssue::error(key, format!("invalid regex: {e}")));
            None
        }
    }
}

impl Smt for RegexRouter {
    type Config = RegexRouterConfig;
    const NAME: &'static str = "RegexRouter";
    const DESCRIPTION: &'static str = "Renames topics matching a regex, with $1-style groups.";

    fn build(
        config: RegexRouterConfig,
        _side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        let regex = whole_match("regex", &config.regex, issues)?;
        let names = regex.capture_names().flatten();
        match Replacement::parse(&config.replacement, regex.captures_len() - 1, names) {
            Ok(replacement) => Some(RegexRouter {
                regex,
                replacement,
                buf: String::new(),
            }),
            Err(message) => {
                issues.push(ConfigIssue::error("replacement", message));
                None
            }
        }
    }
}

impl Transform for RegexRouter {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        if let Some(caps) = self.regex.captures(&record.topic) {
            self.buf.clear();
            self.replacement.expand(&caps, &mut self.buf);
            record.topic.clone_from(&self.buf);
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

    #[test]
    fn kafka_connect_example() {
        // KC docs: regex=(.*)-(.*), replacement=$2
        let mut t = build::<RegexRouter>(None, &[("regex", "(.*)-(.*)"), ("replacement", "$2")]);
        let mut r = record(json!(1), json!(1));
        r.topic = "prefix-orders".into();
        assert_eq!(one(&mut t, r).topic, "orders");
        // No full match: unchanged.
        let mut t = build::<RegexRouter>(None, &[("regex", "ord"), ("replacement", "x")]);
        assert_eq!(one(&mut t, record(json!(1), json!(1))).topic, "orders");
        let mut t =
            build::<RegexRouter>(None, &[("regex", "(?<t>.*)"), ("replacement", "${t}_v2")]);
        assert_eq!(one(&mut t, record(json!(1), json!(1))).topic, "orders_v2");
    }

    #[test]
    fn bad_config() {
        let bad = issues::<RegexRouter>(None, &[("regex", "(a"), ("replacement", "x")]);
        assert!(bad[0].starts_with("regex: invalid regex"), "{bad:?}");
        let bad = issues::<RegexRouter>(None, &[("regex", "(a)"), ("replacement", "$2")]);
        assert_eq!(bad, vec!["replacement: no group 2"]);
        assert_eq!(
            issues::<RegexRouter>(None, &[("regex", "a")]),
            vec!["replacement: is required but missing"]
        );
    }
}
