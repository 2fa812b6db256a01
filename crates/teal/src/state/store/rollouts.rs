//! Rollouts: each one's state as JSON, written with the audit events of its transitions and
//! the route it wants in one transaction, so a restart resumes exactly what was recorded.

use rusqlite::params;

use super::audit::append_in;
use super::{NewEvent, Store, StoreError, now_ms};

impl Store {
    /// Creates a rollout row and returns its id (the state is written by [`Store::save_rollout`]).
    pub fn new_rollout(
        &self,
        model: &str,
        version: &str,
        candidate: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        self.write(|tx| {
            let now = now_ms();
            tx.execute(
                "INSERT INTO rollouts (model, version, phase, terminal, started_ms, updated_ms, candidate, state) VALUES (?1, ?2, 'new', 0, ?3, ?3, ?4, '{}')",
                params![model, version, now, candidate.to_string()],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Saves a rollout's state and the audit events of its transitions in one transaction,
    /// so a crash keeps both or neither.
    pub fn save_rollout(
        &self,
        rollout: &teal_core::rollout::Rollout,
        events: Vec<NewEvent>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let state =
                serde_json::to_string(rollout).map_err(|e| StoreError::new(e.to_string()))?;
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
                append_in(tx, &self.anchor_key, event)?;
            }
            Ok(())
        })
    }

    fn rollout_rows(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<teal_core::rollout::Rollout>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare(sql)?;
            let rows = statement.query_map(args, |r| r.get::<_, String>(0))?;
            let mut rollouts = Vec::new();
            for row in rows {
                let text = row?;
                match serde_json::from_str(&text) {
                    Ok(rollout) => rollouts.push(rollout),
                    Err(e) => {
                        tracing::error!(error = %e, "a rollout in the state file cannot be read")
                    }
                }
            }
            Ok(rollouts)
        })
    }

    /// Rollouts that have not ended, with their candidate's slot configuration (JSON), to
    /// resume at start-up.
    pub fn unfinished_rollouts(
        &self,
    ) -> Result<Vec<(teal_core::rollout::Rollout, serde_json::Value)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare(
                "SELECT state, candidate FROM rollouts WHERE terminal = 0 AND phase != 'new' ORDER BY id",
            )?;
            let rows = statement
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
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
        })
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
}
