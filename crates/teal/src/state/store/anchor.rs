//! The audit chain's anchor: the newest event's id and hash, signed with a key that lives
//! outside the database (`audit.key`, mode 0600, beside the state file) and rewritten in the
//! transaction of every append.
//!
//! The hash chain alone shows an event changed or removed in the middle, but not the newest
//! events deleted, nor the whole chain recomputed: both leave a chain that follows. The
//! anchor names the head the chain must end at, and only a holder of the key can move it.
//! Before each append teal checks the chain still ends there; a break it finds is kept with
//! the anchor (signed too), since the new anchor would otherwise cover it. A copy of an older
//! state file restored whole (with its anchor) still verifies as that older file: keep
//! backups and the key apart, or ship the log off the machine.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// The key file's name, in the state file's folder.
pub const KEY_FILE: &str = "audit.key";

/// The key that signs the anchor.
pub(super) struct AnchorKey(Vec<u8>);

impl AnchorKey {
    /// The key beside `state_file`, created (32 random bytes, hex, mode 0600) when there is
    /// none. Two processes creating it at once agree on one: the file appears whole, by a
    /// hard link that fails when it exists.
    pub(super) fn load_or_create(state_file: &Path) -> Result<AnchorKey, StoreError> {
        let path = key_path(state_file);
        let unreadable = |e: std::io::Error| {
            StoreError::new(format!(
                "the audit key {}: {e}; it signs the audit chain's head and must be readable by teal only",
                path.display()
            ))
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return AnchorKey::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unreadable(e)),
        }
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(unreadable)?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            match std::fs::hard_link(&tmp, &path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(unreadable)?;
        let text = std::fs::read_to_string(&path).map_err(unreadable)?;
        AnchorKey::parse(&text, &path)
    }

    fn parse(text: &str, path: &Path) -> Result<AnchorKey, StoreError> {
        let text = text.trim();
        if text.len() < 32 {
            return Err(StoreError::new(format!(
                "the audit key {} is too short ({} characters); restore it from where it is kept; moved away, teal makes a new one, and `teal audit verify` reports the anchor as not signed by it from then on",
                path.display(),
                text.len()
            )));
        }
        Ok(AnchorKey(text.as_bytes().to_vec()))
    }

