//! What happens to a rollout: the results of its effects, time, and operators' commands.

use serde::{Deserialize, Serialize};

use super::Check;
use crate::gates::Verdict;

/// What happened to a rollout: the only input of [`Rollout::step`](super::Rollout::step), so
/// every transition can be driven by hand in a test.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The candidate is loaded in its slot.
    Deployed,
    /// A `pre_rollout` webhook did not answer 2xx: the rollout fails before anything is
    /// deployed.
    HookRefused {
        /// The webhook's name.
        hook: String,
        /// What it answered, or why it could not be reached.
        reason: String,
    },
    /// The candidate could not be loaded: the rollout fails.
    DeployFailed {
        /// What the deploy reported.
        reason: String,
    },
    /// The candidate reports ready: the gates run next.
    Ready,
    /// The candidate did not become ready in time: the rollout fails.
    NotReady {
        /// What the readiness wait reported.
        reason: String,
    },
    /// The gates' verdict, with their summary for the audit log.
    Gates {
        /// The gates' combined verdict.
        verdict: Verdict,
        /// Each gate's verdict and why, in a sentence.
        summary: String,
    },
    /// Time passed; `check` carries measurements when one was due.
    Tick {
        /// Both slots' behaviour since the last check, when one was due (boxed: a check with
        /// its pairs is far larger than any other event).
        check: Option<Box<Check>>,
    },
    /// The published route now matches the switch.
    Switched,
    /// The old version is stopped.
    TornDown,
    /// The candidate is stopped after an abort or a failure.
    CandidateRemoved,
    /// Approve the switch, or skip a pause.
    Promote {
        /// Who asked, for the audit log.
        actor: String,
    },
    /// Stop before the switch; the old version keeps serving.
    Abort {
        /// Who asked, for the audit log.
        actor: String,
    },
    /// Send traffic back to the old version after the candidate has had some.
    Rollback {
        /// Who asked, for the audit log.
        actor: String,
    },
}
