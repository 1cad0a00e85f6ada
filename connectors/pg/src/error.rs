//! Driver errors as `ConnectError`s: the kind decides whether the runtime retries, skips
//! the record or fails the task.

use deadpool_postgres::PoolError;
use sluice_api::{ConnectError, ErrorKind};

/// SQLSTATEs that go away by themselves: connection exceptions (08), insufficient
/// resources (53), serialization failure, deadlock, cancellation (a statement timeout),
/// lock not available, and the server shutting down or starting (57P01-57P03).
pub fn is_retriable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "57014" | "55P03"
        )
}

/// SQLSTATEs caused by the values written: cardinality (21), data exceptions (22),
/// integrity constraints (23).
pub fn is_data_code(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23") || code.starts_with("21")
}

/// True when the statement failed because of the rows it was given.
pub fn is_data_error(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|c| is_data_code(c.code()))
}

/// Classifies a driver error: retriable (connection, resources, conflicts), data, or fatal.
/// A TLS failure (a certificate that does not verify, a server without TLS when it is
/// required) is fatal: trying again gives the same answer.
pub fn classify(context: &str, err: &tokio_postgres::Error) -> ConnectError {
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        let kind = if is_retriable_code(code) {
            ErrorKind::Retriable
        } else if is_data_code(code) {
            ErrorKind::Data
        } else {
            ErrorKind::Fatal
        };
        return ConnectError::new(kind, format!("{context}: {}", describe_db(db)));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    let mut io = false;
    let mut tls_refused = false;
    // The driver's own text is only the kind of failure ("error connecting to server");
    // the reason is in its sources.
    let mut reasons: Vec<String> = Vec::new();
    while let Some(s) = source {
        let reason = s.to_string();
        if reasons.last() != Some(&reason) {
            reasons.push(reason);
        }
        if let Some(e) = s.downcast_ref::<std::io::Error>() {
            // rustls reports a refused certificate or a failed handshake as an I/O error
            // wrapping its own; only a bare I/O error is the network's doing.
            match e.get_ref() {
                Some(inner) if inner.is::<rustls::Error>() => tls_refused = true,
                _ => io = true,
            }
        }
        if s.is::<rustls::Error>() {
            tls_refused = true;
        }
        source = s.source();
    }
    let text = err.to_string();
    let detailed = std::iter::once(text.clone())
        .chain(reasons)
        .collect::<Vec<_>>()
        .join(": ");
    let tls = text.starts_with("error performing TLS handshake");
    if tls && (tls_refused || !io) {
        return ConnectError::fatal(format!(
            "{context}: {detailed} (check connection.sslmode and connection.sslrootcert)"
        ));
    }
    let retriable = io
        || err.is_closed()
        || text.starts_with("error connecting")
        || text.starts_with("error communicating")
        || text.starts_with("timeout")
        || text.starts_with("unexpected message");
    let kind = if retriable {
        ErrorKind::Retriable
    } else {
        ErrorKind::Fatal
    };
    ConnectError::new(kind, format!("{context}: {detailed}"))
}

/// The server's error with what helps find the cause: message, SQLSTATE, column,
/// constraint and detail.
pub fn describe_db(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!("{} (SQLSTATE {}", db.message(), db.code().code());
    if let Some(c) = db.column() {
        text.push_str(&format!(", column \"{c}\""));
    }
    if let Some(c) = db.constraint() {
        text.push_str(&format!(", constraint \"{c}\""));
    }
    text.push(')');
    if let Some(d) = db.detail() {
        text.push_str(&format!(": {d}"));
    }
    text
}

/// A failure to get a pooled connection.
pub fn pool_error(err: PoolError) -> ConnectError {
    match err {
        PoolError::Backend(e) => classify("PostgreSQL connection", &e),
        PoolError::Closed => ConnectError::fatal("PostgreSQL connection pool is closed"),
        PoolError::NoRuntimeSpecified => {
            ConnectError::fatal("PostgreSQL connection pool has no runtime")
        }
        other => ConnectError::retriable(format!("PostgreSQL connection pool: {other}")),
    }
}

/// Quotes an identifier for SQL (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for code in [
            "08006", "08001", "40001", "40P01", "57P01", "57P02", "57P03", "53100", "53300",
            "57014", "55P03",
        ] {
            assert!(is_retriable_code(code), "{code}");
            assert!(!is_data_code(code), "{code}");
        }
        for code in ["22P02", "22001", "23502", "23505", "23503", "21000"] {
            assert!(is_data_code(code), "{code}");
            assert!(!is_retriable_code(code), "{code}");
        }
        for code in [
            "42P01", "42703", "42501", "28000", "28P01", "3F000", "54000",
        ] {
            assert!(!is_data_code(code) && !is_retriable_code(code), "{code}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
    }

    #[test]
    fn pool_errors_are_classified() {
        assert_eq!(pool_error(PoolError::Closed).kind(), ErrorKind::Fatal);
        let timeout = pool_error(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait));
        assert!(timeout.is_retriable(), "{timeout}");
    }
}
