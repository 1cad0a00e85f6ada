//! The worker: starts connectors' tasks, supervises them (status, automatic restarts),
//! and shuts them down in the order that loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_api::{ConfigMap, ConnectError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::bus::{Bus, EmbeddedBus};
use crate::connector::CommonConfig;
use crate::connector::RestartPolicy;
use crate::metrics::{ConnectorMetrics, MetricsRegistry};
use crate::offsets::{FileOffsetStore, OffsetStore, OffsetStoreError};
use crate::registry::PluginRegistry;
use crate::sink_driver;
use crate::source_driver::{self, SourceProgress};
use crate::status::{MemoryStatusStore, StatusStore, StatusView, TaskState, TaskStatus};
use crate::stop::{StopHandle, StopSignal, stop_pair};
use crate::tolerance::{Failure, backoff};
use crate::validation::ValidatedConnector;
use crate::worker_config::WorkerConfig;

/// Everything a task driver needs from the worker.
#[derive(Clone)]
pub struct TaskEnv {
    pub connector: Arc<ValidatedConnector>,
    pub task_id: u32,
    pub registry: Arc<PluginRegistry>,
    pub bus: Arc<dyn Bus>,
    pub offsets: Arc<dyn OffsetStore>,
    pub metrics: Arc<ConnectorMetrics>,
    pub worker: Arc<WorkerConfig>,
    /// Set when `--drain` found every source exhausted: sinks then flush stateful
    /// transforms, whose open windows are final once no input can follow.
    pub input_ended: Arc<AtomicBool>,
    /// Where the task's state is shown; the retry operator reports ongoing retries there.
    pub status: Arc<dyn StatusStore>,
    /// True while the connector is paused: the task keeps its place (and its partitions)
    /// but moves no records.
    pub paused: watch::Receiver<bool>,
}

/// What a task starts from: its connector's config with placeholders resolved, the
/// runtime's keys parsed from it, and the plugin's config for this one task.
pub struct TaskSetup {
    pub resolved: ConfigMap,
    pub common: CommonConfig,
    pub task_config: ConfigMap,
    pub task_count: usize,
}

impl TaskEnv {
    /// Resolves placeholders now (each start sees current secrets) and asks the plugin
    /// for this task's config.
    pub fn setup(&self) -> Result<TaskSetup, ConnectError> {
        task_setup(&self.connector, self.task_id)
    }
}

/// Resolves placeholders now (each start sees current secrets) and asks the plugin for
/// the config of task `task_id`.
pub fn task_setup(connector: &ValidatedConnector, task_id: u32) -> Result<TaskSetup, ConnectError> {
    let (resolved, common) = crate::validation::resolve_common(&connector.definition.config)
        .map_err(|issues| ConnectError::config(join_issues(&issues)))?;
    let mut configs = connector.plugin.task_configs(&resolved, common.tasks_max)?;
    let task_count = configs.len();
    let index = task_id as usize;
    if index >= task_count {
        return Err(ConnectError::config(format!(
            "the connector has no task {}",
            task_id
        )));
    }
    Ok(TaskSetup {
        task_config: configs.swap_remove(index),
        resolved,
        common,
        task_count,
    })
}

pub(crate) fn join_issues(issues: &[sluice_api::ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Run until told to stop.
    UntilStopped,
    /// Run until every source is exhausted and everything it produced is durable.
    Drain,
}

/// A task that failed and was not restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub connector: String,
    pub task: u32,
    pub trace: String,
}

#[derive(Debug, Default)]
pub struct RunOutcome {
    pub failures: Vec<TaskFailure>,
}

struct RunningTask {
    id: u32,
    progress: Option<Arc<SourceProgress>>,
    handle: JoinHandle<()>,
    stop: StopHandle,
}

/// What the operator asked a connector to be (Kafka Connect's target state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Started,
    Paused,
    /// Tasks shut down, configuration kept (KIP-875): offsets may then be changed.
    Stopped,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Started => "RUNNING",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        }
    }
}

/// One connector the worker runs: its tasks and the handles that stop or pause them.
struct ConnectorRun {
    connector: Arc<ValidatedConnector>,
    target: TargetState,
    tasks: Vec<RunningTask>,
    paused: watch::Sender<bool>,
}

impl ConnectorRun {
    fn is_source(&self) -> bool {
        self.connector.is_source()
    }
}

