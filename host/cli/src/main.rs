//! `sluice`: runs Kafka Connect-style connectors declared in JSON.

mod builtins;
mod config_dir;
mod dlq;
mod progress;
mod rest;
mod schemas;
mod status_file;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use sluice_runtime::validation::{ValidatedConnector, validate_all};
use sluice_runtime::{
    ConnectorDefinition, ConnectorProblem, PluginRegistry, RunMode, Worker, WorkerConfig,
};

// Records are allocated on one thread and freed on another all the time (source task →
// bus → sink task); glibc's malloc spends most of a pipeline's CPU on that pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 0 success; 1 invalid configuration or a start-up error; 2 usage error;
/// 3 a task failed (with `--drain`, or when the worker stops with failed tasks).
const EXIT_INVALID: u8 = 1;
const EXIT_TASK_FAILED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Runs Kafka Connect-style connectors declared in JSON."
)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Progress {
    /// A live status line when stderr is a terminal, periodic log lines otherwise.
    Auto,
    /// Always the live status line.
    Always,
    /// Only log lines.
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Runs connectors in one process with the embedded bus.
    Standalone {
        /// Worker config file (JSON or .properties).
        #[arg(long)]
        worker: Option<PathBuf>,
        /// Exit once every source is exhausted and every record is durable.
        #[arg(long)]
        drain: bool,
        #[arg(long, value_enum, default_value_t = Progress::Auto)]
        progress: Progress,
        /// Keep this file updated (every second, written atomically) with every
        /// connector's status, shaped as Kafka Connect's `GET /connectors?expand=status`.
        #[arg(long, value_name = "PATH")]
        status_file: Option<PathBuf>,
        /// A directory of connector files (same formats as the files below), watched: a
        /// new file creates its connector, a changed one replaces its config, a deleted
        /// one deletes it. Invalid files are logged and change nothing.
        #[arg(long, value_name = "DIR")]
        config_dir: Option<PathBuf>,
        /// Connector files: `{"name": …, "config": {…}}` or a bare config with `name`.
        /// Optional: connectors may also come from the connector store or the REST API.
        connectors: Vec<PathBuf>,
    },
    /// Checks connector files; exits 1 if any has an error (unknown keys only warn).
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists the connector, transform and predicate types this binary knows.
    Plugins,
    /// Dead letters stored by a DeadLetterSink: list them, replay them.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Writes one JSON Schema per plugin (plus worker and common connector keys).
    Schemas {
        #[arg(long)]
        out: PathBuf,
        /// Do not write: exit 1 if the files under --out differ from the generated ones.
        #[arg(long)]
        check: bool,
    },
}

/// Logs to stderr through `RUST_LOG`'s filter (`info` when unset), held in a reload layer
/// so `/admin/loggers` can change levels while the process runs.
fn init_logging(format: LogFormat) -> sluice_server::loggers::LogLevels {
    use tracing_subscriber::prelude::*;
    let (levels, filter) = sluice_server::loggers::LogLevels::from_env();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let tty = std::io::stderr().is_terminal();
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(tty)
            .with_writer(ClearLineStderr(tty))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(levels.recorder())
        .init();
    levels.set_reloader(move |filter| handle.reload(filter).map_err(|e| e.to_string()));
    levels
}

/// Stderr for log lines; on a terminal each line first erases the live progress line, so
/// the two never run into each other (the progress line is redrawn on its next tick).
#[derive(Clone, Copy)]
struct ClearLineStderr(bool);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ClearLineStderr {
    type Writer = ClearLineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ClearLineWriter { clear: self.0 }
    }
}

struct ClearLineWriter {
    clear: bool,
}

impl std::io::Write for ClearLineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if std::mem::take(&mut self.clear) {
            err.write_all(b"\r\x1b[K")?;
        }
        err.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_levels = init_logging(cli.log_format);
    let registry = builtins::registry();
    match cli.command {
        Command::Standalone {
            worker,
            drain,
            progress,
            status_file,
            config_dir,
            connectors,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            runtime.block_on(standalone(
                registry,
                worker.as_deref(),
                StandaloneOptions {
                    drain,
                    progress,
                    status_file,
                    config_dir,
                    log_levels,
                },
                &connectors,
            ))
        }
        Command::Validate { files } => validate(&registry, &files),
        Command::Dlq { command } => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(dlq::run(registry, command)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::from(EXIT_INVALID)
            }
        },
        Command::Plugins => {
            plugins(&registry);
            ExitCode::SUCCESS
        }
        Command::Schemas { out, check } => schemas_command(&registry, &out, check),
    }
}

