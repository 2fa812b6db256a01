//! teal's state in one SQLite file (WAL): the audit log of events, hash-chained so tampering
//! shows, and the request log (which version and slot served each request).
//!
//! Nothing on the request path waits on it: requests are logged through a bounded channel
//! and written in batches by a background task, which drops and counts when it falls behind.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("state file: {message}")]
pub struct StoreError {
    message: String,
    unwritable: bool,
}

impl StoreError {
    fn new(message: String) -> StoreError {
        StoreError {
            message,
            unwritable: false,
        }
    }

    /// The state file cannot take writes: the disk (or `state_max_bytes`) is full, or the
    /// file or its folder is read-only. Nothing the caller sent is at fault.
    pub fn unwritable(&self) -> bool {
        self.unwritable
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let unwritable = matches!(
            e.sqlite_error_code(),
            Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen | PermissionDenied)
        );
        StoreError {
            message: e.to_string(),
            unwritable,
        }
    }
}

/// An audit event as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub at_ms: i64,
    pub model: String,
    pub kind: String,
    pub actor: String,
    pub live_slot: Option<String>,
    pub live_version: Option<String>,
    pub detail: serde_json::Value,
    pub hash: String,
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub model: String,
    pub kind: String,
    pub actor: String,
    pub live_slot: Option<String>,
    pub live_version: Option<String>,
    pub detail: serde_json::Value,
}

/// One served request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub request_id: String,
    /// When the request arrived (ms since the epoch): the moment its route was chosen, to
    /// compare with a switch's time. Its answer left `latency_us` later.
    pub at_ms: i64,
    pub model: String,
    pub version: Option<String>,
    pub slot: Option<String>,
    pub status: u16,
    pub latency_us: u64,
    /// The predicted label, when the model names its prediction output (for feedback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
}

/// What a chain check found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub events: u64,
    pub intact: bool,
    /// The first event whose hash does not follow from its content and its predecessor.
    pub first_broken: Option<i64>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
pub fn format_time(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// Parses an RFC 3339 UTC time (`2026-11-22T01:02:03Z`, fractions allowed) or epoch milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if !text.is_ascii() || text.len() < 20 {
        return None;
    }
    // RFC 3339: a date, `T`, a clock with optional fraction, then `Z` or an offset.
    let (date, rest) = (&text[..10], &text[10..]);
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, offset_ms) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let split = rest.len().checked_sub(6)?;
        let (clock, offset) = rest.split_at(split);
        let sign = match offset.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (oh, om) = offset[1..].split_once(':')?;
        let (oh, om) = (number(oh, 2)?, number(om, 2)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (clock, sign * (oh * 3_600_000 + om * 60_000))
    };
    let mut d = date.split('-');
    let (year, month, day) = (
        number(d.next()?, 4)?,
        number(d.next()?, 2)?,
        number(d.next()?, 2)?,
    );
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = clock.split(':');
    let (h, m, s) = (
        number(t.next()?, 2)?,
        number(t.next()?, 2)?,
        number(t.next()?, 2)?,
    );
    if t.next().is_some() || d.next().is_some() || fraction.is_empty() {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400_000 + h * 3_600_000 + m * 60_000 + s * 1000 + millis - offset_ms)
}

/// A field of exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<i64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn chain_hash(prev: &str, at_ms: i64, e: &NewEvent, detail: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        prev,
        &at_ms.to_string(),
        &e.model,
        &e.kind,
        &e.actor,
        e.live_slot.as_deref().unwrap_or(""),
        e.live_version.as_deref().unwrap_or(""),
        detail,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends an event inside a transaction, chained to the newest one.