pub struct Worker {
    config: Arc<WorkerConfig>,
    registry: Arc<PluginRegistry>,
    bus: Arc<dyn Bus>,
    offsets: Arc<dyn OffsetStore>,
    status: Arc<dyn StatusStore>,
    status_view: StatusView,
    metrics: Arc<MetricsRegistry>,
    connectors: std::collections::BTreeMap<String, ConnectorRun>,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    view: Arc<std::sync::RwLock<Vec<ConnectorState>>>,
    /// Where runtime changes to connectors are kept (standalone: a directory).
    config_store: Option<Arc<dyn crate::config_store::ConfigStore>>,
    failures_tx: mpsc::UnboundedSender<TaskFailure>,
    failures_rx: mpsc::UnboundedReceiver<TaskFailure>,
    input_ended: Arc<AtomicBool>,
}

impl Worker {
    /// A standalone worker: embedded bus, offsets in `offset.storage.file.filename`.
    pub fn standalone(
        config: WorkerConfig,
        registry: PluginRegistry,
    ) -> Result<Worker, OffsetStoreError> {
        let offsets = Arc::new(FileOffsetStore::open(&config.offset_file)?);
        let bus = Arc::new(EmbeddedBus::new(
            config.partition_capacity,
            config.default_partitions,
        ));
        Ok(Self::with_parts(
            config,
            registry,
            bus,
            offsets,
            Arc::new(MemoryStatusStore::default()),
        ))
    }

