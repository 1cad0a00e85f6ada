//! `connection.url`: PostgreSQL URLs, JDBC URLs and libpq `key=value` strings.
//!
//! The driver's own parser knows neither `verify-ca`/`verify-full` nor `sslrootcert`, so
//! the TLS settings are taken out of the URL here and the rest is handed to the driver.

use std::str::FromStr;

use crate::tls::SslMode;

/// What `connection.url` says: the driver config and the TLS settings taken out of it.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    pub config: tokio_postgres::Config,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
}

/// The parameters this module handles itself instead of the driver.
#[derive(Default)]
struct TlsParams {
    sslmode: Option<SslMode>,
    sslrootcert: Option<String>,
}

impl TlsParams {
    /// Takes `key=value` when it is a TLS parameter; false when the driver should see it.
    fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "sslmode" => {
                self.sslmode = Some(value.parse()?);
                Ok(true)
            }
            "sslrootcert" => {
                self.sslrootcert = Some(value.to_string()).filter(|v| !v.is_empty());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Parses `connection.url` into a driver config and TLS settings.
/// `jdbc:postgresql://host:port/db?params` is converted: the JDBC parameters `user`,
/// `password`, `sslmode`, `ssl=true` (`require`), `sslrootcert`, `ApplicationName`,
/// `connectTimeout` and `currentSchema` are translated; other JDBC parameters are dropped
/// (their names are logged). Error messages never repeat the URL, which may hold a
/// password.
pub fn parse_connection_url(url: &str) -> Result<ParsedUrl, String> {
    let text = url.trim();
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    let lower = text.to_ascii_lowercase();
    let mut tls = TlsParams::default();
    let driver_text = if lower.starts_with("jdbc:postgresql:") {
        let converted = convert_jdbc(&text["jdbc:postgresql:".len()..])?;
        split_url_params(&converted, &mut tls)?
    } else if let Some(rest) = ["postgres://", "postgresql://"]
        .iter()
        .find(|scheme| lower.starts_with(**scheme))
        .map(|scheme| &text[scheme.len()..])
    {
        // The driver only knows the lower-case schemes; libpq takes any case.
        split_url_params(&format!("postgresql://{rest}"), &mut tls)?
    } else if text.contains('=') && !text.contains("://") {
        split_key_values(text, &mut tls)?
    } else {
        return Err(
            "expected postgres://..., postgresql://..., jdbc:postgresql://... or key=value pairs"
                .to_string(),
        );
    };
    let config = tokio_postgres::Config::from_str(&driver_text).map_err(|e| {
        // The driver's message names the problem (an option, a port), never the password.
        format!("cannot parse the connection URL: {e}")
    })?;
    Ok(ParsedUrl {
        config,
        sslmode: tls.sslmode,
        sslrootcert: tls.sslrootcert,
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
    let mut ssl_true = false;
    let mut sslmode = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "user"
            | "password"
            | "sslrootcert"
            | "application_name"
            | "connect_timeout"
            | "options"
            | "target_session_attrs" => params.push(format!("{key}={value}")),
            "sslmode" => {
                sslmode = true;
                params.push(format!("{key}={value}"));
            }
            "ApplicationName" => params.push(format!("application_name={value}")),
            "connectTimeout" => params.push(format!("connect_timeout={value}")),
            // pgjdbc reads a bare `ssl` as true.
            "ssl" => ssl_true = value.is_empty() || value.eq_ignore_ascii_case("true"),
            "currentSchema" => params.push(format!("options=-c%20search_path%3D{value}")),
            other => {
                tracing::warn!(
                    parameter = other,
                    "PostgreSQL: JDBC URL parameter not supported, ignored"
                );
            }
        }
    }
    // An explicit sslmode wins over `ssl=true`, as in pgjdbc.
    if ssl_true && !sslmode {
        params.push("sslmode=require".to_string());
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

/// Takes the TLS parameters out of a `postgresql://` URL's query string.
fn split_url_params(url: &str, tls: &mut TlsParams) -> Result<String, String> {
    // Where the driver's parser looks for the query: after the first `@` if any (the
    // credentials end there), at the first `?`. Splitting at the same place keeps a `?`
    // in a password from being mistaken for the query.
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_start = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let Some(q) = url[authority_start..]
        .find('?')
        .map(|i| authority_start + i)
    else {
        return Ok(url.to_string());
    };
    let mut kept: Vec<&str> = Vec::new();
    for pair in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !tls.take(&decode(key)?, &decode(value)?)? {
            kept.push(pair);
        }
    }
    let mut out = url[..q].to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Ok(out)
}

fn decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "a URL parameter is not valid UTF-8 once percent-decoded".to_string())
}

/// Takes the TLS parameters out of a libpq `key=value` string; the rest is written back
/// with every value quoted, which the driver's parser reads as libpq does.
fn split_key_values(text: &str, tls: &mut TlsParams) -> Result<String, String> {
    let mut kept: Vec<String> = Vec::new();
    for (key, value) in key_values(text)? {
        if !tls.take(&key, &value)? {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{escaped}'"));
        }
    }
    Ok(kept.join(" "))
}

/// Splits libpq's `key = value key2 = 'quoted \' value'` syntax.
fn key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // The text is not repeated: a malformed string may have a password in it.
            return Err("expected `key=value` pairs".to_string());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(format!("the quoted value of `{key}` is not terminated"));
                    }
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// The URL with any password replaced, for display.
pub fn redact(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_urls_are_converted() {
        let c = parse_connection_url(
            "jdbc:postgresql://db.example:6543/shop?user=alice&password=pw&ApplicationName=x&foo=1",
        )
        .unwrap()
        .config;
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("db.example".into())]
        );
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_application_name(), Some("x"));

        let c = parse_connection_url("jdbc:postgresql://h/db?currentSchema=s1")
            .unwrap()
            .config;
        assert_eq!(c.get_options(), Some("-c search_path=s1"));
        assert_eq!(c.get_dbname(), Some("db"));

        let c = parse_connection_url("jdbc:postgresql:app").unwrap().config;
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("localhost".into())]
        );
        assert_eq!(c.get_dbname(), Some("app"));

        let c = parse_connection_url("postgres://bob@127.0.0.1:5432/test")
            .unwrap()
            .config;
        assert_eq!(c.get_user(), Some("bob"));
        assert_eq!(c.get_dbname(), Some("test"));

        let c = parse_connection_url("POSTGRESQL://bob@h/test")
            .unwrap()
            .config;
        assert_eq!(c.get_user(), Some("bob"));

        let c = parse_connection_url("host=localhost dbname=x")
            .unwrap()
            .config;
        assert_eq!(c.get_dbname(), Some("x"));

        let err = parse_connection_url("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        let err = parse_connection_url("postgres://u:secret@h:port/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(parse_connection_url("").is_err());
        assert!(parse_connection_url("jdbc:postgresql://?user=u").is_err());
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_every_url_form() {
        let p = parse_connection_url(
            "postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(p.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(p.config.get_application_name(), Some("a"));
        assert_eq!(p.config.get_dbname(), Some("app"));

        let p = parse_connection_url("postgresql://db/app?sslmode=verify-ca").unwrap();
        assert_eq!(p.sslmode, Some(SslMode::VerifyCa));
        assert_eq!(p.sslrootcert, None);

        let p = parse_connection_url("postgres://db/app").unwrap();
        assert_eq!((p.sslmode, p.sslrootcert), (None, None));

        // A `?` in the password is not the start of the query.
        let p = parse_connection_url("postgres://u:a?b@db/app?sslmode=disable").unwrap();
        assert_eq!(p.config.get_password(), Some(&b"a?b"[..]));
        assert_eq!(p.sslmode, Some(SslMode::Disable));

        let p =
            parse_connection_url("jdbc:postgresql://db/app?ssl=true&sslrootcert=/ca.pem&user=u")
                .unwrap();
        assert_eq!(p.sslmode, Some(SslMode::Require));
        assert_eq!(p.sslrootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(p.config.get_user(), Some("u"));

        let p =
            parse_connection_url("jdbc:postgresql://db/app?sslmode=verify-full&ssl=true").unwrap();
        assert_eq!(p.sslmode, Some(SslMode::VerifyFull));
        let p = parse_connection_url("jdbc:postgresql://db/app?ssl=false").unwrap();
        assert_eq!(p.sslmode, None);
        let p = parse_connection_url("jdbc:postgresql://db/app?ssl").unwrap();
        assert_eq!(p.sslmode, Some(SslMode::Require));

        let p = parse_connection_url(
            "host=db dbname=app sslmode = require sslrootcert='/my certs/ca.pem' password='it''s'",
        );
        // libpq quotes with backslashes, not doubled quotes: the stray quote is an error.
        assert!(p.is_err());
        let p = parse_connection_url(
            r"host=db dbname=app sslmode = require sslrootcert='/my certs/ca.pem' password='it\'s x'",
        )
        .unwrap();
        assert_eq!(p.sslmode, Some(SslMode::Require));
        assert_eq!(p.sslrootcert.as_deref(), Some("/my certs/ca.pem"));
        assert_eq!(p.config.get_password(), Some(&b"it's x"[..]));
        assert_eq!(p.config.get_dbname(), Some("app"));

        for url in [
            "postgres://db/app?sslmode=verify",
            "jdbc:postgresql://db/app?sslmode=allow",
            "host=db sslmode=bogus",
        ] {
            let err = parse_connection_url(url).unwrap_err();
            assert!(err.contains("sslmode"), "{url}: {err}");
        }
        assert!(parse_connection_url("host=db dbname='app").is_err());
        assert!(parse_connection_url("host=db dbname").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:pw@h:5/db?x=1"),
            "postgres://u:********@h:5/db?x=1"
        );
        assert_eq!(
            redact("jdbc:postgresql://h/db?user=u&password=pw&a=b"),
            "jdbc:postgresql://h/db?user=u&password=********&a=b"
        );
        assert_eq!(
            redact("host=h password=pw dbname=d"),
            "host=h password=******** dbname=d"
        );
    }
}