/// Loads and validates connector files, printing every problem. `None` if any is an error.
fn load_connectors(
    registry: &PluginRegistry,
    files: &[PathBuf],
) -> Option<Vec<ValidatedConnector>> {
    let mut problems: Vec<ConnectorProblem> = Vec::new();
    let mut definitions = Vec::new();
    for file in files {
        match ConnectorDefinition::load(file) {
            Ok(d) => definitions.push(d),
            Err(p) => problems.push(p),
        }
    }
    let (more, valid) = validate_all(&definitions, registry);
    problems.extend(more);
    for problem in &problems {
        eprintln!("{problem}");
    }
    if problems.iter().any(ConnectorProblem::is_error) {
        None
    } else {
        Some(valid)
    }
}

/// The connectors of this run: those created or changed over REST earlier (from the
/// connector store, in their stored state), then the files given, which win on a name
/// both have; then the `--config-dir` files, whose config wins too but which keep the
/// stored state (a connector paused or stopped over REST stays so).
fn with_stored(
    registry: &PluginRegistry,
    store: &dyn sluice_runtime::config_store::ConfigStore,
    from_files: Vec<ValidatedConnector>,
    from_dir: Vec<ValidatedConnector>,
) -> Option<Vec<(ValidatedConnector, sluice_runtime::worker::TargetState)>> {
    let stored = match store.load_all() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut all: Vec<(ValidatedConnector, sluice_runtime::worker::TargetState)> = Vec::new();
    let mut from_dir: Vec<(ValidatedConnector, sluice_runtime::worker::TargetState)> = from_dir
        .into_iter()
        .map(|c| (c, sluice_runtime::worker::TargetState::Started))
        .collect();
    for s in stored {
        if from_files.iter().any(|c| c.name() == s.definition.name) {
            tracing::warn!(connector = %s.definition.name, "a connector file and the connector store both define this connector; the file wins");
            continue;
        }
        if let Some((_, target)) = from_dir
            .iter_mut()
            .find(|(c, _)| c.name() == s.definition.name)
        {
            *target = s.target;
            continue;
        }
        let (problems, valid) = sluice_runtime::validation::validate(&s.definition, registry);
        for p in &problems {
            eprintln!("{p}");
        }
        match valid {
            Some(v) => all.push((v, s.target)),
            None => return None,
        }
    }
    all.extend(
        from_files
            .into_iter()
            .map(|c| (c, sluice_runtime::worker::TargetState::Started)),
    );
    all.extend(from_dir);
    Some(all)
}

fn validate(registry: &PluginRegistry, files: &[PathBuf]) -> ExitCode {
    match load_connectors(registry, files) {
        Some(valid) => {
            println!("{} connector(s) valid", valid.len());
            ExitCode::SUCCESS
        }
        None => ExitCode::from(EXIT_INVALID),
    }
}

fn plugins(registry: &PluginRegistry) {
    let all = registry.all();
    let width = all
        .iter()
        .map(|(info, _)| info.class.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<15} {:<width$} {:<9} ALIASES",
        "KIND", "CLASS", "VERSION"
    );
    for (info, _) in all {
        println!(
            "{:<15} {:<width$} {:<9} {}",
            info.kind.as_str(),
            info.class,
            info.version,
            info.aliases.join(", ")
        );
    }
}

fn schemas_command(registry: &PluginRegistry, out: &Path, check: bool) -> ExitCode {
    if check {
        match schemas::check(registry, out) {
            Ok(diffs) if diffs.is_empty() => {
                println!("schemas in {} are up to date", out.display());
                ExitCode::SUCCESS
            }
            Ok(diffs) => {
                for d in diffs {
                    eprintln!("{d}");
                }
                eprintln!(
                    "run `sluice schemas --out {}` and commit the result",
                    out.display()
                );
                ExitCode::from(EXIT_INVALID)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_INVALID)
            }
        }
    } else {
        match schemas::write(registry, out) {
            Ok(n) => {
                println!("wrote {n} schemas to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_INVALID)
            }
        }
    }
}

struct StandaloneOptions {
    drain: bool,
    progress: Progress,
    status_file: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    log_levels: sluice_server::loggers::LogLevels,
}

