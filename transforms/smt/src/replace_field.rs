//! `ReplaceField$Key` / `ReplaceField$Value`: drops, keeps and renames top-level fields.

use std::collections::{HashMap, HashSet};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Map;
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt};

/// Keys of `ReplaceField$Key` / `ReplaceField$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ReplaceFieldConfig {
    /// Fields to exclude. Takes precedence over `include`.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// Fields to include. If set, only these fields are kept.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Deprecated alias of `exclude` (used only when `exclude` is not set).
    #[serde(default)]
    pub blacklist: Option<Vec<String>>,
    /// Deprecated alias of `include` (used only when `include` is not set).
    #[serde(default)]
    pub whitelist: Option<Vec<String>>,
    /// Field rename mappings, `old:new,other:renamed`.
    #[serde(default)]
    pub renames: Vec<String>,
    /// Accepted for compatibility and ignored: schemaless JSON has no defaults.
    #[serde(rename = "replace.null.with.default", default)]
    pub replace_null_with_default: Option<bool>,
}

pub(crate) struct ReplaceField {
    side: Side,
    exclude: HashSet<String>,
    include: HashSet<String>,
    renames: HashMap<String, String>,
}

/// The new key, or the deprecated one (with a warning) when only that is set.
fn translated(
    key: &str,
    value: Option<Vec<String>>,
    deprecated_key: &str,
    deprecated: Option<Vec<String>>,
    issues: &mut Vec<ConfigIssue>,
) -> HashSet<String> {
    if deprecated.is_some() {
        issues.push(ConfigIssue::warning(
            deprecated_key,
            format!("is deprecated, use \"{key}\""),
        ));
    }
    value
        .or(deprecated)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

impl Smt for ReplaceField {
    type Config = ReplaceFieldConfig;
    const NAME: &'static str = "ReplaceField";
    const DESCRIPTION: &'static str = "Filters (include/exclude) and renames top-level fields.";

    fn build(
        config: ReplaceFieldConfig,
        side: Side,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self> {
        let exclude = translated(
            "exclude",
            config.exclude,
            "blacklist",
            config.blacklist,
            issues,
        );
        let include = translated(
            "include",
            config.include,
            "whitelist",
            config.whitelist,
            issues,
        );
        let mut renames = HashMap::new();
        for mapping in &config.renames {
            match mapping.split(':').collect::<Vec<_>>().as_slice() {
                [from, to] if !from.trim().is_empty() && !to.trim().is_empty() => {
                    renames.insert(from.trim().to_string(), to.trim().to_string());
                }
                _ => issues.push(ConfigIssue::error(
                    "renames",
                    format!("invalid rename mapping \"{mapping}\": expected old:new"),
                )),
            }
        }
        Some(ReplaceField {
            side,
            exclude,
            include,
            renames,
        })
    }
}

impl ReplaceField {
    fn keep(&self, field: &str) -> bool {
        !self.exclude.contains(field) && (self.include.is_empty() || self.include.contains(field))
    }
}

impl Transform for ReplaceField {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        if let Some(map) = self.side.object_mut(&mut record, "ReplaceField")? {
            if self.renames.is_empty() {
                map.retain(|k, _| self.keep(k));
            } else {
                let old = std::mem::take(map);
                let mut new = Map::with_capacity(old.len());
                for (k, v) in old.into_iter() {
                    if self.keep(&k) {
                        match self.renames.get(&k) {
                            Some(renamed) => new.insert(renamed.clone(), v),
                            None => new.insert(k, v),
                        };
                    }
                }
                *map = new;
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

    #[test]
    fn kafka_connect_renames_example() {
        // KC docs: renames=foo:c1,bar:c2
        let mut t = build::<ReplaceField>(Some(Side::Value), &[("renames", "foo:c1,bar:c2")]);
        let r = one(
            &mut t,
            record(json!(1), json!({"foo": 1, "bar": "x", "baz": true})),
        );
        assert_eq!(
            r.value_json().unwrap(),
            &json!({"c1": 1, "c2": "x", "baz": true})
        );
    }

    #[test]
    fn include_exclude_and_deprecated_aliases() {
        let mut t = build::<ReplaceField>(Some(Side::Key), &[("include", "a,b"), ("exclude", "b")]);
        let r = one(&mut t, record(json!({"a": 1, "b": 2, "c": 3}), json!(null)));
        assert_eq!(r.key_json().unwrap(), &json!({"a": 1}));
        let cfg = [("blacklist", "c"), ("replace.null.with.default", "false")];
        assert_eq!(
            issues::<ReplaceField>(Some(Side::Value), &cfg),
            vec!["blacklist: is deprecated, use \"exclude\""]
        );
        let p = plugin::<ReplaceField>(Some(Side::Value));
        let mut t = sluice_api::TransformPlugin::create(&p, &config(&cfg)).unwrap();
        let r = one(&mut t, record(json!(1), json!({"a": 1, "c": 3})));
        assert_eq!(r.value_json().unwrap(), &json!({"a": 1}));
    }

    #[test]
    fn bad_renames_and_wrong_types() {
        assert_eq!(
            issues::<ReplaceField>(Some(Side::Value), &[("renames", "a:b:c")]),
            vec!["renames: invalid rename mapping \"a:b:c\": expected old:new"]
        );
        let mut t = build::<ReplaceField>(Some(Side::Value), &[("exclude", "a")]);
        fail(&mut t, record(json!(1), json!("text")));
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        assert_eq!(one(&mut t, tomb.clone()), tomb);
    }
}