    pub fn with_parts(
        config: WorkerConfig,
        registry: PluginRegistry,
        bus: Arc<dyn Bus>,
        offsets: Arc<dyn OffsetStore>,
        status: Arc<dyn StatusStore>,
    ) -> Worker {
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let status_view = StatusView::new(status.clone(), &config.worker_id);
        let (commands_tx, commands) = mpsc::channel(64);
        Worker {
            status_view,
            config: Arc::new(config),
            registry: Arc::new(registry),
            bus,
            offsets,
            status,
            metrics: Arc::new(MetricsRegistry::default()),
            connectors: std::collections::BTreeMap::new(),
            commands_tx,
            commands,
            view: Arc::default(),
            config_store: None,
            failures_tx,
            failures_rx,
            input_ended: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn registry(&self) -> Arc<PluginRegistry> {
        self.registry.clone()
    }

    pub fn metrics(&self) -> Arc<MetricsRegistry> {
        self.metrics.clone()
    }

    pub fn status(&self) -> Arc<dyn StatusStore> {
        self.status.clone()
    }

    /// Kafka Connect's status bodies of the connectors this worker runs.
    pub fn status_view(&self) -> StatusView {
        self.status_view.clone()
    }

    /// Starts validated connectors: every sink first (so the bus keeps records for them
    /// from the first one on), then every source.
    pub fn start(&mut self, connectors: Vec<ValidatedConnector>) {
        let (sinks, sources): (Vec<_>, Vec<_>) =
            connectors.into_iter().partition(|c| !c.is_source());
        for connector in sinks.into_iter().chain(sources) {
            self.add_connector(Arc::new(connector), TargetState::Started);
        }
    }

    /// Keeps every runtime change to a connector (create, config, state, delete) in `store`.
    pub fn with_config_store(mut self, store: Arc<dyn crate::config_store::ConfigStore>) -> Self {
        self.config_store = Some(store);
        self
    }

    /// Starts connectors in the states they were stored in (sinks first).
    pub fn start_with_states(&mut self, connectors: Vec<(ValidatedConnector, TargetState)>) {
        let (sinks, sources): (Vec<_>, Vec<_>) =
            connectors.into_iter().partition(|(c, _)| !c.is_source());
        for (connector, target) in sinks.into_iter().chain(sources) {
            self.add_connector(Arc::new(connector), target);
        }
    }

    /// Writes a connector's definition and state to the config store (when there is one).
    fn persist(&self, name: &str) -> Result<(), ControlError> {
        let (Some(store), Some(run)) = (&self.config_store, self.connectors.get(name)) else {
            return Ok(());
        };
        store
            .put(&crate::config_store::StoredConnector {
                definition: run.connector.definition.clone(),
                target: run.target,
            })
            .map_err(|e| ControlError::Storage(e.to_string()))
    }

    /// A handle to change this worker's connectors while it runs (the REST API's).
    pub fn handle(&self) -> WorkerHandle {
        self.publish_view();
        WorkerHandle {
            commands: self.commands_tx.clone(),
            view: self.view.clone(),
        }
    }

    /// Refreshes the connectors that handles read.
    fn publish_view(&self) {
        let list = self
            .connectors
            .values()
            .map(|r| ConnectorState {
                definition: r.connector.definition.clone(),
                is_source: r.is_source(),
                target: r.target,
                tasks: r.tasks.len() as u32,
            })
            .collect();
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    fn task_count(connector: &ValidatedConnector) -> u32 {
        // The plugin decides how many tasks it runs; ask it with the resolved config. If
        // that fails, one task is started and fails with the reason, so it shows in status.
        let resolved = crate::validation::resolve_common(&connector.definition.config);
        let Ok((resolved, common)) = resolved else {
            return 1;
        };
        connector
            .plugin
            .task_configs(&resolved, common.tasks_max)
            .map_or(1, |c| c.len().max(1) as u32)
    }

    fn add_connector(&mut self, connector: Arc<ValidatedConnector>, target: TargetState) {
        if !connector.is_source() {
            self.bus
                .register_group(&connector.group_id(), &connector.topic_filter());
        }
        self.status_view
            .add_connector(connector.name(), connector.is_source());
        self.status_view
            .set_target(connector.name(), target.as_str());
        let (paused, _) = watch::channel(target == TargetState::Paused);
        let mut run = ConnectorRun {
            connector,
            target,
            tasks: Vec::new(),
            paused,
        };
        if target != TargetState::Stopped {
            run.tasks = self.spawn_tasks(&run);
        }
        self.connectors
            .insert(run.connector.name().to_string(), run);
    }

    fn spawn_tasks(&self, run: &ConnectorRun) -> Vec<RunningTask> {
        let tasks = Self::task_count(&run.connector);
        tracing::info!(connector = %run.connector.name(), class = %run.connector.common.connector_class, tasks, "starting connector");
        (0..tasks)
            .filter_map(|task_id| self.spawn_task(run, task_id))
            .collect()
    }

    /// Starts task `task_id`; `None` when the connector's bus clients cannot be
    /// created (its tasks then show FAILED with the reason).
    fn spawn_task(&self, run: &ConnectorRun, task_id: u32) -> Option<RunningTask> {
        let connector = &run.connector;
        let is_source = connector.is_source();
        let metrics = self.metrics.connector(connector.name(), is_source);
        let bus = match self
            .bus
            .clone()
            .for_connector(connector.name(), &connector.bus_settings())
        {
            Ok(bus) => bus,
            Err(e) => {
                // The connector's client overrides are unusable: its tasks cannot start.
                let trace = format!("creating the connector's Kafka clients: {e}");
                tracing::error!(connector = %connector.name(), "{trace}");
                {
                    let task = task_id;
                    self.status.put_task(
                        connector.name(),
                        task,
                        TaskStatus {
                            state: TaskState::Failed,
                            worker_id: self.config.worker_id.clone(),
                            trace: Some(trace.clone()),
                            restarts: 0,
                            exhausted: false,
                            retrying: None,
                        },
                    );
                    let _ = self.failures_tx.send(TaskFailure {
                        connector: connector.name().to_string(),
                        task,
                        trace: trace.clone(),
                    });
                }
                return None;
            }
        };
        {
            let env = TaskEnv {
                connector: connector.clone(),
                task_id,
                registry: self.registry.clone(),
                bus: bus.clone(),
                offsets: self.offsets.clone(),
                metrics: metrics.clone(),
                worker: self.config.clone(),
                input_ended: self.input_ended.clone(),
                status: self.status.clone(),
                paused: run.paused.subscribe(),
            };
            let progress = is_source.then(|| Arc::new(SourceProgress::default()));
            let supervisor = Supervisor {
                env,
                status: self.status.clone(),
                failures: self.failures_tx.clone(),
                worker_id: self.config.worker_id.clone(),
            };
            let (stop, signal) = stop_pair();
            let handle = tokio::spawn(supervisor.run(progress.clone(), signal));
            Some(RunningTask {
                id: task_id,
                progress,
                handle,
                stop,
            })
        }
    }

    /// Runs until `shutdown` resolves (or, in drain mode, until everything is drained, or a
    /// task fails for good), then stops: sources first, waiting for what they sent to be
    /// durable and committing their offsets; then sinks, flushing and acknowledging.
    /// Meanwhile it carries out the commands of its [`WorkerHandle`]s.
    pub async fn run(
        mut self,
        mode: RunMode,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> RunOutcome {
        let mut outcome = RunOutcome::default();
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested");
                    break;
                }
                failure = self.failures_rx.recv() => {
                    if let Some(failure) = failure {
                        outcome.failures.push(failure);
                        if mode == RunMode::Drain {
                            break;
                        }
                    }
                }
                Some(command) = self.commands.recv() => {
                    self.execute(command).await;
                }
                _ = tick.tick(), if mode == RunMode::Drain => {
                    if self.drained() {
                        tracing::info!("drained: every source exhausted and every record durable");
                        self.input_ended.store(true, Ordering::Release);
                        break;
                    }
                }
            }
        }
        self.stop_all().await;
        while let Ok(failure) = self.failures_rx.try_recv() {
            outcome.failures.push(failure);
        }
        outcome
    }

    fn drained(&self) -> bool {
        let sources_done = self
            .connectors
            .values()
            .flat_map(|c| c.tasks.iter())
            .filter_map(|t| t.progress.as_ref())
            .all(|p| p.settled.load(Ordering::Acquire));
        sources_done && self.bus.is_settled()
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.config.shutdown_timeout_ms) + Duration::from_secs(5)
    }

