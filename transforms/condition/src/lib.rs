//! Conditions over records: a CEL expression compiled once, evaluated per record.
//!
//! Shared by the transforms that select records (Filter, Aggregate's `where`). The record
//! is exposed as the variables `value`, `key`, `topic`, `headers` and `timestamp`; fields
//! the expression names are read straight from the record's JSON (no conversion of the
//! whole value unless the expression uses `value` as a whole).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::traits::Indexer;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
    MAP_TYPE, Type,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program};
use serde_json::Value;
use sluice_api::{ConnectError, Payload, Record};

/// A compiled condition and what it was found to read.
pub struct Condition {
    env: Arc<Env>,
    program: Program,
    /// The condition as comparisons of value fields with literals, when it has that
    /// shape: answered straight from the JSON where that answer is certainly CEL's.
    direct: Option<Direct>,
    /// The expression names `value` at all (a bytes value then cannot be evaluated).
    reads_value: bool,
    /// The expression uses `value` other than as the object of a field selection
    /// (`value == ...`, `size(value)`, `value["k"]`, `value.exists(...)`), so `value`
    /// must be a complete CEL value rather than a lazy view of the JSON object.
    value_whole: bool,
}

/// Longest condition accepted, in bytes.
const MAX_LENGTH: usize = 4096;
/// Deepest nesting of brackets accepted.
const MAX_NESTING: usize = 32;
/// Most operators accepted (each one is a level of the parsed tree).
const MAX_OPERATORS: usize = 256;

/// Bounds what reaches the parser and the evaluator. Both recurse once per nesting level
/// and per operator of a chain, so an expression of a few thousand nested parentheses or
/// `&&`s would overflow the stack and abort the whole process — which a stack overflow
/// does without unwinding, so `catch_unwind` cannot help. Real conditions are far below
/// these bounds.
fn check_size(source: &str) -> Result<(), String> {
    if source.len() > MAX_LENGTH {
        return Err(format!(
            "the condition is {} bytes long; at most {MAX_LENGTH} are accepted",
            source.len()
        ));
    }
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '&' | '|' if previous == c => operators += 1,
            // `==`, `!=`, `<=`, `>=` are one operator each.
            '=' if matches!(previous, '=' | '!' | '<' | '>') => {}
            '!' | '?' | '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' => operators += 1,
            _ => {}
        }
        previous = c;
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "the condition nests brackets {deepest} deep; at most {MAX_NESTING} are accepted"
        ));
    }
    if operators > MAX_OPERATORS {
        return Err(format!(
            "the condition has {operators} operators; at most {MAX_OPERATORS} are accepted"
        ));
    }
    Ok(())
}

impl Condition {
    /// Compiles `source`; the error is the parser's reason with its position.
    pub fn compile(source: &str) -> Result<Condition, String> {
        check_size(source)?;
        let mut env = Env::stdlib();
        for extension in [
            cel::extensions::strings as fn(&mut Env) -> _,
            cel::extensions::lists,
            cel::extensions::math,
        ] {
            env.add_extension(extension)
                .map_err(|err| format!("cannot set up the CEL environment: {err}"))?;
        }
        // The parser is third-party code run on user input: a panic in it is reported as
        // an invalid condition rather than taking the worker down.
        let compiled = catch_unwind(AssertUnwindSafe(|| env.compile(source)))
            .map_err(|_| "the CEL parser failed on this expression".to_string())?;
        let program = compiled.map_err(|errors| {
            let reasons: Vec<String> = errors
                .errors
                .iter()
                .map(|e| format!("{} at line {} column {}", e.msg, e.pos.0, e.pos.1))
                .collect();
            if reasons.is_empty() {
                "invalid CEL expression".to_string()
            } else {
                reasons.join("; ")
            }
        })?;
        let mut uses = Uses::default();
        uses.walk(&program.expression().expr, false);
        let direct = Direct::compile(&program.expression().expr);
        Ok(Condition {
            env: Arc::new(env),
            direct,
            program,
            reads_value: uses.value,
            value_whole: uses.value_whole,
        })
    }

