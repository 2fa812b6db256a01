//! The drift gate.

use std::collections::BTreeMap;

use serde_json::json;

use super::observation::both_ok;
use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};
use crate::stats;

/// How far the candidate's score distributions moved from the live slot's: normed Wasserstein
/// per class score (or per output), with PSI, KS and Jensen-Shannon beside it.
pub fn drift(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = format!("< {}", config.max_drift);
    let pairs = both_ok(observations);
    if pairs.len() < config.min_samples {
        return too_few(Gate::Drift, threshold, pairs.len(), config);
    }
    let width = pairs
        .iter()
        .map(|o| o.live.scores.len().min(o.candidate.scores.len()))
        .min()
        .unwrap_or(0);
    let mut per_output = Vec::new();
    let mut worst: (f64, usize) = (0.0, 0);
    for k in 0..width {
        let live: Vec<f64> = pairs.iter().map(|o| o.live.scores[k]).collect();
        let candidate: Vec<f64> = pairs.iter().map(|o| o.candidate.scores[k]).collect();
        let w = stats::normed_wasserstein(&live, &candidate);
        let ks = stats::ks_two_sample(&live, &candidate);
        per_output.push(json!({
            "output": k,
            "normed_wasserstein": w,
            "psi": stats::psi(&live, &candidate, 10),
            "ks_statistic": ks.statistic,
            "ks_p_value": ks.p_value,
            "jensen_shannon": stats::jensen_shannon(&live, &candidate, 10),
        }));
        if w > worst.0 || k == 0 {
            worst = (w, k);
        }
    }
    // The predicted labels' distribution, for classifiers.
    let labels = |pick: fn(&Observation) -> Option<i64>| -> BTreeMap<i64, usize> {
        let mut counts = BTreeMap::new();
        for o in &pairs {
            if let Some(l) = pick(o) {
                *counts.entry(l).or_insert(0) += 1;
            }
        }
        counts
    };
    let (live_labels, candidate_labels) = (labels(|o| o.live.label), labels(|o| o.candidate.label));
    let evidence = json!({ "per_output": per_output, "live_labels": live_labels, "candidate_labels": candidate_labels });
    if width == 0 {
        return result(
            Gate::Drift,
            Verdict::Inconclusive,
            None,
            threshold,
            pairs.len(),
            "the answers carry no scores to compare".into(),
            evidence,
        );
    }
    let verdict = if worst.0 < config.max_drift {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let reason = format!(
        "largest normed Wasserstein distance {:.4}, on output {}",
        worst.0, worst.1
    );
    result(
        Gate::Drift,
        verdict,
        Some(worst.0),
        threshold,
        pairs.len(),
        reason,
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::Answer;

    #[test]
    fn shifted_scores_fail_drift() {
        let obs: Vec<Observation> = (0..200)
            .map(|i| {
                let x = (i as f64 * 0.618).fract();
                Observation {
                    live: Answer {
                        ok: true,
                        latency_ms: 1.0,
                        label: None,
                        scores: vec![x],
                    },
                    candidate: Answer {
                        ok: true,
                        latency_ms: 1.0,
                        label: None,
                        scores: vec![x + 0.3],
                    },
                    truth: None,
                }
            })
            .collect();
        let gate = drift(&obs, &GateConfig::default());
        assert_eq!(gate.verdict, Verdict::Fail, "{gate:?}");
        assert!(gate.evidence["per_output"][0]["psi"].as_f64().unwrap() > 0.1);
    }
}
