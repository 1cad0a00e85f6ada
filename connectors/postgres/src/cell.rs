//! Values converted for a column's type, and their two wire forms.
//!
//! A JSON value is converted once, in Rust, into a [`Cell`] holding the column's value
//! (an integer, a float, a UUID, microseconds since 2000-01-01, …). From it the sink
//! writes either PostgreSQL's binary format (binary COPY, typed `unnest` arrays) or the
//! text the type's input function reads (text COPY, `text[]` parameters).
//!
//! Binary is only produced where it means exactly what the text would: a value whose
//! meaning depends on the server (a timestamp without offset for a `timestamptz` column
//! depends on the session's `TimeZone`) or that PostgreSQL would judge differently
//! (a float string that overflows, a numeric beyond what we encode) stays text
//! ([`Cell::Text`]), and the rows it travels with are written in text form.

use std::borrow::Cow;
use std::error::Error;

use bytes::{BufMut, BytesMut};
use serde_json::Value;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};

/// How a JSON value is converted for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeKind {
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Text,
    Timestamptz,
    Timestamp,
    Date,
    Uuid,
    Json,
    Jsonb,
    /// Anything else: strings are passed to the type's input function as they are.
    Other,
}

impl TypeKind {
    pub(crate) fn from_typname(name: &str) -> TypeKind {
        match name {
            "int2" => TypeKind::Int2,
            "int4" => TypeKind::Int4,
            "int8" => TypeKind::Int8,
            "numeric" => TypeKind::Numeric,
            "float4" => TypeKind::Float4,
            "float8" => TypeKind::Float8,
            "bool" => TypeKind::Bool,
            "text" | "varchar" | "bpchar" | "citext" => TypeKind::Text,
            "timestamptz" => TypeKind::Timestamptz,
            "timestamp" => TypeKind::Timestamp,
            "date" => TypeKind::Date,
            "uuid" => TypeKind::Uuid,
            "json" => TypeKind::Json,
            "jsonb" => TypeKind::Jsonb,
            // `name` converts like text, but its binary input rejects an over-long name
            // that its text input truncates: it stays text.
            _ => TypeKind::Other,
        }
    }

    /// The array type a column of this kind is bound as in `unnest` when every value has
    /// a binary form; `None`: always `text[]` (cast by the type's input function).
    pub(crate) fn array_type(self) -> Option<&'static str> {
        Some(match self {
            TypeKind::Int2 => "int2[]",
            TypeKind::Int4 => "int4[]",
            TypeKind::Int8 => "int8[]",
            TypeKind::Numeric => "numeric[]",
            TypeKind::Float4 => "float4[]",
            TypeKind::Float8 => "float8[]",
            TypeKind::Bool => "bool[]",
            TypeKind::Text => "text[]",
            TypeKind::Timestamptz => "timestamptz[]",
            TypeKind::Timestamp => "timestamp[]",
            TypeKind::Date => "date[]",
            TypeKind::Uuid => "uuid[]",
            TypeKind::Json => "json[]",
            TypeKind::Jsonb => "jsonb[]",
            TypeKind::Other => return None,
        })
    }
}

