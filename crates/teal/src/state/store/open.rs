//! Opening the state file: WAL, the size limit, and the schema migrations.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::{Store, StoreError};

/// Schema versions, applied in order; `PRAGMA user_version` records how far a file is.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        model TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        live_slot TEXT,
        live_version TEXT,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX events_model_at ON events (model, at_ms);
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        model TEXT NOT NULL,
        version TEXT,
        slot TEXT,
        status INTEGER NOT NULL,
        latency_us INTEGER NOT NULL
    );
    CREATE INDEX requests_request_id ON requests (request_id);",
    "CREATE TABLE captures (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        json_len INTEGER,
        body BLOB NOT NULL
    );
    CREATE INDEX captures_model ON captures (model, id);
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX reports_model ON reports (model, id);",
    "CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        phase TEXT NOT NULL,
        terminal INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        candidate TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX rollouts_model ON rollouts (model, id);
    CREATE TABLE slots (
        model TEXT NOT NULL,
        color TEXT NOT NULL,
        config TEXT NOT NULL,
        PRIMARY KEY (model, color)
    );
    CREATE TABLE routes (
        model TEXT PRIMARY KEY,
        active TEXT NOT NULL,
        weight INTEGER NOT NULL,
        shadow INTEGER NOT NULL
    );
    ALTER TABLE requests ADD COLUMN prediction TEXT;
    CREATE TABLE feedback (
        request_id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        version TEXT,
        at_ms INTEGER NOT NULL,
        label TEXT NOT NULL,
        correct INTEGER
    );
    CREATE INDEX feedback_model_version ON feedback (model, version, at_ms);",
    "CREATE TABLE audit_anchor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        event_id INTEGER NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL,
        anchored_from INTEGER NOT NULL,
        broken_at INTEGER,
        broken TEXT
    );",
];

impl Store {
    /// Opens (or creates) the state file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_limited(path, None)
    }

    /// Opens the state file; with `max_bytes`, SQLite refuses to grow it past that size, and
    /// teal treats it as a full disk. The audit key beside it is read, or made on first use.
    pub fn open_limited(path: &Path, max_bytes: Option<u64>) -> Result<Store, StoreError> {
        let anchor_key = super::anchor::AnchorKey::load_or_create(path)?;
        let conn = Connection::open(path)
            .map_err(|e| StoreError::new(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoint less often than every 1,000 pages: the request log's index pages change
        // on every batch, and each checkpoint writes them again.
        conn.pragma_update(None, "wal_autocheckpoint", 8000)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(migration)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        if let Some(max_bytes) = max_bytes {
            let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = (max_bytes as i64 / page.max(512)).max(1);
            conn.pragma_update(None, "max_page_count", pages)?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
            anchor_key,
            write_error: Mutex::new(None),
            write_failures: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{event, temp_store};
    use super::*;

    #[test]
    fn migrations_run_once_and_reopen_keeps_data() {
        let (store, path) = temp_store();
        store.append(event("started", "v1")).unwrap();
        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.events("m", 10).unwrap().len(), 1);
    }
}
