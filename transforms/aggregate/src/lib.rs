//! `Aggregate`: windowed group-by over JSON records, with checkpointable state.
//!
//! Records are grouped by fields of their value (`group.by`) and by window (`window`:
//! tumbling or hopping windows of event time, or a count-based sliding window of the last
//! N records of a key), and each group computes named aggregates (`count`, `count_where`,
//! `sum`, `avg`, `min`, `max`, `median`, each with an optional CEL `where` filter).
//!
//! * Event time comes from `timestamp.field` (ISO-8601 string or epoch milliseconds), else
//!   the record timestamp, else the wall clock (processing time). The watermark is the
//!   largest event time seen minus `allowed.lateness`; a time window closes when the
//!   watermark reaches its end, and its state is released then.
//! * `emit=final` emits one record per group and window when the window closes (and on
//!   `flush`); `emit=update` emits a record every time a record changes a group.
//! * The state (open windows with their partial aggregates, the watermark, the sliding
//!   buffers) is saved by `checkpoint` and rebuilt exactly by `restore`: floating-point
//!   partial results are stored as their IEEE-754 bits, so a restored instance continues
//!   with bit-identical results.
//!
//! The per-record path builds the group key into a reused buffer and looks the group up
//! by `&str`; it allocates only when a group or window is new and for the records it emits.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, NaiveDateTime, SecondsFormat};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_api::{
    API_VERSION, ConfigIssue, ConfigMap, ConnectError, Payload, Plugin, PluginInfo, PluginKind,
    Record, Transform, TransformPlugin, parse_config, schema_of,
};
use sluice_condition::Condition;

/// The longest duration accepted anywhere (window size, advance, lateness): 100 years.
const MAX_DURATION_MS: i64 = 100 * 365 * 86_400_000;
/// The most windows one record may belong to (hopping `size / advance`).
const MAX_WINDOWS_PER_RECORD: i64 = 10_000;
/// The largest `sliding:N`.
const MAX_SLIDING_COUNT: usize = 100_000;
/// The version of the checkpoint format.
const CHECKPOINT_VERSION: u32 = 1;

/// The `Aggregate` transform plugin. Register it with the runtime's registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggregatePlugin;

/// The fixed keys of an `Aggregate` transform (under `transforms.<alias>.`). Each name in
/// `aggregates` also has its own keys: `aggregates.<name>.function`,
/// `aggregates.<name>.field` and `aggregates.<name>.where`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct AggregateConfig {
    /// The fields of the record value to group by, as a comma-separated list of field
    /// paths (dots for nesting: `device.id`). Empty: one global group.
    #[serde(rename = "group.by", default)]
    pub group_by: Vec<String>,
    /// The window: `tumbling:<duration>` (e.g. `tumbling:1m`), `hopping:<size>,<advance>`
    /// (e.g. `hopping:5m,1m`) or `sliding:<N>` (the last N records of each group, emitting
    /// on every record). Durations are `<n>ms`, `<n>s`, `<n>m`, `<n>h` or `<n>d`.
    pub window: String,
    /// The field path of the value holding the event time: an ISO-8601 string or epoch
    /// milliseconds. Unset: the record timestamp, or the wall clock when it has none.
    #[serde(rename = "timestamp.field", default)]
    pub timestamp_field: Option<String>,
    /// How far behind the largest event time seen a record may be and still be counted
    /// (a duration, default `0`). Windows close when the largest event time seen minus this
    /// passes their end.
    #[serde(rename = "allowed.lateness", default = "zero")]
    pub allowed_lateness: String,
    /// What happens to a record too late for every window it belongs to: `drop` (default,
    /// counted) or `fail` (a record error, handled by `errors.tolerance`).
    #[serde(rename = "late.records", default)]
    pub late_records: LateRecords,
    /// When results are emitted: `final` (default: once per group and window, when the
    /// window closes) or `update` (every time a record changes a group's result).
    #[serde(default)]
    pub emit: Emit,
    /// The names of the aggregates to compute, a comma-separated list. Each needs
    /// `aggregates.<name>.function` (`count`, `count_where`, `sum`, `avg`, `min`, `max` or
    /// `median`), `aggregates.<name>.field` (the field path, for all but the counts) and
    /// optionally `aggregates.<name>.where` (a CEL condition; required for `count_where`).
    #[serde(default)]
    pub aggregates: Vec<String>,
    /// The topic of the emitted records. Unset: the topic of the latest record of the group.
    #[serde(default)]
    pub topic: Option<String>,
}

fn zero() -> String {
    "0".to_string()
}

/// When results are emitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Emit {
    /// One record per group and window, when the window closes.
    #[default]
    Final,
    /// A record each time a record changes a group's result.
    Update,
}

/// What happens to a record too late for every window it belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LateRecords {
    /// The record is dropped and counted.
    #[default]
    Drop,
    /// A record error (`DataException`).
    Fail,
}

/// A parsed `window` spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Windows of `size_ms` aligned to the epoch, one per record.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `advance_ms` (aligned to the epoch).
    Hopping { size_ms: i64, advance_ms: i64 },
    /// The last `count` records of each group.
    Sliding { count: usize },
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Count,
    CountWhere,
    Sum,
    Avg,
    Min,
    Max,
    Median,
}

