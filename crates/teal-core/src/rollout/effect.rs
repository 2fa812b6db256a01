//! What a rollout asks its driver to do, and the audit record of each phase change.

use serde::{Deserialize, Serialize};

use crate::routing::Color;

/// Work for the driver. The state machine does no I/O: it names what must happen and the
/// driver does it, so each effect is idempotent and a restart may issue it again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Effect {
    /// Load the candidate into `slot` (a no-op when it is already there).
    Deploy,
    /// Wait (bounded) for the candidate to report ready.
    WarmUp,
    /// Validate the candidate; shadow-then-switch mirrors `percent` for `window_ms`.
    RunGates,
    /// Publish this route.
    Route(Route),
    /// Drain and stop the old version's slot.
    TearDownOld,
    /// Drain and stop the candidate's slot.
    RemoveCandidate,
    /// An audit event: the phase changed.
    Record(Transition),
}

/// The traffic a rollout wants for its model; the driver publishes it (idempotently).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    /// The slot that takes every request the candidate's share does not.
    pub active: Color,
    /// Candidate share, basis points.
    pub weight: u32,
    /// Shadow share, basis points.
    pub shadow: u32,
    /// The slot that answers a request the route sent elsewhere when that slot fails (a
    /// server error or a timeout): the old version, while it is warm and the candidate is
    /// watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Color>,
    /// Share of requests sent as a pair to both versions at once for the rules' concurrent
    /// baseline, basis points.
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub baseline: u32,
}

impl Route {
    /// Every request on `active`, and nothing else.
    pub fn all_on(active: Color) -> Route {
        Route {
            active,
            weight: 0,
            shadow: 0,
            fallback: None,
            baseline: 0,
        }
    }
}

/// A phase change, as the audit log keeps it, so that every step of a rollout can be traced
/// to what caused it and who asked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// The phase left ([`Phase::name`](super::Phase::name)), or `none` for a new rollout.
    pub from: String,
    /// The phase entered.
    pub to: String,
    /// Why, in a sentence.
    pub cause: String,
    /// Who asked: an operator, or `teal` for what the rollout did by itself.
    pub actor: String,
}