    /// Stops a connector's tasks and waits for them (up to the graceful timeout).
    async fn stop_tasks(run: &mut ConnectorRun, grace: Duration) {
        Self::stop_tasks_until(run, tokio::time::Instant::now() + grace).await;
    }

    /// Every task is told to stop first and all share one deadline, so a connector whose
    /// tasks are all stuck (a hung database) holds the worker for one graceful timeout,
    /// not one per task.
    async fn stop_tasks_until(run: &mut ConnectorRun, deadline: tokio::time::Instant) {
        for task in &run.tasks {
            task.stop.stop();
        }
        let name = run.connector.name().to_string();
        for task in run.tasks.drain(..) {
            Self::await_task_until(&name, task, deadline).await;
        }
    }

    async fn await_task(connector: &str, task: RunningTask, grace: Duration) {
        Self::await_task_until(connector, task, tokio::time::Instant::now() + grace).await;
    }

    async fn await_task_until(
        connector: &str,
        mut task: RunningTask,
        deadline: tokio::time::Instant,
    ) {
        task.stop.stop();
        if tokio::time::timeout_at(deadline, &mut task.handle)
            .await
            .is_err()
        {
            tracing::error!(
                connector,
                task = task.id,
                "the task did not stop within task.shutdown.graceful.timeout.ms + 5 s; abandoning it"
            );
            task.handle.abort();
        }
    }

    async fn stop_all(&mut self) {
        let grace = self.grace();
        // Sources first: what they sent becomes durable in the sinks still running.
        for sources in [true, false] {
            for run in self
                .connectors
                .values_mut()
                .filter(|r| r.is_source() == sources)
            {
                for task in &run.tasks {
                    task.stop.stop();
                }
            }
            // All were told at once, so they share one deadline.
            let deadline = tokio::time::Instant::now() + grace;
            for run in self
                .connectors
                .values_mut()
                .filter(|r| r.is_source() == sources)
            {
                Self::stop_tasks_until(run, deadline).await;
            }
        }
    }

    async fn execute(&mut self, command: Command) {
        self.carry_out(command).await;
    }

