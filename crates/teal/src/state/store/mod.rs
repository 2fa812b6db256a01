//! teal's state in one SQLite file (WAL): the audit log of events, hash-chained so tampering
//! shows, the request log (which version and slot served each request), captured requests and
//! validation reports, rollouts, each model's slots and route, and feedback labels.
//!
//! One owner writes: [`Store`] holds the only connection behind a mutex, and every write goes
//! through one transaction on it (`Store::write`), so what one call writes lands whole or not
//! at all, and every write is tracked for `/api/v1/status`. A change that must be recorded
//! together (a route and its audit event, a rollout's state and its transitions) is one call.
//!
//! Nothing on the request path waits on it: requests are logged through a bounded channel
//! and written in batches by a background thread, which drops and counts when it falls behind.

mod anchor;
mod audit;
mod captures;
mod error;
mod failures;
mod feedback;
mod models;
mod open;
mod requests;
mod rollouts;
mod time;

use std::sync::Mutex;

use rusqlite::{Connection, Transaction};

pub use anchor::{KEY_FILE as AUDIT_KEY_FILE, hmac_sha256, key_path as audit_key_path};
pub use audit::{AnchorCheck, Event, NewEvent, Verification};
pub use error::StoreError;
pub use feedback::{Feedback, FeedbackOutcome};
pub use models::ModelState;
pub use requests::{RequestLog, RequestRecord, Retention};
pub use time::{format_time, now_ms, parse_time};

/// The state file.
pub struct Store {
    /// The one connection; reached only through [`Store::read`] and [`Store::write`].
    conn: Mutex<Connection>,
    /// Signs the audit chain's head; kept in a file beside the state file, not in it.
    anchor_key: anchor::AnchorKey,
    /// Why the last write failed, and since when; cleared by the first write that succeeds a
    /// minute after the last failure.
    write_error: Mutex<Option<failures::WriteError>>,
    write_failures: prometheus_client::metrics::counter::Counter,
}

impl Store {
    /// Runs `query` on the connection. Only reads belong here; writes go through
    /// [`Store::write`], so they are tracked.
    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        query(&self.conn.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `statements` as one transaction and notes how it went. Every write to the state
    /// file comes through here: an error anywhere rolls back all of it.
    fn write<T>(
        &self,
        statements: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let outcome = (|| {
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction()?;
            let value = statements(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        self.track(outcome)
    }
}

#[cfg(test)]
mod testing {
    use super::{NewEvent, Store};

    pub fn event(kind: &str, version: &str) -> NewEvent {
        NewEvent {
            model: "m".into(),
            kind: kind.into(),
            actor: "test".into(),
            live_slot: Some("blue".into()),
            live_version: Some(version.into()),
            detail: serde_json::json!({"n": 1}),
        }
    }

    /// A state file in a folder of its own (its audit key lives beside it).
    pub fn temp_path() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("teal-store-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("teal.db")
    }

    pub fn temp_store() -> (Store, std::path::PathBuf) {
        let path = temp_path();
        (Store::open(&path).unwrap(), path)
    }
}
