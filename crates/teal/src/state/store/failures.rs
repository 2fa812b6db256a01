//! Write-failure tracking: a failed write is counted, logged once per run of failures, and
//! reported until a minute passes without one.

use super::{Store, StoreError, now_ms};

/// The state file's latest run of failed writes.
pub(super) struct WriteError {
    message: String,
    since_ms: i64,
    last_ms: i64,
}

impl Store {
    /// Notes how a write went: a failure is counted and kept (the first of a run is logged).
    /// A full state file takes some small writes and refuses others, so only a minute
    /// without failures clears it.
    pub(super) fn track<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        const CLEAR_AFTER_MS: i64 = 60_000;
        let mut last = self.write_error.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        match &result {
            Ok(_) => {
                if last
                    .as_ref()
                    .is_some_and(|l| now - l.last_ms > CLEAR_AFTER_MS)
                {
                    *last = None;
                    tracing::info!("the state file takes writes again");
                }
            }
            Err(e) => {
                self.write_failures.inc();
                match last.as_mut() {
                    Some(l) => {
                        l.last_ms = now;
                        l.message = e.to_string();
                    }
                    None => {
                        tracing::error!(error = %e, "cannot write the state file; teal keeps serving, but what it cannot record is lost, and rollouts and hand-made changes are refused");
                        *last = Some(WriteError {
                            message: e.to_string(),
                            since_ms: now,
                            last_ms: now,
                        });
                    }
                }
            }
        }
        result
    }

    /// Why the state file cannot be written, and since when (ms since the epoch); `None`
    /// once writes have succeeded for a minute.
    pub fn write_error(&self) -> Option<(String, i64)> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| (l.message.clone(), l.since_ms))
    }

    /// Failed writes so far (for `/metrics`).
    pub fn write_failures(&self) -> prometheus_client::metrics::counter::Counter {
        self.write_failures.clone()
    }
}