    async fn carry_out(&mut self, command: Command) {
        match command {
            Command::Create {
                connector,
                target,
                reply,
            } => {
                let result = if self.connectors.contains_key(connector.name()) {
                    Err(ControlError::Conflict(format!(
                        "Connector {} already exists",
                        connector.name()
                    )))
                } else {
                    let name = connector.name().to_string();
                    self.add_connector(Arc::new(connector), target);
                    self.persist(&name)
                };
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(result);
            }
            Command::Replace { connector, reply } => {
                // Kafka Connect keeps the target state across a config change.
                let target = match self.connectors.remove(connector.name()) {
                    Some(mut old) => {
                        Self::stop_tasks(&mut old, self.grace()).await;
                        old.target
                    }
                    None => TargetState::Started,
                };
                self.status.remove_connector(connector.name());
                let name = connector.name().to_string();
                self.add_connector(Arc::new(connector), target);
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(self.persist(&name));
            }
            Command::Delete { name, reply } => {
                let result = match self.connectors.remove(&name) {
                    Some(mut run) => {
                        Self::stop_tasks(&mut run, self.grace()).await;
                        self.status.remove_connector(&name);
                        self.status_view.remove_connector(&name);
                        // KIP-558: a deleted connector's active topics go with it.
                        self.metrics
                            .connector(&name, run.is_source())
                            .topics
                            .reset();
                        match &self.config_store {
                            Some(store) => store
                                .remove(&name)
                                .map_err(|e| ControlError::Storage(e.to_string())),
                            None => Ok(()),
                        }
                    }
                    None => Err(not_found(&name)),
                };
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(result);
            }
            Command::SetTarget {
                name,
                target,
                reply,
            } => {
                let grace = self.grace();
                let result = match self.connectors.get_mut(&name) {
                    None => Err(not_found(&name)),
                    Some(run) => {
                        let was = run.target;
                        run.target = target;
                        run.paused.send_replace(target == TargetState::Paused);
                        self.status_view.set_target(&name, target.as_str());
                        let shown = match target {
                            TargetState::Paused => Some(TaskState::Paused),
                            TargetState::Started if was == TargetState::Paused => {
                                Some(TaskState::Running)
                            }
                            _ => None,
                        };
                        if let Some(state) = shown {
                            for (task, _) in self.status.tasks(&name) {
                                self.status
                                    .update_task(&name, task, &mut |s| s.state = state);
                            }
                        }
                        if target == TargetState::Stopped && was != TargetState::Stopped {
                            Self::stop_tasks(run, grace).await;
                            self.status.remove_connector(&name);
                        }
                        Ok(was)
                    }
                };
                if let Ok(TargetState::Stopped) = result
                    && target != TargetState::Stopped
                    && let Some(run) = self.connectors.get(&name)
                {
                    let tasks = self.spawn_tasks(run);
                    if let Some(run) = self.connectors.get_mut(&name) {
                        run.tasks = tasks;
                    }
                }
                let result = result.and_then(|_| self.persist(&name));
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(result);
            }
            Command::Restart {
                name,
                only_failed,
                reply,
            } => {
                let grace = self.grace();
                let result = match self.connectors.get_mut(&name) {
                    None => Err(not_found(&name)),
                    Some(run) if run.target == TargetState::Stopped => Ok(()),
                    Some(run) => {
                        let failed = self
                            .status
                            .tasks(&name)
                            .iter()
                            .any(|(_, t)| t.state == TaskState::Failed);
                        if !only_failed || failed {
                            Self::stop_tasks(run, grace).await;
                            Ok(())
                        } else {
                            Err(ControlError::NothingToDo)
                        }
                    }
                };
                let restart = result.is_ok()
                    && self
                        .connectors
                        .get(&name)
                        .is_some_and(|r| r.target != TargetState::Stopped && r.tasks.is_empty());
                if restart && let Some(run) = self.connectors.get(&name) {
                    let tasks = self.spawn_tasks(run);
                    if let Some(run) = self.connectors.get_mut(&name) {
                        run.tasks = tasks;
                    }
                }
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(match result {
                    Err(ControlError::NothingToDo) => Ok(()),
                    other => other,
                });
            }
            Command::Offsets {
                name,
                change,
                reply,
            } => {
                let result = match self.connectors.get(&name) {
                    None => Err(not_found(&name)),
                    Some(run) => {
                        let connector = run.connector.clone();
                        let stopped = run.target == TargetState::Stopped;
                        match change {
                            None => self.read_offsets(&connector).await,
                            Some(_) if !stopped => Err(ControlError::BadRequest(format!(
                                "Connectors must be in the STOPPED state before their offsets \
                                 can be modified. This can be done for the specified connector \
                                 by issuing a 'PUT' request to the '/connectors/{name}/stop' endpoint"
                            ))),
                            Some(change) => self
                                .change_offsets(&connector, change)
                                .await
                                .map(|()| Vec::new()),
                        }
                    }
                };
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(result);
            }
            Command::Ping { reply } => {
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(());
            }
            Command::RestartTask { name, task, reply } => {
                let grace = self.grace();
                let result = match self.connectors.get_mut(&name) {
                    None => Err(not_found(&name)),
                    Some(run) => match run.tasks.iter().position(|t| t.id == task) {
                        None => Err(ControlError::NotFound(format!(
                            "Task {name}-{task} not found"
                        ))),
                        Some(index) => {
                            let old = run.tasks.remove(index);
                            Self::await_task(&name, old, grace).await;
                            Ok(())
                        }
                    },
                };
                if result.is_ok()
                    && let Some(run) = self.connectors.get(&name)
                {
                    let started = self.spawn_task(run, task);
                    if let (Some(started), Some(run)) = (started, self.connectors.get_mut(&name)) {
                        run.tasks.push(started);
                        run.tasks.sort_by_key(|t| t.id);
                    }
                }
                // Handles read the view: it shows the change before the answer goes.
                self.publish_view();
                let _ = reply.send(result);
            }
        }
    }
}

