//! What happens to a rollout: the results of its effects, time, and operators' commands.

use serde::{Deserialize, Serialize};

use super::Check;
use crate::gates::Verdict;

/// What happened to a rollout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The candidate is loaded in its slot.
    Deployed,
    DeployFailed {
        reason: String,
    },
    Ready,
    NotReady {
        reason: String,
    },
    /// The gates' verdict, with their summary for the audit log.
    Gates {
        verdict: Verdict,
        summary: String,
    },
    /// Time passed; `check` carries measurements when one was due.
    Tick {
        check: Option<Check>,
    },
    /// The published route now matches the switch.
    Switched,
    /// The old version is stopped.
    TornDown,
    /// The candidate is stopped after an abort or a failure.
    CandidateRemoved,
    /// Approve the switch, or skip a pause.
    Promote {
        actor: String,
    },
    Abort {
        actor: String,
    },
    Rollback {
        actor: String,
    },
}