/// One value converted for its column; strings are borrowed from the record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    /// `smallint` / `integer` / `bigint`, already range-checked for the column.
    Int(i64),
    Float8(f64),
    Float4(f32),
    Bool(bool),
    /// A JSON number for a `numeric` column, as serde_json writes it (always a literal
    /// [`Decimal::parse`] accepts; checked on conversion).
    Number(&'a serde_json::Number),
    /// A numeric string [`Decimal::parse`] accepts, as given (so its precision is kept).
    Numeric(Cow<'a, str>),
    /// Text for the type's input function. Binary as well for text and JSON columns (the
    /// same bytes); for any other column it is the text-only form of a value.
    Text(Cow<'a, str>),
    Uuid([u8; 16]),
    /// `timestamp` / `timestamptz`: microseconds since 2000-01-01 00:00 (UTC for
    /// `timestamptz`, wall time for `timestamp`), PostgreSQL's own representation; and
    /// the string it was read from, which the type's input reads as the same value.
    Micros(i64, Option<&'a str>),
    /// `date`: days since 2000-01-01, and the string it was read from.
    Days(i32, Option<&'a str>),
}

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// 2000-01-01 in days since 0001-01-01 (chrono's `num_days_from_ce`, day 1 = 0001-01-01).
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;

type BoxError = Box<dyn Error + Sync + Send>;

impl Cell<'_> {
    /// True when [`Cell::write_binary`] can write this value for a column of `kind`.
    pub(crate) fn has_binary(&self, kind: TypeKind) -> bool {
        match self {
            Cell::Text(_) => matches!(kind, TypeKind::Text | TypeKind::Json | TypeKind::Jsonb),
            _ => kind != TypeKind::Other,
        }
    }

    /// Writes PostgreSQL's binary form of the value for a column of `kind`.
    pub(crate) fn write_binary(
        &self,
        kind: TypeKind,
        out: &mut BytesMut,
    ) -> Result<IsNull, BoxError> {
        match self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Int(n) => match kind {
                TypeKind::Int2 => out.put_i16(i16::try_from(*n)?),
                TypeKind::Int4 => out.put_i32(i32::try_from(*n)?),
                _ => out.put_i64(*n),
            },
            Cell::Float8(f) => out.put_f64(*f),
            Cell::Float4(f) => out.put_f32(*f),
            Cell::Bool(b) => out.put_u8(u8::from(*b)),
            Cell::Number(n) => {
                let text = NumberText::of(n).ok_or("a number too long to encode")?;
                Decimal::parse(text.as_str())
                    .ok_or_else(|| format!("{n} has no binary numeric form"))?
                    .write_binary(out)
            }
            Cell::Numeric(text) => Decimal::parse(text)
                .ok_or_else(|| format!("{text} has no binary numeric form"))?
                .write_binary(out),
            Cell::Text(text) => {
                if kind == TypeKind::Jsonb {
                    out.put_u8(1); // jsonb's binary format version
                }
                out.put_slice(text.as_bytes());
            }
            Cell::Uuid(bytes) => out.put_slice(bytes),
            Cell::Micros(us, _) => out.put_i64(*us),
            Cell::Days(days, _) => out.put_i32(*days),
        }
        Ok(IsNull::No)
    }

    /// The text the input function of a `kind` column reads; `None` is NULL.
    pub(crate) fn text(&self, kind: TypeKind) -> Option<Cow<'_, str>> {
        Some(match self {
            Cell::Null => return None,
            Cell::Int(n) => Cow::Owned(n.to_string()),
            Cell::Float8(f) => Cow::Owned(f.to_string()),
            Cell::Float4(f) => Cow::Owned(f.to_string()),
            Cell::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Cell::Number(n) => Cow::Owned(n.to_string()),
            Cell::Numeric(text) | Cell::Text(text) => Cow::Borrowed(text),
            Cell::Uuid(bytes) => {
                Cow::Owned(uuid::Uuid::from_bytes(*bytes).hyphenated().to_string())
            }
            Cell::Micros(_, Some(text)) | Cell::Days(_, Some(text)) => Cow::Borrowed(text),
            Cell::Micros(us, None) => {
                let t =
                    chrono::DateTime::from_timestamp_micros(us.saturating_add(PG_EPOCH_MICROS))?;
                Cow::Owned(if kind == TypeKind::Timestamptz {
                    t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
                } else {
                    t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
                })
            }
            Cell::Days(days, None) => Cow::Owned(
                chrono::NaiveDate::from_num_days_from_ce_opt(
                    days.checked_add(PG_EPOCH_DAYS_FROM_CE)?,
                )?
                .format("%Y-%m-%d")
                .to_string(),
            ),
        })
    }

    /// Appends an encoding of the value that is equal for equal values, to tell repeated
    /// primary keys apart within a statement.
    pub(crate) fn push_key(&self, out: &mut Vec<u8>) {
        match self {
            Cell::Null => out.push(0),
            Cell::Int(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Cell::Float8(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Cell::Float4(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Cell::Bool(b) => out.extend_from_slice(&[4, u8::from(*b)]),
            Cell::Number(n) => {
                out.push(5);
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(0);
            }
            // Text never holds NUL (conversion refuses it), so NUL ends it unambiguously.
            Cell::Numeric(text) | Cell::Text(text) => {
                out.push(5);
                out.extend_from_slice(text.as_bytes());
                out.push(0);
            }
            Cell::Uuid(bytes) => {
                out.push(6);
                out.extend_from_slice(bytes);
            }
            Cell::Micros(us, _) => {
                out.push(7);
                out.extend_from_slice(&us.to_le_bytes());
            }
            Cell::Days(days, _) => {
                out.push(8);
                out.extend_from_slice(&days.to_le_bytes());
            }
        }
    }
}

/// One value of a binary COPY row.
#[derive(Debug)]
pub(crate) struct CellRef<'a> {
    pub(crate) kind: TypeKind,
    pub(crate) cell: &'a Cell<'a>,
}

impl ToSql for CellRef<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.cell.write_binary(self.kind, out)
    }

    // The value was converted for this very column; the type only names it.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One column of a statement's rows, bound as a one-dimensional array: binary elements
/// of the column's array type, or text elements of a `text[]`.
#[derive(Debug)]
pub(crate) struct ColumnArray<'a> {
    pub(crate) kind: TypeKind,
    pub(crate) binary: bool,
    pub(crate) cells: Vec<&'a Cell<'a>>,
}

impl ToSql for ColumnArray<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let Kind::Array(member) = ty.kind() else {
            return Err(format!("expected an array type, got {ty}").into());
        };
        out.put_i32(1); // dimensions
        out.put_i32(i32::from(self.cells.iter().any(|c| **c == Cell::Null)));
        out.put_u32(member.oid());
        out.put_i32(i32::try_from(self.cells.len())?);
        out.put_i32(1); // lower bound
        for cell in &self.cells {
            let at = out.len();
            out.put_i32(0);
            let written = if self.binary {
                cell.write_binary(self.kind, out)?
            } else {
                match cell.text(self.kind) {
                    Some(text) => {
                        out.put_slice(text.as_bytes());
                        IsNull::No
                    }
                    None => IsNull::Yes,
                }
            };
            let len = match written {
                IsNull::Yes => -1,
                IsNull::No => i32::try_from(out.len() - at - 4)?,
            };
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(_))
    }

    to_sql_checked!();
}