impl Function {
    fn parse(text: &str) -> Option<Function> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "count" => Function::Count,
            "count_where" => Function::CountWhere,
            "sum" => Function::Sum,
            "avg" => Function::Avg,
            "min" => Function::Min,
            "max" => Function::Max,
            "median" => Function::Median,
            _ => return None,
        })
    }

    fn needs_field(self) -> bool {
        !matches!(self, Function::Count | Function::CountWhere)
    }
}

/// Parses a duration: `<n>ms`, `<n>s`, `<n>m`, `<n>h`, `<n>d` (or a bare `0`).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\" has no unit (expected <n>ms, s, m, h or d)"))?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration (expected <n>ms, s, m, h or d)"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{unit}\" (expected ms, s, m, h or d)"
            ));
        }
    };
    match n.checked_mul(factor) {
        Some(ms) if ms <= MAX_DURATION_MS => Ok(ms),
        _ => Err(format!("\"{text}\" is longer than 100 years")),
    }
}

/// Parses a `window` spec.
pub fn parse_window(text: &str) -> Result<WindowSpec, String> {
    let text = text.trim();
    let Some((kind, rest)) = text.split_once(':') else {
        return Err(format!(
            "\"{text}\" is not a window (expected tumbling:<duration>, \
             hopping:<size>,<advance> or sliding:<count>)"
        ));
    };
    match kind.trim().to_ascii_lowercase().as_str() {
        "tumbling" => {
            let size_ms = parse_duration(rest)?;
            if size_ms <= 0 {
                return Err("the window size must be more than 0".to_string());
            }
            Ok(WindowSpec::Tumbling { size_ms })
        }
        "hopping" => {
            let Some((size, advance)) = rest.split_once(',') else {
                return Err(format!(
                    "\"{text}\": a hopping window needs a size and an advance \
                     (hopping:<size>,<advance>)"
                ));
            };
            let size_ms = parse_duration(size)?;
            let advance_ms = parse_duration(advance)?;
            if size_ms <= 0 || advance_ms <= 0 {
                return Err("the window size and advance must be more than 0".to_string());
            }
            if advance_ms > size_ms {
                return Err(format!(
                    "\"{text}\": the advance must not exceed the size (records would fall \
                     between windows)"
                ));
            }
            if (size_ms + advance_ms - 1) / advance_ms > MAX_WINDOWS_PER_RECORD {
                return Err(format!(
                    "\"{text}\": a record would belong to more than {MAX_WINDOWS_PER_RECORD} \
                     windows"
                ));
            }
            Ok(WindowSpec::Hopping {
                size_ms,
                advance_ms,
            })
        }
        "sliding" => match rest.trim().parse::<usize>() {
            Ok(count) if (1..=MAX_SLIDING_COUNT).contains(&count) => {
                Ok(WindowSpec::Sliding { count })
            }
            _ => Err(format!(
                "\"{text}\": a sliding window needs a record count from 1 to \
                 {MAX_SLIDING_COUNT} (sliding:<count>)"
            )),
        },
        other => Err(format!(
            "unknown window kind \"{other}\" (expected tumbling, hopping or sliding)"
        )),
    }
}

/// A field path into the record value.
#[derive(Debug, Clone)]
struct FieldPath {
    name: String,
    segments: Vec<String>,
}

impl FieldPath {
    fn new(name: &str) -> FieldPath {
        FieldPath {
            name: name.to_string(),
            segments: name.split('.').map(str::to_string).collect(),
        }
    }

    fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(value, |node, field| node.as_object()?.get(field))
    }

    fn last(&self) -> &str {
        self.segments
            .last()
            .map_or(self.name.as_str(), String::as_str)
    }
}

/// One compiled aggregate.
struct AggSpec {
    name: String,
    function: Function,
    field: Option<FieldPath>,
    filter: Option<Condition>,
}

/// The compiled configuration.
struct Spec {
    group_by: Vec<FieldPath>,
    /// The output names of the group fields.
    group_names: Vec<String>,
    window: WindowSpec,
    timestamp_field: Option<FieldPath>,
    lateness_ms: i64,
    late_records: LateRecords,
    emit: Emit,
    aggs: Vec<AggSpec>,
    topic: Option<String>,
}

/// A per-aggregate key as a string (Kafka Connect values are strings; numbers and booleans
/// written as JSON are accepted as their text). `None` when unset.
fn raw_string(config: &ConfigMap, key: &str) -> Result<Option<String>, ConfigIssue> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(other) => Err(ConfigIssue::error(
            key,
            format!("expected a string, got {other}"),
        )),
    }
}