async fn standalone(
    registry: PluginRegistry,
    worker_file: Option<&Path>,
    options: StandaloneOptions,
    files: &[PathBuf],
) -> ExitCode {
    let StandaloneOptions {
        drain,
        progress,
        status_file,
        config_dir,
        log_levels,
    } = options;
    let config = match worker_file {
        Some(path) => match WorkerConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        },
        None => WorkerConfig::default(),
    };
    let Some(connectors) = load_connectors(&registry, files) else {
        return ExitCode::from(EXIT_INVALID);
    };
    let store = std::sync::Arc::new(sluice_runtime::config_store::DirConfigStore::new(
        config.connector_dir(),
    ));
    let (config_dir, from_dir) = match config_dir {
        None => (None, Vec::new()),
        Some(dir) => match config_dir::ConfigDir::open(&dir, &config.connector_dir()) {
            Ok(mut watched) => {
                let initial = watched.initial(&registry);
                for name in &initial.removed {
                    use sluice_runtime::config_store::ConfigStore;
                    if let Err(e) = store.remove(name) {
                        eprintln!("error: {e}");
                        return ExitCode::from(EXIT_INVALID);
                    }
                }
                let mut from_dir = initial.connectors;
                from_dir.retain(|c| {
                    let shadowed = connectors.iter().any(|f| f.name() == c.name());
                    if shadowed {
                        watched.disown(c.name());
                    }
                    !shadowed
                });
                (Some(watched), from_dir)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        },
    };
    let Some(connectors) = with_stored(&registry, store.as_ref(), connectors, from_dir) else {
        return ExitCode::from(EXIT_INVALID);
    };
    let rest_listener = match rest::listener(&config, drain) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: {}: {e}",
                worker_file.map_or("worker config".into(), |p| p.display().to_string())
            );
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // `rest.auth`: its secret files are read now; a problem stops the start.
    let auth = match &rest_listener {
        None => sluice_server::auth::Auth::default(),
        Some(_) => match sluice_server::auth::Auth::from_config(&config) {
            Ok(auth) => auth,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        },
    };
    let topic_tracking = sluice_server::topics::TopicTracking::from_config(&config);
    let cluster_id = config
        .bootstrap_servers
        .as_ref()
        .map(|_| "kafka".to_string());
    let worker = match sluice_kafka::KafkaSettings::from_worker(&config) {
        Some(kafka) => kafka_worker(config, registry, kafka).await,
        None => Worker::standalone(config, registry).map_err(|e| e.to_string()),
    };
    let mut worker = match worker {
        Ok(w) => w.with_config_store(store),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let metrics = worker.metrics();
    let tty = match progress {
        Progress::Auto => std::io::stderr().is_terminal(),
        Progress::Always => true,
        Progress::Never => false,
    };
    let started = Instant::now();
    worker.start_with_states(connectors);
    let reporter = progress::spawn(metrics.clone(), worker.status(), tty);
    let status_view = worker.status_view();
    let api = match rest_listener {
        None => None,
        Some(listener) => {
            let state = sluice_server::ApiState {
                worker: worker.handle(),
                registry: worker.registry(),
                status: status_view.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                cluster_id,
                auth,
                loggers: log_levels,
                metrics: metrics.clone(),
                topic_tracking,
            };
            match rest::serve(listener, state).await {
                Ok(served) => served.map(|(_, handle)| handle),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            }
        }
    };
    let status_writer = status_file
        .clone()
        .map(|path| status_file::spawn(status_view.clone(), path));
    let watcher = match config_dir.map(|d| d.watch(worker.handle(), worker.registry())) {
        None => None,
        Some(Ok(watcher)) => Some(watcher),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mode = if drain {
        RunMode::Drain
    } else {
        RunMode::UntilStopped
    };
    let outcome = worker.run(mode, shutdown_signal()).await;
    reporter.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some(api) = api {
        api.abort();
    }
    if let Some(writer) = status_writer {
        writer.abort();
    }
    if let Some(path) = &status_file {
        // The final states (STOPPED, FAILED with their traces) outlive the process.
        status_file::write(&status_view, path).await;
    }
    if tty {
        eprintln!();
    }
    eprintln!(
        "done in {:.2}s: {}",
        started.elapsed().as_secs_f64(),
        progress::summary(&metrics, started.elapsed())
    );
    if outcome.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &outcome.failures {
            eprintln!(
                "connector \"{}\" task {} FAILED: {}",
                f.connector, f.task, f.trace
            );
        }
        ExitCode::from(EXIT_TASK_FAILED)
    }
}

/// A worker whose topics are Kafka topics and whose source offsets are in the offset topic.
async fn kafka_worker(
    config: WorkerConfig,
    registry: PluginRegistry,
    kafka: sluice_kafka::KafkaSettings,
) -> Result<Worker, String> {
    for key in kafka.ignored_keys() {
        tracing::warn!(key, "not a librdkafka setting; ignored");
    }
    let kafka = std::sync::Arc::new(kafka);
    let bus = sluice_kafka::KafkaBus::new(kafka.clone()).map_err(|e| e.to_string())?;
    let offsets = sluice_kafka::KafkaOffsetStore::open(kafka.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Worker::with_parts(
        config,
        registry,
        std::sync::Arc::new(bus),
        std::sync::Arc::new(offsets),
        std::sync::Arc::new(sluice_runtime::status::MemoryStatusStore::default()),
    ))
}

/// Resolves on SIGINT or SIGTERM. A second signal exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting without waiting");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
