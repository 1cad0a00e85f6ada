//! `${provider:...}` placeholders in config values, as Kafka Connect's config providers.
//!
//! `${env:VAR}` reads an environment variable; `${file:PATH:KEY}` reads KEY from the Java
//! properties file PATH. They are resolved when a task starts, into a copy handed to the
//! task: the stored config always keeps the placeholder, so secrets are never written back.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;
use sluice_api::{ConfigIssue, ConfigMap};

fn placeholder_pattern() -> &'static Regex {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        // A literal pattern: compiling it cannot fail.
        Regex::new(r"\$\{([A-Za-z][A-Za-z0-9_.-]*):([^}]*)\}").unwrap_or_else(|_| unreachable!())
    })
}

/// Whether a value contains a placeholder (shown as written, never resolved, in listings).
pub fn has_placeholder(value: &str) -> bool {
    placeholder_pattern().is_match(value)
}

/// A copy of `config` with every placeholder replaced, or the keys that could not be.
pub fn resolve(config: &ConfigMap) -> Result<ConfigMap, Vec<ConfigIssue>> {
    let mut files: HashMap<String, Result<HashMap<String, String>, String>> = HashMap::new();
    let mut issues = Vec::new();
    let mut resolved = ConfigMap::new();
    for (key, value) in config {
        let Value::String(text) = value else {
            resolved.insert(key.clone(), value.clone());
            continue;
        };
        if !has_placeholder(text) {
            resolved.insert(key.clone(), value.clone());
            continue;
        }
        let mut failure = None;
        let replaced = placeholder_pattern().replace_all(text, |caps: &regex::Captures<'_>| {
            match lookup(&caps[1], &caps[2], &mut files) {
                Ok(v) => v,
                Err(message) => {
                    failure.get_or_insert(message);
                    String::new()
                }
            }
        });
        match failure {
            Some(message) => issues.push(ConfigIssue::error(key.clone(), message)),
            None => {
                resolved.insert(key.clone(), Value::String(replaced.into_owned()));
            }
        }
    }
    if issues.is_empty() {
        Ok(resolved)
    } else {
        Err(issues)
    }
}

fn lookup(
    provider: &str,
    body: &str,
    files: &mut HashMap<String, Result<HashMap<String, String>, String>>,
) -> Result<String, String> {
    match provider {
        "env" => {
            // Kafka Connect writes `${env:VAR}`; `${env::VAR}` (empty path) is accepted too.
            let name = body.strip_prefix(':').unwrap_or(body);
            std::env::var(name).map_err(|_| {
                format!("environment variable {name} (from ${{env:{name}}}) is not set")
            })
        }
        "file" => {
            let Some((path, key)) = body.rsplit_once(':') else {
                return Err(format!("${{file:{body}}} must be ${{file:PATH:KEY}}"));
            };
            let properties = files
                .entry(path.to_string())
                .or_insert_with(|| {
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {path}: {e}"))
                        .and_then(|text| {
                            parse_properties(&text).map_err(|e| format!("{path}: {e}"))
                        })
                })
                .as_ref()
                .map_err(Clone::clone)?;
            properties
                .get(key)
                .cloned()
                .ok_or_else(|| format!("{path} has no key {key}"))
        }
        other => Err(format!(
            "unknown config provider \"{other}\" (known: env, file)"
        )),
    }
}

/// Parses a Java properties document.
pub fn parse_properties(text: &str) -> Result<HashMap<String, String>, String> {
    java_properties::read(text.as_bytes()).map_err(|e| format!("invalid properties: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_and_file_placeholders_resolve_into_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.properties");
        std::fs::write(&file, "db.password=s3cret\n").unwrap();
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var("SLUICE_TEST_PLACEHOLDER", "from-env") };
        let mut config = ConfigMap::new();
        config.insert("a".into(), json!("x-${env:SLUICE_TEST_PLACEHOLDER}-y"));
        config.insert(
            "b".into(),
            json!(format!("${{file:{}:db.password}}", file.display())),
        );
        config.insert("c".into(), json!(5));
        let resolved = resolve(&config).unwrap();
        assert_eq!(resolved["a"], json!("x-from-env-y"));
        assert_eq!(resolved["b"], json!("s3cret"));
        assert_eq!(resolved["c"], json!(5));
        assert_eq!(config["a"], json!("x-${env:SLUICE_TEST_PLACEHOLDER}-y"));
    }

    #[test]
    fn unresolvable_placeholders_name_the_key() {
        let mut config = ConfigMap::new();
        config.insert(
            "connection.password".into(),
            json!("${env:SLUICE_SURELY_UNSET_VAR}"),
        );
        config.insert("other".into(), json!("${file:/nonexistent/x.properties:k}"));
        let issues = resolve(&config).unwrap_err();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].key.as_deref(), Some("connection.password"));
        assert!(issues[0].message.contains("SLUICE_SURELY_UNSET_VAR"));
        assert!(issues[1].message.contains("/nonexistent/x.properties"));
    }
}
