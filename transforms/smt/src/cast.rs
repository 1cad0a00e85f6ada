//! `Cast$Key` / `Cast$Value`: casts fields, or the whole key or value, to another type.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Number, Value};
use sluice_api::{ConfigIssue, ConnectError, Record, Transform};

use crate::common::{Side, Smt, type_name};
use crate::java::double_to_string;

/// Keys of `Cast$Key` / `Cast$Value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CastConfig {
    /// Fields and the type to cast them to, `field1:type,field2:type`; or a single type to
    /// cast the entire key or value. Types: int8, int16, int32, int64, float32, float64,
    /// boolean, string.
    pub spec: Vec<String>,
    /// Accepted for compatibility and ignored: schemaless JSON has no defaults.
    #[serde(rename = "replace.null.with.default", default)]
    pub replace_null_with_default: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    String,
}

impl Type {
    fn parse(name: &str) -> Option<Type> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "int8" => Type::Int8,
            "int16" => Type::Int16,
            "int32" => Type::Int32,
            "int64" => Type::Int64,
            "float32" => Type::Float32,
            "float64" => Type::Float64,
            "boolean" => Type::Boolean,
            "string" => Type::String,
            _ => return None,
        })
    }
}

pub(crate) struct Cast {
    side: Side,
    whole: Option<Type>,
    fields: Vec<(String, Type)>,
}

impl Smt for Cast {
    type Config = CastConfig;
    const NAME: &'static str = "Cast";
    const DESCRIPTION: &'static str =
        "Casts fields, or the whole key or value, to another primitive type.";

    fn build(config: CastConfig, side: Side, issues: &mut Vec<ConfigIssue>) -> Option<Self> {
        if config.spec.is_empty() {
            issues.push(ConfigIssue::error(
                "spec",
                "must specify at least one field to cast",
            ));
            return None;
        }
        let mut whole = None;
        let mut fields: Vec<(String, Type)> = Vec::new();
        for mapping in &config.spec {
            let parts: Vec<&str> = mapping.split(':').collect();
            let (field, name) = match parts.as_slice() {
                [name] => (None, *name),
                [field, name] => (Some(field.trim()), *name),
                _ => {
                    issues.push(ConfigIssue::error(
                        "spec",
                        format!("invalid cast mapping \"{mapping}\": expected field:type"),
                    ));
                    continue;
                }
            };
            let Some(ty) = Type::parse(name) else {
                issues.push(ConfigIssue::error(
                    "spec",
                    format!(
                        "invalid type \"{}\" in casting spec (valid: int8, int16, int32, int64, \
                         float32, float64, boolean, string)",
                        name.trim()
                    ),
                ));
                continue;
            };
            match field {
                None => whole = Some(ty),
                Some(field) => match fields.iter_mut().find(|(f, _)| f == field) {
                    Some(existing) => existing.1 = ty,
                    None => fields.push((field.to_string(), ty)),
                },
            }
        }
        if whole.is_some() && config.spec.len() > 1 {
            issues.push(ConfigIssue::error(
                "spec",
                "a cast of the entire value must be the only item of the spec",
            ));
        }
        Some(Cast {
            side,
            whole,
            fields,
        })
    }
}

/// Kafka Connect's cast of one primitive; `what` names the field for errors.
fn cast(value: &Value, to: Type, what: &str) -> Result<Value, ConnectError> {
    let out_of_range = || {
        ConnectError::data(format!(
            "Cast: {what}: value ({}) was out of range for requested data type {to:?}",
            match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        ))
    };
    // The Java view of the input: a long, a double, a boolean or a string.
    enum Input<'a> {
        Long(i64),
        Double(f64),
        Bool(bool),
        Text(&'a str),
    }
    let input = match value {
        Value::Null => return Ok(Value::Null),
        Value::Bool(b) => Input::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Input::Long(i),
            (None, Some(u), _) => Input::Long(u as i64),
            (_, _, Some(f)) => Input::Double(f),
            _ => return Err(out_of_range()),
        },
        Value::String(s) => Input::Text(s),
        other => {
            return Err(ConnectError::data(format!(
                "Cast: {what}: cannot cast from {}; only numbers, booleans and strings can be cast",
                type_name(other)
            )));
        }
    };
    // Integers: Java's narrowing (wraps; doubles saturate to int/long first).
    let integer = |bits: u32| -> Result<Value, ConnectError> {
        let long = match input {
            Input::Long(i) => i,
            Input::Double(f) if bits == 64 => f as i64,
            Input::Double(f) => i64::from(f as i32),
            Input::Bool(b) => i64::from(b),
            Input::Text(s) => {
                let parsed = s.parse::<i64>().map_err(|_| out_of_range())?;
                let fits = match bits {
                    8 => i8::try_from(parsed).is_ok(),
                    16 => i16::try_from(parsed).is_ok(),
                    32 => i32::try_from(parsed).is_ok(),
                    _ => true,
                };
                if !fits {
                    return Err(out_of_range());
                }
                parsed
            }
        };
        Ok(Value::from(match bits {
            8 => i64::from(long as i8),
            16 => i64::from(long as i16),
            32 => i64::from(long as i32),
            _ => long,
        }))
    };
    let float = |f: f64| {
        Number::from_f64(f).map(Value::Number).ok_or_else(|| {
            ConnectError::data(format!("Cast: {what}: {f} cannot be represented in JSON"))
        })
    };
    match to {
        Type::Int8 => integer(8),
        Type::Int16 => integer(16),
        Type::Int32 => integer(32),
        Type::Int64 => integer(64),
        Type::Float32 => {
            let f = match input {
                Input::Long(i) => i as f32,
                Input::Double(d) => d as f32,
                Input::Bool(b) => f32::from(u8::from(b)),
                Input::Text(s) => s.trim().parse::<f32>().map_err(|_| out_of_range())?,
            };
            // Through its shortest decimal form, so 0.1f stays 0.1 (as Jackson writes it).
            float(f.to_string().parse::<f64>().unwrap_or(f64::from(f)))
        }
        Type::Float64 => float(match input {
            Input::Long(i) => i as f64,
            Input::Double(d) => d,
            Input::Bool(b) => f64::from(u8::from(b)),
            Input::Text(s) => s.trim().parse::<f64>().map_err(|_| out_of_range())?,
        }),
        Type::Boolean => Ok(Value::Bool(match input {
            Input::Long(i) => i != 0,
            Input::Double(d) => d as i64 != 0,
            Input::Bool(b) => b,
            Input::Text(s) => s.eq_ignore_ascii_case("true"),
        })),
        Type::String => Ok(Value::String(match input {
            Input::Long(i) => match value.as_u64() {
                Some(u) if i < 0 => u.to_string(),
                _ => i.to_string(),
            },
            Input::Double(d) => double_to_string(d),
            Input::Bool(b) => b.to_string(),
            Input::Text(s) => return Ok(Value::String(s.to_string())),
        })),
    }
}

