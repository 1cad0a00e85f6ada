//! The sluice worker: everything between a connector's JSON and its running tasks.
//!
//! Plugins (connectors, transforms) are reached only through the traits of `sluice-api`
//! and the [`registry::PluginRegistry`] they are registered in; the runtime never names a
//! concrete connector. Stores (offsets, status) sit behind traits so a distributed worker
//! can put them in Kafka without reshaping the drivers.

pub mod active_topics;
pub mod bus;
pub mod chain;
pub mod config_store;
pub mod connector;
pub mod convert;
pub mod metrics;
pub mod offsets;
pub mod placeholders;
pub mod registry;
pub mod replay;
pub mod sink_driver;
pub mod source_driver;
pub mod status;
pub mod stop;
pub mod timestamps;
pub mod tolerance;
pub mod validation;
pub mod worker;
pub mod worker_config;

pub use connector::{ConnectorDefinition, ConnectorProblem};
pub use registry::PluginRegistry;
pub use worker::{RunMode, RunOutcome, Worker};
pub use worker_config::WorkerConfig;