impl Spec {
    /// Parses and checks the whole config; every problem as an issue naming its key.
    fn compile(config: &ConfigMap) -> Result<Spec, Vec<ConfigIssue>> {
        let parsed = parse_config::<AggregateConfig>(config)?;
        let mut issues = Vec::new();

        let window = parse_window(&parsed.window).unwrap_or_else(|reason| {
            issues.push(ConfigIssue::error("window", reason));
            WindowSpec::Sliding { count: 1 }
        });
        let lateness_ms = parse_duration(&parsed.allowed_lateness).unwrap_or_else(|reason| {
            issues.push(ConfigIssue::error("allowed.lateness", reason));
            0
        });

        let group_by: Vec<FieldPath> = parsed.group_by.iter().map(|g| FieldPath::new(g)).collect();
        for (i, path) in group_by.iter().enumerate() {
            if path.segments.iter().any(String::is_empty) {
                issues.push(ConfigIssue::error(
                    "group.by",
                    format!("\"{}\" is not a field path", path.name),
                ));
            }
            if group_by[..i].iter().any(|p| p.name == path.name) {
                issues.push(ConfigIssue::error(
                    "group.by",
                    format!("\"{}\" is listed twice", path.name),
                ));
            }
        }
        // A group field is named by its last segment, or by its full path when another
        // group field has the same last segment.
        let group_names: Vec<String> = group_by
            .iter()
            .map(|p| {
                let shared = group_by.iter().filter(|q| q.last() == p.last()).count() > 1;
                if shared {
                    p.name.clone()
                } else {
                    p.last().to_string()
                }
            })
            .collect();
        for name in &group_names {
            if name == "window_start" || name == "window_end" {
                issues.push(ConfigIssue::error(
                    "group.by",
                    format!("\"{name}\" is the name of an output field of every window"),
                ));
            }
        }

        let timestamp_field = parsed.timestamp_field.as_deref().map(str::trim);
        let timestamp_field = match timestamp_field {
            None | Some("") => None,
            Some(name) => {
                let path = FieldPath::new(name);
                if path.segments.iter().any(String::is_empty) {
                    issues.push(ConfigIssue::error(
                        "timestamp.field",
                        format!("\"{name}\" is not a field path"),
                    ));
                }
                Some(path)
            }
        };

        let mut aggs = Vec::new();
        for (i, name) in parsed.aggregates.iter().enumerate() {
            if parsed.aggregates[..i].contains(name) {
                issues.push(ConfigIssue::error(
                    "aggregates",
                    format!("\"{name}\" is listed twice"),
                ));
                continue;
            }
            if name == "window_start" || name == "window_end" || group_names.contains(name) {
                issues.push(ConfigIssue::error(
                    "aggregates",
                    format!("\"{name}\" is already the name of a window or group field"),
                ));
            }
            if let Some(agg) = compile_aggregate(config, name, &mut issues) {
                aggs.push(agg);
            }
        }

        let topic = parsed.topic.filter(|t| !t.trim().is_empty());
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Spec {
            group_by,
            group_names,
            window,
            timestamp_field,
            lateness_ms,
            late_records: parsed.late_records,
            emit: parsed.emit,
            aggs,
            topic,
        })
    }
}

fn compile_aggregate(
    config: &ConfigMap,
    name: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<AggSpec> {
    let function_key = format!("aggregates.{name}.function");
    let field_key = format!("aggregates.{name}.field");
    let where_key = format!("aggregates.{name}.where");
    let mut read = |key: &str| match raw_string(config, key) {
        Ok(v) => v,
        Err(issue) => {
            issues.push(issue);
            None
        }
    };
    let function = read(&function_key);
    let field = read(&field_key);
    let condition = read(&where_key);

    let function = match function {
        None => {
            issues.push(ConfigIssue::error(&function_key, "is required but missing"));
            return None;
        }
        Some(text) => match Function::parse(&text) {
            Some(f) => f,
            None => {
                issues.push(ConfigIssue::error(
                    &function_key,
                    format!(
                        "unknown function \"{text}\" (expected count, count_where, sum, avg, \
                         min, max or median)"
                    ),
                ));
                return None;
            }
        },
    };
    let field = match (function.needs_field(), field) {
        (true, None) => {
            issues.push(ConfigIssue::error(
                &field_key,
                format!("is required for the function {function:?}"),
            ));
            return None;
        }
        (true, Some(f)) => {
            let path = FieldPath::new(&f);
            if path.segments.iter().any(String::is_empty) {
                issues.push(ConfigIssue::error(
                    &field_key,
                    format!("\"{f}\" is not a field path"),
                ));
                return None;
            }
            Some(path)
        }
        (false, _) => None,
    };
    let filter = match condition {
        None if function == Function::CountWhere => {
            issues.push(ConfigIssue::error(
                &where_key,
                "is required for count_where (a CEL condition)",
            ));
            return None;
        }
        None => None,
        Some(source) => match Condition::compile(&source) {
            Ok(condition) => Some(condition),
            Err(reason) => {
                issues.push(ConfigIssue::error(
                    &where_key,
                    format!("invalid condition: {reason}"),
                ));
                return None;
            }
        },
    };
    Some(AggSpec {
        name: name.to_string(),
        function,
        field,
        filter,
    })
}

fn config_error(issues: &[ConfigIssue]) -> ConnectError {
    let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
    ConnectError::config(format!("invalid Aggregate config: {}", text.join("; ")))
}

impl Plugin for AggregatePlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            class: "Aggregate".to_string(),
            aliases: vec!["sluice.Aggregate".to_string()],
            kind: PluginKind::Transform,
            version: API_VERSION.to_string(),
            description: "Windowed group-by over JSON records: counts, sums, averages, \
                          minimums, maximums and medians per group and tumbling, hopping or \
                          sliding window, with checkpointed state."
                .to_string(),
        }
    }

    fn config_schema(&self) -> Value {
        schema_of::<AggregateConfig>()
    }

    fn validate(&self, config: &ConfigMap) -> Vec<ConfigIssue> {
        match Spec::compile(config) {
            Ok(_) => Vec::new(),
            Err(issues) => issues,
        }
    }
}