/// Transform state kept among a source's offsets (see the source driver): internal, so
/// neither shown nor changed as an offset, but cleared with a reset.
fn is_transform_state(partition: &serde_json::Value) -> bool {
    partition.get("sluice.transform").is_some()
}

fn bus_error(e: crate::bus::BusError) -> ControlError {
    match e {
        crate::bus::BusError::Unsupported(m) => ControlError::BadRequest(m),
        other => ControlError::Storage(other.to_string()),
    }
}

impl Worker {
    async fn read_offsets(
        &self,
        connector: &ValidatedConnector,
    ) -> Result<Vec<ConnectorOffset>, ControlError> {
        if connector.is_source() {
            let offsets = self
                .offsets
                .load(connector.name())
                .await
                .map_err(|e| ControlError::Storage(e.to_string()))?;
            return Ok(offsets
                .into_iter()
                .filter(|o| !is_transform_state(&o.partition))
                .map(|o| ConnectorOffset {
                    partition: o.partition,
                    offset: Some(o.offset),
                })
                .collect());
        }
        let positions = self
            .bus
            .group_offsets(&connector.group_id(), &connector.topic_filter())
            .await
            .map_err(bus_error)?;
        Ok(positions
            .into_iter()
            .map(|p| ConnectorOffset {
                partition: serde_json::json!({"kafka_topic": p.topic, "kafka_partition": p.partition}),
                offset: Some(serde_json::json!({"kafka_offset": p.next_offset})),
            })
            .collect())
    }

    async fn change_offsets(
        &self,
        connector: &ValidatedConnector,
        change: OffsetChange,
    ) -> Result<(), ControlError> {
        let name = connector.name();
        if connector.is_source() {
            let (set, clear): (Vec<ConnectorOffset>, Vec<ConnectorOffset>) = match change {
                OffsetChange::ToTimestamp(_) => {
                    return Err(ControlError::BadRequest(
                        "a timestamp moves a sink connector's offsets; a source's offsets are \
                         its own and given as {\"offsets\": [...]}"
                            .into(),
                    ));
                }
                OffsetChange::Reset => {
                    let all = self
                        .offsets
                        .load(name)
                        .await
                        .map_err(|e| ControlError::Storage(e.to_string()))?;
                    let clear = all
                        .into_iter()
                        .map(|o| ConnectorOffset {
                            partition: o.partition,
                            offset: None,
                        })
                        .collect();
                    (Vec::new(), clear)
                }
                OffsetChange::Alter(offsets) => {
                    offsets.into_iter().partition(|o| o.offset.is_some())
                }
            };
            let set: Vec<sluice_api::SourceOffset> = set
                .into_iter()
                .filter_map(|o| {
                    o.offset.map(|offset| sluice_api::SourceOffset {
                        partition: o.partition,
                        offset,
                    })
                })
                .collect();
            if !set.is_empty() {
                self.offsets
                    .commit(name, &set)
                    .await
                    .map_err(|e| ControlError::Storage(e.to_string()))?;
            }
            let clear: Vec<serde_json::Value> = clear.into_iter().map(|o| o.partition).collect();
            if !clear.is_empty() {
                self.offsets
                    .remove(name, &clear)
                    .await
                    .map_err(|e| ControlError::Storage(e.to_string()))?;
            }
            return Ok(());
        }
        let group = connector.group_id();
        let filter = connector.topic_filter();
        let positions: Vec<(String, i32, Option<i64>)> = match change {
            // As Kafka Connect: the group goes, with every offset it committed; the tasks
            // then start as a new group's (from the beginning, or from
            // `consumer.override.start.timestamp`).
            OffsetChange::Reset => return self.bus.delete_group(&group).await.map_err(bus_error),
            OffsetChange::ToTimestamp(ts) => self
                .bus
                .offsets_for_time(&filter, ts)
                .await
                .map_err(bus_error)?
                .into_iter()
                .map(|p| (p.topic, p.partition, Some(p.next_offset)))
                .collect(),
            OffsetChange::Alter(offsets) => {
                let mut positions = Vec::new();
                for o in offsets {
                    let topic = o.partition["kafka_topic"].as_str();
                    let partition = o.partition["kafka_partition"].as_i64();
                    let (Some(topic), Some(partition)) = (topic, partition) else {
                        return Err(ControlError::BadRequest(format!(
                            "a sink connector's partition is {{\"kafka_topic\": …, \"kafka_partition\": …}}, not {}",
                            o.partition
                        )));
                    };
                    let offset = match &o.offset {
                        None => None,
                        Some(v) => match v["kafka_offset"].as_i64() {
                            Some(n) if n >= 0 => Some(n),
                            _ => {
                                return Err(ControlError::BadRequest(format!(
                                    "a sink connector's offset is {{\"kafka_offset\": <number ≥ 0>}}, not {v}"
                                )));
                            }
                        },
                    };
                    positions.push((topic.to_string(), partition as i32, offset));
                }
                positions
            }
        };
        self.bus
            .alter_group_offsets(&group, &positions)
            .await
            .map_err(bus_error)
    }
}

