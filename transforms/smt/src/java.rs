//! The bits of Java that Kafka Connect configs are written in: `SimpleDateFormat` patterns,
//! `Matcher.replaceFirst` replacement strings, and `Double.toString`.

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, Utc};
use regex::Captures;

/// A `SimpleDateFormat` pattern, translated to chrono once. Times are formatted in UTC,
/// as Kafka Connect sets the formats' time zone to UTC.
#[derive(Debug, Clone)]
pub(crate) struct DateFormat {
    format: Vec<Item<'static>>,
    parse: Vec<Item<'static>>,
}

impl DateFormat {
    /// Translates `pattern`; the error names what is not supported.
    pub(crate) fn new(pattern: &str) -> Result<Self, String> {
        let (format, parse) = translate(pattern)?;
        let compile = |s: &str| {
            StrftimeItems::new(s)
                .parse_to_owned()
                .map_err(|e| format!("cannot use pattern \"{pattern}\": {e}"))
        };
        Ok(DateFormat {
            format: compile(&format)?,
            parse: compile(&parse)?,
        })
    }

    /// Formats epoch milliseconds; `None` when out of chrono's range.
    pub(crate) fn format(&self, millis: i64) -> Option<String> {
        let time = DateTime::<Utc>::from_timestamp_millis(millis)?;
        Some(time.format_with_items(self.format.iter()).to_string())
    }

    /// Parses text into epoch milliseconds. Fields the pattern lacks default as in Java
    /// (1970-01-01, midnight, UTC).
    pub(crate) fn parse(&self, text: &str) -> Result<i64, String> {
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text, self.parse.iter()).map_err(|e| e.to_string())?;
        let fix = |r: chrono::format::ParseResult<()>| r.map_err(|e| e.to_string());
        if parsed.year().is_none() && parsed.year_mod_100().is_none() {
            fix(parsed.set_year(1970))?;
        }
        if parsed.month().is_none() && parsed.ordinal().is_none() {
            fix(parsed.set_month(1))?;
        }
        if parsed.day().is_none() && parsed.ordinal().is_none() {
            fix(parsed.set_day(1))?;
        }
        if parsed.hour_div_12().is_none() {
            fix(parsed.set_hour(0))?;
        }
        if parsed.minute().is_none() {
            fix(parsed.set_minute(0))?;
        }
        let offset = parsed.offset().unwrap_or(0);
        let naive = parsed
            .to_naive_datetime_with_offset(offset)
            .map_err(|e| e.to_string())?;
        Ok(naive.and_utc().timestamp_millis() - i64::from(offset) * 1000)
    }
}

/// Parses an ISO-8601 timestamp (`2024-05-01T12:30:00Z`, with or without offset, fraction,
/// or time) into epoch milliseconds.
pub(crate) fn parse_iso8601(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for pattern in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, pattern) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(|d| {
        d.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
    })
}

/// Translates a `SimpleDateFormat` pattern to two strftime strings: one to format with
/// (zones always print as UTC) and one to parse with (zones accept any offset).
fn translate(pattern: &str) -> Result<(String, String), String> {
    let mut format = String::new();
    let mut parse = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let literal = |c: char, format: &mut String, parse: &mut String| {
        if c == '%' {
            format.push_str("%%");
            parse.push_str("%%");
        } else {
            format.push(c);
            parse.push(c);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // '' is a quote; 'text' is literal text.
            if chars.get(i + 1) == Some(&'\'') {
                literal('\'', &mut format, &mut parse);
                i += 2;
                continue;
            }
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated quote in pattern \"{pattern}\"")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        literal('\'', &mut format, &mut parse);
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&q) => {
                        literal(q, &mut format, &mut parse);
                        i += 1;
                    }
                }
            }
            continue;
        }
        if !c.is_ascii_alphabetic() {
            literal(c, &mut format, &mut parse);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        i += n;
        let (f, p): (&str, &str) = match (c, n) {
            ('y', 2) => ("%y", "%y"),
            ('y', _) => ("%Y", "%Y"),
            ('M', 1) => ("%-m", "%m"),
            ('M', 2) => ("%m", "%m"),
            ('M', 3) => ("%b", "%b"),
            ('M', _) => ("%B", "%B"),
            ('d', 1) => ("%-d", "%d"),
            ('d', _) => ("%d", "%d"),
            ('H', 1) => ("%-H", "%H"),
            ('H', _) => ("%H", "%H"),
            ('h', 1) => ("%-I", "%I"),
            ('h', _) => ("%I", "%I"),
            ('m', 1) => ("%-M", "%M"),
            ('m', _) => ("%M", "%M"),
            ('s', 1) => ("%-S", "%S"),
            ('s', _) => ("%S", "%S"),
            ('S', 3) => ("%3f", "%3f"),
            ('E', 1..=3) => ("%a", "%a"),
            ('E', _) => ("%A", "%A"),
            ('a', _) => ("%p", "%p"),
            ('D', _) => ("%j", "%j"),
            ('Z', _) => ("%z", "%#z"),
            ('X', _) => ("Z", "%#z"),
            (other, n) => {
                return Err(format!(
                    "pattern letter '{}' is not supported (supported: yyyy yy M MM MMM MMMM d dd \
                     H HH h hh m mm s ss SSS E EEEE a D Z X, and 'quoted' text)",
                    other.to_string().repeat(n)
                ));
            }
        };
        format.push_str(f);
        parse.push_str(p);
    }
    Ok((format, parse))
}

/// A `java.util.regex` replacement string (`$1`, `${name}`, `\$`), parsed once against the
/// regex it is used with.
#[derive(Debug, Clone)]
pub(crate) struct Replacement(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Group(usize),
    Named(String),
}