    /// Whether the condition holds for `record`; a data error when it cannot be evaluated
    /// on it (missing field, wrong type, a result that is not a boolean, a bytes value).
    pub fn evaluate(&self, record: &Record) -> Result<bool, ConnectError> {
        let value = match &record.value {
            Some(Payload::Json(v)) => Some(v),
            Some(Payload::Bytes(_)) if self.reads_value => {
                return Err(ConnectError::data(
                    "the record value is bytes, not JSON, so the condition cannot be \
                     evaluated on it",
                ));
            }
            Some(Payload::Bytes(_)) | None => None,
        };
        if let (Some(direct), Some(json)) = (&self.direct, value)
            && let Some(keep) = direct.eval(json)
        {
            return Ok(keep);
        }
        self.interpret(record, value)
    }

    /// Evaluates with the CEL interpreter, whatever the shape of the condition.
    fn interpret(&self, record: &Record, value: Option<&Value>) -> Result<bool, ConnectError> {
        let scope = RecordScope {
            record,
            value,
            value_whole: self.value_whole,
        };
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.set_variable_resolver(&scope);
        // The interpreter is third-party code run on record data: a panic in it is a
        // failed evaluation of this record, never a crashed task.
        let result = catch_unwind(AssertUnwindSafe(|| self.program.execute(&context)))
            .map_err(|_| eval_error("the CEL interpreter failed on this record"))?;
        match result {
            Ok(cel::Value::Bool(keep)) => Ok(keep),
            Ok(other) => Err(eval_error(format!(
                "the condition evaluated to {}, not a boolean",
                describe(&other)
            ))),
            Err(err) => Err(eval_error(err)),
        }
    }
}

/// The commonest shape of condition — `value.a.b == "x"`, `value.c != null`, joined by
/// `&&`, `||` and `!` — evaluated on the record's JSON without the interpreter, which
/// spends thousands of instructions per record resolving names.
///
/// It only answers where its answer is the one CEL gives: an equality of a field and a
/// literal of the same JSON kind (a string, a boolean, an integer), or a comparison with
/// `null`. Anything else — a missing field, a number that is not an `i64`, a kind
/// mismatch, a value that is not an object — is left to the interpreter for the whole
/// condition, which then also produces the error it would have produced.
#[derive(Debug)]
enum Direct {
    And(Box<Direct>, Box<Direct>),
    Or(Box<Direct>, Box<Direct>),
    Not(Box<Direct>),
    /// `value.<path> == literal` (`equal`) or `!=`.
    Compare {
        path: Vec<String>,
        equal: bool,
        literal: Literal,
    },
}

#[derive(Debug)]
enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    String(String),
}

impl Direct {
    /// `None` when any part of the expression has another shape.
    fn compile(expr: &Expr) -> Option<Direct> {
        use cel::common::ast::operators::{
            EQUALS, LOGICAL_AND, LOGICAL_NOT, LOGICAL_OR, NOT_EQUALS,
        };
        let Expr::Call(call) = expr else {
            return None;
        };
        if call.target.is_some() {
            return None;
        }
        let sub = |e: &IdedExpr| Direct::compile(&e.expr).map(Box::new);
        match (call.func_name.as_str(), call.args.as_slice()) {
            (LOGICAL_AND, [a, b]) => Some(Direct::And(sub(a)?, sub(b)?)),
            (LOGICAL_OR, [a, b]) => Some(Direct::Or(sub(a)?, sub(b)?)),
            (LOGICAL_NOT, [a]) => Some(Direct::Not(sub(a)?)),
            (op @ (EQUALS | NOT_EQUALS), [a, b]) => {
                let (path, literal) = match (value_path(&a.expr), literal(&b.expr)) {
                    (Some(path), Some(literal)) => (path, literal),
                    _ => (value_path(&b.expr)?, literal(&a.expr)?),
                };
                Some(Direct::Compare {
                    path,
                    equal: op == EQUALS,
                    literal,
                })
            }
            _ => None,
        }
    }