/// A JSON number's text, formatted on the stack (the longest serde_json writes is 24
/// bytes: `-1.7976931348623157e+308`).
struct NumberText {
    buf: [u8; 40],
    len: usize,
}

impl NumberText {
    fn of(n: &serde_json::Number) -> Option<NumberText> {
        use std::fmt::Write;
        let mut text = NumberText {
            buf: [0; 40],
            len: 0,
        };
        write!(text, "{n}").ok()?;
        Some(text)
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are written in.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for NumberText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A decimal literal as PostgreSQL's `numeric` input reads it: sign, digits before and
/// after the point, exponent.
#[derive(Debug, PartialEq)]
struct Decimal<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: i32,
}

/// Bounds beyond which a numeric stays text, so PostgreSQL judges it (its own limits are
/// wider; nothing real comes near these).
const MAX_NUMERIC_DIGITS: usize = 1000;
const MAX_NUMERIC_EXPONENT: i32 = 1000;

impl<'a> Decimal<'a> {
    /// `[+-]digits[.digits][e[+-]digits]` (digits on at least one side of the point);
    /// `None` for anything else (`NaN`, `Infinity`, …), which stays text.
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        let (mantissa, exp) = match rest.iter().position(|b| matches!(b, b'e' | b'E')) {
            Some(at) => {
                let digits = std::str::from_utf8(&rest[at + 1..]).ok()?;
                let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (&rest[..at], digits.parse::<i32>().ok()?)
            }
            None => (rest, 0),
        };
        let (int, frac) = match mantissa.iter().position(|b| *b == b'.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, &mantissa[mantissa.len()..]),
        };
        let digits = int.len() + frac.len();
        let valid = digits > 0
            && digits <= MAX_NUMERIC_DIGITS
            && exp.abs() <= MAX_NUMERIC_EXPONENT
            && int.iter().chain(frac).all(u8::is_ascii_digit);
        valid.then_some(Decimal {
            negative,
            int,
            frac,
            exp,
        })
    }

