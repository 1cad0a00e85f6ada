//! A stop request shared by the worker and its tasks.

use tokio::sync::watch;

/// The sending half: the worker asks a group of tasks to stop.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

/// The receiving half, cloned into every task of the group.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

pub fn stop_pair() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(false);
    (StopHandle(tx), StopSignal(rx))
}

impl StopHandle {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    pub fn signal(&self) -> StopSignal {
        StopSignal(self.0.subscribe())
    }
}

impl StopSignal {
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop was requested (at once if it already was).
    pub async fn stopped(&mut self) {
        // An error means the handle is gone, which is a stop as well.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps for `duration` unless a stop comes first; true if it slept the whole time.
    pub async fn sleep(&mut self, duration: std::time::Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(duration) => true,
            _ = self.stopped() => false,
        }
    }
}
