//! Timestamps as operators write them: epoch milliseconds or RFC 3339.

/// Epoch milliseconds from `1764410400000` or `2026-11-29T10:00:00Z`.
pub fn parse_epoch_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("\"{text}\" is neither epoch milliseconds nor RFC 3339: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        assert_eq!(parse_epoch_ms("1000"), Ok(1000));
        assert_eq!(parse_epoch_ms("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert!(parse_epoch_ms("yesterday").is_err());
    }
}