    /// `numeric`'s binary form: digit count, weight, sign, display scale, then base-10000
    /// digits, most significant first. The display scale is what the text input gives
    /// (`1.50` keeps two decimals, `1.5e-7` has eight).
    fn write_binary(&self, out: &mut BytesMut) {
        const POW10: [i16; 4] = [1, 10, 100, 1000];
        let dscale = (self.frac.len() as i32 - self.exp).max(0);
        let all = |k: usize| -> u8 {
            match self.int.get(k) {
                Some(d) => d - b'0',
                None => self.frac[k - self.int.len()] - b'0',
            }
        };
        let n = self.int.len() + self.frac.len();
        let first = (0..n).find(|&k| all(k) != 0);
        let Some(first) = first else {
            out.put_i16(0);
            out.put_i16(0);
            out.put_u16(0x0000);
            out.put_u16(dscale as u16);
            return;
        };
        let last = (0..n).rev().find(|&k| all(k) != 0).unwrap_or(first);
        // Digit k stands for 10^(point - 1 - k); base-10000 digit g covers 10^(4g..4g+3).
        let point = self.int.len() as i32 + self.exp;
        let power = |k: usize| point - 1 - k as i32;
        let weight = power(first).div_euclid(4);
        let lowest = power(last).div_euclid(4);
        out.put_i16((weight - lowest + 1) as i16);
        out.put_i16(weight as i16);
        out.put_u16(if self.negative { 0x4000 } else { 0x0000 });
        out.put_u16(dscale as u16);
        let mut group = weight;
        let mut acc: i16 = 0;
        for k in first..=last {
            let e = power(k);
            while e.div_euclid(4) < group {
                out.put_i16(acc);
                acc = 0;
                group -= 1;
            }
            acc += i16::from(all(k)) * POW10[e.rem_euclid(4) as usize];
        }
        out.put_i16(acc);
    }
}

// ---------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------

/// Converts one JSON value for a column of `kind`; `Err` says why it cannot be written.
pub(crate) fn cell(kind: TypeKind, value: &Value) -> Result<Cell<'_>, String> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let cell = match kind {
        TypeKind::Int2 | TypeKind::Int4 | TypeKind::Int8 => {
            let n = to_i64(value)?;
            let (min, max) = match kind {
                TypeKind::Int2 => (i16::MIN as i64, i16::MAX as i64),
                TypeKind::Int4 => (i32::MIN as i64, i32::MAX as i64),
                _ => (i64::MIN, i64::MAX),
            };
            if n < min || n > max {
                return Err(format!("{n} is out of range for the column type"));
            }
            Cell::Int(n)
        }
        TypeKind::Numeric => match value {
            Value::Number(n)
                if NumberText::of(n).is_some_and(|t| Decimal::parse(t.as_str()).is_some()) =>
            {
                Cell::Number(n)
            }
            Value::String(s) if Decimal::parse(s.trim()).is_some() => {
                Cell::Numeric(Cow::Borrowed(s.trim()))
            }
            _ => Cell::Text(Cow::Owned(number_text(value)?)),
        },
        TypeKind::Float8 => match value {
            Value::Number(n) => match n.as_f64() {
                Some(f) => Cell::Float8(f),
                None => Cell::Text(Cow::Owned(n.to_string())),
            },
            _ => {
                let text = number_text(value)?;
                match text.parse::<f64>() {
                    Ok(f) if exact_float(f.is_finite(), f == 0.0, &text) => Cell::Float8(f),
                    _ => Cell::Text(Cow::Owned(text)),
                }
            }
        },
        TypeKind::Float4 => {
            // Parsed from the decimal text, as float4's input does: going through f64
            // could round twice.
            let text = number_text(value)?;
            match text.parse::<f32>() {
                Ok(f) if exact_float(f.is_finite(), f == 0.0, &text) => Cell::Float4(f),
                _ => Cell::Text(Cow::Owned(text)),
            }
        }
        TypeKind::Bool => match value {
            Value::Bool(b) => Cell::Bool(*b),
            Value::Number(n) if n.as_i64() == Some(0) => Cell::Bool(false),
            Value::Number(n) if n.as_i64() == Some(1) => Cell::Bool(true),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "on" => Cell::Bool(true),
                "false" | "f" | "no" | "n" | "0" | "off" => Cell::Bool(false),
                _ => return Err(format!("expected a boolean, got {}", describe(value))),
            },
            other => return Err(format!("expected a boolean, got {}", describe(other))),
        },
        TypeKind::Text | TypeKind::Other => match value {
            Value::String(s) => Cell::Text(Cow::Borrowed(s)),
            other => Cell::Text(Cow::Owned(other.to_string())),
        },
        TypeKind::Json | TypeKind::Jsonb => Cell::Text(Cow::Owned(value.to_string())),
        TypeKind::Uuid => match value {
            Value::String(s) => Cell::Uuid(
                uuid::Uuid::parse_str(s.trim())
                    .map_err(|e| format!("invalid uuid {}: {e}", describe(value)))?
                    .into_bytes(),
            ),
            other => return Err(format!("expected a uuid string, got {}", describe(other))),
        },
        TypeKind::Timestamptz | TypeKind::Timestamp | TypeKind::Date => time_cell(kind, value)?,
    };
    if let Cell::Text(text) | Cell::Numeric(text) = &cell
        && text.contains('\0')
    {
        return Err("text contains a NUL character, which PostgreSQL cannot store".to_string());
    }
    Ok(cell)
}

