//! `--status-file`: the worker's status on disk, for operators and health checks that
//! cannot (or, before the REST API, could not) ask over HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_runtime::status::StatusView;
use tokio::task::JoinHandle;

/// Rewrites the file every second until aborted.
pub fn spawn(view: StatusView, path: PathBuf) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            write(&view, &path).await;
        }
    })
}

/// Writes the status atomically (a temporary file renamed over the old one), so a reader
/// never sees half a document. Failures are logged, not fatal: the status file must not
/// stop the pipeline.
pub async fn write(view: &StatusView, path: &Path) {
    let body = match serde_json::to_vec_pretty(&view.all()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot serialize the status: {e}");
            return;
        }
    };
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, &path)
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot write the status file: {e}"),
        Err(e) => tracing::warn!("status file writer stopped: {e}"),
    }
}