impl Transform for Cast {
    fn apply(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), ConnectError> {
        let side = self.side.name();
        if let Some(json) = self.side.json_mut(&mut record, "Cast")? {
            if let Some(to) = self.whole {
                *json = cast(json, to, &format!("the record {side}"))?;
            } else {
                let Value::Object(map) = json else {
                    return Err(crate::common::not_an_object("Cast", side, json));
                };
                for (field, to) in &self.fields {
                    // As Kafka Connect (schemaless): a missing field is put as null.
                    let value = map.entry(field.clone()).or_insert(Value::Null);
                    *value = cast(value, *to, &format!("field \"{field}\""))?;
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

    #[test]
    fn kafka_connect_spec_example() {
        // KC docs: spec=age:int32,score:float64 (plus the rest of the types).
        let mut t = build::<Cast>(
            Some(Side::Value),
            &[(
                "spec",
                "age:int32,score:float64,b:boolean,s:string,small:int8,f:float32,n:string",
            )],
        );
        let v = json!({"age": "42", "score": 3, "b": 2, "s": 1.0, "small": 300, "f": 0.1, "n": null, "x": "keep"});
        let r = one(&mut t, record(json!(1), v));
        assert_eq!(
            r.value_json().unwrap(),
            &json!({"age": 42, "score": 3.0, "b": true, "s": "1.0", "small": 44, "f": 0.1, "n": null, "x": "keep"})
        );
    }

    #[test]
    fn whole_value_and_java_conversions() {
        let mut t = build::<Cast>(Some(Side::Key), &[("spec", "int64")]);
        let r = one(&mut t, record(json!(12.9), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!(12));
        let r = one(&mut t, record(json!(true), json!(1)));
        assert_eq!(r.key_json().unwrap(), &json!(1));
        let err = fail(&mut t, record(json!("12.5"), json!(1)));
        assert!(err.message().contains("out of range"), "{err}");
        let mut t = build::<Cast>(Some(Side::Value), &[("spec", "boolean")]);
        let r = one(&mut t, record(json!(1), json!("TRUE")));
        assert_eq!(r.value_json().unwrap(), &json!(true));
        let r = one(&mut t, record(json!(1), json!(0.5)));
        assert_eq!(r.value_json().unwrap(), &json!(false));
        let mut t = build::<Cast>(Some(Side::Value), &[("spec", "int8")]);
        let err = fail(&mut t, record(json!(1), json!("300")));
        assert!(err.message().contains("300"), "{err}");
    }

    #[test]
    fn errors() {
        let mut t = build::<Cast>(Some(Side::Value), &[("spec", "a:int32")]);
        let err = fail(&mut t, record(json!(1), json!({"a": [1]})));
        assert!(err.message().contains("field \"a\""), "{err}");
        fail(&mut t, record(json!(1), json!(5)));
        let mut tomb = record(json!(1), json!(null));
        tomb.value = None;
        assert_eq!(one(&mut t, tomb.clone()), tomb);
        let bad = issues::<Cast>(Some(Side::Value), &[("spec", "a:uint8")]);
        assert!(
            bad[0].starts_with("spec: invalid type \"uint8\""),
            "{bad:?}"
        );
        let bad = issues::<Cast>(Some(Side::Value), &[("spec", "int8,a:int16")]);
        assert!(
            bad[0].starts_with("spec: a cast of the entire value"),
            "{bad:?}"
        );
        assert_eq!(issues::<Cast>(Some(Side::Value), &[("spec", "")]).len(), 1);
        assert_eq!(
            issues::<Cast>(Some(Side::Value), &[("spec", "a:b:c")]).len(),
            1
        );
    }
}
