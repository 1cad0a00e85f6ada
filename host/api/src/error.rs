//! The one error type that crosses the plugin boundary.

/// What the runtime should do with an error. This is what retry and tolerance decisions
/// are made on, so every error a plugin returns says which kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient (connection lost, timeout, lock conflict): the same call may succeed later.
    Retriable,
    /// The record itself is bad (cannot be parsed, converted or written): retrying will not
    /// help; the record is dead-lettered or fails the task per `errors.tolerance`.
    Data,
    /// The configuration is wrong.
    Config,
    /// Anything else that stops the task.
    Fatal,
}

impl ErrorKind {
    /// The exception class name Kafka Connect would report for this kind of error, used in
    /// dead-letter headers and status traces so existing tooling can group by it.
    pub fn class_name(self) -> &'static str {
        match self {
            ErrorKind::Retriable => "org.apache.kafka.connect.errors.RetriableException",
            ErrorKind::Data => "org.apache.kafka.connect.errors.DataException",
            ErrorKind::Config => "org.apache.kafka.common.config.ConfigException",
            ErrorKind::Fatal => "org.apache.kafka.connect.errors.ConnectException",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    kind: ErrorKind,
    message: String,
}

impl ConnectError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnectError {
            kind,
            message: message.into(),
        }
    }

    pub fn retriable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retriable, message)
    }

    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_retriable(&self) -> bool {
        self.kind == ErrorKind::Retriable
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with context put in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        ConnectError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }

    /// An I/O error, classed as retriable when it is the kind that goes away by itself.
    pub fn from_io(context: impl std::fmt::Display, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::Interrupted
            | Io::TimedOut
            | Io::WouldBlock
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::ConnectionRefused
            | Io::BrokenPipe
            | Io::StorageFull => ErrorKind::Retriable,
            _ => ErrorKind::Fatal,
        };
        ConnectError::new(kind, format!("{context}: {err}"))
    }
}
