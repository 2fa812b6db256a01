//! The audit log: events, each holding the hash of the one before, so that a changed or
//! deleted event breaks the chain and `teal audit verify` finds it.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, format_time, now_ms};

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

/// What a chain check found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub events: u64,
    pub intact: bool,
    /// The first event whose hash does not follow from its content and its predecessor.
    pub first_broken: Option<i64>,
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

/// Appends an event inside a transaction, chained to the newest one; for every write that
/// records an event together with what it changed.
pub(super) fn append_in(tx: &Transaction<'_>, event: NewEvent) -> Result<Event, StoreError> {
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

impl Store {
    /// Appends an event to the chain.
    pub fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        self.write(|tx| append_in(tx, event))
    }

    fn event_rows(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Event>, StoreError> {
        self.read(|conn| {
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
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                    hash: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
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
        self.read(|conn| {
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
                if stored_prev != prev
                    || chain_hash(&prev, r.get(1)?, &event, &detail) != stored_hash
                {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::testing::{event, temp_store};
    use super::*;

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
}