impl TransformPlugin for AggregatePlugin {
    fn create(&self, config: &ConfigMap) -> Result<Box<dyn Transform>, ConnectError> {
        Ok(Box::new(Aggregate::new(config)?))
    }
}

/// What one record contributes to one aggregate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    /// Nothing (filtered out, or a null/missing value).
    Skip,
    /// One to a count.
    Hit,
    /// A number.
    Value(f64),
}

/// The partial result of one aggregate in one group and window.
#[derive(Debug, Clone, PartialEq)]
enum AggState {
    Count(u64),
    /// For `sum` and `avg`: the sum in arrival order and the number of values.
    Sum {
        sum: f64,
        n: u64,
    },
    Min(Option<f64>),
    Max(Option<f64>),
    /// Every value, in arrival order.
    Median(Vec<f64>),
}

impl AggState {
    fn new(function: Function) -> AggState {
        match function {
            Function::Count | Function::CountWhere => AggState::Count(0),
            Function::Sum | Function::Avg => AggState::Sum { sum: 0.0, n: 0 },
            Function::Min => AggState::Min(None),
            Function::Max => AggState::Max(None),
            Function::Median => AggState::Median(Vec::new()),
        }
    }

    fn fits(&self, function: Function) -> bool {
        matches!(
            (self, function),
            (AggState::Count(_), Function::Count | Function::CountWhere)
                | (AggState::Sum { .. }, Function::Sum | Function::Avg)
                | (AggState::Min(_), Function::Min)
                | (AggState::Max(_), Function::Max)
                | (AggState::Median(_), Function::Median)
        )
    }

    /// Adds one input; whether the result changed.
    fn add(&mut self, input: Input) -> bool {
        match (self, input) {
            (_, Input::Skip) => false,
            (AggState::Count(n), _) => {
                *n += 1;
                true
            }
            (_, Input::Hit) => false,
            (AggState::Sum { sum, n }, Input::Value(x)) => {
                *sum += x;
                *n += 1;
                true
            }
            (AggState::Min(m), Input::Value(x)) => {
                if m.is_none_or(|m| x < m) {
                    *m = Some(x);
                    true
                } else {
                    false
                }
            }
            (AggState::Max(m), Input::Value(x)) => {
                if m.is_none_or(|m| x > m) {
                    *m = Some(x);
                    true
                } else {
                    false
                }
            }
            (AggState::Median(values), Input::Value(x)) => {
                values.push(x);
                true
            }
        }
    }

    fn result(&self, function: Function, scratch: &mut Vec<f64>) -> Value {
        match self {
            AggState::Count(n) => Value::from(*n),
            AggState::Sum { n: 0, .. } => Value::Null,
            AggState::Sum { sum, n } => {
                if function == Function::Avg {
                    number(*sum / *n as f64)
                } else {
                    number(*sum)
                }
            }
            AggState::Min(m) | AggState::Max(m) => m.map_or(Value::Null, number),
            AggState::Median(values) => {
                if values.is_empty() {
                    return Value::Null;
                }
                scratch.clear();
                scratch.extend_from_slice(values);
                scratch.sort_by(f64::total_cmp);
                let mid = scratch.len() / 2;
                if scratch.len() % 2 == 1 {
                    number(scratch[mid])
                } else {
                    number((scratch[mid - 1] + scratch[mid]) / 2.0)
                }
            }
        }
    }
}

/// A JSON number (`null` for a non-finite result, e.g. an overflowing sum).
fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One group in one time window.
#[derive(Debug, Clone)]
struct Group {
    fields: Vec<Value>,
    topic: String,
    aggs: Vec<AggState>,
}

/// One group of a sliding window: its last N records' inputs.
#[derive(Debug, Clone)]
struct SlidingGroup {
    fields: Vec<Value>,
    topic: String,
    times: VecDeque<i64>,
    /// `times.len() × aggregates` inputs, record after record.
    inputs: VecDeque<Input>,
}

fn set_topic(target: &mut String, topic: &str) {
    if target != topic {
        target.clear();
        target.push_str(topic);
    }
}

/// A running aggregate: the compiled config and the state of the open windows.
pub struct Aggregate {
    spec: Spec,
    /// The largest event time seen.
    max_event_time: Option<i64>,
    /// The last record used processing time (so `tick` advances the watermark).
    processing_time: bool,
    late_dropped: u64,
    /// Open time windows by start, each with its groups by group key.
    windows: BTreeMap<i64, HashMap<String, Group>>,
    /// Sliding-window groups by group key.
    sliding: HashMap<String, SlidingGroup>,
    // Buffers reused from record to record.
    key_buf: Vec<u8>,
    inputs: Vec<Input>,
    starts: Vec<i64>,
    scratch: Vec<f64>,
}