    /// The signature of an anchor: every field of it, so none can be changed alone.
    fn sign(
        &self,
        event_id: i64,
        hash: &str,
        anchored_from: i64,
        broken: Option<(i64, AnchorCheck)>,
    ) -> String {
        let (broken_at, found) = broken.map_or((String::new(), ""), |(at, found)| {
            (at.to_string(), found.name())
        });
        let message = format!("{event_id}:{hash}:{anchored_from}:{broken_at}:{found}");
        hmac_sha256(&self.0, message.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Where the key of the state file `state_file` lives.
pub fn key_path(state_file: &Path) -> PathBuf {
    state_file.with_file_name(KEY_FILE)
}

/// HMAC-SHA256 (RFC 2104) over SHA-256, which the store already uses for the chain.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// What the anchor says of the chain's head.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AnchorCheck {
    /// No anchor yet: an empty log, or a state file an earlier release wrote (anchored from
    /// its next event on).
    #[default]
    Absent,
    /// The chain ends at the anchored head.
    Holds,
    /// The anchored head is gone: the newest events were deleted.
    Truncated,
    /// The anchored head's hash changed: the chain was rewritten and recomputed.
    Rewritten,
    /// Events follow the anchored head that teal did not write.
    Appended,
    /// The anchor is not signed by the audit key: it was rewritten, or the key file was
    /// replaced or lost.
    Forged,
}

impl AnchorCheck {
    /// The name stored with the anchor and answered by the API.
    fn name(self) -> &'static str {
        match self {
            AnchorCheck::Absent => "absent",
            AnchorCheck::Holds => "holds",
            AnchorCheck::Truncated => "truncated",
            AnchorCheck::Rewritten => "rewritten",
            AnchorCheck::Appended => "appended",
            AnchorCheck::Forged => "forged",
        }
    }

    fn from_name(name: &str) -> Option<AnchorCheck> {
        [
            AnchorCheck::Truncated,
            AnchorCheck::Rewritten,
            AnchorCheck::Appended,
            AnchorCheck::Forged,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// The anchor as stored.
pub(super) struct Anchor {
    pub event_id: i64,
    pub hash: String,
    pub mac: String,
    pub anchored_from: i64,
    /// The first time teal found the chain not ending at its anchor, when it appended: that
    /// event, and what it found. Kept for good, since the next anchor covers it over.
    pub broken: Option<(i64, AnchorCheck)>,
}

pub(super) fn read_anchor(conn: &rusqlite::Connection) -> Result<Option<Anchor>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT event_id, hash, mac, anchored_from, broken_at, broken FROM audit_anchor WHERE id = 1",
            [],
            |r| {
                let broken_at: Option<i64> = r.get(4)?;
                let broken: Option<String> = r.get(5)?;
                Ok(Anchor {
                    event_id: r.get(0)?,
                    hash: r.get(1)?,
                    mac: r.get(2)?,
                    anchored_from: r.get(3)?,
                    broken: broken_at.zip(broken.as_deref().and_then(AnchorCheck::from_name)),
                })
            },
        )
        .optional()?)
}

impl Anchor {
    /// Whether the key signed this anchor (compared in constant time).
    fn signed_by(&self, key: &AnchorKey) -> bool {
        let expected = key.sign(self.event_id, &self.hash, self.anchored_from, self.broken);
        expected.len() == self.mac.len()
            && expected
                .bytes()
                .zip(self.mac.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// Whether the events end at this anchor's head, signed by `key`.
    pub(super) fn judge(
        &self,
        conn: &rusqlite::Connection,
        key: &AnchorKey,
    ) -> Result<AnchorCheck, StoreError> {
        if !self.signed_by(key) {
            return Ok(AnchorCheck::Forged);
        }
        let stored: Option<String> = conn
            .query_row(
                "SELECT hash FROM events WHERE id = ?1",
                [self.event_id],
                |r| r.get(0),
            )
            .optional()?;
        let head: Option<i64> = conn.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?;
        Ok(match stored {
            None => AnchorCheck::Truncated,
            Some(hash) if hash != self.hash => AnchorCheck::Rewritten,
            Some(_) if head > Some(self.event_id) => AnchorCheck::Appended,
            Some(_) => AnchorCheck::Holds,
        })
    }
}

/// What the anchor says of the chain before an append: anything but `Holds` (or no anchor
/// yet) means the events were changed since teal's last append, which the new anchor would
/// otherwise cover over (a deleted head's id is even given to the next event).
pub(super) fn before_append(
    tx: &Transaction<'_>,
    key: &AnchorKey,
) -> Result<Option<AnchorCheck>, StoreError> {
    let Some(anchor) = read_anchor(tx)? else {
        return Ok(None);
    };
    let check = anchor.judge(tx, key)?;
    if check != AnchorCheck::Holds {
        tracing::error!(
            found = check.name(),
            head = anchor.event_id,
            "the audit chain does not end at its anchor: it was changed outside teal (or audit.key was replaced or lost); the next event is anchored, and `teal audit verify` keeps reporting it"
        );
    }
    Ok(Some(check).filter(|c| *c != AnchorCheck::Holds))
}

/// Moves the anchor to the event just appended, in the append's transaction. The first
/// anchor of a state file remembers the event it started at, so events an earlier release
/// wrote are told apart from the anchored ones; `found` (what [`before_append`] found) is
/// kept with the event it was found at, the first such only.
pub(super) fn anchor_in(
    tx: &Transaction<'_>,
    key: &AnchorKey,
    event_id: i64,
    hash: &str,
    found: Option<AnchorCheck>,
) -> Result<(), StoreError> {
    let existing = read_anchor(tx)?;
    let anchored_from = existing.as_ref().map_or(event_id, |a| a.anchored_from);
    let broken = existing
        .and_then(|a| a.broken)
        .or(found.map(|f| (event_id, f)));
    let mac = key.sign(event_id, hash, anchored_from, broken);
    tx.execute(
        "INSERT INTO audit_anchor (id, event_id, hash, mac, anchored_from, broken_at, broken) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET event_id = ?1, hash = ?2, mac = ?3, anchored_from = ?4, broken_at = ?5, broken = ?6",
        params![
            event_id,
            hash,
            mac,
            anchored_from,
            broken.map(|b| b.0),
            broken.map(|b| b.1.name())
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        let hex = |b: [u8; 32]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_key_is_private_made_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("teal-anchor-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("teal.db");
        let first = AnchorKey::load_or_create(&state).unwrap();
        let mode = std::fs::metadata(key_path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AnchorKey::load_or_create(&state).unwrap();
        assert_eq!(first.0, again.0);
        assert_eq!(first.0.len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
