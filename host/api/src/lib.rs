//! The connector API of sluice.
//!
//! This crate is the only one a connector or transform depends on. It holds plain data
//! (records, offsets, configs) and the traits a plugin implements; it knows nothing of
//! the worker that runs them. Everything that crosses the boundary between the runtime
//! and a plugin is owned data in batches (`Vec<Record>`, JSON configs and offsets), so the
//! same traits can later be driven through a C ABI from a dynamically loaded library.

pub mod config;
pub mod error;
pub mod plugin;
pub mod record;
pub mod task;

pub use config::{ConfigIssue, ConfigMap, Severity, parse_config, schema_of, validate_config};
pub use error::{ConnectError, ErrorKind};
pub use plugin::{
    Plugin, PluginInfo, PluginKind, Predicate, PredicatePlugin, SinkConnector, SourceConnector,
    TransformPlugin,
};
pub use record::{Header, Payload, Record, SourceOffset, SourceRecord, json_type_name};
pub use task::{
    PutResult, RecordFailure, SinkTask, SinkTaskContext, SourcePoll, SourceTask, SourceTaskContext,
    Transform,
};

/// The version every built-in plugin reports: the version of this API crate.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
