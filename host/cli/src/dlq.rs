//! `sluice dlq list|replay`: look at the dead letters a DeadLetterSink stored, and
//! redeliver selected ones to the sink connector they failed in once the cause is fixed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluice_dead_letter::{ReplayStore, Selection, StoredLetter};
use sluice_runtime::PluginRegistry;
use sluice_runtime::validation::{ValidatedConnector, resolve_common};

use crate::{EXIT_INVALID, EXIT_TASK_FAILED, load_connectors};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Lists the stored dead letters that match and were not replayed yet.
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Redelivers the matching dead letters to the connector given with --to (through
    /// its converters, transforms and sink, with their original topic, partition and
    /// offset) and marks those delivered as replayed: a second replay skips them.
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// The sink connector file to redeliver to (usually the one the records failed
        /// in). Unless --connector or --any-connector says otherwise, only dead letters of
        /// the connector with this name are replayed.
        #[arg(long, value_name = "CONNECTOR_FILE")]
        to: PathBuf,
        /// Replay dead letters of every connector into --to.
        #[arg(long, conflicts_with = "connector")]
        any_connector: bool,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
pub struct Filter {
    /// The DeadLetterSink connector file whose store (table or file) holds the dead letters.
    #[arg(long, value_name = "CONNECTOR_FILE")]
    store: PathBuf,
    /// Only dead letters of records that failed in this connector.
    #[arg(long)]
    connector: Option<String>,
    /// Only dead letters whose original topic is this.
    #[arg(long)]
    topic: Option<String>,
    /// Only records that failed at or after this time (RFC 3339, or epoch milliseconds).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Only records that failed before this time (RFC 3339, or epoch milliseconds).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Only these dead letters (ids as `list` shows them); repeatable.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// At most this many, oldest first.
    #[arg(long)]
    limit: Option<usize>,
}

fn parse_time(text: &str) -> Result<i64, String> {
    sluice_runtime::timestamps::parse_epoch_ms(text)
}

impl Filter {
    fn selection(&self) -> Selection {
        Selection {
            connector: self.connector.clone(),
            topic: self.topic.clone(),
            since_ms: self.since,
            until_ms: self.until,
            ids: self.ids.clone(),
            limit: self.limit,
        }
    }
}

pub async fn run(registry: PluginRegistry, command: DlqCommand) -> ExitCode {
    match command {
        DlqCommand::List { filter } => {
            let Some(mut store) = open_store(&registry, &filter.store).await else {
                return ExitCode::from(EXIT_INVALID);
            };
            let letters = match store.claim(&filter.selection()).await {
                Ok(l) => l,
                Err(e) => return store_failed(&e),
            };
            // Nothing was replayed: this only ends the claim.
            if let Err(e) = store.finish(&[]).await {
                return store_failed(&e);
            }
            for letter in &letters {
                println!("{}", describe(letter));
            }
            eprintln!("{} dead letter(s) not replayed yet", letters.len());
            ExitCode::SUCCESS
        }
        DlqCommand::Replay {
            filter,
            to,
            any_connector,
            dry_run,
        } => replay(&registry, &filter, &to, any_connector, dry_run).await,
    }
}

async fn replay(
    registry: &PluginRegistry,
    filter: &Filter,
    to: &PathBuf,
    any_connector: bool,
    dry_run: bool,
) -> ExitCode {
    let Some(target) = load_one(registry, to) else {
        return ExitCode::from(EXIT_INVALID);
    };
    if target.is_source() {
        eprintln!(
            "error: {}: connector \"{}\" is a source; dead letters are replayed into a sink",
            to.display(),
            target.name()
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let mut selection = filter.selection();
    if selection.connector.is_none() && !any_connector {
        selection.connector = Some(target.name().to_string());
    }
    let Some(mut store) = open_store(registry, &filter.store).await else {
        return ExitCode::from(EXIT_INVALID);
    };
    let letters = match store.claim(&selection).await {
        Ok(l) => l,
        Err(e) => return store_failed(&e),
    };
    let (replayable, orphans): (Vec<StoredLetter>, Vec<StoredLetter>) =
        letters.into_iter().partition(|l| l.original.is_some());
    for orphan in &orphans {
        eprintln!(
            "dead letter {}: no original topic recorded; cannot replay it",
            orphan.id
        );
    }
    if dry_run || replayable.is_empty() {
        for letter in &replayable {
            println!("{}", describe(letter));
        }
        if let Err(e) = store.finish(&[]).await {
            return store_failed(&e);
        }
        eprintln!(
            "{} dead letter(s) {}",
            replayable.len(),
            if dry_run {
                "would be replayed"
            } else {
                "to replay"
            }
        );
        return ExitCode::SUCCESS;
    }
    let (ids, records): (Vec<String>, Vec<_>) = replayable
        .into_iter()
        .filter_map(|l| l.original.map(|r| (l.id, r)))
        .unzip();
    let outcomes = match sluice_runtime::replay::redeliver(&target, registry, records).await {
        Ok(o) => o,
        Err(e) => {
            // Nothing is marked: the next replay takes every one of them again.
            let _ = store.finish(&[]).await;
            eprintln!(
                "error: replaying into connector \"{}\" failed, nothing was marked replayed: {e}",
                target.name()
            );
            return ExitCode::from(EXIT_TASK_FAILED);
        }
    };
    let mut delivered = Vec::new();
    let mut failed = 0;
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            None => delivered.push(id),
            Some(reason) => {
                failed += 1;
                eprintln!("dead letter {id} failed again, left for a later replay: {reason}");
            }
        }
    }
    if let Err(e) = store.finish(&delivered).await {
        eprintln!(
            "error: {} dead letter(s) were delivered but could not be marked replayed ({e}); \
             a later replay delivers them again",
            delivered.len()
        );
        return ExitCode::from(EXIT_TASK_FAILED);
    }
    eprintln!(
        "replayed {} dead letter(s) into \"{}\"; {failed} failed again",
        delivered.len(),
        target.name()
    );
    if failed > 0 || !orphans.is_empty() {
        ExitCode::from(EXIT_TASK_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(letter: &StoredLetter) -> String {
    let Some(record) = &letter.original else {
        return format!("{}\t(no original topic)", letter.id);
    };
    format!(
        "{}\t{}\t{}/{}/{}\t{}",
        letter.id,
        letter.connector.as_deref().unwrap_or("-"),
        record.topic,
        record.partition.map_or("-".into(), |p| p.to_string()),
        record.offset.map_or("-".into(), |o| o.to_string()),
        letter.error.as_deref().unwrap_or("").replace('\n', " ")
    )
}

fn store_failed(e: &sluice_api::ConnectError) -> ExitCode {
    eprintln!("error: reading the dead-letter store: {e}");
    ExitCode::from(EXIT_INVALID)
}

fn load_one(registry: &PluginRegistry, file: &PathBuf) -> Option<ValidatedConnector> {
    load_connectors(registry, std::slice::from_ref(file))?
        .into_iter()
        .next()
}

/// The store of the DeadLetterSink connector in `file`, placeholders resolved.
async fn open_store(registry: &PluginRegistry, file: &PathBuf) -> Option<Box<dyn ReplayStore>> {
    let connector = load_one(registry, file)?;
    let expected = crate::builtins::dead_letter_sink_class();
    if connector.plugin.as_plugin().info().class != expected {
        eprintln!(
            "error: {}: connector \"{}\" is not a {}; --store takes the dead-letter sink's file",
            file.display(),
            connector.name(),
            expected
        );
        return None;
    }
    let resolved = match resolve_common(&connector.definition.config) {
        Ok((resolved, _)) => resolved,
        Err(issues) => {
            for issue in issues {
                eprintln!("error: {}: {issue}", file.display());
            }
            return None;
        }
    };
    match sluice_dead_letter::open_replay_store(&resolved) {
        Ok(store) => Some(store),
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            None
        }
    }
}
