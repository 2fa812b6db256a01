//! The agreement gate.

use std::collections::BTreeMap;

use serde_json::json;

use super::observation::both_ok;
use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};

fn agrees(o: &Observation, config: &GateConfig) -> bool {
    match (o.live.label, o.candidate.label) {
        (Some(a), Some(b)) => a == b,
        _ => {
            o.live.scores.len() == o.candidate.scores.len()
                && o.live
                    .scores
                    .iter()
                    .zip(&o.candidate.scores)
                    .all(|(a, b)| (a - b).abs() <= config.score_tolerance)
        }
    }
}

/// The share of requests where both slots answer alike, with the confusion table.
pub fn agreement(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = format!(">= {}", config.agreement);
    let pairs = both_ok(observations);
    if pairs.len() < config.min_samples {
        return too_few(Gate::Agreement, threshold, pairs.len(), config);
    }
    let agreed = pairs.iter().filter(|o| agrees(o, config)).count();
    let share = agreed as f64 / pairs.len() as f64;
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for o in &pairs {
        if let (Some(a), Some(b)) = (o.live.label, o.candidate.label) {
            *confusion
                .entry(a.to_string())
                .or_default()
                .entry(b.to_string())
                .or_default() += 1;
        }
    }
    let verdict = if share >= config.agreement {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let reason = format!(
        "the slots agreed on {agreed} of {} requests ({:.1}%)",
        pairs.len(),
        share * 100.0
    );
    result(
        Gate::Agreement,
        verdict,
        Some(share),
        threshold,
        pairs.len(),
        reason,
        json!({ "agreed": agreed, "confusion_live_by_candidate": confusion }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::accuracy;
    use crate::gates::fixtures::{answer, observations};

    #[test]
    fn wrong_labels_fail_agreement_and_accuracy() {
        let obs = observations(200, |i| answer(((i + 1) % 3) as i64, 1.0));
        let config = GateConfig::default();
        assert_eq!(agreement(&obs, &config).verdict, Verdict::Fail);
        assert_eq!(accuracy(&obs, &config).unwrap().verdict, Verdict::Fail);
        let table = &agreement(&obs, &config).evidence["confusion_live_by_candidate"];
        assert_eq!(table["0"]["1"], 67);
    }
}
