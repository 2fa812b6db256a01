//! The holdout accuracy gate.

use serde_json::json;

use super::result::{result, too_few};
use super::{Answer, Gate, GateConfig, GateResult, Observation, Verdict};

/// Accuracy on labelled requests: the candidate may not fall more than the tolerance below live.
pub fn accuracy(observations: &[Observation], config: &GateConfig) -> Option<GateResult> {
    let labelled: Vec<&Observation> = observations.iter().filter(|o| o.truth.is_some()).collect();
    if labelled.is_empty() {
        return None;
    }
    let threshold = format!(">= live - {}", config.accuracy_tolerance);
    if labelled.len() < config.min_samples {
        return Some(too_few(Gate::Accuracy, threshold, labelled.len(), config));
    }
    let correct = |pick: fn(&Observation) -> &Answer| {
        labelled
            .iter()
            .filter(|o| pick(o).ok && pick(o).label == o.truth)
            .count() as f64
            / labelled.len() as f64
    };
    let (live, candidate) = (correct(|o| &o.live), correct(|o| &o.candidate));
    let verdict = if candidate >= live - config.accuracy_tolerance {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let reason = format!(
        "candidate {:.2}% against live {:.2}% on {} labelled rows",
        candidate * 100.0,
        live * 100.0,
        labelled.len()
    );
    Some(result(
        Gate::Accuracy,
        verdict,
        Some(candidate),
        threshold,
        labelled.len(),
        reason,
        json!({ "live_accuracy": live, "candidate_accuracy": candidate }),
    ))
}
