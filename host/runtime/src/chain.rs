//! Transform chains, declared as in Kafka Connect:
//! `transforms=a,b`, `transforms.a.type=...`, `transforms.a.<key>=...`,
//! `transforms.a.predicate=p`, `transforms.a.negate=true`, `predicates=p`,
//! `predicates.p.type=...`, `predicates.p.<key>=...`.

use std::sync::Arc;

use serde_json::Value;
use sluice_api::{
    ConfigIssue, ConfigMap, ConnectError, Predicate, PredicatePlugin, Record, Transform,
    TransformPlugin,
};

use crate::registry::PluginRegistry;

struct StepSpec {
    alias: String,
    plugin: Arc<dyn TransformPlugin>,
    config: ConfigMap,
    predicate: Option<(String, Arc<dyn PredicatePlugin>, ConfigMap)>,
    negate: bool,
}

/// The keys under `prefix`, with the prefix removed.
fn sub_config(config: &ConfigMap, prefix: &str) -> ConfigMap {
    config
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|rest| (rest.to_string(), v.clone()))
        })
        .collect()
}

fn list(config: &ConfigMap, key: &str) -> Vec<String> {
    match config.get(key) {
        Some(Value::String(s)) => sluice_api::config::split_list(s),
        _ => Vec::new(),
    }
}

fn truthy(value: Option<&Value>) -> Result<bool, String> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("expected true or false, got {other}")),
    }
}

/// Reads the chain's declaration; every problem is an issue naming the full key.
fn specs(config: &ConfigMap, registry: &PluginRegistry) -> (Vec<StepSpec>, Vec<ConfigIssue>) {
    let mut issues = Vec::new();
    let mut steps = Vec::new();
    let aliases = list(config, "transforms");
    let predicate_aliases = list(config, "predicates");

    for alias in &aliases {
        let prefix = format!("transforms.{alias}.");
        let mut sub = sub_config(config, &prefix);
        let Some(Value::String(kind)) = sub.remove("type") else {
            issues.push(ConfigIssue::error(
                format!("{prefix}type"),
                "is required but missing",
            ));
            continue;
        };
        let Some(plugin) = registry.transform(&kind) else {
            issues.push(ConfigIssue::error(
                format!("{prefix}type"),
                format!(
                    "unknown transform type \"{kind}\" (known: {})",
                    registry.transform_types().join(", ")
                ),
            ));
            continue;
        };
        let negate = match truthy(sub.remove("negate").as_ref()) {
            Ok(b) => b,
            Err(message) => {
                issues.push(ConfigIssue::error(format!("{prefix}negate"), message));
                false
            }
        };
        let predicate = match sub.remove("predicate") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if predicate_aliases.contains(&p) => {
                let pprefix = format!("predicates.{p}.");
                let mut psub = sub_config(config, &pprefix);
                match psub.remove("type") {
                    Some(Value::String(ptype)) => match registry.predicate(&ptype) {
                        Some(pplugin) => {
                            issues.extend(
                                pplugin
                                    .validate(&psub)
                                    .into_iter()
                                    .map(|i| i.prefixed(&pprefix)),
                            );
                            Some((p, pplugin, psub))
                        }
                        None => {
                            issues.push(ConfigIssue::error(
                                format!("{pprefix}type"),
                                format!(
                                    "unknown predicate type \"{ptype}\" (known: {})",
                                    registry.predicate_types().join(", ")
                                ),
                            ));
                            None
                        }
                    },
                    _ => {
                        issues.push(ConfigIssue::error(
                            format!("{pprefix}type"),
                            "is required but missing",
                        ));
                        None
                    }
                }
            }
            Some(other) => {
                issues.push(ConfigIssue::error(
                    format!("{prefix}predicate"),
                    format!("{other} is not listed in \"predicates\""),
                ));
                None
            }
        };
        issues.extend(
            plugin
                .validate(&sub)
                .into_iter()
                .map(|i| i.prefixed(&prefix)),
        );
        steps.push(StepSpec {
            alias: alias.clone(),
            plugin,
            config: sub,
            predicate,
            negate,
        });
    }
    // Keys for aliases nobody listed are almost always typos.
    for key in config.keys() {
        for (section, listed) in [
            ("transforms.", &aliases),
            ("predicates.", &predicate_aliases),
        ] {
            if let Some(rest) = key.strip_prefix(section) {
                let alias = rest.split('.').next().unwrap_or_default();
                if !listed.iter().any(|a| a == alias) {
                    issues.push(ConfigIssue::warning(
                        key.clone(),
                        format!(
                            "\"{alias}\" is not listed in \"{}\"; this key is ignored",
                            section.trim_end_matches('.')
                        ),
                    ));
                }
            }
        }
    }
    (steps, issues)
}

