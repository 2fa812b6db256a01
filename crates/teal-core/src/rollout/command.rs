//! Operators' commands (promote, abort, rollback): which phases accept them, and why the
//! others refuse.

use super::{Event, Phase, Rollout};

/// Why an operator's command was refused, so the API can tell the operator which command
/// applies instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Rollout {
    /// Checks an operator command against the phase without changing anything, so the
    /// API can refuse it with the reason.
    pub fn accepts(&self, event: &Event) -> Result<(), Refused> {
        let phase = self.phase.name();
        let ok = match event {
            Event::Promote { .. } => matches!(
                self.phase,
                Phase::AwaitingApproval
                    | Phase::SwitchDelay { .. }
                    | Phase::Canary { .. }
                    | Phase::Observing
                    | Phase::Promoted
            ),
            Event::Abort { .. } => !self.phase.after_switch() && !self.phase.is_terminal(),
            Event::Rollback { .. } => {
                matches!(
                    self.phase,
                    Phase::Canary { .. }
                        | Phase::CanaryGates { .. }
                        | Phase::Switching
                        | Phase::Observing
                        | Phase::Promoted
                )
            }
            _ => true,
        };
        if ok {
            return Ok(());
        }
        let hint = match event {
            Event::Promote { .. } => {
                "promote applies while awaiting approval, in a switch delay or canary step, while observing, or to end the keep-warm window"
            }
            Event::Abort { .. } => "abort applies before the switch; after it, use rollback",
            Event::Rollback { .. } => {
                "rollback applies once the candidate has traffic; before that, use abort"
            }
            _ => "",
        };
        Err(Refused(format!(
            "rollout {} of '{}' is {phase}: {hint}",
            self.id, self.model
        )))
    }
}
