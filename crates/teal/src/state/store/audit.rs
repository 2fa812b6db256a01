//! The audit log: events, each holding the hash of the one before, so that a changed or
//! deleted event breaks the chain and `teal audit verify` finds it; and the chain's head
//! anchored with a key outside the database (`anchor.rs`), so that deleting the newest events
//! or recomputing the whole chain is found too.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::anchor::AnchorCheck;
use super::anchor::{AnchorKey, anchor_in, before_append, read_anchor};
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
    /// The chain follows and ends at the anchored head (or has no anchor yet).
    pub intact: bool,
    /// The first event whose hash does not follow from its content and its predecessor.
    pub first_broken: Option<i64>,
    /// What the anchor says of the chain's head.
    #[serde(default)]
    pub anchor: AnchorCheck,
    /// The head teal anchored: the newest event it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchored_head: Option<i64>,
    /// What was found, in plain words.
    #[serde(default)]
    pub finding: String,
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

/// Appends an event inside a transaction, chained to the newest one, and moves the anchor to
/// it; for every write that records an event together with what it changed.
pub(super) fn append_in(
    tx: &Transaction<'_>,
    key: &AnchorKey,
    event: NewEvent,
) -> Result<Event, StoreError> {
    let found = before_append(tx, key)?;
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
    let id = tx.last_insert_rowid();
    anchor_in(tx, key, id, &hash, found)?;
    Ok(Event {
        id,
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
        self.write(|tx| append_in(tx, &self.anchor_key, event))
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

    /// Recomputes every hash from the first event on, then checks the chain ends at the head
    /// the anchor names.
    pub fn verify(&self) -> Result<Verification, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare("SELECT id, at_ms, model, kind, actor, live_slot, live_version, detail, prev_hash, hash FROM events ORDER BY id")?;
            let mut rows = statement.query([])?;
            let (mut prev, mut count) = (String::new(), 0u64);
            let (mut first_id, mut head_id) = (None, None);
            let mut first_broken = None;
            while let Some(r) = rows.next()? {
                count += 1;
                let id: i64 = r.get(0)?;
                first_id.get_or_insert(id);
                head_id = Some(id);
                if first_broken.is_some() {
                    continue;
                }
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
                    first_broken = Some(id);
                }
                prev = stored_hash;
            }
            let anchor = read_anchor(conn)?;
            let anchored_head = anchor.as_ref().map(|a| a.event_id);
            let follows = match first_broken {
                None => format!(
                    "{count} events, every hash follows from its event and the one before"
                ),
                Some(id) => format!(
                    "event #{id} does not match its hash chain ({count} events read): an event was changed, or one before it deleted"
                ),
            };
            let ends = head_id.map_or("no events".to_string(), |h| format!("#{h}"));
            let (check, finding) = match &anchor {
                None if count == 0 => (
                    AnchorCheck::Absent,
                    "0 events: the audit log is empty".to_string(),
                ),
                None => (
                    AnchorCheck::Absent,
                    format!(
                        "{follows}; the chain's head is not anchored yet (an earlier release wrote this state file), so deleting the newest events would not show until the next event anchors it"
                    ),
                ),
                Some(anchor) => {
                    let head = anchor.event_id;
                    match anchor.judge(conn, &self.anchor_key)? {
                        AnchorCheck::Forged => (
                            AnchorCheck::Forged,
                            format!(
                                "{follows}; but the anchor (event #{head}) is not signed by the audit key ({}): the anchor was rewritten, or the key file replaced or lost",
                                super::anchor::KEY_FILE
                            ),
                        ),
                        AnchorCheck::Truncated => (
                            AnchorCheck::Truncated,
                            format!(
                                "{follows}; but event #{head}, the newest teal wrote, is gone: the newest events were deleted (the log now ends at {ends})"
                            ),
                        ),
                        AnchorCheck::Rewritten => (
                            AnchorCheck::Rewritten,
                            format!(
                                "{follows}; but event #{head}, the newest teal wrote, no longer has the hash teal anchored: the chain was rewritten and its hashes recomputed"
                            ),
                        ),
                        AnchorCheck::Appended => (
                            AnchorCheck::Appended,
                            format!(
                                "{follows}; but events after #{head}, the newest teal wrote, were added outside teal (the log now ends at {ends})"
                            ),
                        ),
                        _ => match anchor.broken {
                            // Anchored again since, but teal found the chain broken once.
                            Some((at, found)) => (
                                found,
                                format!(
                                    "{follows}, and it ends at the head teal anchored (event #{head}); but when teal wrote event #{at} the chain did not end at its anchor ({}), so what came before #{at} is not what teal wrote",
                                    match found {
                                        AnchorCheck::Truncated => "the newest events had been deleted",
                                        AnchorCheck::Rewritten => "the chain had been rewritten and its hashes recomputed",
                                        AnchorCheck::Appended => "events had been added outside teal",
                                        _ => "the anchor was not signed by the audit key: it was rewritten, or the key file replaced or lost",
                                    }
                                ),
                            ),
                            None => {
                                let older = first_id
                                    .filter(|first| *first < anchor.anchored_from)
                                    .map(|_| {
                                        format!(
                                            " (events before #{} were written before anchoring began; the chain covers them)",
                                            anchor.anchored_from
                                        )
                                    })
                                    .unwrap_or_default();
                                (
                                    AnchorCheck::Holds,
                                    format!(
                                        "{follows}, and the chain ends at the head teal anchored (event #{head}){older}"
                                    ),
                                )
                            }
                        },
                    }
                }
            };
            let anchor_fine = matches!(check, AnchorCheck::Absent | AnchorCheck::Holds);
            Ok(Verification {
                events: count,
                intact: first_broken.is_none() && anchor_fine,
                first_broken,
                anchor: check,
                anchored_head,
                finding,
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
        let verified = store.verify().unwrap();
        assert_eq!(
            (verified.events, verified.intact, verified.first_broken),
            (5, true, None)
        );
        assert_eq!(verified.anchor, AnchorCheck::Holds);
        assert_eq!(verified.anchored_head, Some(5));
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

    /// Recomputes every hash from the first event on, as someone without the key would after
    /// changing an event.
    fn recompute_chain(conn: &Connection) {
        let rows: Vec<(i64, i64, NewEvent, String)> = conn
            .prepare("SELECT id, at_ms, model, kind, actor, live_slot, live_version, detail FROM events ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    NewEvent {
                        model: r.get(2)?,
                        kind: r.get(3)?,
                        actor: r.get(4)?,
                        live_slot: r.get(5)?,
                        live_version: r.get(6)?,
                        detail: serde_json::Value::Null,
                    },
                    r.get(7)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut prev = String::new();
        for (id, at_ms, event, detail) in rows {
            let hash = chain_hash(&prev, at_ms, &event, &detail);
            conn.execute(
                "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
                params![prev, hash, id],
            )
            .unwrap();
            prev = hash;
        }
    }

    #[test]
    fn deleting_the_newest_events_is_found_by_the_anchor() {
        let (store, path) = temp_store();
        for i in 0..5 {
            store.append(event("switched", &format!("v{i}"))).unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM events WHERE id > 3", []).unwrap();
        let verified = store.verify().unwrap();
        assert_eq!(
            verified.first_broken, None,
            "the chain that is left follows"
        );
        assert!(!verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Truncated);
        assert!(
            verified.finding.contains("event #5") && verified.finding.contains("deleted"),
            "{}",
            verified.finding
        );
        // Moving the anchor back to #3 needs the key.
        conn.execute(
            "UPDATE audit_anchor SET event_id = 3, hash = (SELECT hash FROM events WHERE id = 3)",
            [],
        )
        .unwrap();
        assert_eq!(store.verify().unwrap().anchor, AnchorCheck::Forged);
    }

    #[test]
    fn a_chain_rewritten_and_recomputed_is_found_by_the_anchor() {
        let (store, path) = temp_store();
        for i in 0..5 {
            store.append(event("switched", &format!("v{i}"))).unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE events SET live_version = 'v9' WHERE id = 2", [])
            .unwrap();
        recompute_chain(&conn);
        let verified = store.verify().unwrap();
        assert_eq!(verified.first_broken, None, "the recomputed chain follows");
        assert!(!verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Rewritten);
        assert!(
            verified.finding.contains("rewritten"),
            "{}",
            verified.finding
        );
    }

    #[test]
    fn an_event_added_after_the_head_is_found() {
        let (store, path) = temp_store();
        for i in 0..3 {
            store.append(event("switched", &format!("v{i}"))).unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO events (at_ms, model, kind, actor, live_slot, live_version, detail, prev_hash, hash) SELECT at_ms, model, kind, actor, live_slot, live_version, detail, hash, '' FROM events WHERE id = 3",
            [],
        )
        .unwrap();
        recompute_chain(&conn);
        // Event 3's hash is the same; event 4 follows it, but teal never anchored it.
        assert_eq!(store.verify().unwrap().anchor, AnchorCheck::Appended);
    }

    #[test]
    fn a_log_without_an_anchor_verifies_with_a_note_and_is_anchored_from_its_next_event() {
        let (store, path) = temp_store();
        for i in 0..3 {
            store.append(event("switched", &format!("v{i}"))).unwrap();
        }
        // As an earlier release left it: no anchor.
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM audit_anchor", []).unwrap();
        let verified = store.verify().unwrap();
        assert!(verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Absent);
        assert!(
            verified.finding.contains("not anchored yet"),
            "{}",
            verified.finding
        );
        store.append(event("switched", "v3")).unwrap();
        let verified = store.verify().unwrap();
        assert!(verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Holds);
        assert!(
            verified.finding.contains("before #4"),
            "{}",
            verified.finding
        );
        // Once anchored, a truncation shows.
        conn.execute("DELETE FROM events WHERE id = 4", []).unwrap();
        assert_eq!(store.verify().unwrap().anchor, AnchorCheck::Truncated);
    }

    #[test]
    fn a_truncation_stays_found_after_teal_appends_again() {
        let (store, path) = temp_store();
        for i in 0..5 {
            store.append(event("switched", &format!("v{i}"))).unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM events WHERE id > 3", []).unwrap();
        // teal goes on: the next event takes id 4 and chains to #3, and the anchor moves to
        // it. Without a memory of what it found, the deletion would vanish here.
        let next = store.append(event("switched", "v9")).unwrap();
        assert_eq!(next.id, 4);
        let verified = store.verify().unwrap();
        assert_eq!(verified.first_broken, None);
        assert!(!verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Truncated);
        assert!(
            verified.finding.contains("when teal wrote event #4")
                && verified.finding.contains("deleted"),
            "{}",
            verified.finding
        );
        // And it stays found.
        store.append(event("switched", "v10")).unwrap();
        assert_eq!(store.verify().unwrap().anchor, AnchorCheck::Truncated);
        // Clearing what teal found needs the key too.
        conn.execute(
            "UPDATE audit_anchor SET broken_at = NULL, broken = NULL",
            [],
        )
        .unwrap();
        assert_eq!(store.verify().unwrap().anchor, AnchorCheck::Forged);
    }

    #[test]
    fn a_replaced_key_is_reported_not_trusted_and_not_forgotten() {
        let (store, path) = temp_store();
        store.append(event("switched", "v1")).unwrap();
        store.append(event("switched", "v2")).unwrap();
        drop(store);
        // The key file goes; the newest event with it. teal makes a new key on start.
        std::fs::remove_file(super::super::anchor::key_path(&path)).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM events WHERE id = 2", [])
            .unwrap();
        let store = Store::open(&path).unwrap();
        let verified = store.verify().unwrap();
        assert!(!verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Forged);
        // The next event signs the anchor again, and the verdict keeps saying why.
        store.append(event("switched", "v3")).unwrap();
        let verified = store.verify().unwrap();
        assert!(!verified.intact);
        assert_eq!(verified.anchor, AnchorCheck::Forged);
        assert!(
            verified.finding.contains("when teal wrote event #2")
                && verified.finding.contains("replaced or lost"),
            "{}",
            verified.finding
        );
    }
}