fn not_found(name: &str) -> ControlError {
    ControlError::NotFound(format!("Connector {name} not found"))
}

/// Why a command could not be carried out; the REST API maps each to its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The change was made but could not be stored.
    #[error("{0}")]
    Storage(String),
    /// The request cannot be carried out as given (400).
    #[error("{0}")]
    BadRequest(String),
    /// Internal: a restart of only failed tasks found none.
    #[error("nothing to do")]
    NothingToDo,
}

/// A connector as the worker holds it.
#[derive(Debug, Clone)]
pub struct ConnectorState {
    pub definition: crate::ConnectorDefinition,
    pub is_source: bool,
    pub target: TargetState,
    /// Tasks running now (0 when stopped).
    pub tasks: u32,
}

enum Command {
    Create {
        connector: ValidatedConnector,
        target: TargetState,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Replace {
        connector: ValidatedConnector,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Delete {
        name: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    SetTarget {
        name: String,
        target: TargetState,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Restart {
        name: String,
        only_failed: bool,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Ping {
        reply: oneshot::Sender<()>,
    },
    RestartTask {
        name: String,
        task: u32,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Offsets {
        name: String,
        change: Option<OffsetChange>,
        reply: oneshot::Sender<Result<Vec<ConnectorOffset>, ControlError>>,
    },
}

/// One partition's offset, in Kafka Connect's REST shape (KIP-875): for a source, its
/// source partition and offset maps; for a sink, `{"kafka_topic","kafka_partition"}` and
/// `{"kafka_offset"}`. An offset of `None` (in a change) resets that partition.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorOffset {
    pub partition: serde_json::Value,
    pub offset: Option<serde_json::Value>,
}

/// A change to a stopped connector's offsets.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetChange {
    /// Set (or, with `None`, reset) these partitions.
    Alter(Vec<ConnectorOffset>),
    /// Sinks (sluice's extension): every partition to its first record at or after a time.
    ToTimestamp(i64),
    /// Every partition back to the start.
    Reset,
}

/// Changes a running worker's connectors. Cheap to clone; every call waits for the
/// worker to carry the command out.
#[derive(Clone)]
pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    /// What the worker runs, as of its last change: read without waiting for the worker,
    /// so a connector stuck stopping never delays a GET.
    view: Arc<std::sync::RwLock<Vec<ConnectorState>>>,
}

impl WorkerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        rx.await.map_err(|_| ControlError::ShuttingDown)
    }

    /// Starts a new connector (409 when the name is taken).
    pub async fn create(
        &self,
        connector: ValidatedConnector,
        target: TargetState,
    ) -> Result<(), ControlError> {
        self.ask(|reply| Command::Create {
            connector,
            target,
            reply,
        })
        .await?
    }

    /// Replaces a connector's config (creating it when new), restarting its tasks.
    pub async fn replace(&self, connector: ValidatedConnector) -> Result<(), ControlError> {
        self.ask(|reply| Command::Replace { connector, reply })
            .await?
    }

    pub async fn delete(&self, name: &str) -> Result<(), ControlError> {
        let name = name.to_string();
        self.ask(|reply| Command::Delete { name, reply }).await?
    }

    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), ControlError> {
        let name = name.to_string();
        self.ask(|reply| Command::SetTarget {
            name,
            target,
            reply,
        })
        .await?
    }

