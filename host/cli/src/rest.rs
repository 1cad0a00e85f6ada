//! Serving the REST API from a standalone worker.

use std::net::SocketAddr;

use sluice_runtime::WorkerConfig;
use tokio::task::JoinHandle;

/// Where to listen, and whether the operator asked for it (a failure to bind is then an
/// error; on the default address it only warns, so two workers on one machine still run).
pub struct Listener {
    pub address: String,
    pub explicit: bool,
}

/// The REST listener of this run: `listeners`, `rest.port`, or the default
/// `0.0.0.0:8083` unless the run is a `--drain` batch job.
pub fn listener(config: &WorkerConfig, drain: bool) -> Result<Option<Listener>, String> {
    if let Some(listeners) = &config.listeners {
        let first = listeners.split(',').next().unwrap_or("").trim();
        let address = first
            .strip_prefix("http://")
            .ok_or_else(|| {
                format!("listeners: {first:?} must start with http:// (https is not supported yet)")
            })?
            .trim_end_matches('/')
            .to_string();
        return Ok(Some(Listener {
            address,
            explicit: true,
        }));
    }
    if let Some(port) = config.rest_port {
        return Ok(Some(Listener {
            address: format!("0.0.0.0:{port}"),
            explicit: true,
        }));
    }
    Ok((!drain).then(|| Listener {
        address: "0.0.0.0:8083".to_string(),
        explicit: false,
    }))
}

/// Binds and serves; `Ok(None)` when the default address was taken (warned).
pub async fn serve(
    listener: Listener,
    state: sluice_server::ApiState,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, String> {
    let bound = match tokio::net::TcpListener::bind(&listener.address).await {
        Ok(l) => l,
        Err(e) if !listener.explicit => {
            tracing::warn!(address = %listener.address, error = %e, "REST API not started: cannot listen on the default address; set `listeners` in the worker config");
            return Ok(None);
        }
        Err(e) => {
            return Err(format!(
                "listeners: cannot listen on {}: {e}",
                listener.address
            ));
        }
    };
    let address = bound.local_addr().map_err(|e| format!("listeners: {e}"))?;
    tracing::info!(%address, "REST API listening");
    let app = sluice_server::router(state);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(bound, app).await {
            tracing::error!(error = %e, "REST API stopped");
        }
    });
    Ok(Some((address, handle)))
}