/// The text of a JSON number or of a numeric string (trimmed).
fn number_text(value: &Value) -> Result<String, String> {
    match value {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) if s.trim().parse::<f64>().is_ok() => Ok(s.trim().to_string()),
        other => Err(format!("expected a number, got {}", describe(other))),
    }
}

/// True when a parsed float is what PostgreSQL's float input makes of the same text: it
/// refuses overflow to infinity and underflow to zero (and takes `NaN`/`Infinity` its
/// own way), so those stay text for it to judge.
fn exact_float(finite: bool, zero: bool, text: &str) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    finite && (!zero || !mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)))
}

fn to_i64(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) => Ok(f as i64),
                _ => Err(format!("expected an integer, got {n}")),
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, got {}", describe(value))),
        other => Err(format!("expected an integer, got {}", describe(other))),
    }
}

/// A date and time as written in a string, with or without an offset.
enum Written {
    Offset(chrono::DateTime<chrono::FixedOffset>),
    Naive(chrono::NaiveDateTime),
    Date(chrono::NaiveDate),
}

fn parse_time(text: &str) -> Option<Written> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(t) = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%#z"))
    {
        return Some(Written::Offset(t));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
    {
        return Some(Written::Naive(t));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(Written::Date)
}

/// Microseconds since 2000-01-01 of a wall time, when PostgreSQL's text input would
/// read exactly that: years 1–9999 (it has no year 0), whole microseconds (it rounds
/// finer fractions), no leap second (it moves those to the next minute).
fn micros(t: chrono::NaiveDateTime) -> Option<i64> {
    use chrono::{Datelike, Timelike};
    let exact = (1..=9999).contains(&t.year())
        && t.nanosecond() < 1_000_000_000
        && t.nanosecond().is_multiple_of(1000);
    exact.then(|| t.and_utc().timestamp_micros() - PG_EPOCH_MICROS)
}

fn days(d: chrono::NaiveDate) -> Option<i32> {
    use chrono::Datelike;
    (1..=9999)
        .contains(&d.year())
        .then(|| d.num_days_from_ce() - PG_EPOCH_DAYS_FROM_CE)
}

fn time_cell(kind: TypeKind, value: &Value) -> Result<Cell<'_>, String> {
    use chrono::DateTime;
    let expected = || {
        format!(
            "expected an ISO-8601 date/time or epoch milliseconds, got {}",
            describe(value)
        )
    };
    match value {
        Value::Number(n) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("expected epoch milliseconds, got {n}"))?;
            let dt = DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| format!("epoch milliseconds {ms} out of range"))?;
            let utc = dt.naive_utc();
            let exact = match kind {
                TypeKind::Date => days(utc.date()).map(|d| Cell::Days(d, None)),
                _ => micros(utc).map(|us| Cell::Micros(us, None)),
            };
            Ok(exact.unwrap_or_else(|| {
                Cell::Text(Cow::Owned(match kind {
                    TypeKind::Date => dt.format("%Y-%m-%d").to_string(),
                    TypeKind::Timestamp => dt.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
                    _ => dt.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
                }))
            }))
        }
        Value::String(s) => {
            let text = s.trim();
            let written = parse_time(text).ok_or_else(expected)?;
            // `timestamp` and `date` ignore a written offset, as PostgreSQL does; a
            // `timestamptz` without one is in the session's time zone, which only the
            // server knows, so that stays text.
            let exact = match (kind, written) {
                (TypeKind::Timestamptz, Written::Offset(t)) => micros(t.naive_local())
                    .map(|_| t.naive_utc().and_utc().timestamp_micros() - PG_EPOCH_MICROS),
                (TypeKind::Timestamptz, _) => None,
                (TypeKind::Date, Written::Offset(t)) => days(t.naive_local().date()).map(i64::from),
                (TypeKind::Date, Written::Naive(t)) => days(t.date()).map(i64::from),
                (TypeKind::Date, Written::Date(d)) => days(d).map(i64::from),
                (_, Written::Offset(t)) => micros(t.naive_local()),
                (_, Written::Naive(t)) => micros(t),
                (_, Written::Date(d)) => micros(d.and_time(chrono::NaiveTime::MIN)),
            };
            let exact = exact.and_then(|n| match kind {
                TypeKind::Date => i32::try_from(n).ok().map(|d| Cell::Days(d, Some(text))),
                _ => Some(Cell::Micros(n, Some(text))),
            });
            Ok(exact.unwrap_or(Cell::Text(Cow::Borrowed(text))))
        }
        _ => Err(expected()),
    }
}

