//! Kafka Connect's standard single-message transforms and predicates, on schemaless JSON.
//!
//! Each transform follows Kafka Connect 3.x (`org.apache.kafka.connect.transforms.*`):
//! the same class names, the same config keys, and the same results on schemaless JSON
//! records (a key or value that is a JSON object, as Kafka Connect's `JsonConverter`
//! with `schemas.enable=false` produces). Transforms with `$Key` / `$Value` variants are
//! two plugins each. Every plugin is registered under its full Kafka Connect class name,
//! with its simple name (`InsertField$Value`, `TopicNameMatches`) as an alias, except
//! Kafka Connect's `Filter`, which answers to its full class name only.
//!
//! See `docs/transforms/smt.md` for the keys, examples, and where behaviour differs from
//! Kafka Connect.

use std::sync::Arc;

use sluice_api::{PredicatePlugin, TransformPlugin};

mod cast;
mod common;
mod extract_field;
mod flatten;
mod headers;
mod hoist_field;
mod insert_field;
mod java;
mod mask_field;
mod predicates;
mod regex_router;
mod replace_field;
mod timestamp_converter;
mod timestamp_router;
mod value_to_key;

pub use cast::CastConfig;
pub use extract_field::{ExtractFieldConfig, FieldSyntaxVersion};
pub use flatten::FlattenConfig;
pub use headers::{DropHeadersConfig, HeaderFromConfig, InsertHeaderConfig, Operation};
pub use hoist_field::HoistFieldConfig;
pub use insert_field::InsertFieldConfig;
pub use mask_field::MaskFieldConfig;
pub use predicates::{
    FilterConfig, HasHeaderKeyConfig, RecordIsTombstoneConfig, TopicNameMatchesConfig,
};
pub use regex_router::RegexRouterConfig;
pub use replace_field::ReplaceFieldConfig;
pub use timestamp_converter::{TargetType, TimestampConverterConfig, UnixPrecision};
pub use timestamp_router::TimestampRouterConfig;
pub use value_to_key::ValueToKeyConfig;

use common::{PredPlugin, Smt, SmtPlugin};

fn sided<T: Smt>(plugins: &mut Vec<Arc<dyn TransformPlugin>>) {
    for plugin in SmtPlugin::<T>::sided() {
        plugins.push(Arc::new(plugin));
    }
}

fn single<T: Smt>(plugins: &mut Vec<Arc<dyn TransformPlugin>>) {
    plugins.push(Arc::new(SmtPlugin::<T>::single()));
}

/// Every transform plugin of this crate.
pub fn transforms() -> Vec<Arc<dyn TransformPlugin>> {
    let mut plugins: Vec<Arc<dyn TransformPlugin>> = Vec::new();
    sided::<insert_field::InsertField>(&mut plugins);
    sided::<replace_field::ReplaceField>(&mut plugins);
    sided::<mask_field::MaskField>(&mut plugins);
    single::<value_to_key::ValueToKey>(&mut plugins);
    sided::<extract_field::ExtractField>(&mut plugins);
    sided::<hoist_field::HoistField>(&mut plugins);
    sided::<cast::Cast>(&mut plugins);
    sided::<timestamp_converter::TimestampConverter>(&mut plugins);
    single::<regex_router::RegexRouter>(&mut plugins);
    single::<timestamp_router::TimestampRouter>(&mut plugins);
    sided::<flatten::Flatten>(&mut plugins);
    sided::<headers::HeaderFrom>(&mut plugins);
    single::<headers::InsertHeader>(&mut plugins);
    single::<headers::DropHeaders>(&mut plugins);
    single::<predicates::Filter>(&mut plugins);
    plugins
}

/// Every predicate plugin of this crate.
pub fn predicates() -> Vec<Arc<dyn PredicatePlugin>> {
    vec![
        Arc::new(PredPlugin::<predicates::TopicNameMatches>::new()),
        Arc::new(PredPlugin::<predicates::HasHeaderKey>::new()),
        Arc::new(PredPlugin::<predicates::RecordIsTombstone>::new()),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use sluice_api::PluginKind;

    use super::*;

    #[test]
    fn schemas_are_objects_and_names_are_unique() {
        let mut names = HashSet::new();
        let mut infos = Vec::new();
        for t in transforms() {
            assert_eq!(t.info().kind, PluginKind::Transform);
            infos.push((t.info(), t.config_schema()));
        }
        for p in predicates() {
            assert_eq!(p.info().kind, PluginKind::Predicate);
            infos.push((p.info(), p.config_schema()));
        }
        assert_eq!(infos.len(), 27);
        for (info, schema) in infos {
            assert_eq!(schema["type"], "object", "{}", info.class);
            assert!(
                info.class
                    .starts_with("org.apache.kafka.connect.transforms.")
            );
            assert_eq!(info.version, sluice_api::API_VERSION);
            assert!(!info.description.is_empty());
            for name in std::iter::once(&info.class).chain(&info.aliases) {
                assert!(names.insert(name.clone()), "duplicate name {name}");
            }
        }
        assert!(names.contains("org.apache.kafka.connect.transforms.InsertField$Value"));
        assert!(names.contains("InsertField$Key"));
        assert!(names.contains("org.apache.kafka.connect.transforms.Filter"));
        assert!(!names.contains("Filter"));
        assert!(names.contains("org.apache.kafka.connect.transforms.predicates.TopicNameMatches"));
        assert!(names.contains("RecordIsTombstone"));
    }

    #[test]
    fn every_documented_key_has_a_description() {
        for t in transforms() {
            let schema = t.config_schema();
            let Some(props) = schema["properties"].as_object() else {
                continue;
            };
            for (key, prop) in props {
                let described = prop.get("description").is_some()
                    || prop.get("$ref").is_some()
                    || prop.get("allOf").is_some();
                assert!(described, "{} key {key} has no description", t.info().class);
            }
        }
    }
}