impl Aggregate {
    /// Builds an aggregate from its config (the transform's own keys).
    pub fn new(config: &ConfigMap) -> Result<Aggregate, ConnectError> {
        let spec = Spec::compile(config).map_err(|issues| config_error(&issues))?;
        Ok(Aggregate {
            spec,
            max_event_time: None,
            processing_time: false,
            late_dropped: 0,
            windows: BTreeMap::new(),
            sliding: HashMap::new(),
            key_buf: Vec::new(),
            inputs: Vec::new(),
            starts: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// The watermark: the largest event time seen minus the allowed lateness.
    pub fn watermark(&self) -> Option<i64> {
        self.max_event_time
            .map(|t| t.saturating_sub(self.spec.lateness_ms))
    }

    /// How many records were dropped for being too late.
    pub fn late_records_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// The number of group states held: (group, open window) pairs plus sliding groups.
    pub fn state_size(&self) -> usize {
        self.windows.values().map(HashMap::len).sum::<usize>() + self.sliding.len()
    }

    /// The number of open time windows.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    fn event_time(&self, record: &Record, value: &Value) -> Result<(i64, bool), ConnectError> {
        let (t, processing) = match &self.spec.timestamp_field {
            Some(path) => {
                let field = path.get(value).ok_or_else(|| {
                    ConnectError::data(format!(
                        "Aggregate: the record value has no timestamp field \"{}\"",
                        path.name
                    ))
                })?;
                (parse_time(field, &path.name)?, false)
            }
            None => match record.timestamp {
                Some(t) => (t, false),
                None => (chrono::Utc::now().timestamp_millis(), true),
            },
        };
        if DateTime::from_timestamp_millis(t).is_none() {
            return Err(ConnectError::data(format!(
                "Aggregate: the event time {t} is out of range"
            )));
        }
        Ok((t, processing))
    }

    /// Builds the group key into `key` (the group values as JSON, one per line).
    fn group_key(&self, value: &Value, key: &mut Vec<u8>) -> Result<(), ConnectError> {
        key.clear();
        for (i, path) in self.spec.group_by.iter().enumerate() {
            let field = path.get(value).ok_or_else(|| {
                ConnectError::data(format!(
                    "Aggregate: the record value has no group-by field \"{}\"",
                    path.name
                ))
            })?;
            if i > 0 {
                key.push(b'\n');
            }
            serde_json::to_writer(&mut *key, field).map_err(|e| {
                ConnectError::data(format!("Aggregate: group-by field \"{}\": {e}", path.name))
            })?;
        }
        Ok(())
    }

    fn group_fields(&self, value: &Value) -> Vec<Value> {
        self.spec
            .group_by
            .iter()
            .map(|p| p.get(value).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// Every aggregate's input from this record, into `inputs`.
    fn read_inputs(
        &self,
        record: &Record,
        value: &Value,
        inputs: &mut Vec<Input>,
    ) -> Result<(), ConnectError> {
        inputs.clear();
        for agg in &self.spec.aggs {
            if let Some(filter) = &agg.filter {
                let keep = filter.evaluate(record).map_err(|e| {
                    ConnectError::data(format!(
                        "Aggregate: aggregates.{}.where: {}",
                        agg.name,
                        e.message()
                    ))
                })?;
                if !keep {
                    inputs.push(Input::Skip);
                    continue;
                }
            }
            let Some(path) = &agg.field else {
                inputs.push(Input::Hit);
                continue;
            };
            inputs.push(match path.get(value) {
                None | Some(Value::Null) => Input::Skip,
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(x) => Input::Value(x),
                    None => Input::Skip,
                },
                Some(other) => {
                    return Err(ConnectError::data(format!(
                        "Aggregate: aggregates.{}: field \"{}\" is not a number: {}",
                        agg.name,
                        path.name,
                        sluice_api::json_type_name(other)
                    )));
                }
            });
        }
        Ok(())
    }

    fn window_size(&self) -> (i64, i64) {
        match self.spec.window {
            WindowSpec::Tumbling { size_ms } => (size_ms, size_ms),
            WindowSpec::Hopping {
                size_ms,
                advance_ms,
            } => (size_ms, advance_ms),
            WindowSpec::Sliding { .. } => (i64::MAX, i64::MAX),
        }
    }

    /// Closes (and, in final mode, emits) every window the watermark has passed.
    fn close_windows(&mut self, out: &mut Vec<Record>) {
        let Some(watermark) = self.watermark() else {
            return;
        };
        let (size, _) = self.window_size();
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(size);
            if end > watermark {
                break;
            }
            let groups = entry.remove();
            if self.spec.emit == Emit::Final {
                self.emit_window(start, end, groups, out);
            }
        }
    }

    /// Emits a window's groups in group-key order.
    fn emit_window(
        &mut self,
        start: i64,
        end: i64,
        groups: HashMap<String, Group>,
        out: &mut Vec<Record>,
    ) {
        let mut groups: Vec<(String, Group)> = groups.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (_, group) in &groups {
            let values = results(&self.spec, &group.aggs, &mut self.scratch);
            out.push(output(
                &self.spec,
                start,
                end,
                &group.fields,
                &group.topic,
                values,
            ));
        }
    }

    fn apply_windowed(
        &mut self,
        record: &Record,
        value: &Value,
        key: &str,
        t: i64,
        inputs: &[Input],
        out: &mut Vec<Record>,
    ) -> Result<(), ConnectError> {
        let (size, advance) = self.window_size();
        let watermark = self.watermark();
        // The windows holding t that are still open, latest start first.
        let mut starts = std::mem::take(&mut self.starts);
        starts.clear();
        let mut start = t.div_euclid(advance) * advance;
        while start > t - size {
            if watermark.is_none_or(|w| start + size > w) {
                starts.push(start);
            }
            start -= advance;
        }
        if starts.is_empty() {
            self.starts = starts;
            return match self.spec.late_records {
                LateRecords::Drop => {
                    self.late_dropped += 1;
                    Ok(())
                }
                LateRecords::Fail => Err(ConnectError::data(format!(
                    "Aggregate: the record (event time {}) is later than the allowed \
                     lateness for every window it belongs to (watermark {})",
                    time_text(t),
                    watermark.map_or_else(|| "none".to_string(), time_text)
                ))),
            };
        }
        for &start in starts.iter().rev() {
            let windows = self.windows.entry(start).or_default();
            let (group, new) = match windows.get_mut(key) {
                Some(group) => {
                    set_topic(&mut group.topic, &record.topic);
                    (group, false)
                }
                None => {
                    let group = Group {
                        fields: self
                            .spec
                            .group_by
                            .iter()
                            .map(|p| p.get(value).cloned().unwrap_or(Value::Null))
                            .collect(),
                        topic: record.topic.clone(),
                        aggs: self
                            .spec
                            .aggs
                            .iter()
                            .map(|a| AggState::new(a.function))
                            .collect(),
                    };
                    (windows.entry(key.to_string()).or_insert(group), true)
                }
            };
            let mut changed = new;
            for (state, input) in group.aggs.iter_mut().zip(inputs) {
                changed |= state.add(*input);
            }
            if self.spec.emit == Emit::Update && changed {
                let values = results(&self.spec, &group.aggs, &mut self.scratch);
                out.push(output(
                    &self.spec,
                    start,
                    start + size,
                    &group.fields,
                    &group.topic,
                    values,
                ));
            }
        }
        self.starts = starts;
        self.max_event_time = Some(self.max_event_time.map_or(t, |m| m.max(t)));
        self.close_windows(out);
        Ok(())
    }

    fn apply_sliding(
        &mut self,
        record: &Record,
        value: &Value,
        key: &str,
        t: i64,
        inputs: &[Input],
        out: &mut Vec<Record>,
    ) {
        let WindowSpec::Sliding { count } = self.spec.window else {
            return;
        };
        let naggs = self.spec.aggs.len();
        if !self.sliding.contains_key(key) {
            let group = SlidingGroup {
                fields: self.group_fields(value),
                topic: record.topic.clone(),
                times: VecDeque::new(),
                inputs: VecDeque::new(),
            };
            self.sliding.insert(key.to_string(), group);
        }
        let Some(group) = self.sliding.get_mut(key) else {
            return;
        };
        set_topic(&mut group.topic, &record.topic);
        group.times.push_back(t);
        group.inputs.extend(inputs.iter().copied());
        while group.times.len() > count {
            group.times.pop_front();
            group.inputs.drain(..naggs);
        }
        self.max_event_time = Some(self.max_event_time.map_or(t, |m| m.max(t)));
        let start = group.times.iter().copied().min().unwrap_or(t);
        let end = group.times.iter().copied().max().unwrap_or(t);
        let scratch = &mut self.scratch;
        let values: Vec<Value> = self
            .spec
            .aggs
            .iter()
            .enumerate()
            .map(|(i, agg)| {
                let mut state = AggState::new(agg.function);
                for input in group.inputs.iter().skip(i).step_by(naggs.max(1)) {
                    state.add(*input);
                }
                state.result(agg.function, scratch)
            })
            .collect();
        out.push(output(
            &self.spec,
            start,
            end,
            &group.fields,
            &group.topic,
            values,
        ));
    }

    fn snapshot(&self) -> Snapshot {
        let mut windows = Vec::with_capacity(self.windows.len());
        for (&start, groups) in &self.windows {
            let mut snaps: Vec<GroupSnap> = groups
                .iter()
                .map(|(key, g)| GroupSnap {
                    key: key.clone(),
                    fields: g.fields.clone(),
                    topic: g.topic.clone(),
                    aggs: g.aggs.iter().map(AggSnap::from_state).collect(),
                })
                .collect();
            snaps.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            windows.push(WindowSnap {
                start,
                groups: snaps,
            });
        }
        let mut sliding: Vec<SlidingSnap> = self
            .sliding
            .iter()
            .map(|(key, g)| SlidingSnap {
                key: key.clone(),
                fields: g.fields.clone(),
                topic: g.topic.clone(),
                times: g.times.iter().copied().collect(),
                inputs: g.inputs.iter().copied().map(InputSnap::from).collect(),
            })
            .collect();
        sliding.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Snapshot {
            version: CHECKPOINT_VERSION,
            max_event_time: self.max_event_time,
            processing_time: self.processing_time,
            late_dropped: self.late_dropped,
            windows,
            sliding,
        }
    }

    fn rebuild(&mut self, snapshot: Snapshot) -> Result<(), String> {
        if snapshot.version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {} is not {CHECKPOINT_VERSION}",
                snapshot.version
            ));
        }
        let naggs = self.spec.aggs.len();
        let nfields = self.spec.group_by.len();
        let sliding_count = match self.spec.window {
            WindowSpec::Sliding { count } => Some(count),
            _ => None,
        };
        if sliding_count.is_none() && !snapshot.sliding.is_empty()
            || sliding_count.is_some() && !snapshot.windows.is_empty()
        {
            return Err("the checkpoint was made with another window kind".to_string());
        }
        let mut windows: BTreeMap<i64, HashMap<String, Group>> = BTreeMap::new();
        for window in snapshot.windows {
            let mut groups = HashMap::with_capacity(window.groups.len());
            for g in window.groups {
                if g.fields.len() != nfields || g.aggs.len() != naggs {
                    return Err("the checkpoint was made with other group.by or aggregates \
                                settings"
                        .to_string());
                }
                let aggs: Vec<AggState> = g.aggs.into_iter().map(AggSnap::into_state).collect();
                if aggs
                    .iter()
                    .zip(&self.spec.aggs)
                    .any(|(state, spec)| !state.fits(spec.function))
                {
                    return Err("the checkpoint was made with other aggregate functions".into());
                }
                groups.insert(
                    g.key,
                    Group {
                        fields: g.fields,
                        topic: g.topic,
                        aggs,
                    },
                );
            }
            windows.insert(window.start, groups);
        }
        let mut sliding = HashMap::with_capacity(snapshot.sliding.len());
        for g in snapshot.sliding {
            let count = sliding_count.unwrap_or(0);
            if g.fields.len() != nfields
                || g.inputs.len() != g.times.len() * naggs
                || g.times.len() > count
            {
                return Err(
                    "the checkpoint was made with other group.by, aggregates or \
                            window settings"
                        .to_string(),
                );
            }
            sliding.insert(
                g.key,
                SlidingGroup {
                    fields: g.fields,
                    topic: g.topic,
                    times: g.times.into(),
                    inputs: g.inputs.into_iter().map(|i| i.0).collect(),
                },
            );
        }
        self.max_event_time = snapshot.max_event_time;
        self.processing_time = snapshot.processing_time;
        self.late_dropped = snapshot.late_dropped;
        self.windows = windows;
        self.sliding = sliding;
        Ok(())
    }
}

