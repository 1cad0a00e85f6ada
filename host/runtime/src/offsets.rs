//! Source offset storage.
//!
//! Entries are keyed as in Kafka Connect's offset topic: `["<connector>", {source partition}]`
//! → `{source offset}`. Standalone keeps them in a file; a distributed worker will keep
//! them in the compacted `offset.storage.topic` behind the same trait.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_api::SourceOffset;

#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    #[error("offset file {path}: {message}")]
    File { path: String, message: String },
    /// Another store (the Kafka offset topic), with what it is.
    #[error("offset store {store}: {message}")]
    Store { store: String, message: String },
}

#[async_trait]
pub trait OffsetStore: Send + Sync {
    /// The committed offsets of one connector.
    async fn load(&self, connector: &str) -> Result<Vec<SourceOffset>, OffsetStoreError>;

    /// Durably records these offsets (other partitions keep theirs).
    async fn commit(
        &self,
        connector: &str,
        offsets: &[SourceOffset],
    ) -> Result<(), OffsetStoreError>;

    /// Forgets the offsets of these source partitions: the connector starts them over.
    async fn remove(&self, connector: &str, partitions: &[Value]) -> Result<(), OffsetStoreError>;
}

#[derive(Serialize, Deserialize)]
struct OffsetFile {
    format: String,
    offsets: Vec<OffsetEntry>,
}

#[derive(Serialize, Deserialize)]
struct OffsetEntry {
    key: Value,
    offset: Value,
}

const FORMAT: &str = "sluice-offsets-v1";

/// Offsets in a JSON file, rewritten whole on each commit: written to a temporary file
/// beside it, fsynced, renamed over it, and the directory fsynced, so a crash leaves
/// either the old or the new file, never a torn one.
pub struct FileOffsetStore {
    path: PathBuf,
    /// Serialized key → (key, offset). The serialized key is canonical because
    /// serde_json sorts object keys.
    entries: Mutex<BTreeMap<String, OffsetEntry>>,
    /// Held from taking the snapshot until its file is in place: writes share one
    /// temporary path, and a slower write of an older snapshot must never land last.
    writing: tokio::sync::Mutex<()>,
}

impl FileOffsetStore {
    /// Opens the store, reading the file when it exists. A file that exists but cannot be
    /// read is an error: silently starting over would replay or skip data.
    pub fn open(path: &Path) -> Result<FileOffsetStore, OffsetStoreError> {
        let err = |message: String| OffsetStoreError::File {
            path: path.display().to_string(),
            message,
        };
        let mut entries = BTreeMap::new();
        match std::fs::read(path) {
            Ok(bytes) => {
                let file: OffsetFile = serde_json::from_slice(&bytes).map_err(|e| {
                    err(format!(
                        "is not a sluice offset file ({e}); move it away to start from scratch"
                    ))
                })?;
                if file.format != FORMAT {
                    return Err(err(format!(
                        "has format \"{}\", expected \"{FORMAT}\"",
                        file.format
                    )));
                }
                for entry in file.offsets {
                    entries.insert(entry.key.to_string(), entry);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        }
        Ok(FileOffsetStore {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    }
}

#[async_trait]
impl OffsetStore for FileOffsetStore {
    async fn load(&self, connector: &str) -> Result<Vec<SourceOffset>, OffsetStoreError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries
            .values()
            .filter_map(|e| match &e.key {
                Value::Array(parts) if parts.len() == 2 && parts[0] == connector => {
                    Some(SourceOffset {
                        partition: parts[1].clone(),
                        offset: e.offset.clone(),
                    })
                }
                _ => None,
            })
            .collect())
    }

    async fn commit(
        &self,
        connector: &str,
        offsets: &[SourceOffset],
    ) -> Result<(), OffsetStoreError> {
        self.change(|entries| {
            for o in offsets {
                let key = json!([connector, o.partition]);
                entries.insert(
                    key.to_string(),
                    OffsetEntry {
                        key,
                        offset: o.offset.clone(),
                    },
                );
            }
        })
        .await
    }

    async fn remove(&self, connector: &str, partitions: &[Value]) -> Result<(), OffsetStoreError> {
        self.change(|entries| {
            for partition in partitions {
                entries.remove(&json!([connector, partition]).to_string());
            }
        })
        .await
    }
}

impl FileOffsetStore {
    /// Applies `change` to the entries and writes the file.
    async fn change(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, OffsetEntry>),
    ) -> Result<(), OffsetStoreError> {
        let _writing = self.writing.lock().await;
        let bytes = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut entries);
            let file = OffsetFile {
                format: FORMAT.to_string(),
                offsets: entries
                    .values()
                    .map(|e| OffsetEntry {
                        key: e.key.clone(),
                        offset: e.offset.clone(),
                    })
                    .collect(),
            };
            serde_json::to_vec_pretty(&file).unwrap_or_default()
        };
        // Each write holds the full map as of its snapshot, and writes happen one at a
        // time in snapshot order, so the file always holds everything committed so far.
        let path = self.path.clone();
        let result =
            tokio::task::spawn_blocking(move || Self::write_atomically(&path, &bytes)).await;
        let message = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("cannot write: {e}"),
            Err(e) => format!("writer task failed: {e}"),
        };
        Err(OffsetStoreError::File {
            path: self.path.display().to_string(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_survive_reopen_and_are_per_connector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/offsets.json");
        let store = FileOffsetStore::open(&path).unwrap();
        let p0 = SourceOffset {
            partition: json!({"task": 0}),
            offset: json!({"seq": 5}),
        };
        store.commit("a", std::slice::from_ref(&p0)).await.unwrap();
        store
            .commit(
                "a",
                &[SourceOffset {
                    partition: json!({"task": 0}),
                    offset: json!({"seq": 9}),
                }],
            )
            .await
            .unwrap();
        store.commit("b", std::slice::from_ref(&p0)).await.unwrap();
        let reopened = FileOffsetStore::open(&path).unwrap();
        let a = reopened.load("a").await.unwrap();
        assert_eq!(
            a,
            vec![SourceOffset {
                partition: json!({"task": 0}),
                offset: json!({"seq": 9})
            }]
        );
        assert_eq!(reopened.load("b").await.unwrap(), vec![p0]);
        assert!(reopened.load("c").await.unwrap().is_empty());
        assert!(!dir.path().join("sub/offsets.json.tmp").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_of_many_tasks_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.json");
        let store = std::sync::Arc::new(FileOffsetStore::open(&path).unwrap());
        let mut handles = Vec::new();
        for task in 0..8 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                for seq in 0..20 {
                    let o = SourceOffset {
                        partition: json!({"task": task}),
                        offset: json!({"seq": seq}),
                    };
                    store.commit("c", &[o]).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut got = FileOffsetStore::open(&path)
            .unwrap()
            .load("c")
            .await
            .unwrap();
        got.sort_by_key(|o| o.partition["task"].as_u64());
        assert_eq!(got.len(), 8);
        assert!(
            got.iter().all(|o| o.offset == json!({"seq": 19})),
            "{got:?}"
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets.json");
        std::fs::write(&path, "{garbage").unwrap();
        let err = FileOffsetStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("offsets.json"), "{err}");
    }
}
