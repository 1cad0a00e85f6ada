//! `sluice standalone --config-dir DIR`: connector files in a watched directory (GitOps).
//!
//! The directory is the desired state of the connectors it defines. Any change in it
//! (after a quiet period, so an editor's write-then-rename or a Kubernetes ConfigMap's
//! symlink swap count once) rescans the whole directory and reconciles: a new file's
//! connector is created, a file whose content changed replaces its connector's config (as
//! `PUT /connectors/{name}/config`), a deleted file deletes its connector. Everything goes
//! through the worker's [`WorkerHandle`], after the runtime's validation; a file that
//! cannot be read or is invalid is logged (file, connector, key) and changes nothing, so
//! its connector keeps its last good config.
//!
//! Which connectors came from the directory is remembered in the connector store
//! (`config-dir.state`), so a file deleted while the worker was down deletes its
//! connector at the next start instead of the store bringing it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};
use sluice_api::ConfigMap;
use sluice_runtime::validation::{ValidatedConnector, validate};
use sluice_runtime::worker::{ControlError, WorkerHandle};
use sluice_runtime::{ConnectorDefinition, PluginRegistry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Changes closer together than this are one change.
const QUIET: Duration = Duration::from_millis(300);
/// A directory that never stops changing is still rescanned this often.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Where the watcher falls back to polling (no inotify instance left), it polls this often.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What the directory made the worker run, per connector name.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    file: PathBuf,
    /// `None` when known only from the state file (before the first scan of this run).
    config: Option<ConfigMap>,
}

/// What a file in the directory asks for in one scan.
enum Claim {
    /// Run this (valid) connector.
    Run(PathBuf, Box<ValidatedConnector>),
    /// The file is unreadable or invalid now: its connector keeps what it runs.
    Keep(PathBuf),
}

impl Claim {
    fn file(&self) -> &Path {
        match self {
            Claim::Run(file, _) | Claim::Keep(file) => file,
        }
    }
}

/// What reconciling the directory asks of the worker.
enum Action {
    Replace(PathBuf, Box<ValidatedConnector>),
    Delete(String),
}

pub struct ConfigDir {
    dir: PathBuf,
    state_file: PathBuf,
    applied: BTreeMap<String, Applied>,
    /// The content of each invalid file when its problems were logged: an unchanged
    /// invalid file is not logged again at every rescan.
    reported: std::cell::RefCell<BTreeMap<PathBuf, Vec<u8>>>,
}

/// The connectors a start-up takes from the directory.
pub struct Initial {
    /// Valid files' connectors, to start (in their stored state when the store has them).
    pub connectors: Vec<ValidatedConnector>,
    /// Connectors the directory defined before whose files are gone: deleted now.
    pub removed: Vec<String>,
}

fn is_connector_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // Dotfiles are editors' and Kubernetes' (`.foo.json.swp`, `.#foo.json`, `..data`).
    !name.starts_with('.')
        && path
            .extension()
            .is_some_and(|e| e == "json" || e == "properties")
        && path.is_file()
}

