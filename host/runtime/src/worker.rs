//! The worker: starts connectors' tasks, supervises them (status, automatic restarts),
//! and shuts them down in the order that loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_api::{ConfigMap, ConnectError};
use tokio::sync::mpsc;
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
    is_source: bool,
    progress: Option<Arc<SourceProgress>>,
    handle: JoinHandle<()>,
}

pub struct Worker {
    config: Arc<WorkerConfig>,
    registry: Arc<PluginRegistry>,
    bus: Arc<dyn Bus>,
    offsets: Arc<dyn OffsetStore>,
    status: Arc<dyn StatusStore>,
    status_view: StatusView,
    metrics: Arc<MetricsRegistry>,
    source_stop: StopHandle,
    sink_stop: StopHandle,
    tasks: Vec<RunningTask>,
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
        Worker {
            status_view,
            config: Arc::new(config),
            registry: Arc::new(registry),
            bus,
            offsets,
            status,
            metrics: Arc::new(MetricsRegistry::default()),
            source_stop: stop_pair().0,
            sink_stop: stop_pair().0,
            tasks: Vec::new(),
            failures_tx,
            failures_rx,
            input_ended: Arc::new(AtomicBool::new(false)),
        }
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
        for connector in &sinks {
            self.bus
                .register_group(&connector.group_id(), &connector.topic_filter());
        }
        for connector in sinks.into_iter().chain(sources) {
            self.start_connector(Arc::new(connector));
        }
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

    fn start_connector(&mut self, connector: Arc<ValidatedConnector>) {
        let is_source = connector.is_source();
        let metrics = self.metrics.connector(connector.name(), is_source);
        let tasks = Self::task_count(&connector);
        self.status_view.add_connector(connector.name(), is_source);
        tracing::info!(connector = %connector.name(), class = %connector.common.connector_class, tasks, "starting connector");
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
                for task in 0..tasks {
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
                return;
            }
        };
        for task_id in 0..tasks {
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
            };
            let progress = is_source.then(|| Arc::new(SourceProgress::default()));
            let stop = if is_source {
                self.source_stop.signal()
            } else {
                self.sink_stop.signal()
            };
            let supervisor = Supervisor {
                env,
                status: self.status.clone(),
                failures: self.failures_tx.clone(),
                worker_id: self.config.worker_id.clone(),
            };
            let handle = tokio::spawn(supervisor.run(progress.clone(), stop));
            self.tasks.push(RunningTask {
                is_source,
                progress,
                handle,
            });
        }
    }

    /// Runs until `shutdown` resolves (or, in drain mode, until everything is drained, or a
    /// task fails for good), then stops: sources first, waiting for what they sent to be
    /// durable and committing their offsets; then sinks, flushing and acknowledging.
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
            .tasks
            .iter()
            .filter_map(|t| t.progress.as_ref())
            .all(|p| p.settled.load(Ordering::Acquire));
        sources_done && self.bus.is_settled()
    }

    async fn stop_all(&mut self) {
        let grace = Duration::from_millis(self.config.shutdown_timeout_ms) + Duration::from_secs(5);
        for phase_sources in [true, false] {
            if phase_sources {
                self.source_stop.stop();
            } else {
                self.sink_stop.stop();
            }
            for task in self
                .tasks
                .iter_mut()
                .filter(|t| t.is_source == phase_sources)
            {
                if tokio::time::timeout(grace, &mut task.handle).await.is_err() {
                    tracing::error!("a task did not stop within {grace:?}; abandoning it");
                    task.handle.abort();
                }
            }
        }
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
            self.set(TaskState::Running, None, restarts, false);
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
