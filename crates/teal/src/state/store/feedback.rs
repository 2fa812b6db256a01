//! Feedback: true labels recorded against served requests, and the live accuracy of each
//! version they add up to.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms};

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

/// What became of a label sent for a request.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedbackOutcome {
    /// Recorded now, or the same label was recorded before (sending it again is harmless).
    Recorded(Feedback),
    /// The request already has a different label, which is kept: labels feed the accuracy
    /// rule, and one caller must not be able to rewrite another's.
    AlreadyLabelled { label: String },
    /// No request with that id answered successfully for the model (yet).
    UnknownRequest,
}

impl Store {
    /// Records the true label of a served request. The version and the prediction come from
    /// the request log; `correct` is set when the prediction was logged. A label once given
    /// is never replaced.
    pub fn record_feedback(
        &self,
        model: &str,
        request_id: &str,
        label: &str,
    ) -> Result<FeedbackOutcome, StoreError> {
        self.write(|tx| {
            let served: Option<(Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT version, prediction FROM requests WHERE request_id = ?1 AND model = ?2 AND status < 400 ORDER BY id DESC LIMIT 1",
                    params![request_id, model],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((version, prediction)) = served else {
                return Ok(FeedbackOutcome::UnknownRequest);
            };
            let given: Option<String> = tx
                .query_row(
                    "SELECT label FROM feedback WHERE request_id = ?1",
                    params![request_id],
                    |r| r.get(0),
                )
                .optional()?;
            match given {
                Some(given) if given != label => {
                    return Ok(FeedbackOutcome::AlreadyLabelled { label: given });
                }
                Some(_) => {}
                None => {
                    let correct = prediction.as_deref().map(|p| p == label);
                    tx.execute(
                        "INSERT INTO feedback (request_id, model, version, at_ms, label, correct) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![request_id, model, version, now_ms(), label, correct],
                    )?;
                }
            }
            let correct = prediction.as_deref().map(|p| p == label);
            Ok(FeedbackOutcome::Recorded(Feedback {
                request_id: request_id.to_string(),
                version,
                prediction,
                label: label.to_string(),
                correct,
            }))
        })
    }

    /// Live accuracy of each version of `model` from feedback since `since_ms`:
    /// version, correct share, labels counted.
    pub fn accuracy(
        &self,
        model: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, f64, u64)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare(
                "SELECT version, AVG(correct), COUNT(correct) FROM feedback WHERE model = ?1 AND at_ms >= ?2 AND correct IS NOT NULL AND version IS NOT NULL GROUP BY version ORDER BY version",
            )?;
            let rows = statement.query_map(params![model, since_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