impl ConfigDir {
    /// Opens the directory (it must exist) and what the previous run remembered of it.
    pub fn open(dir: &Path, store_dir: &Path) -> Result<ConfigDir, String> {
        if !dir.is_dir() {
            return Err(format!("--config-dir {}: not a directory", dir.display()));
        }
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("--config-dir {}: {e}", dir.display()))?;
        let state_file = store_dir.join("config-dir.state");
        let mut applied = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&state_file) {
            match serde_json::from_str::<Value>(&text) {
                Ok(state) => {
                    for (name, file) in state["connectors"].as_object().into_iter().flatten() {
                        if let Some(file) = file.as_str() {
                            applied.insert(
                                name.clone(),
                                Applied {
                                    file: PathBuf::from(file),
                                    config: None,
                                },
                            );
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %state_file.display(), "not JSON ({e}); ignored")
                }
            }
        }
        Ok(ConfigDir {
            dir,
            state_file,
            applied,
            reported: Default::default(),
        })
    }

    /// Reads every connector file; problems are logged with their file, connector and key.
    fn scan(&self, registry: &PluginRegistry) -> Option<BTreeMap<String, Claim>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                // A directory gone (an unmounted volume) must not delete every connector.
                tracing::error!(dir = %self.dir.display(), "cannot read the config dir ({e}); nothing changes");
                return None;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_connector_file(p))
            .collect();
        files.sort();
        let mut candidates: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
        let mut reported = self.reported.borrow_mut();
        reported.retain(|file, _| files.contains(file));
        for file in files {
            let content = std::fs::read(&file).unwrap_or_default();
            // Problems are logged once per content of the file.
            let report = reported.get(&file) != Some(&content);
            let owned = self.owned_by(&file);
            let unchanged = |claim_for: &mut BTreeMap<String, Vec<Claim>>| {
                for name in &owned {
                    claim_for
                        .entry(name.clone())
                        .or_default()
                        .push(Claim::Keep(file.clone()));
                }
            };
            let definition = match ConnectorDefinition::load(&file) {
                Ok(d) => d,
                Err(problem) => {
                    if report {
                        tracing::error!(file = %file.display(), "{problem}; the file changes nothing");
                        reported.insert(file.clone(), content);
                    }
                    unchanged(&mut candidates);
                    continue;
                }
            };
            let (problems, valid) = validate(&definition, registry);
            let report = report && !problems.is_empty();
            for p in problems.iter().filter(|_| report) {
                if p.is_error() {
                    tracing::error!(file = %file.display(), connector = %definition.name, key = p.issue.key.as_deref().unwrap_or(""), "{p}");
                } else {
                    tracing::warn!(file = %file.display(), connector = %definition.name, "{p}");
                }
            }
            if report {
                reported.insert(file.clone(), content);
            } else if valid.is_some() {
                reported.remove(&file);
            }
            match valid {
                Some(v) => candidates
                    .entry(definition.name.clone())
                    .or_default()
                    .push(Claim::Run(file.clone(), Box::new(v))),
                None => {
                    if report {
                        tracing::error!(file = %file.display(), connector = %definition.name, "connector file is invalid; it changes nothing");
                    }
                    unchanged(&mut candidates);
                }
            }
        }
        // One file per connector: the one that defines it now, else the first by name.
        let mut claims = BTreeMap::new();
        for (name, mut list) in candidates {
            let owner = self.applied.get(&name).map(|a| a.file.as_path());
            let pick = list
                .iter()
                .position(|c| Some(c.file()) == owner)
                .unwrap_or(0);
            let claim = list.swap_remove(pick);
            for other in list {
                tracing::error!(file = %other.file().display(), connector = %name, "the connector is already defined in {}; this file is ignored", claim.file().display());
            }
            claims.insert(name, claim);
        }
        Some(claims)
    }

    /// The connectors `file` defines now (as far as this run knows).
    fn owned_by(&self, file: &Path) -> Vec<String> {
        self.applied
            .iter()
            .filter(|(_, a)| a.file == file)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn plan(&self, claims: BTreeMap<String, Claim>) -> Vec<Action> {
        let mut actions: Vec<Action> = self
            .applied
            .keys()
            .filter(|name| !claims.contains_key(*name))
            .map(|name| Action::Delete(name.clone()))
            .collect();
        for (name, claim) in claims {
            if let Claim::Run(file, connector) = claim {
                let same = self.applied.get(&name).is_some_and(|a| {
                    a.file == file && a.config.as_ref() == Some(&connector.definition.config)
                });
                if !same {
                    actions.push(Action::Replace(file, connector));
                }
            }
        }
        actions
    }

    /// The directory's connectors at start-up. Invalid files are logged and skipped (a
    /// connector they defined before starts from the connector store, as it last ran).
    pub fn initial(&mut self, registry: &PluginRegistry) -> Initial {
        let mut initial = Initial {
            connectors: Vec::new(),
            removed: Vec::new(),
        };
        let Some(claims) = self.scan(registry) else {
            // Unreadable now: keep what the store holds.
            return initial;
        };
        for action in self.plan(claims) {
            match action {
                Action::Replace(file, connector) => {
                    tracing::info!(file = %file.display(), connector = %connector.name(), "connector loaded from the config dir");
                    self.applied.insert(
                        connector.name().to_string(),
                        Applied {
                            file,
                            config: Some(connector.definition.config.clone()),
                        },
                    );
                    initial.connectors.push(*connector);
                }
                Action::Delete(name) => {
                    tracing::info!(connector = %name, "its file left the config dir while the worker was down; deleting it");
                    self.applied.remove(&name);
                    initial.removed.push(name);
                }
            }
        }
        self.save();
        initial
    }

    /// A connector that a file on the command line defines is not the directory's.
    pub fn disown(&mut self, name: &str) {
        if let Some(a) = self.applied.remove(name) {
            tracing::error!(file = %a.file.display(), connector = %name, "a connector file on the command line defines this connector too; it wins, and this file applies from its next change");
            self.save();
        }
    }

    /// Rescans and makes the worker match the directory.
    async fn reconcile(&mut self, worker: &WorkerHandle, registry: &PluginRegistry) {
        let Some(claims) = self.scan(registry) else {
            return;
        };
        let actions = self.plan(claims);
        if actions.is_empty() {
            return;
        }
        for action in actions {
            match action {
                Action::Replace(file, connector) => {
                    let name = connector.name().to_string();
                    let config = connector.definition.config.clone();
                    let verb = if self.applied.contains_key(&name) {
                        "updated"
                    } else {
                        "created"
                    };
                    match worker.replace(*connector).await {
                        Ok(()) => {
                            tracing::info!(file = %file.display(), connector = %name, "connector {verb} from the config dir");
                            self.applied.insert(
                                name,
                                Applied {
                                    file,
                                    config: Some(config),
                                },
                            );
                        }
                        Err(e) => {
                            tracing::error!(file = %file.display(), connector = %name, "connector from the config dir not applied: {e}")
                        }
                    }
                }
                Action::Delete(name) => {
                    let file = self.applied[&name].file.clone();
                    match worker.delete(&name).await {
                        Ok(()) | Err(ControlError::NotFound(_)) => {
                            tracing::info!(file = %file.display(), connector = %name, "connector deleted: its file left the config dir");
                            self.applied.remove(&name);
                        }
                        Err(e) => {
                            tracing::error!(file = %file.display(), connector = %name, "connector not deleted: {e}")
                        }
                    }
                }
            }
        }
        self.save();
    }

    /// Remembers which connectors the directory defines (written atomically).
    fn save(&self) {
        let connectors: serde_json::Map<String, Value> = self
            .applied
            .iter()
            .map(|(n, a)| (n.clone(), json!(a.file.display().to_string())))
            .collect();
        let state = json!({"dir": self.dir.display().to_string(), "connectors": connectors});
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = self.state_file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut tmp = self.state_file.clone().into_os_string();
            tmp.push(".tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
            std::fs::rename(&tmp, &self.state_file)
        })();
        if let Err(e) = result {
            tracing::warn!(file = %self.state_file.display(), "cannot remember the config dir's connectors: {e}");
        }
    }

    /// Watches the directory until aborted, reconciling after each burst of changes.
    pub fn watch(
        mut self,
        worker: WorkerHandle,
        registry: Arc<PluginRegistry>,
    ) -> Result<JoinHandle<()>, String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let handler = move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                // Opening and reading (our own scans among them) change nothing.
                Ok(e) => !matches!(
                    e.kind,
                    EventKind::Access(AccessKind::Open(_))
                        | EventKind::Access(AccessKind::Close(AccessMode::Read))
                        | EventKind::Access(AccessKind::Read)
                ),
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        };
        let watcher: Box<dyn Watcher + Send> = match notify::recommended_watcher(handler.clone()) {
            Ok(mut w) => match w.watch(&self.dir, RecursiveMode::NonRecursive) {
                Ok(()) => Box::new(w),
                Err(e) => self.poll_watcher(handler, e)?,
            },
            Err(e) => self.poll_watcher(handler, e)?,
        };
        tracing::info!(dir = %self.dir.display(), "watching the config dir");
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            // A change between the start-up scan and the watch is caught by a first rescan.
            self.reconcile(&worker, &registry).await;
            while rx.recv().await.is_some() {
                let burst = Instant::now();
                loop {
                    match tokio::time::timeout(QUIET, rx.recv()).await {
                        Ok(Some(())) if burst.elapsed() < MAX_WAIT => continue,
                        Ok(None) => return,
                        _ => break,
                    }
                }
                self.reconcile(&worker, &registry).await;
            }
        }))
    }

    fn poll_watcher(
        &self,
        handler: impl notify::EventHandler,
        error: notify::Error,
    ) -> Result<Box<dyn Watcher + Send>, String> {
        tracing::warn!(dir = %self.dir.display(), "cannot watch the config dir for events ({error}); polling it every {POLL_INTERVAL:?}");
        let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
        let mut watcher = notify::PollWatcher::new(handler, config)
            .map_err(|e| format!("--config-dir {}: {e}", self.dir.display()))?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("--config-dir {}: {e}", self.dir.display()))?;
        Ok(Box::new(watcher))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_files_are_json_and_properties_but_not_dotfiles() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.json", "b.properties", ".a.json", "c.json.swp", "d.txt"] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        std::fs::create_dir(dir.path().join("e.json")).unwrap();
        let mut found: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_connector_file(p))
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        found.sort();
        assert_eq!(found, ["a.json", "b.properties"]);
    }
}