impl Replacement {
    /// Parses `text` as Java's `Matcher.appendReplacement` does, for a regex with
    /// `group_count` groups (not counting group 0) and these group names.
    pub(crate) fn parse<'a>(
        text: &str,
        group_count: usize,
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => literal.push(escaped),
                    None => return Err("character to be escaped is missing".into()),
                },
                '$' => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    match chars.next() {
                        None => {
                            return Err("illegal group reference: group index is missing".into());
                        }
                        Some('{') => {
                            let mut name = String::new();
                            loop {
                                match chars.next() {
                                    Some('}') => break,
                                    Some(ch) if ch.is_ascii_alphanumeric() => name.push(ch),
                                    _ => {
                                        return Err(
                                            "named capturing group is missing trailing '}'".into(),
                                        );
                                    }
                                }
                            }
                            if !names.clone().any(|n| n == name) {
                                return Err(format!("no group with name {{{name}}}"));
                            }
                            parts.push(Part::Named(name));
                        }
                        Some(d) if d.is_ascii_digit() => {
                            let mut group = d as usize - '0' as usize;
                            if group > group_count {
                                return Err(format!("no group {group}"));
                            }
                            // Java takes more digits only while they still name a group.
                            while let Some(&next) = chars.peek() {
                                let Some(digit) = next.to_digit(10) else {
                                    break;
                                };
                                let longer = group * 10 + digit as usize;
                                if longer > group_count {
                                    break;
                                }
                                group = longer;
                                chars.next();
                            }
                            parts.push(Part::Group(group));
                        }
                        Some(_) => return Err("illegal group reference".into()),
                    }
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Replacement(parts))
    }

    /// Appends the replacement for `caps` to `out`; a group that did not take part in the
    /// match adds nothing.
    pub(crate) fn expand(&self, caps: &Captures<'_>, out: &mut String) {
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Group(g) => out.push_str(caps.get(*g).map_or("", |m| m.as_str())),
                Part::Named(n) => out.push_str(caps.name(n).map_or("", |m| m.as_str())),
            }
        }
    }
}

/// `Double.toString`: `1.0`, `0.5`, `1.0E10`, `1.0E-5`.
pub(crate) fn double_to_string(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = d.abs();
    if abs == 0.0 || (1e-3..1e7).contains(&abs) {
        let mut s = d.to_string();
        if !s.contains('.') {
            s.push_str(".0");
        }
        s
    } else {
        let s = format!("{d:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        if mantissa.contains('.') {
            format!("{mantissa}E{exponent}")
        } else {
            format!("{mantissa}.0E{exponent}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_formats_translate_and_round_trip() {
        let f = DateFormat::new("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").unwrap();
        // 2017-01-01T00:00:00.000Z
        assert_eq!(f.format(1483228800000).unwrap(), "2017-01-01T00:00:00.000Z");
        assert_eq!(f.parse("2017-01-01T00:00:00.123Z").unwrap(), 1483228800123);
        let d = DateFormat::new("yyyyMMdd").unwrap();
        assert_eq!(d.format(1483228800000).unwrap(), "20170101");
        assert_eq!(d.parse("20170101").unwrap(), 1483228800000);
        let z = DateFormat::new("yyyy-MM-dd HH:mm:ssZ").unwrap();
        assert_eq!(z.format(0).unwrap(), "1970-01-01 00:00:00+0000");
        assert_eq!(z.parse("1970-01-01 01:00:00+0100").unwrap(), 0);
        let q = DateFormat::new("HH 'o''clock' 100%").unwrap();
        assert_eq!(q.format(3_600_000).unwrap(), "01 o'clock 100%");
        assert_eq!(q.parse("01 o'clock 100%").unwrap(), 3_600_000);
        assert!(DateFormat::new("yyyy-ww").unwrap_err().contains("'ww'"));
        assert!(DateFormat::new("yyyy'T").is_err());
    }

    #[test]
    fn iso8601_forms() {
        assert_eq!(parse_iso8601("2017-01-01T00:00:00Z"), Some(1483228800000));
        assert_eq!(
            parse_iso8601("2017-01-01T01:00:00+01:00"),
            Some(1483228800000)
        );
        assert_eq!(parse_iso8601("2017-01-01T00:00:00.5"), Some(1483228800500));
        assert_eq!(parse_iso8601("2017-01-01"), Some(1483228800000));
        assert_eq!(parse_iso8601("yesterday"), None);
    }

    #[test]
    fn java_replacements() {
        let re = regex::Regex::new("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(?<last>l)").unwrap();
        let caps = re.captures("abcdefghijkl").unwrap();
        let names = re.capture_names().flatten();
        let expand = |text: &str| {
            let r = Replacement::parse(text, re.captures_len() - 1, names.clone())?;
            let mut out = String::new();
            r.expand(&caps, &mut out);
            Ok::<_, String>(out)
        };
        assert_eq!(expand("$1-$12-$13").unwrap(), "a-l-a3");
        assert_eq!(expand("${last}\\$1").unwrap(), "l$1");
        assert!(expand("$").is_err());
        assert!(expand("$x").is_err());
        assert!(expand("${nope}").is_err());
        assert!(expand("x\\").is_err());
        let few = Replacement::parse("$2", 1, std::iter::empty());
        assert_eq!(few.unwrap_err(), "no group 2");
    }

    #[test]
    fn doubles_print_like_java() {
        assert_eq!(double_to_string(1.0), "1.0");
        assert_eq!(double_to_string(0.5), "0.5");
        assert_eq!(double_to_string(-12.25), "-12.25");
        assert_eq!(double_to_string(1e10), "1.0E10");
        assert_eq!(double_to_string(1.5e-5), "1.5E-5");
        assert_eq!(double_to_string(0.0), "0.0");
    }
}
