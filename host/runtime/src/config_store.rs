//! Where connectors created or changed at runtime (over REST) are kept, so they come back
//! after a restart: one JSON file per connector in a directory, written atomically.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::ConnectorDefinition;
use crate::worker::TargetState;

#[derive(Debug, thiserror::Error)]
#[error("connector store {path}: {message}")]
pub struct ConfigStoreError {
    pub path: String,
    pub message: String,
}

/// A stored connector: its definition and the state the operator last asked for.
#[derive(Debug, Clone)]
pub struct StoredConnector {
    pub definition: ConnectorDefinition,
    pub target: TargetState,
}

/// Where connector configs live: a directory in standalone, the config topic in a fleet.
pub trait ConfigStore: Send + Sync {
    fn put(&self, connector: &StoredConnector) -> Result<(), ConfigStoreError>;
    fn remove(&self, name: &str) -> Result<(), ConfigStoreError>;
    /// Every stored connector; files that cannot be read are reported, not skipped silently.
    fn load_all(&self) -> Result<Vec<StoredConnector>, ConfigStoreError>;
}

pub struct DirConfigStore {
    dir: PathBuf,
}

/// A file name for any connector name: characters outside `[A-Za-z0-9._-]` are
/// percent-encoded, so names with `/`, spaces or unicode stay one file.
fn file_name(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // "." and ".." are not file names of their own.
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out + ".json"
}

fn state_name(target: TargetState) -> &'static str {
    target.as_str()
}

fn parse_state(text: Option<&str>) -> TargetState {
    match text {
        Some("PAUSED") => TargetState::Paused,
        Some("STOPPED") => TargetState::Stopped,
        _ => TargetState::Started,
    }
}

impl DirConfigStore {
    pub fn new(dir: impl Into<PathBuf>) -> DirConfigStore {
        DirConfigStore { dir: dir.into() }
    }

    fn error(&self, path: &Path, message: impl Into<String>) -> ConfigStoreError {
        ConfigStoreError {
            path: path.display().to_string(),
            message: message.into(),
        }
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

impl ConfigStore for DirConfigStore {
    fn put(&self, connector: &StoredConnector) -> Result<(), ConfigStoreError> {
        let path = self.dir.join(file_name(&connector.definition.name));
        let document = json!({
            "name": connector.definition.name,
            "config": connector.definition.config,
            "state": state_name(connector.target),
        });
        let bytes =
            serde_json::to_vec_pretty(&document).map_err(|e| self.error(&path, e.to_string()))?;
        self.write_atomically(&path, &bytes)
            .map_err(|e| self.error(&path, format!("cannot write: {e}")))
    }

    fn remove(&self, name: &str) -> Result<(), ConfigStoreError> {
        let path = self.dir.join(file_name(name));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(&path, format!("cannot remove: {e}"))),
        }
    }

    fn load_all(&self) -> Result<Vec<StoredConnector>, ConfigStoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&self.dir, format!("cannot read: {e}"))),
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut stored = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| self.error(&path, format!("cannot read: {e}")))?;
            let document: Value = serde_json::from_str(&text)
                .map_err(|e| self.error(&path, format!("is not JSON: {e}")))?;
            let target = parse_state(document.get("state").and_then(Value::as_str));
            let definition =
                ConnectorDefinition::from_document(&path.display().to_string(), document)
                    .map_err(|p| self.error(&path, p.to_string()))?;
            stored.push(StoredConnector { definition, target });
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectors_round_trip_with_their_state_and_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirConfigStore::new(dir.path().join("connectors"));
        assert!(store.load_all().unwrap().is_empty());
        for (name, target) in [
            ("a b:c", TargetState::Paused),
            ("..", TargetState::Stopped),
            ("plain", TargetState::Started),
        ] {
            let definition = ConnectorDefinition::from_document(
                "test",
                json!({"name": name, "config": {"connector.class": "FileSink", "file": "/tmp/x"}}),
            )
            .unwrap();
            store.put(&StoredConnector { definition, target }).unwrap();
        }
        let mut loaded = store.load_all().unwrap();
        loaded.sort_by(|a, b| a.definition.name.cmp(&b.definition.name));
        let names: Vec<(&str, TargetState)> = loaded
            .iter()
            .map(|c| (c.definition.name.as_str(), c.target))
            .collect();
        assert_eq!(
            names,
            [
                ("..", TargetState::Stopped),
                ("a b:c", TargetState::Paused),
                ("plain", TargetState::Started)
            ]
        );
        store.remove("a b:c").unwrap();
        store.remove("never-there").unwrap();
        assert_eq!(store.load_all().unwrap().len(), 2);
    }
}