    /// The condition's value, or `None` to leave this record to the interpreter.
    fn eval(&self, value: &Value) -> Option<bool> {
        match self {
            // CEL's `&&` is false if either side is, even when the other is an error;
            // the interpreter settles every case this does not.
            Direct::And(a, b) => match a.eval(value)? {
                false => Some(false),
                true => b.eval(value),
            },
            Direct::Or(a, b) => match a.eval(value)? {
                true => Some(true),
                false => b.eval(value),
            },
            Direct::Not(a) => a.eval(value).map(|b| !b),
            Direct::Compare {
                path,
                equal,
                literal,
            } => {
                let field = path
                    .iter()
                    .try_fold(value, |node, name| node.as_object()?.get(name))?;
                let same = match (literal, field) {
                    (Literal::Null, field) => field.is_null(),
                    (Literal::Bool(b), Value::Bool(v)) => b == v,
                    (Literal::String(s), Value::String(v)) => s == v,
                    (Literal::Int(i), Value::Number(n)) => n.as_i64()? == *i,
                    _ => return None,
                };
                Some(same == *equal)
            }
        }
    }
}

/// The field names of `value.a.b` (a plain selection, not `has(...)`).
fn value_path(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Select(select) if !select.test => {
            let mut path = match &select.operand.expr {
                Expr::Ident(name) if name == "value" => Vec::new(),
                other => value_path(other)?,
            };
            path.push(select.field.clone());
            Some(path)
        }
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<Literal> {
    use cel::common::ast::LiteralValue;
    match expr {
        Expr::Literal(LiteralValue::Null) => Some(Literal::Null),
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Literal::Bool(*b.inner())),
        Expr::Literal(LiteralValue::Int(i)) => Some(Literal::Int(*i.inner())),
        Expr::Literal(LiteralValue::String(s)) => Some(Literal::String(s.inner().to_string())),
        _ => None,
    }
}

fn eval_error(reason: impl std::fmt::Display) -> ConnectError {
    ConnectError::data(format!("cannot evaluate the condition: {reason}"))
}

fn describe(value: &cel::Value) -> String {
    let text = format!("{value:?}");
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text
    }
}

/// What the compiled expression does with `value`, found once by walking its AST.
#[derive(Default)]
struct Uses {
    value: bool,
    value_whole: bool,
}

impl Uses {
    /// `selected`: `expr` is the object of a field selection (`expr.field`, `has(expr.f)`).
    fn walk(&mut self, expr: &Expr, selected: bool) {
        match expr {
            Expr::Ident(name) => {
                if name == "value" {
                    self.value = true;
                    if !selected {
                        self.value_whole = true;
                    }
                }
            }
            Expr::Select(select) => self.walk(&select.operand.expr, true),
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(&target.expr, false);
                }
                self.walk_all(&call.args);
            }
            Expr::List(list) => self.walk_all(&list.elements),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        self.walk(&e.key.expr, false);
                        self.walk(&e.value.expr, false);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => self.walk(&f.value.expr, false),
                        EntryExpr::MapEntry(e) => {
                            self.walk(&e.key.expr, false);
                            self.walk(&e.value.expr, false);
                        }
                    }
                }
            }
            Expr::Comprehension(c) => {
                // A comprehension variable may shadow `value`; counting it as a use of the
                // record's value only makes the conversion more complete, never wrong.
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.walk(&part.expr, false);
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn walk_all(&mut self, exprs: &[IdedExpr]) {
        for e in exprs {
            self.walk(&e.expr, false);
        }
    }
}

/// Answers the interpreter's variable look-ups from one record, without copying it.
///
/// The interpreter asks for the longest qualified name first (`value.event_type`), then
/// shorter ones (`value`) with the remaining fields selected on the answer; so a field
/// path that exists is answered directly, and one that does not falls back to the
/// enclosing value, on which the interpreter reports the missing field as an error.
struct RecordScope<'r> {
    record: &'r Record,
    /// The JSON value; `None` for a tombstone (and bytes, when the condition ignores it).
    value: Option<&'r Value>,
    value_whole: bool,
}

