//! Where a rollout stands.

use serde::{Deserialize, Serialize};

/// Where a rollout stands. Terminal phases are [`Phase::is_terminal`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Loading the candidate into the standby slot.
    Deploying,
    /// Waiting for the candidate to report ready.
    WarmingUp,
    /// Running the gates (for shadow-then-switch, over the mirrored window).
    Validating,
    /// Gates passed (or were inconclusive) and the switch waits for `teal promote`.
    AwaitingApproval,
    /// Gates passed; the automatic switch happens at `at_ms`.
    SwitchDelay {
        /// When the switch happens.
        at_ms: i64,
    },
    /// A canary step holds the candidate at the step's weight.
    Canary {
        /// The step, counted from 0.
        step: usize,
    },
    /// The gates run again at the end of a canary step.
    CanaryGates {
        /// The step, counted from 0.
        step: usize,
    },
    /// All new requests are being moved to the candidate.
    Switching,
    /// The candidate is live; the rollback rules are armed until the bake ends.
    Observing,
    /// The bake passed; the old version stays loaded until the keep-warm window ends.
    Promoted,
    /// The old version is being drained and stopped.
    TearingDown,
    /// Done: the candidate is live and the old version is gone.
    TornDown,
    /// The candidate is being removed after an abort or a failure.
    RemovingCandidate {
        /// The terminal phase the rollout ends in once the candidate is stopped.
        then: Box<Phase>,
    },
    /// Stopped by an operator before the switch; the old version kept serving.
    Aborted,
    /// Traffic went back to the old version, by an operator or by a rule.
    RolledBack,
    /// The candidate could not be deployed, did not become ready, or failed a gate.
    Failed,
}

impl Phase {
    /// The phase's name as the state file's `phase` column, metrics and transitions write
    /// it (the same as its serde tag).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Deploying => "deploying",
            Phase::WarmingUp => "warming_up",
            Phase::Validating => "validating",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::SwitchDelay { .. } => "switch_delay",
            Phase::Canary { .. } => "canary",
            Phase::CanaryGates { .. } => "canary_gates",
            Phase::Switching => "switching",
            Phase::Observing => "observing",
            Phase::Promoted => "promoted",
            Phase::TearingDown => "tearing_down",
            Phase::TornDown => "torn_down",
            Phase::RemovingCandidate { .. } => "removing_candidate",
            Phase::Aborted => "aborted",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
        }
    }

    /// Every phase name, in lifecycle order (for metrics and documentation).
    pub const NAMES: [&'static str; 16] = [
        "deploying",
        "warming_up",
        "validating",
        "awaiting_approval",
        "switch_delay",
        "canary",
        "canary_gates",
        "switching",
        "observing",
        "promoted",
        "tearing_down",
        "torn_down",
        "removing_candidate",
        "aborted",
        "rolled_back",
        "failed",
    ];

    /// Whether the rollout has ended: a terminal rollout ignores every event, and a model
    /// can start another.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::TornDown | Phase::Aborted | Phase::RolledBack | Phase::Failed
        )
    }

    /// Whether the candidate has taken all traffic.
    pub fn after_switch(&self) -> bool {
        matches!(
            self,
            Phase::Switching
                | Phase::Observing
                | Phase::Promoted
                | Phase::TearingDown
                | Phase::TornDown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_the_tag_the_state_file_holds_in_lifecycle_order() {
        let every = [
            Phase::Deploying,
            Phase::WarmingUp,
            Phase::Validating,
            Phase::AwaitingApproval,
            Phase::SwitchDelay { at_ms: 1 },
            Phase::Canary { step: 0 },
            Phase::CanaryGates { step: 0 },
            Phase::Switching,
            Phase::Observing,
            Phase::Promoted,
            Phase::TearingDown,
            Phase::TornDown,
            Phase::RemovingCandidate {
                then: Box::new(Phase::Failed),
            },
            Phase::Aborted,
            Phase::RolledBack,
            Phase::Failed,
        ];
        let names: Vec<&str> = every.iter().map(Phase::name).collect();
        assert_eq!(names, Phase::NAMES);
        for phase in every {
            assert_eq!(serde_json::to_value(&phase).unwrap()["phase"], phase.name());
        }
    }
}
