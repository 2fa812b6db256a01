//! The drift gate.

use std::collections::BTreeMap;

use serde_json::json;

use super::observation::both_ok;
use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};
use crate::stats::{self, Paired};

/// How far the candidate's answers moved from the live slot's, judged by what matters for
/// each kind of evidence.
///
/// With labels and class probabilities: a proper scoring rule (Brier) on the same rows,
/// paired; scores that moved but are no worse pass, worse by more than `max_score_loss`
/// with significance `alpha` fails. Without labels, a classifier is judged on the
/// distribution of predicted classes (`max_class_drift`, total variation), with score
/// drift reported beside it (failed on only with `fail_on_score_drift`). A regressor is
/// judged on its scores. Score drift is always reported: normed Wasserstein per class score
/// (or per output), with PSI, KS and Jensen-Shannon.
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
    let mut evidence = json!({ "per_output": per_output, "live_labels": live_labels, "candidate_labels": candidate_labels });
    let classified = pairs
        .iter()
        .filter(|o| o.live.label.is_some() && o.candidate.label.is_some())
        .count();
    // A classifier that answers labels alone (MLServer's scikit-learn and MLflow runtimes
    // do) is judged on its predicted classes below; without labels either, nothing is left.
    if width == 0 && classified < config.min_samples {
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
    let score_drift = if width == 0 {
        "the answers carry no scores".to_string()
    } else {
        format!(
            "largest normed Wasserstein distance {:.4}, on output {}",
            worst.0, worst.1
        )
    };

    // With labels and class probabilities: are the moved scores worse, row by row?
    let scored: Vec<Paired<f64>> = pairs
        .iter()
        .filter_map(|o| {
            let truth = usize::try_from(o.truth?).ok()?;
            let brier = |scores: &[f64]| {
                let total: f64 = scores.iter().sum();
                ((total - 1.0).abs() <= PROBABILITY_SUM_TOLERANCE)
                    .then(|| stats::brier_score(scores, truth).ok())
                    .flatten()
            };
            Some(Paired {
                candidate: brier(&o.candidate.scores)?,
                live: brier(&o.live.scores)?,
            })
        })
        .collect();
    if scored.len() >= config.min_samples {
        let comparison = stats::compare_scores(&scored, config.max_score_loss);
        evidence["scoring"] = json!({
            "rule": "Brier score per labelled row",
            "rows": comparison.rows,
            "mean_live": comparison.mean_live,
            "mean_candidate": comparison.mean_candidate,
            "mean_difference": comparison.mean_difference,
            "margin": config.max_score_loss,
            "test": "Wilcoxon signed-rank on candidate - live - margin",
            "p_worse": comparison.p_value,
            "alpha": config.alpha,
        });
        let scores = format!(
            "mean Brier score {:.4} against live's {:.4} on {} labelled rows",
            comparison.mean_candidate, comparison.mean_live, comparison.rows
        );
        let (verdict, reason) = if comparison.p_value < config.alpha {
            (
                Verdict::Fail,
                format!(
                    "the candidate's scores are worse by more than {}: {scores} (p = {:.2e}); {score_drift}",
                    config.max_score_loss, comparison.p_value
                ),
            )
        } else if comparison.mean_difference > config.max_score_loss {
            (
                Verdict::Inconclusive,
                format!(
                    "{scores}, worse by more than {} but not significantly (p = {:.3}); {score_drift}",
                    config.max_score_loss, comparison.p_value
                ),
            )
        } else {
            (
                Verdict::Pass,
                format!("the scores moved but are no worse: {scores}; {score_drift}"),
            )
        };
        return result(
            Gate::Drift,
            verdict,
            Some(comparison.mean_difference),
            format!("Brier score <= live + {}", config.max_score_loss),
            comparison.rows,
            reason,
            evidence,
        );
    }

    // Without labels, a classifier is judged on what users receive: the predicted classes.
    if classified >= config.min_samples {
        let distance = total_variation(&live_labels, &candidate_labels);
        evidence["class_drift"] = json!({ "total_variation": distance });
        let score_fails = config.fail_on_score_drift && worst.0 >= config.max_drift;
        let classes = format!("predicted classes moved by {distance:.4} (total variation)");
        let verdict = if distance > config.max_class_drift || score_fails {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let reason = if config.fail_on_score_drift {
            format!("{classes}; {score_drift}")
        } else {
            format!(
                "{classes}; {score_drift} (reported, not judged: set fail_on_score_drift to fail on it)"
            )
        };
        return result(
            Gate::Drift,
            verdict,
            Some(distance),
            if config.fail_on_score_drift {
                format!(
                    "classes < {}, scores < {}",
                    config.max_class_drift, config.max_drift
                )
            } else {
                format!("classes < {}", config.max_class_drift)
            },
            classified,
            reason,
            evidence,
        );
    }

    // A regressor: its scores are what users receive.
    let verdict = if worst.0 < config.max_drift {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    result(
        Gate::Drift,
        verdict,
        Some(worst.0),
        threshold,
        pairs.len(),
        score_drift,
        evidence,
    )
}

/// Class probabilities sum to one; scores that do not (margins, logits) are not judged
/// with a scoring rule.
const PROBABILITY_SUM_TOLERANCE: f64 = 0.01;

/// Half the summed absolute difference of two label histograms' shares: the largest
/// difference in the chance of any set of classes, from 0 (the same) to 1 (disjoint).
fn total_variation(live: &BTreeMap<i64, usize>, candidate: &BTreeMap<i64, usize>) -> f64 {
    let (n_live, n_candidate) = (
        live.values().sum::<usize>().max(1) as f64,
        candidate.values().sum::<usize>().max(1) as f64,
    );
    let classes: std::collections::BTreeSet<&i64> = live.keys().chain(candidate.keys()).collect();
    classes
        .into_iter()
        .map(|k| {
            let a = live.get(k).copied().unwrap_or(0) as f64 / n_live;
            let b = candidate.get(k).copied().unwrap_or(0) as f64 / n_candidate;
            (a - b).abs()
        })
        .sum::<f64>()
        / 2.0
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
                    input: None,
                }
            })
            .collect();
        let gate = drift(&obs, &GateConfig::default());
        assert_eq!(gate.verdict, Verdict::Fail, "{gate:?}");
        assert!(gate.evidence["per_output"][0]["psi"].as_f64().unwrap() > 0.1);
    }

    use crate::gates::fixtures::{answer, observations};

    fn with_scores(label: i64, scores: Vec<f64>) -> Answer {
        Answer {
            scores,
            ..answer(label, 1.0)
        }
    }

    #[test]
    fn scores_that_moved_but_are_no_worse_pass_and_worse_ones_fail() {
        let config = GateConfig::default();
        // The same labels, the probability mass spread differently (another model family).
        let reshaped = observations(200, |i| {
            let mut scores = vec![0.05; 3];
            scores[i % 3] = 0.9;
            with_scores((i % 3) as i64, scores)
        });
        let gate = drift(&reshaped, &config);
        assert_eq!(gate.verdict, Verdict::Pass, "{gate:?}");
        assert!(
            gate.reason.contains("moved but are no worse"),
            "{}",
            gate.reason
        );
        assert!(
            gate.evidence["per_output"][0]["normed_wasserstein"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        // Confidently wrong: the mass on another class.
        let broken = observations(200, |i| {
            let mut scores = vec![0.05; 3];
            scores[(i + 1) % 3] = 0.9;
            with_scores(((i + 1) % 3) as i64, scores)
        });
        assert_eq!(drift(&broken, &config).verdict, Verdict::Fail);
    }

    #[test]
    fn a_classifier_that_answers_labels_alone_is_judged_on_its_classes() {
        let config = GateConfig::default();
        // Labels and no scores on both sides, with or without the truth.
        let labels_only = |shift: usize, truth: bool| {
            let mut obs = observations(300, |i| Answer {
                scores: Vec::new(),
                ..answer(((i + shift) % 3) as i64, 1.0)
            });
            for o in &mut obs {
                o.live.scores.clear();
                if !truth {
                    o.truth = None;
                }
            }
            obs
        };
        for truth in [true, false] {
            let gate = drift(&labels_only(0, truth), &config);
            assert_eq!(gate.verdict, Verdict::Pass, "{gate:?}");
            assert!(
                gate.reason
                    .contains("predicted classes moved by 0.0000 (total variation); the answers carry no scores"),
                "{}",
                gate.reason
            );
        }
        // A candidate that answers one class for everything: its classes moved.
        let mut one_class = labels_only(0, false);
        for o in &mut one_class {
            o.candidate.label = Some(0);
        }
        let gate = drift(&one_class, &config);
        assert_eq!(gate.verdict, Verdict::Fail, "{gate:?}");
        // No labels and no scores: nothing to judge.
        let mut nothing = labels_only(0, false);
        for o in &mut nothing {
            o.live.label = None;
            o.candidate.label = None;
        }
        assert_eq!(drift(&nothing, &config).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn without_labels_a_classifier_is_judged_on_its_classes() {
        let config = GateConfig::default();
        let unlabelled = |shift: usize| {
            let mut obs = observations(300, |i| {
                let mut scores = vec![0.3; 3];
                scores[i % 3] = 0.4;
                with_scores(((i + shift) % 3) as i64, scores)
            });
            for o in &mut obs {
                o.truth = None;
            }
            obs
        };
        // Scores reshaped, classes the same: passes, with the score drift reported.
        let gate = drift(&unlabelled(0), &config);
        assert_eq!(gate.verdict, Verdict::Pass, "{gate:?}");
        assert!(
            gate.reason.contains("reported, not judged"),
            "{}",
            gate.reason
        );
        let strict = GateConfig {
            fail_on_score_drift: true,
            max_drift: 0.01,
            ..GateConfig::default()
        };
        assert_eq!(drift(&unlabelled(0), &strict).verdict, Verdict::Fail);
        // Every prediction moved to one class: the classes drifted.
        let mut collapsed = unlabelled(0);
        for o in &mut collapsed {
            o.candidate.label = Some(0);
        }
        assert_eq!(drift(&collapsed, &config).verdict, Verdict::Fail);
    }
}