impl VariableResolver for RecordScope<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let (root, path) = match variable.split_once('.') {
            Some((root, path)) => (root, Some(path)),
            None => (variable, None),
        };
        match root {
            "value" => match (self.value, path) {
                (None, None) => Some(CowVal::owned(CelNull)),
                (None, Some(_)) => None,
                (Some(json), Some(path)) => walk(json, path).map(json_val),
                (Some(Value::Object(fields)), None) if !self.value_whole => {
                    Some(CowVal::owned(LazyObject(fields)))
                }
                (Some(json), None) => Some(json_val(json)),
            },
            "key" => match (&self.record.key, path) {
                (None, None) => Some(CowVal::owned(CelNull)),
                (Some(Payload::Bytes(bytes)), None) => {
                    Some(CowVal::owned(CelBytes::from(bytes.as_slice())))
                }
                (Some(Payload::Json(json)), None) => Some(json_val(json)),
                (Some(Payload::Json(json)), Some(path)) => walk(json, path).map(json_val),
                (_, Some(_)) => None,
            },
            "topic" if path.is_none() => {
                Some(CowVal::owned(CelString::from(self.record.topic.as_str())))
            }
            "timestamp" if path.is_none() => Some(match self.record.timestamp {
                Some(ms) => CowVal::owned(CelInt::from(ms)),
                None => CowVal::owned(CelNull),
            }),
            "headers" => match path {
                None => Some(CowVal::owned(self.headers())),
                Some(path) => {
                    let (name, rest) = match path.split_once('.') {
                        Some((name, rest)) => (name, Some(rest)),
                        None => (path, None),
                    };
                    let header = self.record.header(name)?;
                    match rest {
                        None => Some(json_val(header)),
                        Some(rest) => walk(header, rest).map(json_val),
                    }
                }
            },
            _ => None,
        }
    }
}

impl<'r> RecordScope<'r> {
    /// The headers as a CEL map; the last header with a key wins.
    fn headers(&self) -> CelMap<'r> {
        let mut map: HashMap<CelMapKey<'r>, Box<dyn Val + 'r>> =
            HashMap::with_capacity(self.record.headers.len());
        for header in &self.record.headers {
            map.insert(CelMapKey::from(header.key.as_str()), to_val(&header.value));
        }
        CelMap::from(map)
    }
}

/// The JSON at `path` (field names separated by dots) under `json`, if every step is a
/// field of an object.
fn walk<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(json, |node, field| node.as_object()?.get(field))
}

fn json_val<'b>(json: &'b Value) -> CowVal<'b, 'b> {
    CowVal::Owned(to_val(json))
}

/// Converts JSON to a CEL value, borrowing its strings. Integers stay integers (`int`, or
/// `uint` above `i64::MAX`), other numbers are `double`s.
fn to_val(json: &Value) -> Box<dyn Val + '_> {
    match json {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(
            items.iter().map(to_val).collect::<Vec<Box<dyn Val + '_>>>(),
        )),
        Value::Object(fields) => Box::new(object_val(fields)),
    }
}

fn object_val(fields: &serde_json::Map<String, Value>) -> CelMap<'_> {
    let map: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = fields
        .iter()
        .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v)))
        .collect();
    CelMap::from(map)
}

/// The record value as a map whose fields are converted only when selected. Used when
/// the expression only selects fields of `value` (`value.a`, `has(value.a)`), which is
/// all this supports; any other use gets the complete conversion instead.
#[derive(Debug)]
struct LazyObject<'a>(&'a serde_json::Map<String, Value>);

impl<'a> LazyObject<'a> {
    fn field(&self, idx: &dyn Val) -> Result<&'a Value, ExecutionError> {
        let Some(name) = idx.downcast_ref::<CelString>() else {
            return Err(ExecutionError::UnexpectedType {
                got: idx.get_type().name().to_owned(),
                want: "string".to_owned(),
            });
        };
        self.0
            .get(name.inner())
            .ok_or_else(|| ExecutionError::no_such_key(name.inner()))
    }
}

impl Val for LazyObject<'_> {
    fn get_type(&self) -> &Type {
        &MAP_TYPE
    }

    fn cel_type() -> &'static Type {
        &MAP_TYPE
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        object_val(self.0).equals(other)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(LazyObject(self.0))
    }
}