fn append_in(tx: &rusqlite::Transaction<'_>, event: NewEvent) -> Result<Event, StoreError> {
    let prev: String = tx
        .query_row(
            "SELECT hash FROM events ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default();
    let at_ms = now_ms();
    let detail = event.detail.to_string();
    let hash = chain_hash(&prev, at_ms, &event, &detail);
    tx.execute(
        "INSERT INTO events (at_ms, model, kind, actor, live_slot, live_version, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![at_ms, event.model, event.kind, event.actor, event.live_slot, event.live_version, detail, prev, hash],
    )?;
    Ok(Event {
        id: tx.last_insert_rowid(),
        at: format_time(at_ms),
        at_ms,
        model: event.model,
        kind: event.kind,
        actor: event.actor,
        live_slot: event.live_slot,
        live_version: event.live_version,
        detail: event.detail,
        hash,
    })
}

/// The state file's latest run of failed writes.
struct WriteError {
    message: String,
    since_ms: i64,
    last_ms: i64,
}

/// The state file.
pub struct Store {
    conn: Mutex<Connection>,
    /// Why the last write failed, and since when; cleared by the next write that succeeds.
    write_error: Mutex<Option<WriteError>>,
    write_failures: prometheus_client::metrics::counter::Counter,
}

impl Store {
    /// Opens (or creates) the state file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_limited(path, None)
    }

    /// Opens the state file; with `max_bytes`, SQLite refuses to grow it past that size, and
    /// teal treats it as a full disk.
    pub fn open_limited(path: &Path, max_bytes: Option<u64>) -> Result<Store, StoreError> {
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
            write_error: Mutex::new(None),
            write_failures: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes how a write went: a failure is counted and kept (the first of a run is logged).
    /// A full state file takes some small writes and refuses others, so only a minute
    /// without failures clears it.
    fn track<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
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
                        tracing::error!(error = %e, "cannot write the state file; teal keeps serving, but what it cannot record is lost and rollouts cannot start");
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

    /// Appends an event to the chain.
    pub fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        self.track((|| -> Result<Event, StoreError> {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let stored = append_in(&tx, event)?;
            tx.commit()?;
            Ok(stored)
        })())
    }

    fn event_rows(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql)?;
        let rows = statement.query_map(args, |r| {
            let at_ms: i64 = r.get(1)?;
            let detail: String = r.get(7)?;
            Ok(Event {
                id: r.get(0)?,
                at: format_time(at_ms),
                at_ms,
                model: r.get(2)?,
                kind: r.get(3)?,
                actor: r.get(4)?,
                live_slot: r.get(5)?,
                live_version: r.get(6)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                hash: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A model's events, oldest first (the newest `limit`).
    pub fn events(&self, model: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut events = self.event_rows(
            "SELECT id, at_ms, model, kind, actor, live_slot, live_version, detail, hash FROM events WHERE model = ?1 ORDER BY id DESC LIMIT ?2",
            &[&model, &(limit as i64)],
        )?;
        events.reverse();
        Ok(events)
    }

    /// The newest event of `model` at or before `at_ms` that names the live version.
    pub fn live_at(&self, model: &str, at_ms: i64) -> Result<Option<Event>, StoreError> {
        Ok(self
            .event_rows(
                "SELECT id, at_ms, model, kind, actor, live_slot, live_version, detail, hash FROM events WHERE model = ?1 AND at_ms <= ?2 AND live_version IS NOT NULL ORDER BY id DESC LIMIT 1",
                &[&model, &at_ms],
            )?
            .pop())
    }

    /// Recomputes every hash from the first event on.
    pub fn verify(&self) -> Result<Verification, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT id, at_ms, model, kind, actor, live_slot, live_version, detail, prev_hash, hash FROM events ORDER BY id")?;
        let mut rows = statement.query([])?;
        let (mut prev, mut count) = (String::new(), 0u64);
        while let Some(r) = rows.next()? {
            count += 1;
            let id: i64 = r.get(0)?;
            let event = NewEvent {
                model: r.get(2)?,
                kind: r.get(3)?,
                actor: r.get(4)?,
                live_slot: r.get(5)?,
                live_version: r.get(6)?,
                detail: serde_json::Value::Null,
            };
            let detail: String = r.get(7)?;
            let (stored_prev, stored_hash): (String, String) = (r.get(8)?, r.get(9)?);
            if stored_prev != prev || chain_hash(&prev, r.get(1)?, &event, &detail) != stored_hash {
                return Ok(Verification {
                    events: count,
                    intact: false,
                    first_broken: Some(id),
                });
            }
            prev = stored_hash;
        }
        Ok(Verification {
            events: count,
            intact: true,
            first_broken: None,
        })
    }

    /// Writes a batch of request records in one transaction, many rows per statement.
    pub fn record_requests(&self, batch: &[RequestRecord]) -> Result<(), StoreError> {
        self.track((|| -> Result<(), StoreError> {
            const ROWS: usize = 256;
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            for chunk in batch.chunks(ROWS) {
                let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO requests (request_id, at_ms, model, version, slot, status, latency_us, prediction) VALUES {placeholders}"
                );
                let mut insert = tx.prepare_cached(&sql)?;
                let latencies: Vec<i64> = chunk.iter().map(|r| r.latency_us as i64).collect();
                let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 8);
                for (r, latency) in chunk.iter().zip(&latencies) {
                    values.extend_from_slice(&[
                        &r.request_id,
                        &r.at_ms,
                        &r.model,
                        &r.version,
                        &r.slot,
                        &r.status,
                        latency,
                        &r.prediction,
                    ]);
                }
                insert.execute(values.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        })())
    }

    /// Keeps captured requests.
    pub fn keep_captures(
        &self,
        batch: &[(String, usize, Vec<u8>, Option<usize>)],
    ) -> Result<(), StoreError> {
        self.track((|| -> Result<(), StoreError> {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let at_ms = now_ms();
            for (model, _, body, json_len) in batch {
                tx.prepare_cached(
                    "INSERT INTO captures (model, at_ms, json_len, body) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    model,
                    at_ms,
                    json_len.map(|n| n as i64),
                    body
                ])?;
            }
            tx.commit()?;
            Ok(())
        })())
    }

    /// Deletes all but the newest `limit` captured requests of `model`.
    pub fn trim_captures(&self, model: &str, limit: usize) -> Result<(), StoreError> {
        self.track((|| -> Result<(), StoreError> {
            self.lock().execute(
                "DELETE FROM captures WHERE model = ?1 AND id <= (SELECT id FROM captures WHERE model = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![model, limit as i64],
            )?;
            Ok(())
        })())
    }

    /// The newest `n` captured requests of `model`, oldest first: (body, JSON length).
    pub fn newest_captures(
        &self,
        model: &str,
        n: usize,
    ) -> Result<Vec<(Vec<u8>, Option<usize>)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT body, json_len FROM captures WHERE model = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![model, n as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<i64>>(1)?.map(|n| n as usize),
            ))
        })?;
        let mut captures: Vec<_> = rows.collect::<Result<_, _>>()?;
        captures.reverse();
        Ok(captures)
    }

    /// Keeps a validation report (JSON).
    pub fn save_report(&self, model: &str, report: &str) -> Result<(), StoreError> {
        self.track((|| -> Result<(), StoreError> {
            self.lock().execute(
                "INSERT INTO reports (model, at_ms, report) VALUES (?1, ?2, ?3)",
                params![model, now_ms(), report],
            )?;
            Ok(())
        })())
    }

    /// The newest validation report of `model` (JSON).
    pub fn last_report(&self, model: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT report FROM reports WHERE model = ?1 ORDER BY id DESC LIMIT 1",
                [model],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The records of a request id (a caller may reuse an id, so there can be several).
    pub fn request(&self, request_id: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT request_id, at_ms, model, version, slot, status, latency_us, prediction FROM requests WHERE request_id = ?1 ORDER BY id")?;
        let rows = statement.query_map([request_id], |r| {
            Ok(RequestRecord {
                request_id: r.get(0)?,
                at_ms: r.get(1)?,
                model: r.get(2)?,
                version: r.get(3)?,
                slot: r.get(4)?,
                status: r.get(5)?,
                latency_us: r.get::<_, i64>(6)? as u64,
                prediction: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates a rollout row and returns its id (the state is written by [`Store::save_rollout`]).
    pub fn new_rollout(
        &self,
        model: &str,
        version: &str,
        candidate: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        self.track((|| -> Result<i64, StoreError> {
            let conn = self.lock();
            let now = now_ms();
            conn.execute(
                "INSERT INTO rollouts (model, version, phase, terminal, started_ms, updated_ms, candidate, state) VALUES (?1, ?2, 'new', 0, ?3, ?3, ?4, '{}')",
                params![model, version, now, candidate.to_string()],
            )?;
            Ok(conn.last_insert_rowid())
        })())
    }

    /// Saves a rollout's state and the audit events of its transitions in one transaction,
    /// so a crash keeps both or neither.
    pub fn save_rollout(
        &self,
        rollout: &teal_core::rollout::Rollout,
        events: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        self.track((|| -> Result<(), StoreError> {
            let state = serde_json::to_string(rollout).map_err(|e| StoreError::new(e.to_string()))?;
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE rollouts SET phase = ?2, terminal = ?3, updated_ms = ?4, state = ?5 WHERE id = ?1",
                params![
                    rollout.id,
                    rollout.phase.name(),
                    rollout.phase.is_terminal(),
                    now_ms(),
                    state
                ],
            )?;
            // The route the rollout has chosen is remembered with its phase, so a crash
            // between writing a rollback and acting on it restarts on the old version.
            tx.execute(
                "UPDATE routes SET active = ?2, weight = ?3, shadow = ?4 WHERE model = ?1",
                params![
                    rollout.model,
                    rollout.route.active.to_string(),
                    rollout.route.weight,
                    rollout.route.shadow
                ],
            )?;
            for event in events {
                append_in(&tx, event)?;
            }
            tx.commit()?;
            Ok(())
        })())
    }

    fn rollout_rows(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<teal_core::rollout::Rollout>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql)?;
        let rows = statement.query_map(args, |r| r.get::<_, String>(0))?;
        let mut rollouts = Vec::new();
        for row in rows {
            let text = row?;
            match serde_json::from_str(&text) {
                Ok(rollout) => rollouts.push(rollout),
                Err(e) => tracing::error!(error = %e, "a rollout in the state file cannot be read"),
            }
        }
        Ok(rollouts)
    }

    /// Rollouts that have not ended, with their candidate's slot configuration (JSON), to
    /// resume at start-up.
    pub fn unfinished_rollouts(
        &self,
    ) -> Result<Vec<(teal_core::rollout::Rollout, serde_json::Value)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT state, candidate FROM rollouts WHERE terminal = 0 AND phase != 'new' ORDER BY id",
        )?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut rollouts = Vec::new();
        for row in rows {
            let (state, candidate) = row?;
            match (
                serde_json::from_str(&state),
                serde_json::from_str(&candidate),
            ) {
                (Ok(rollout), Ok(candidate)) => rollouts.push((rollout, candidate)),
                _ => tracing::error!(
                    "an unfinished rollout in the state file cannot be read; it is left as it is"
                ),
            }
        }
        Ok(rollouts)
    }

    /// A model's rollouts, newest first.
    pub fn rollouts(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<teal_core::rollout::Rollout>, StoreError> {
        self.rollout_rows(
            "SELECT state FROM rollouts WHERE model = ?1 AND phase != 'new' ORDER BY id DESC LIMIT ?2",
            &[&model, &(limit as i64)],
        )
    }

    /// Remembers what each slot of a model runs and how traffic is split, so a restart
    /// brings back the same slots with the same one live.
    pub fn save_model_state(&self, state: &ModelState) -> Result<(), StoreError> {
        self.track((|| -> Result<(), StoreError> {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO routes (model, active, weight, shadow) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (model) DO UPDATE SET active = ?2, weight = ?3, shadow = ?4",
                params![state.model, state.active, state.weight, state.shadow],
            )?;
            tx.execute("DELETE FROM slots WHERE model = ?1", [&state.model])?;
            for (color, config) in &state.slots {
                tx.execute(
                    "INSERT INTO slots (model, color, config) VALUES (?1, ?2, ?3)",
                    params![state.model, color, config.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })())
    }

    /// Every model's remembered slots and route.
    pub fn model_states(&self) -> Result<Vec<ModelState>, StoreError> {
        let conn = self.lock();
        let mut routes = conn.prepare("SELECT model, active, weight, shadow FROM routes")?;
        let mut states: Vec<ModelState> = routes
            .query_map([], |r| {
                Ok(ModelState {
                    model: r.get(0)?,
                    active: r.get(1)?,
                    weight: r.get(2)?,
                    shadow: r.get(3)?,
                    slots: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut slots = conn.prepare("SELECT color, config FROM slots WHERE model = ?1")?;
        for state in &mut states {
            state.slots = slots
                .query_map([&state.model], |r| {
                    let text: String = r.get(1)?;
                    Ok((r.get(0)?, serde_json::from_str(&text).unwrap_or_default()))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(states)
    }

    /// Records the true label of a served request. The version and the prediction come from
    /// the request log; `correct` is set when the prediction was logged.
    pub fn record_feedback(
        &self,
        model: &str,
        request_id: &str,
        label: &str,
    ) -> Result<Option<Feedback>, StoreError> {
        self.track((|| -> Result<Option<Feedback>, StoreError> {
            let conn = self.lock();
            let served: Option<(Option<String>, Option<String>)> = conn
                .query_row(
                    "SELECT version, prediction FROM requests WHERE request_id = ?1 AND model = ?2 AND status < 400 ORDER BY id DESC LIMIT 1",
                    params![request_id, model],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((version, prediction)) = served else {
                return Ok(None);
            };
            let correct = prediction.as_deref().map(|p| p == label);
            conn.execute(
                "INSERT INTO feedback (request_id, model, version, at_ms, label, correct) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (request_id) DO UPDATE SET label = ?5, correct = ?6, at_ms = ?4",
                params![request_id, model, version, now_ms(), label, correct],
            )?;
            Ok(Some(Feedback {
                request_id: request_id.to_string(),
                version,
                prediction,
                label: label.to_string(),
                correct,
            }))
        })())
    }

    /// Live accuracy of each version of `model` from feedback since `since_ms`:
    /// version, correct share, labels counted.
    pub fn accuracy(
        &self,
        model: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, f64, u64)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT version, AVG(correct), COUNT(correct) FROM feedback WHERE model = ?1 AND at_ms >= ?2 AND correct IS NOT NULL AND version IS NOT NULL GROUP BY version ORDER BY version",
        )?;
        let rows = statement.query_map(params![model, since_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A model's slots and route as remembered across restarts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelState {
    pub model: String,
    pub active: String,
    pub weight: u32,
    pub shadow: u32,
    /// Colour and slot configuration (JSON).
    pub slots: Vec<(String, serde_json::Value)>,
}

/// A label recorded against a served request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Feedback {
    pub request_id: String,
    pub version: Option<String>,
    pub prediction: Option<String>,
    pub label: String,
    /// Whether the logged prediction equals the label (absent when none was logged).
    pub correct: Option<bool>,
}

/// Requests waiting to be written, at most; past that, records are dropped and counted.
const LOG_QUEUE: usize = 65_536;
const LOG_BATCH: usize = 4096;
const LOG_GATHER: Duration = Duration::from_millis(50);

/// The request log's front: a bounded queue the data plane puts records on without waiting.
pub struct RequestLog {
    queue: crossbeam_channel::Sender<RequestRecord>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

impl RequestLog {
    /// Starts the writer thread, which writes batches to `store` until the log is dropped.
    /// It is a plain thread, not an async task: it spends its life in SQLite, and a
    /// lock-free queue keeps the request side to one cheap `try_send`.
    pub fn start(
        store: std::sync::Arc<Store>,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> RequestLog {
        let (queue, records) = crossbeam_channel::bounded::<RequestRecord>(LOG_QUEUE);
        let lost = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("teal-request-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(LOG_BATCH);
                // Ends when the log (every sender) is dropped.
                while let Ok(first) = records.recv() {
                    batch.push(first);
                    // Let a batch gather: one transaction per few hundred records costs far
                    // less than one per record, and the first record waits at most this long.
                    std::thread::sleep(LOG_GATHER);
                    while batch.len() < LOG_BATCH {
                        match records.try_recv() {
                            Ok(record) => batch.push(record),
                            Err(_) => break,
                        }
                    }
                    // A failed write is logged by the store (once per run of failures);
                    // its records are lost, and counted as dropped.
                    if store.record_requests(&batch).is_err() {
                        lost.inc_by(batch.len() as u64);
                    }
                    batch.clear();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the request log writer; records will be dropped and counted");
        }
        RequestLog { queue, dropped }
    }

    /// Queues a record; never waits. A full queue drops it and counts the drop.
    pub fn log(&self, record: RequestRecord) {
        if self.queue.try_send(record).is_err() {
            let dropped = self.dropped.inc() + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "request log is behind; records are being dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, version: &str) -> NewEvent {
        NewEvent {
            model: "m".into(),
            kind: kind.into(),
            actor: "test".into(),
            live_slot: Some("blue".into()),
            live_version: Some(version.into()),
            detail: serde_json::json!({"n": 1}),
        }
    }

    fn temp_store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("teal-store-{}.db", fastrand::u64(..)));
        (Store::open(&path).unwrap(), path)
    }

    #[test]
    fn the_chain_verifies_and_a_tampered_event_is_found() {
        let (store, path) = temp_store();
        for i in 0..5 {
            store.append(event("switched", &format!("v{i}"))).unwrap();
        }
        assert_eq!(
            store.verify().unwrap(),
            Verification {
                events: 5,
                intact: true,
                first_broken: None
            }
        );
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE events SET live_version = 'v9' WHERE id = 3", [])
            .unwrap();
        assert_eq!(store.verify().unwrap().first_broken, Some(3));
        conn.execute("UPDATE events SET live_version = 'v2' WHERE id = 3", [])
            .unwrap();
        assert!(store.verify().unwrap().intact);
        conn.execute("DELETE FROM events WHERE id = 2", []).unwrap();
        assert_eq!(
            store.verify().unwrap().first_broken,
            Some(3),
            "a deleted event breaks the next link"
        );
    }

    #[test]
    fn migrations_run_once_and_reopen_keeps_data() {
        let (store, path) = temp_store();
        store.append(event("started", "v1")).unwrap();
        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.events("m", 10).unwrap().len(), 1);
    }

    #[test]
    fn times_parse_as_rfc_3339_says_and_nothing_else() {
        let utc = parse_time("2026-11-22T01:02:03Z").unwrap();
        assert_eq!(parse_time("2026-11-22T01:02:03.000Z"), Some(utc));
        assert_eq!(parse_time("2026-11-22t01:02:03z"), Some(utc));
        assert_eq!(parse_time("2026-11-22T02:02:03+01:00"), Some(utc));
        assert_eq!(parse_time("2026-11-21T23:02:03-02:00"), Some(utc));
        assert_eq!(parse_time("2026-11-22T01:02:03.5Z"), Some(utc + 500));
        assert_eq!(
            parse_time("2026-11-22T01:02:03.123456789Z"),
            Some(utc + 123)
        );
        assert_eq!(parse_time(&utc.to_string()), Some(utc));
        for bad in [
            "",
            "yesterday",
            "2026-11-22",
            "2026-11-22T01:02:03",
            "2026-13-22T01:02:03Z",
            "2026-11-22T24:02:03Z",
            "2026-11-22T01:02:03.Z",
            "2026-11-22T01:02:03.a\u{20ac}Z",
            "2026-11-22T01:02:03.\u{20ac}\u{20ac}Z",
            "\u{20ac}026-11-22T01:02:03Z",
            "2026-11-22T01:02:03+1:000",
            "+026-11-22T01:02:03Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip() {
        for ms in [0, 1_763_773_323_456, 951_782_400_000] {
            assert_eq!(
                parse_time(&format_time(ms)),
                Some(ms),
                "{}",
                format_time(ms)
            );
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(
            parse_time("2026-11-22T01:02:03.5Z"),
            Some(parse_time("2026-11-22T01:02:03Z").unwrap() + 500)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
