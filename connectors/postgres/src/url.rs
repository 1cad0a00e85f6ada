//! `connection.url`: PostgreSQL URLs, JDBC URLs and libpq `key=value` strings.

use std::str::FromStr;

/// Parses `connection.url` into a driver config. `jdbc:postgresql://host:port/db?params`
/// is converted: the JDBC parameters `user`, `password`, `sslmode`, `ssl=true`,
/// `ApplicationName`, `connectTimeout` and `currentSchema` are translated; other JDBC
/// parameters are dropped (their names are logged). Error messages never repeat the URL,
/// which may hold a password.
pub fn parse_connection_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let text = url.trim();
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    let lower = text.to_ascii_lowercase();
    let converted = if lower.starts_with("jdbc:postgresql:") {
        convert_jdbc(&text["jdbc:postgresql:".len()..])?
    } else if lower.starts_with("postgres://")
        || lower.starts_with("postgresql://")
        || (text.contains('=') && !text.contains("://"))
    {
        text.to_string()
    } else {
        return Err(
            "expected postgres://..., postgresql://..., jdbc:postgresql://... or key=value pairs"
                .to_string(),
        );
    };
    tokio_postgres::Config::from_str(&converted).map_err(|e| {
        // The driver's message names the problem (an option, a port), never the password.
        format!("cannot parse the connection URL: {e}")
    })
}

fn convert_jdbc(rest: &str) -> Result<String, String> {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let main = match main.strip_prefix("//") {
        Some(m) => m.to_string(),
        // `jdbc:postgresql:db` means localhost:5432.
        None => format!("localhost/{main}"),
    };
    let mut params: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "user"
            | "password"
            | "sslmode"
            | "application_name"
            | "connect_timeout"
            | "options"
            | "target_session_attrs" => params.push(format!("{key}={value}")),
            "ApplicationName" => params.push(format!("application_name={value}")),
            "connectTimeout" => params.push(format!("connect_timeout={value}")),
            "ssl" if value.eq_ignore_ascii_case("true") => {
                params.push("sslmode=require".to_string())
            }
            "ssl" => {}
            "currentSchema" => params.push(format!("options=-c%20search_path%3D{value}")),
            other => {
                tracing::warn!(
                    parameter = other,
                    "PostgresSink: JDBC URL parameter not supported, ignored"
                );
            }
        }
    }
    if main.is_empty() {
        return Err("the JDBC URL names no host".to_string());
    }
    let mut out = format!("postgresql://{main}");
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    Ok(out)
}

/// The URL with any password replaced, for display.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_string();
    // user:password@ in the authority part.
    if let Some(scheme_end) = out.find("://") {
        let start = scheme_end + 3;
        let end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@') {
            let userinfo = &out[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(start + colon + 1..start + at, "********");
            }
        }
    }
    // password=... in a query string or key=value string.
    let lower = out.to_ascii_lowercase();
    if let Some(pos) = lower.find("password=") {
        let vstart = pos + "password=".len();
        let vend = out[vstart..]
            .find(['&', ' '])
            .map_or(out.len(), |i| vstart + i);
        out.replace_range(vstart..vend, "********");
    }
    out
}
