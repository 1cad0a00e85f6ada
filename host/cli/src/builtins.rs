//! The one place that names the built-in plugins.

use std::sync::Arc;

use sluice_api::Plugin;
use sluice_runtime::PluginRegistry;

pub fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry
        .add_source(Arc::new(sluice_simulator::SimulatorPlugin))
        .add_sink(Arc::new(sluice_file::FileSinkPlugin))
        .add_sink(Arc::new(sluice_null::NullSinkPlugin))
        .add_sink(Arc::new(sluice_postgres::PostgresSinkPlugin))
        .add_sink(Arc::new(sluice_dead_letter::DeadLetterSinkPlugin))
        .add_transform(Arc::new(sluice_filter::FilterPlugin))
        .add_transform(Arc::new(sluice_aggregate::AggregatePlugin));
    for transform in sluice_smt::transforms() {
        registry.add_transform(transform);
    }
    for predicate in sluice_smt::predicates() {
        registry.add_predicate(predicate);
    }
    registry
}

/// The class of the sink whose store `sluice dlq` reads.
pub fn dead_letter_sink_class() -> String {
    sluice_dead_letter::DeadLetterSinkPlugin.info().class
}
