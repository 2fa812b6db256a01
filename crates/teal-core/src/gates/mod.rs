//! Gates: each one check with a threshold, a verdict (pass, fail, inconclusive) and its
//! evidence. Pure functions over observations the validation runner gathered: the same
//! request answered by the live slot and by the candidate.
//!
//! Too little data is inconclusive, never a pass and never a fail.
//!
//! One gate per file; [`judge`] runs the ones that read observations, in report order.

mod accuracy;
mod agreement;
mod card;
mod drift;
mod errors;
#[cfg(test)]
mod fixtures;
mod gate;
mod health;
mod latency;
mod names;
mod observation;
mod resources;
mod result;
mod schema;
mod thresholds;
mod verdict;

pub use accuracy::accuracy;
pub use agreement::agreement;
pub use card::card;
pub use drift::drift;
pub use errors::errors;
pub use gate::Gate;
pub use health::health;
pub use latency::{latency, latency_undecided};
pub use names::UnknownName;
pub(crate) use names::wire_names;
pub use observation::{Answer, Observation};
pub use resources::{ResourceUse, resources};
pub use result::GateResult;
pub use schema::schema;
pub use thresholds::GateConfig;
pub use verdict::Verdict;

/// The gates that judge observations, in report order.
pub fn judge(observations: &[Observation], config: &GateConfig) -> Vec<GateResult> {
    judge_rounds(observations, observations.len(), config)
}

/// The gates over evidence whose rows were sent again after the first `first_round` to
/// decide latency: latency reads every pair, the other gates only the first round, so a
/// repeated row is not counted twice as evidence of who is right, of drift or of errors.
pub fn judge_rounds(
    observations: &[Observation],
    first_round: usize,
    config: &GateConfig,
) -> Vec<GateResult> {
    let first = &observations[..first_round.min(observations.len())];
    let mut gates = vec![
        agreement(first, config),
        drift(first, config),
        latency(observations, config),
        errors(first, config),
    ];
    gates.extend(accuracy(first, config));
    gates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::fixtures::{answer, observations};

    #[test]
    fn the_same_answers_pass_every_gate() {
        let obs = observations(200, |i| answer((i % 3) as i64, 1.0 + (i % 7) as f64 * 0.1));
        for gate in judge(&obs, &GateConfig::default()) {
            assert_eq!(gate.verdict, Verdict::Pass, "{gate:?}");
        }
    }

    #[test]
    fn too_few_observations_are_inconclusive_not_pass_or_fail() {
        let config = GateConfig::default();
        for gate in judge(&[], &config) {
            assert_eq!(gate.verdict, Verdict::Inconclusive, "{gate:?}");
        }
        let few = observations(5, |_| Answer {
            ok: false,
            ..Answer::default()
        });
        assert!(
            judge(&few, &config)
                .iter()
                .all(|g| g.verdict == Verdict::Inconclusive)
        );
    }
}
