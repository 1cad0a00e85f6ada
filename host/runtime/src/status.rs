//! Connector and task states, as Kafka Connect reports them.

use std::collections::BTreeMap;
use std::sync::Mutex;

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
}

/// Where statuses live: memory in standalone, the status topic in a fleet.
pub trait StatusStore: Send + Sync {
    fn put_task(&self, connector: &str, task: u32, status: TaskStatus);
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