impl Transform for Aggregate {
    fn apply(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let value = match &record.value {
            Some(Payload::Json(v @ Value::Object(_))) => v,
            Some(Payload::Json(other)) => {
                return Err(ConnectError::data(format!(
                    "Aggregate: the record value is {}, not an object",
                    sluice_api::json_type_name(other)
                )));
            }
            Some(Payload::Bytes(_)) => {
                return Err(ConnectError::data(
                    "Aggregate: the record value is bytes, not JSON",
                ));
            }
            None => {
                return Err(ConnectError::data(
                    "Aggregate: the record has no value (a tombstone)",
                ));
            }
        };
        // Everything that can fail is read before the state changes, so a bad record
        // leaves no trace.
        let mut key = std::mem::take(&mut self.key_buf);
        let mut inputs = std::mem::take(&mut self.inputs);
        let result = self
            .group_key(value, &mut key)
            .and_then(|()| self.event_time(&record, value))
            .and_then(|time| {
                self.read_inputs(&record, value, &mut inputs)?;
                Ok(time)
            })
            .and_then(|(t, processing)| {
                let key_text = std::str::from_utf8(&key).map_err(|_| {
                    ConnectError::data("Aggregate: the group key is not valid UTF-8")
                })?;
                self.processing_time = processing;
                match self.spec.window {
                    WindowSpec::Sliding { .. } => {
                        self.apply_sliding(&record, value, key_text, t, &inputs, out);
                        Ok(())
                    }
                    _ => self.apply_windowed(&record, value, key_text, t, &inputs, out),
                }
            });
        self.key_buf = key;
        self.inputs = inputs;
        result
    }