/// A value for an error message, shortened.
pub(crate) fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let short: String = text.chars().take(77).collect();
        format!("{short}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binary(kind: TypeKind, v: Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        let c = cell(kind, &v).unwrap();
        assert!(c.has_binary(kind), "{c:?}");
        c.write_binary(kind, &mut out).unwrap();
        out.to_vec()
    }

    fn numeric(text: &str) -> Vec<i16> {
        let mut out = BytesMut::new();
        Decimal::parse(text).unwrap().write_binary(&mut out);
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_encode_as_postgresql_stores_them() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(numeric("12.34"), vec![2, 0, 0, 2, 12, 3400]);
        assert_eq!(numeric("1.50"), vec![2, 0, 0, 2, 1, 5000]);
        assert_eq!(
            numeric("-12345678.9"),
            vec![3, 1, 0x4000, 1, 1234, 5678, 9000]
        );
        assert_eq!(numeric("0"), vec![0, 0, 0, 0]);
        assert_eq!(numeric("-0.00"), vec![0, 0, 0, 2]);
        assert_eq!(numeric("1e20"), vec![1, 5, 0, 0, 1]);
        assert_eq!(numeric("1.5e-7"), vec![1, -2, 0, 8, 15]);
        assert_eq!(numeric("1000000000.0"), vec![1, 2, 0, 1, 10]);
        assert_eq!(numeric(".5"), vec![1, -1, 0, 1, 5000]);
        assert_eq!(numeric("10000"), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric("0.0001"), vec![1, -1, 0, 4, 1]);
        assert_eq!(numeric("100.0001"), vec![2, 0, 0, 4, 100, 1]);
        assert_eq!(numeric("100.00000001"), vec![3, 0, 0, 8, 100, 0, 1]);
        assert_eq!(numeric("100.000001"), vec![3, 0, 0, 6, 100, 0, 100]);
        for bad in [
            "NaN", "inf", "1e", "e5", ".", "1.2.3", "1e1001", "--1", "1_0",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_get_binary_forms_only_where_they_mean_what_the_text_means() {
        assert_eq!(binary(TypeKind::Int2, json!("7")), vec![0, 7]);
        assert_eq!(binary(TypeKind::Int8, json!(7.0)), 7i64.to_be_bytes());
        assert_eq!(binary(TypeKind::Jsonb, json!({"a": 1})), b"\x01{\"a\":1}");
        assert_eq!(binary(TypeKind::Json, json!([1])), b"[1]");
        assert_eq!(binary(TypeKind::Bool, json!("off")), vec![0]);
        assert_eq!(
            binary(TypeKind::Timestamptz, json!("2000-01-01T01:00:00+01:00")),
            0i64.to_be_bytes()
        );
        assert_eq!(
            binary(
                TypeKind::Timestamp,
                json!("2000-01-01T01:00:00.000001+01:00")
            ),
            3_600_000_001i64.to_be_bytes()
        );
        assert_eq!(
            binary(TypeKind::Timestamptz, json!(946_684_800_001i64)),
            1000i64.to_be_bytes()
        );
        assert_eq!(
            binary(TypeKind::Date, json!("2000-01-02T23:00:00-05:00")),
            1i32.to_be_bytes()
        );
        assert_eq!(
            binary(TypeKind::Date, json!("1999-12-31")),
            (-1i32).to_be_bytes()
        );
        assert_eq!(binary(TypeKind::Float4, json!(0.1)), 0.1f32.to_be_bytes());

        let text_only = |kind: TypeKind, v: Value| {
            let c = cell(kind, &v).unwrap();
            assert!(!c.has_binary(kind), "{kind:?} {v}: {c:?}");
            c.text(kind).map(|t| t.into_owned())
        };
        // The session's time zone decides these.
        assert_eq!(
            text_only(TypeKind::Timestamptz, json!("2024-05-01 10:00:00")),
            Some("2024-05-01 10:00:00".into())
        );
        assert!(text_only(TypeKind::Timestamptz, json!("2024-05-01")).is_some());
        // PostgreSQL rounds below a microsecond, and refuses year 0, overflow, underflow.
        assert!(text_only(TypeKind::Timestamp, json!("2024-05-01T10:00:00.1234565")).is_some());
        assert!(text_only(TypeKind::Date, json!("0000-01-01")).is_some());
        assert!(text_only(TypeKind::Float8, json!("1e400")).is_some());
        assert!(text_only(TypeKind::Float8, json!("1e-400")).is_some());
        assert!(text_only(TypeKind::Float4, json!(1e39)).is_some());
        assert!(text_only(TypeKind::Numeric, json!("NaN")).is_some());
        assert!(text_only(TypeKind::Other, json!("12:00")).is_some());
        assert!(
            cell(TypeKind::Float8, &json!("-0.0"))
                .unwrap()
                .has_binary(TypeKind::Float8)
        );
    }

    #[test]
    fn text_forms_round_trip_the_binary_values() {
        let text =
            |kind: TypeKind, v: Value| cell(kind, &v).unwrap().text(kind).map(|t| t.into_owned());
        assert_eq!(
            text(TypeKind::Timestamp, json!(1_714_557_600_500i64)).as_deref(),
            Some("2024-05-01 10:00:00.500")
        );
        // A string read as a time is sent as written: the type's input reads it the same.
        assert_eq!(
            text(TypeKind::Timestamp, json!(" 2024-05-01T10:00:00.5+02:00")).as_deref(),
            Some("2024-05-01T10:00:00.5+02:00")
        );
        assert_eq!(
            text(TypeKind::Date, json!(1_714_557_600_500i64)).as_deref(),
            Some("2024-05-01")
        );
        assert_eq!(
            text(TypeKind::Date, json!("2024-02-29")).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            text(
                TypeKind::Uuid,
                json!("AA53B400-A2B1-4DF4-B237-95AFCDD7FFC2")
            )
            .as_deref(),
            Some("aa53b400-a2b1-4df4-b237-95afcdd7ffc2")
        );
        assert_eq!(
            text(TypeKind::Float8, json!(1e20)).as_deref(),
            Some("100000000000000000000")
        );
        assert_eq!(text(TypeKind::Int4, Value::Null), None);
    }
}