    /// Restarts the connector's tasks (all, or only when one has failed).
    pub async fn restart(&self, name: &str, only_failed: bool) -> Result<(), ControlError> {
        let name = name.to_string();
        self.ask(|reply| Command::Restart {
            name,
            only_failed,
            reply,
        })
        .await?
    }

    /// Restarts one task of a connector (the others keep running).
    pub async fn restart_task(&self, name: &str, task: u32) -> Result<(), ControlError> {
        let name = name.to_string();
        self.ask(|reply| Command::RestartTask { name, task, reply })
            .await?
    }

    /// Answers once the worker has carried out every command before it: it is responsive.
    pub async fn ping(&self) -> Result<(), ControlError> {
        self.ask(|reply| Command::Ping { reply }).await
    }

    /// The connectors, as of the worker's last change (does not wait for the worker).
    pub async fn list(&self) -> Result<Vec<ConnectorState>, ControlError> {
        if self.commands.is_closed() {
            return Err(ControlError::ShuttingDown);
        }
        Ok(self.view.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The connector's committed offsets.
    pub async fn offsets(&self, name: &str) -> Result<Vec<ConnectorOffset>, ControlError> {
        let name = name.to_string();
        self.ask(|reply| Command::Offsets {
            name,
            change: None,
            reply,
        })
        .await?
    }

    /// Changes a STOPPED connector's offsets (400 otherwise, as Kafka Connect).
    pub async fn change_offsets(
        &self,
        name: &str,
        change: OffsetChange,
    ) -> Result<(), ControlError> {
        let name = name.to_string();
        self.ask(|reply| Command::Offsets {
            name,
            change: Some(change),
            reply,
        })
        .await?
        .map(|_| ())
    }
}

/// Runs one task, records its status, and restarts it per `task.restart.policy`.
struct Supervisor {
    env: TaskEnv,
    status: Arc<dyn StatusStore>,
    failures: mpsc::UnboundedSender<TaskFailure>,
    worker_id: String,
}

impl Supervisor {
    fn set(&self, state: TaskState, trace: Option<String>, restarts: u32, exhausted: bool) {
        self.status.put_task(
            self.env.connector.name(),
            self.env.task_id,
            TaskStatus {
                state,
                worker_id: self.worker_id.clone(),
                trace,
                restarts,
                exhausted,
                retrying: None,
            },
        );
    }

    async fn run(self, progress: Option<Arc<SourceProgress>>, mut stop: StopSignal) {
        let name = self.env.connector.name().to_string();
        let task = self.env.task_id;
        let common = &self.env.connector.common;
        let mut restarts = 0u32;
        loop {
            let state = if *self.env.paused.borrow() {
                TaskState::Paused
            } else {
                TaskState::Running
            };
            self.set(state, None, restarts, false);
            let result: Result<(), Failure> = match &progress {
                Some(p) => source_driver::run(self.env.clone(), p.clone(), stop.clone()).await,
                None => sink_driver::run(self.env.clone(), stop.clone()).await,
            };
            let failure = match result {
                Ok(()) => {
                    let exhausted = progress
                        .as_ref()
                        .is_some_and(|p| p.exhausted.load(Ordering::Acquire));
                    self.set(TaskState::Stopped, None, restarts, exhausted);
                    return;
                }
                Err(failure) => failure,
            };
            let trace = failure.trace();
            tracing::error!(connector = %name, task, "task failed: {trace}");
            self.set(TaskState::Failed, Some(trace.clone()), restarts, false);
            if common.restart_policy == RestartPolicy::Never || stop.is_stopped() {
                let _ = self.failures.send(TaskFailure {
                    connector: name,
                    task,
                    trace,
                });
                return;
            }
            restarts += 1;
            let wait = backoff(
                restarts,
                Duration::from_millis(common.restart_backoff_max_ms),
            );
            tracing::warn!(connector = %name, task, restarts, "restarting failed task in {wait:?}");
            self.set(TaskState::Restarting, Some(trace), restarts, false);
            if !stop.sleep(wait).await {
                self.set(TaskState::Stopped, None, restarts, false);
                return;
            }
            if let Some(p) = &progress {
                p.exhausted.store(false, Ordering::Release);
                p.settled.store(false, Ordering::Release);
            }
        }
    }
}