impl Indexer for LazyObject<'_> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.field(idx).map(|json| CowVal::Owned(to_val(json)))
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.field(idx).map(to_val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_api::ErrorKind;

    /// Every answer of the direct evaluation is the interpreter's, over conditions of its
    /// shape and values of every JSON kind (missing, null, mixed number kinds, ...).
    #[test]
    fn direct_answers_agree_with_the_interpreter() {
        let conditions = [
            r#"value.event_type == "purchase" && value.price != null"#,
            r#"value.event_type == "purchase" || value.price == null"#,
            r#"!(value.a == 1) && value.b != true"#,
            r#""x" == value.a || null == value.b"#,
            r#"value.a.b == "x" && value.c != 7"#,
            r#"value.a == false || !(value.b != "y")"#,
        ];
        let samples = [
            json!(null),
            json!(true),
            json!(false),
            json!(1),
            json!(7),
            json!(-3),
            json!(1.0),
            json!(7.5),
            json!(18_446_744_073_709_551_615u64),
            json!("x"),
            json!("y"),
            json!("purchase"),
            json!([1]),
            json!({"b": "x"}),
            json!({}),
        ];
        let fields = ["event_type", "price", "a", "b", "c"];
        let mut records = vec![
            Record::new("t", json!("not an object")),
            Record::new("t", json!({})),
        ];
        // Every field set, each to another sample, in many combinations; then each field
        // missing in turn.
        for i in 0..samples.len() * 7 {
            let mut value = serde_json::Map::new();
            for (k, field) in fields.iter().enumerate() {
                let sample = &samples[(i * (k + 1) + k * 3) % samples.len()];
                value.insert((*field).to_string(), sample.clone());
            }
            if i < fields.len() {
                value.remove(fields[i]);
            }
            records.push(Record::new("t", Value::Object(value)));
        }
        let mut answered = 0;
        for source in conditions {
            let condition = Condition::compile(source).unwrap();
            let direct = condition.direct.as_ref().expect("a direct shape");
            for record in &records {
                let json = record.value_json().unwrap();
                let interpreted = condition
                    .interpret(record, Some(json))
                    .map_err(|e| e.kind());
                if let Some(keep) = direct.eval(json) {
                    answered += 1;
                    assert_eq!(Ok(keep), interpreted, "{source} on {json}");
                }
                assert_eq!(
                    condition.evaluate(record).map_err(|e| e.kind()),
                    interpreted,
                    "{source} on {json}"
                );
            }
        }
        assert!(answered > 50, "the direct path answered only {answered}");
        // A comparison with null is answered for every kind of value.
        for source in ["value.a == null", "value.a != null"] {
            let condition = Condition::compile(source).unwrap();
            for sample in &samples {
                let record = Record::new("t", json!({ "a": sample }));
                let json = record.value_json().unwrap();
                let direct = condition.direct.as_ref().and_then(|d| d.eval(json));
                assert!(direct.is_some(), "{source} on {json}");
                assert_eq!(
                    direct.ok_or(ErrorKind::Data),
                    condition
                        .interpret(&record, Some(json))
                        .map_err(|e| e.kind()),
                    "{source} on {json}"
                );
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_interpreter() {
        for source in [
            "value.a > 1",
            "has(value.a)",
            r#"value["a"] == 1"#,
            "value.a == 1.5",
            "value.a == value.b",
            r#"key.a == "x""#,
            r#"topic == "t""#,
            "size(value) == 2",
            "true",
        ] {
            let condition = Condition::compile(source).unwrap();
            assert!(condition.direct.is_none(), "{source}");
        }
        assert!(
            Condition::compile(r#"value.a == "x" && !(value.b.c != null)"#)
                .unwrap()
                .direct
                .is_some()
        );
    }

    #[test]
    fn oversized_conditions_are_refused_before_parsing() {
        let nested = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(
            Condition::compile(&nested)
                .err()
                .unwrap()
                .contains("nests brackets")
        );
        let chain = vec!["true"; 2000].join(" && ");
        assert!(Condition::compile(&chain).is_err());
        let chain = vec!["value.a == 1"; 150].join(" || ");
        assert!(
            Condition::compile(&chain)
                .err()
                .unwrap()
                .contains("operators")
        );
        // Brackets and operators inside strings do not count.
        let quoted = format!("value.s == \"{}\"", "((((!!!!".repeat(40));
        assert!(Condition::compile(&quoted).is_ok(), "{quoted}");
        assert!(Condition::compile("(value.a > 1 && (value.b < 2 || value.c == 'x'))").is_ok());
    }
}
