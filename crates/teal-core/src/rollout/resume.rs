//! What a rollout still owes after a restart.

use super::{Effect, Phase, Rollout};

impl Rollout {
    /// The effects a phase still owes after a restart (the route first, always).
    pub fn resume(&self) -> Vec<Effect> {
        let mut effects = vec![Effect::Route(self.route)];
        match &self.phase {
            Phase::Deploying => effects.push(Effect::Deploy),
            Phase::WarmingUp => effects.push(Effect::WarmUp),
            Phase::Validating | Phase::CanaryGates { .. } => effects.push(Effect::RunGates),
            Phase::TearingDown => effects.push(Effect::TearDownOld),
            Phase::RemovingCandidate { .. } => effects.push(Effect::RemoveCandidate),
            _ => {}
        }
        effects
    }
}
