//! Connector and task states, as Kafka Connect reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Unassigned,
    Running,
    Paused,
    Stopped,
    Failed,
    Restarting,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Unassigned => "UNASSIGNED",
            TaskState::Running => "RUNNING",
            TaskState::Paused => "PAUSED",
            TaskState::Stopped => "STOPPED",
            TaskState::Failed => "FAILED",
            TaskState::Restarting => "RESTARTING",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub state: TaskState,
    pub worker_id: String,
    /// Why the task failed, with the stage and context it failed in.
    pub trace: Option<String>,
    /// How often the worker restarted this task by itself (`task.restart.policy=backoff`).
    pub restarts: u32,
    /// A source task that reached the end of its data.
    pub exhausted: bool,
    /// Set while the task keeps retrying a retriable error (a database outage, say): the
    /// task is RUNNING but not making progress, and operators want to know why.
    pub retrying: Option<Retrying>,
}

/// A retriable error the task is retrying right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrying {
    /// The stage that fails, as in the dead-letter headers (`TASK_PUT`, `TASK_POLL`, …).
    pub stage: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the first of these attempts failed, epoch milliseconds.
    pub since_ms: i64,
    /// The last attempt's error.
    pub last_error: String,
}

/// Where statuses live: memory in standalone, the status topic in a fleet.
pub trait StatusStore: Send + Sync {
    fn put_task(&self, connector: &str, task: u32, status: TaskStatus);
    /// Changes a task's status in place; nothing happens when the task has none yet.
    fn update_task(&self, connector: &str, task: u32, update: &mut dyn FnMut(&mut TaskStatus));
    /// Forgets every task of a connector (deleted, stopped, or replaced).
    fn remove_connector(&self, connector: &str);
    fn task(&self, connector: &str, task: u32) -> Option<TaskStatus>;
    fn tasks(&self, connector: &str) -> Vec<(u32, TaskStatus)>;
    fn all(&self) -> Vec<(String, u32, TaskStatus)>;
}

#[derive(Default)]
pub struct MemoryStatusStore {
    tasks: Mutex<BTreeMap<(String, u32), TaskStatus>>,
}

impl StatusStore for MemoryStatusStore {
    fn put_task(&self, connector: &str, task: u32, status: TaskStatus) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.insert((connector.to_string(), task), status);
    }

    fn update_task(&self, connector: &str, task: u32, update: &mut dyn FnMut(&mut TaskStatus)) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = tasks.get_mut(&(connector.to_string(), task)) {
            update(status);
        }
    }

    fn remove_connector(&self, connector: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|(c, _), _| c != connector);
    }

    fn task(&self, connector: &str, task: u32) -> Option<TaskStatus> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.get(&(connector.to_string(), task)).cloned()
    }

    fn tasks(&self, connector: &str) -> Vec<(u32, TaskStatus)> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .filter(|((c, _), _)| c == connector)
            .map(|((_, t), s)| (*t, s.clone()))
            .collect()
    }

    fn all(&self) -> Vec<(String, u32, TaskStatus)> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .map(|((c, t), s)| (c.clone(), *t, s.clone()))
            .collect()
    }
}

/// Kafka Connect's status bodies (`GET /connectors/{name}/status`, `?expand=status`),
/// built from the status store and the connectors the worker runs.
#[derive(Clone)]
pub struct StatusView {
    status: Arc<dyn StatusStore>,
    /// Connector name → (`"source"` or `"sink"`, the state the operator asked for).
    connectors: Arc<Mutex<BTreeMap<String, (&'static str, &'static str)>>>,
    worker_id: String,
}

impl StatusView {
    pub fn new(status: Arc<dyn StatusStore>, worker_id: &str) -> StatusView {
        StatusView {
            status,
            connectors: Arc::default(),
            worker_id: worker_id.to_string(),
        }
    }

    pub fn add_connector(&self, name: &str, is_source: bool) {
        let mut connectors = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        let kind = if is_source { "source" } else { "sink" };
        connectors.insert(name.to_string(), (kind, "RUNNING"));
    }

