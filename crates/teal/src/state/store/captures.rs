//! Captured requests (kept from live traffic to replay to a candidate later) and the
//! validation reports written about candidates.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now_ms};

/// A captured request as stored: its body, and the length of its JSON part when the body
/// uses the binary tensor extension.
pub type CapturedBody = (Vec<u8>, Option<usize>);

impl Store {
    /// Keeps captured requests.
    pub fn keep_captures(
        &self,
        batch: &[(String, usize, Vec<u8>, Option<usize>)],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
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
            Ok(())
        })
    }

    /// Deletes all but the newest `limit` captured requests of `model`.
    pub fn trim_captures(&self, model: &str, limit: usize) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM captures WHERE model = ?1 AND id <= (SELECT id FROM captures WHERE model = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![model, limit as i64],
            )?;
            Ok(())
        })
    }

    /// The newest `n` captured requests of `model`, oldest first.
    pub fn newest_captures(&self, model: &str, n: usize) -> Result<Vec<CapturedBody>, StoreError> {
        self.read(|conn| {
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
        })
    }

    /// Keeps a validation report (JSON).
    pub fn save_report(&self, model: &str, report: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO reports (model, at_ms, report) VALUES (?1, ?2, ?3)",
                params![model, now_ms(), report],
            )?;
            Ok(())
        })
    }

    /// The newest validation report of `model` (JSON).
    pub fn last_report(&self, model: &str) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT report FROM reports WHERE model = ?1 ORDER BY id DESC LIMIT 1",
                    [model],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }
}