/// Problems with a config's chain declaration (errors and warnings).
pub fn validate(config: &ConfigMap, registry: &PluginRegistry) -> Vec<ConfigIssue> {
    specs(config, registry).1
}

struct Step {
    alias: String,
    transform: Box<dyn Transform>,
    predicate: Option<Box<dyn Predicate>>,
    negate: bool,
}

/// A failure inside the chain, naming the transform that failed.
#[derive(Debug)]
pub struct ChainError {
    pub alias: String,
    pub error: ConnectError,
}

/// A built chain, one per task.
#[derive(Default)]
pub struct TransformChain {
    steps: Vec<Step>,
    scratch: Vec<Record>,
}

impl TransformChain {
    pub fn build(
        config: &ConfigMap,
        registry: &PluginRegistry,
    ) -> Result<TransformChain, ConnectError> {
        let (specs, issues) = specs(config, registry);
        if let Some(issue) = issues
            .iter()
            .find(|i| i.severity == sluice_api::Severity::Error)
        {
            return Err(ConnectError::config(issue.to_string()));
        }
        let mut steps = Vec::with_capacity(specs.len());
        for spec in specs {
            let transform = spec
                .plugin
                .create(&spec.config)
                .map_err(|e| e.context(format!("transform \"{}\"", spec.alias)))?;
            let predicate = match spec.predicate {
                Some((alias, plugin, config)) => Some(
                    plugin
                        .create(&config)
                        .map_err(|e| e.context(format!("predicate \"{alias}\"")))?,
                ),
                None => None,
            };
            steps.push(Step {
                alias: spec.alias,
                transform,
                predicate,
                negate: spec.negate,
            });
        }
        Ok(TransformChain {
            steps,
            scratch: Vec::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// True when every step is a filter ([`Transform::is_filter`]): the chain only keeps or
    /// drops records, and [`TransformChain::keeps`] decides without taking the record.
    pub fn is_filter(&self) -> bool {
        self.steps.iter().all(|s| s.transform.is_filter())
    }

    /// For a chain of filters: whether `apply` would keep `record` (unchanged).
    pub fn keeps(&mut self, record: &Record) -> Result<bool, ChainError> {
        for step in &mut self.steps {
            let fail = |error| ChainError {
                alias: step.alias.clone(),
                error,
            };
            let applies = match &step.predicate {
                Some(p) => p.test(record).map_err(fail)? != step.negate,
                None => true,
            };
            if applies && !step.transform.keeps(record).map_err(fail)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs `record` through every step, appending the surviving records to `out`.
    pub fn apply(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), ChainError> {
        if self.steps.is_empty() {
            out.push(record);
            return Ok(());
        }
        self.run_from(0, vec![record], out)
    }

    /// Runs `records` through the steps from `first` on.
    fn run_from(
        &mut self,
        first: usize,
        mut current: Vec<Record>,
        out: &mut Vec<Record>,
    ) -> Result<(), ChainError> {
        for step in self.steps.iter_mut().skip(first) {
            self.scratch.clear();
            for record in current.drain(..) {
                let applies = match &step.predicate {
                    Some(p) => {
                        p.test(&record).map_err(|error| ChainError {
                            alias: step.alias.clone(),
                            error,
                        })? != step.negate
                    }
                    None => true,
                };
                if applies {
                    step.transform
                        .apply(record, &mut self.scratch)
                        .map_err(|error| ChainError {
                            alias: step.alias.clone(),
                            error,
                        })?;
                } else {
                    self.scratch.push(record);
                }
            }
            std::mem::swap(&mut current, &mut self.scratch);
        }
        out.append(&mut current);
        Ok(())
    }

    /// Lets every step emit what time has made due; what a step emits goes through the
    /// steps after it.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Record>) -> Result<(), ChainError> {
        self.emit_held(out, |t, emitted| t.tick(now_ms, emitted))
    }

    /// End of input: every step emits what it holds back, in order.
    pub fn flush(&mut self, out: &mut Vec<Record>) -> Result<(), ChainError> {
        self.emit_held(out, |t, emitted| t.flush(emitted))
    }

    fn emit_held(
        &mut self,
        out: &mut Vec<Record>,
        mut emit: impl FnMut(&mut dyn Transform, &mut Vec<Record>) -> Result<(), ConnectError>,
    ) -> Result<(), ChainError> {
        for index in 0..self.steps.len() {
            let mut emitted = Vec::new();
            let step = &mut self.steps[index];
            emit(step.transform.as_mut(), &mut emitted).map_err(|error| ChainError {
                alias: step.alias.clone(),
                error,
            })?;
            if !emitted.is_empty() {
                self.run_from(index + 1, emitted, out)?;
            }
        }
        Ok(())
    }

    /// Whether any step keeps state that must be checkpointed with the offsets.
    pub fn is_stateful(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.transform.checkpoint().is_some())
    }

    /// The state of every stateful step, by alias.
    pub fn checkpoint(&self) -> Vec<(String, Value)> {
        self.steps
            .iter()
            .filter_map(|s| {
                s.transform
                    .checkpoint()
                    .map(|state| (s.alias.clone(), state))
            })
            .collect()
    }

    /// Gives each step the state saved under its alias.
    pub fn restore(&mut self, states: Vec<(String, Value)>) -> Result<(), ChainError> {
        for (alias, state) in states {
            if let Some(step) = self.steps.iter_mut().find(|s| s.alias == alias) {
                step.transform.restore(state).map_err(|error| ChainError {
                    alias: alias.clone(),
                    error,
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_api::{Plugin, PluginInfo, PluginKind};

    /// Multiplies `value` by `factor`; fails on a non-number.
    struct Times;
    struct TimesTransform(i64);
    /// True when the value is even.
    struct Even;
    struct EvenPredicate;

    fn info(class: &str, kind: PluginKind) -> PluginInfo {
        PluginInfo {
            class: class.into(),
            aliases: vec![],
            kind,
            version: "0".into(),
            description: String::new(),
        }
    }

    impl Plugin for Times {
        fn info(&self) -> PluginInfo {
            info("Times", PluginKind::Transform)
        }
        fn config_schema(&self) -> Value {
            json!({})
        }
        fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
            match config.get("factor") {
                Some(_) => vec![],
                None => vec![ConfigIssue::error("factor", "is required but missing")],
            }
        }
    }
    impl TransformPlugin for Times {
        fn create(&self, config: &ConfigMap) -> Result<Box<dyn Transform>, ConnectError> {
            let factor = config["factor"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            Ok(Box::new(TimesTransform(factor)))
        }
    }
    impl Transform for TimesTransform {
        fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
            let n = record
                .value_json()
                .and_then(Value::as_i64)
                .ok_or_else(|| ConnectError::data("not a number"))?;
            record.value = Some(sluice_api::Payload::Json(json!(n * self.0)));
            out.push(record);
            Ok(())
        }
    }
    impl Plugin for Even {
        fn info(&self) -> PluginInfo {
            info("Even", PluginKind::Predicate)
        }
        fn config_schema(&self) -> Value {
            json!({})
        }
        fn validate(&self, _: &ConfigMap) -> Vec<ConfigIssue> {
            vec![]
        }
    }
    impl PredicatePlugin for Even {
        fn create(&self, _: &ConfigMap) -> Result<Box<dyn Predicate>, ConnectError> {
            Ok(Box::new(EvenPredicate))
        }
    }
    impl Predicate for EvenPredicate {
        fn test(&self, record: &Record) -> Result<bool, ConnectError> {
            Ok(record
                .value_json()
                .and_then(Value::as_i64)
                .is_some_and(|n| n % 2 == 0))
        }
    }

    /// A filter: keeps positive values; fails on a non-number.
    struct Positive;
    struct PositiveFilter;

    impl Plugin for Positive {
        fn info(&self) -> PluginInfo {
            info("Positive", PluginKind::Transform)
        }
        fn config_schema(&self) -> Value {
            json!({})
        }
        fn validate(&self, _: &ConfigMap) -> Vec<ConfigIssue> {
            vec![]
        }
    }
    impl TransformPlugin for Positive {
        fn create(&self, _: &ConfigMap) -> Result<Box<dyn Transform>, ConnectError> {
            Ok(Box::new(PositiveFilter))
        }
    }
    impl Transform for PositiveFilter {
        fn apply(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
            if self.keeps(&record)? {
                out.push(record);
            }
            Ok(())
        }
        fn is_filter(&self) -> bool {
            true
        }
        fn keeps(&mut self, record: &Record) -> Result<bool, ConnectError> {
            record
                .value_json()
                .and_then(Value::as_i64)
                .map(|n| n > 0)
                .ok_or_else(|| ConnectError::data("not a number"))
        }
    }

    fn registry() -> PluginRegistry {
        let mut r = PluginRegistry::new();
        r.add_transform(Arc::new(Times))
            .add_transform(Arc::new(Positive))
            .add_predicate(Arc::new(Even));
        r
    }

    #[test]
    fn a_chain_of_filters_decides_by_reference_as_apply_would() {
        // Keep positive values, but only test odd ones (negate: applies when not even).
        let c = config(&[
            ("transforms", "pos"),
            ("transforms.pos.type", "Positive"),
            ("transforms.pos.predicate", "even"),
            ("transforms.pos.negate", "true"),
            ("predicates", "even"),
            ("predicates.even.type", "Even"),
        ]);
        let mut chain = TransformChain::build(&c, &registry()).unwrap();
        assert!(chain.is_filter());
        for value in [json!(3), json!(-3), json!(-4), json!(4), json!("x")] {
            let record = Record::new("t", value.clone());
            let by_reference = chain.keeps(&record).map_err(|e| e.alias);
            let mut out = Vec::new();
            let applied = chain
                .apply(record.clone(), &mut out)
                .map(|()| {
                    assert!(out.len() <= 1 && out.iter().all(|r| *r == record));
                    out.len() == 1
                })
                .map_err(|e| e.alias);
            assert_eq!(by_reference, applied, "{value}");
        }
        // -4 is even, so the filter does not apply to it: kept.
        assert_eq!(chain.keeps(&Record::new("t", json!(-4))).ok(), Some(true));
        assert_eq!(chain.keeps(&Record::new("t", json!(-3))).ok(), Some(false));
        // "x" is not even (the predicate says false), so the filter applies and fails.
        assert_eq!(
            chain
                .keeps(&Record::new("t", json!("x")))
                .map_err(|e| e.alias),
            Err("pos".to_string())
        );

        let c = config(&[
            ("transforms", "pos,double"),
            ("transforms.pos.type", "Positive"),
            ("transforms.double.type", "Times"),
            ("transforms.double.factor", "2"),
        ]);
        let chain = TransformChain::build(&c, &registry()).unwrap();
        assert!(!chain.is_filter(), "Times changes records");
        assert!(
            TransformChain::default().is_filter(),
            "an empty chain keeps all"
        );
    }

    fn config(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    }

    fn run(chain: &mut TransformChain, n: i64) -> Result<Vec<i64>, ChainError> {
        let mut out = Vec::new();
        chain.apply(Record::new("t", json!(n)), &mut out)?;
        Ok(out
            .iter()
            .map(|r| r.value_json().unwrap().as_i64().unwrap())
            .collect())
    }

    #[test]
    fn steps_run_in_order_and_predicates_gate_them() {
        let c = config(&[
            ("transforms", "double,tenfold"),
            ("transforms.double.type", "Times"),
            ("transforms.double.factor", "2"),
            ("transforms.tenfold.type", "Times"),
            ("transforms.tenfold.factor", "10"),
            ("transforms.tenfold.predicate", "even"),
            ("transforms.tenfold.negate", "true"),
            ("predicates", "even"),
            ("predicates.even.type", "Even"),
        ]);
        assert!(validate(&c, &registry()).is_empty());
        let mut chain = TransformChain::build(&c, &registry()).unwrap();
        // 3 → 6 (double) → even, and negate=true means "apply when NOT even": stays 6.
        assert_eq!(run(&mut chain, 3).unwrap(), vec![6]);
        let err = chain
            .apply(Record::new("t", json!("x")), &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.alias, "double");
    }

    #[test]
    fn declaration_problems_name_the_full_key() {
        let c = config(&[
            ("transforms", "a,b,c"),
            ("transforms.a.type", "Nope"),
            ("transforms.b.type", "Times"),
            ("transforms.c.type", "Times"),
            ("transforms.c.factor", "1"),
            ("transforms.c.predicate", "missing"),
            ("transforms.zz.type", "Times"),
        ]);
        let issues = validate(&c, &registry());
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(
                |t| t.starts_with("key \"transforms.a.type\": unknown transform type \"Nope\"")
            ),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("key \"transforms.b.factor\"")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("key \"transforms.c.predicate\"")),
            "{text:?}"
        );
        let zz = issues
            .iter()
            .find(|i| i.key.as_deref() == Some("transforms.zz.type"))
            .unwrap();
        assert_eq!(zz.severity, sluice_api::Severity::Warning);
        assert!(TransformChain::build(&c, &registry()).is_err());
    }
}
