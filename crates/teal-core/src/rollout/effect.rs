//! What a rollout asks its driver to do, and the audit record of each phase change.

use serde::{Deserialize, Serialize};

use crate::routing::Color;

/// Work for the driver.
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
    pub active: Color,
    /// Candidate share, basis points.
    pub weight: u32,
    /// Shadow share, basis points.
    pub shadow: u32,
}

/// A phase change, as the audit log keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub cause: String,
    pub actor: String,
}