    fn tick(&mut self, now_ms: i64, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        if self.processing_time && !matches!(self.spec.window, WindowSpec::Sliding { .. }) {
            self.max_event_time = Some(self.max_event_time.map_or(now_ms, |m| m.max(now_ms)));
            self.close_windows(out);
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let (size, _) = self.window_size();
        let windows = std::mem::take(&mut self.windows);
        if self.spec.emit == Emit::Final {
            for (start, groups) in windows {
                self.emit_window(start, start.saturating_add(size), groups, out);
            }
        }
        Ok(())
    }

    fn checkpoint(&self) -> Option<Value> {
        serde_json::to_value(self.snapshot()).ok()
    }

    fn restore(&mut self, state: Value) -> Result<(), ConnectError> {
        let snapshot: Snapshot = serde_json::from_value(state).map_err(|e| {
            ConnectError::fatal(format!("Aggregate: cannot read the checkpoint: {e}"))
        })?;
        self.rebuild(snapshot)
            .map_err(|reason| ConnectError::fatal(format!("Aggregate: {reason}")))
    }
}

/// An event time from a field: epoch milliseconds, or an ISO-8601 string (a time without
/// an offset is UTC).
fn parse_time(field: &Value, name: &str) -> Result<i64, ConnectError> {
    let bad = |what: String| {
        ConnectError::data(format!(
            "Aggregate: timestamp field \"{name}\" is {what}, not an ISO-8601 time or epoch \
             milliseconds"
        ))
    };
    match field {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(ms), _) => Ok(ms),
            (None, Some(x)) if x.is_finite() && x.abs() < 1e17 => Ok(x.floor() as i64),
            _ => Err(bad(format!("{n}"))),
        },
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t.timestamp_millis());
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
                    return Ok(t.and_utc().timestamp_millis());
                }
            }
            Err(bad(format!("\"{s}\"")))
        }
        other => Err(bad(sluice_api::json_type_name(other).to_string())),
    }
}