    /// `RUNNING`, `PAUSED` or `STOPPED`, as the operator asked.
    pub fn set_target(&self, name: &str, state: &'static str) {
        let mut connectors = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = connectors.get_mut(name) {
            entry.1 = state;
        }
    }

    pub fn remove_connector(&self, name: &str) {
        let mut connectors = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        connectors.remove(name);
    }

    /// One connector's status body, as Kafka Connect's; `retrying` and `restarts` are
    /// sluice's additions to a task's entry.
    pub fn connector(&self, name: &str) -> Option<Value> {
        let (kind, target) = {
            let connectors = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
            *connectors.get(name)?
        };
        let tasks = self.status.tasks(name);
        // The connector itself (as opposed to its tasks) stops when asked to, or with the
        // worker.
        let all_stopped =
            !tasks.is_empty() && tasks.iter().all(|(_, t)| t.state == TaskState::Stopped);
        let state = if all_stopped { "STOPPED" } else { target };
        let tasks: Vec<Value> = tasks.iter().map(|(id, t)| task_json(*id, t)).collect();
        Some(json!({
            "name": name,
            "connector": {"state": state, "worker_id": self.worker_id},
            "tasks": tasks,
            "type": kind,
        }))
    }

    /// Every connector's status, shaped as `GET /connectors?expand=status`.
    pub fn all(&self) -> Value {
        let names: Vec<String> = {
            let connectors = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
            connectors.keys().cloned().collect()
        };
        let mut out = Map::new();
        for name in names {
            if let Some(status) = self.connector(&name) {
                out.insert(name, json!({ "status": status }));
            }
        }
        Value::Object(out)
    }
}

fn task_json(id: u32, t: &TaskStatus) -> Value {
    let mut task = json!({"id": id, "state": t.state.as_str(), "worker_id": t.worker_id});
    if let Some(trace) = &t.trace {
        task["trace"] = json!(trace);
    }
    if t.restarts > 0 {
        task["restarts"] = json!(t.restarts);
    }
    if let Some(r) = &t.retrying {
        task["retrying"] = json!({
            "stage": r.stage,
            "attempts": r.attempts,
            "since": r.since_ms,
            "last_error": r.last_error,
        });
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> TaskStatus {
        TaskStatus {
            state: TaskState::Running,
            worker_id: "w1".into(),
            trace: None,
            restarts: 0,
            exhausted: false,
            retrying: None,
        }
    }

    #[test]
    fn status_body_has_kafka_connects_shape_and_shows_retries() {
        let store = Arc::new(MemoryStatusStore::default());
        let view = StatusView::new(store.clone(), "w1");
        view.add_connector("pg", false);
        store.put_task("pg", 0, running());
        store.put_task("pg", 1, running());
        store.update_task("pg", 1, &mut |s| {
            s.retrying = Some(Retrying {
                stage: "TASK_PUT".into(),
                attempts: 3,
                since_ms: 1000,
                last_error: "connection refused".into(),
            })
        });
        let body = view.connector("pg").unwrap();
        assert_eq!(
            body,
            json!({
                "name": "pg",
                "connector": {"state": "RUNNING", "worker_id": "w1"},
                "tasks": [
                    {"id": 0, "state": "RUNNING", "worker_id": "w1"},
                    {"id": 1, "state": "RUNNING", "worker_id": "w1", "retrying": {
                        "stage": "TASK_PUT", "attempts": 3, "since": 1000,
                        "last_error": "connection refused"}},
                ],
                "type": "sink",
            })
        );
        assert_eq!(view.all(), json!({"pg": {"status": body}}));
        assert!(view.connector("other").is_none());
    }

    #[test]
    fn update_of_an_unknown_task_does_nothing() {
        let store = MemoryStatusStore::default();
        store.update_task("x", 0, &mut |s| s.restarts = 9);
        assert!(store.task("x", 0).is_none());
    }
}