/// An epoch-milliseconds time as ISO-8601 UTC with milliseconds.
fn time_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

fn time_value(ms: i64) -> Value {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::from(ms),
    }
}

/// The results of a group's aggregates.
fn results(spec: &Spec, aggs: &[AggState], scratch: &mut Vec<f64>) -> Vec<Value> {
    spec.aggs
        .iter()
        .zip(aggs)
        .map(|(agg, state)| state.result(agg.function, scratch))
        .collect()
}

/// The record emitted for one group and window.
fn output(
    spec: &Spec,
    start: i64,
    end: i64,
    fields: &[Value],
    topic: &str,
    results: Vec<Value>,
) -> Record {
    let mut value = Map::new();
    let mut key = Map::new();
    value.insert("window_start".to_string(), time_value(start));
    value.insert("window_end".to_string(), time_value(end));
    for (name, field) in spec.group_names.iter().zip(fields) {
        value.insert(name.clone(), field.clone());
        key.insert(name.clone(), field.clone());
    }
    key.insert("window_start".to_string(), time_value(start));
    for (agg, result) in spec.aggs.iter().zip(results) {
        value.insert(agg.name.clone(), result);
    }
    Record {
        topic: spec.topic.clone().unwrap_or_else(|| topic.to_string()),
        partition: None,
        offset: None,
        timestamp: Some(end),
        key: Some(Payload::Json(Value::Object(key))),
        value: Some(Payload::Json(Value::Object(value))),
        headers: Vec::new(),
    }
}

// --- Checkpoint format -------------------------------------------------------------------

/// An `f64` stored as the hex of its IEEE-754 bits, so it is restored exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
struct Bits(f64);

impl From<Bits> for String {
    fn from(b: Bits) -> String {
        format!("{:016x}", b.0.to_bits())
    }
}

impl TryFrom<String> for Bits {
    type Error = String;
    fn try_from(s: String) -> Result<Bits, String> {
        u64::from_str_radix(&s, 16)
            .map(|bits| Bits(f64::from_bits(bits)))
            .map_err(|_| format!("\"{s}\" is not a hex f64"))
    }
}

/// A sliding input: `"-"` (skip), `"+"` (count) or the hex bits of a number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
struct InputSnap(Input);

impl From<Input> for InputSnap {
    fn from(i: Input) -> InputSnap {
        InputSnap(i)
    }
}

impl From<InputSnap> for String {
    fn from(i: InputSnap) -> String {
        match i.0 {
            Input::Skip => "-".to_string(),
            Input::Hit => "+".to_string(),
            Input::Value(x) => String::from(Bits(x)),
        }
    }
}

impl TryFrom<String> for InputSnap {
    type Error = String;
    fn try_from(s: String) -> Result<InputSnap, String> {
        Ok(InputSnap(match s.as_str() {
            "-" => Input::Skip,
            "+" => Input::Hit,
            _ => Input::Value(Bits::try_from(s)?.0),
        }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    max_event_time: Option<i64>,
    processing_time: bool,
    late_dropped: u64,
    windows: Vec<WindowSnap>,
    sliding: Vec<SlidingSnap>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WindowSnap {
    start: i64,
    groups: Vec<GroupSnap>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GroupSnap {
    key: String,
    fields: Vec<Value>,
    topic: String,
    aggs: Vec<AggSnap>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum AggSnap {
    Count { n: u64 },
    Sum { sum: Bits, n: u64 },
    Min { v: Option<Bits> },
    Max { v: Option<Bits> },
    Median { values: Vec<Bits> },
}

impl AggSnap {
    fn from_state(state: &AggState) -> AggSnap {
        match state {
            AggState::Count(n) => AggSnap::Count { n: *n },
            AggState::Sum { sum, n } => AggSnap::Sum {
                sum: Bits(*sum),
                n: *n,
            },
            AggState::Min(v) => AggSnap::Min { v: v.map(Bits) },
            AggState::Max(v) => AggSnap::Max { v: v.map(Bits) },
            AggState::Median(values) => AggSnap::Median {
                values: values.iter().copied().map(Bits).collect(),
            },
        }
    }

    fn into_state(self) -> AggState {
        match self {
            AggSnap::Count { n } => AggState::Count(n),
            AggSnap::Sum { sum, n } => AggState::Sum { sum: sum.0, n },
            AggSnap::Min { v } => AggState::Min(v.map(|b| b.0)),
            AggSnap::Max { v } => AggState::Max(v.map(|b| b.0)),
            AggSnap::Median { values } => {
                AggState::Median(values.into_iter().map(|b| b.0).collect())
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SlidingSnap {
    key: String,
    fields: Vec<Value>,
    topic: String,
    times: Vec<i64>,
    inputs: Vec<InputSnap>,
}

#[cfg(test)]
mod tests;
