//! The agreement gate.

use std::collections::BTreeMap;

use serde_json::json;

use super::observation::both_ok;
use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};
use crate::stats::{self, Paired};

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

/// How many disagreeing inputs a report shows, with both answers.
const DISAGREEMENTS_SHOWN: usize = 5;

/// Whether the slots answer alike, and where they do not, who is right.
///
/// Without labels: the share of requests where both answer alike must reach `agreement`.
/// With labels for at least `min_samples` distinct inputs, the disagreements are judged by
/// who is right (McNemar's exact test on the inputs where exactly one version is right, each
/// distinct input counted once): the candidate passes when it is right at least as often as
/// live there, fails when live is significantly better there (`alpha`), passes when the two
/// barely disagree (agreement reached), and is inconclusive in between. The report lists a
/// few disagreeing inputs with both answers either way.
pub fn agreement(observations: &[Observation], config: &GateConfig) -> GateResult {
    let pairs = both_ok(observations);
    let labelled: Vec<&&Observation> = pairs
        .iter()
        .filter(|o| o.truth.is_some() && o.live.label.is_some() && o.candidate.label.is_some())
        .collect();
    let threshold = if labelled.is_empty() {
        format!(">= {}", config.agreement)
    } else {
        format!(
            ">= {}, or right at least as often as live where they disagree",
            config.agreement
        )
    };
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
    let disagreements: Vec<serde_json::Value> = pairs
        .iter()
        .filter(|o| !agrees(o, config))
        .take(DISAGREEMENTS_SHOWN)
        .map(|o| {
            let side = |a: &super::Answer| match a.label {
                Some(label) => json!(label),
                None => json!(a.scores),
            };
            json!({
                "input": o.input_preview(),
                "live": side(&o.live),
                "candidate": side(&o.candidate),
                "truth": o.truth,
            })
        })
        .collect();
    let agreed_text = format!(
        "the slots agreed on {agreed} of {} requests ({:.1}%)",
        pairs.len(),
        share * 100.0
    );
    let mut evidence = json!({
        "agreed": agreed,
        "confusion_live_by_candidate": confusion,
        "disagreements": disagreements,
    });
    // Each distinct input once: a repeated request is not new evidence of who is right.
    let tally = stats::tally_correctness(labelled.iter().enumerate().map(|(i, o)| {
        let key = match &o.input {
            Some(input) => (Some(input.clone()), 0),
            None => (None, i),
        };
        let right = |a: &super::Answer| a.label == o.truth;
        (
            key,
            Paired {
                candidate: right(&o.candidate),
                live: right(&o.live),
            },
        )
    }));
    let (verdict, reason) = if tally.inputs() >= config.min_samples as u64 {
        let test = tally.mcnemar();
        let (b, c) = (tally.candidate_only, tally.live_only);
        evidence["who_is_right"] = json!({
            "distinct_inputs": tally.inputs(),
            "repeated_rows": tally.repeated_rows,
            "both_right": tally.both_right,
            "both_wrong": tally.both_wrong,
            "only_candidate_right": b,
            "only_live_right": c,
            "test": "McNemar (exact binomial) on the inputs where exactly one version is right",
            "p_live_better": test.p_candidate_worse,
            "alpha": config.alpha,
        });
        let where_they_differ = format!(
            "where exactly one is right, the candidate is right on {b} and live on {c} of {} distinct inputs",
            tally.inputs()
        );
        if b >= c {
            (Verdict::Pass, format!("{where_they_differ}; {agreed_text}"))
        } else if test.p_candidate_worse < config.alpha {
            (
                Verdict::Fail,
                format!(
                    "live is right significantly more often where they disagree: {where_they_differ} (McNemar p = {:.2e}); {agreed_text}",
                    test.p_candidate_worse
                ),
            )
        } else if share >= config.agreement {
            (Verdict::Pass, format!("{agreed_text}; {where_they_differ}"))
        } else {
            (
                Verdict::Inconclusive,
                format!(
                    "{agreed_text}, under {}; {where_they_differ}, not significantly worse (McNemar p = {:.3}): more labelled inputs would decide",
                    config.agreement, test.p_candidate_worse
                ),
            )
        }
    } else if share >= config.agreement {
        (Verdict::Pass, agreed_text)
    } else {
        (Verdict::Fail, agreed_text)
    };
    result(
        Gate::Agreement,
        verdict,
        Some(share),
        threshold,
        pairs.len(),
        reason,
        evidence,
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
        assert_eq!(
            agreement(&obs, &config).evidence["disagreements"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }

    /// 100 labelled inputs on which the versions disagree on `b + c`: the candidate alone is
    /// right on `b`, live alone on `c`, both wrong (differently) on `both_wrong`.
    fn disagreeing(b: usize, c: usize, both_wrong: usize) -> Vec<Observation> {
        observations(100, |i| {
            let truth = (i % 3) as i64;
            if i < b {
                answer(truth, 1.0)
            } else if i < b + c + both_wrong {
                answer((truth + 1) % 3, 1.0)
            } else {
                answer(truth, 1.0)
            }
        })
        .into_iter()
        .enumerate()
        .map(|(i, mut o)| {
            let truth = (i % 3) as i64;
            if i < b {
                o.live = answer((truth + 1) % 3, 1.0);
            } else if i >= b + c && i < b + c + both_wrong {
                o.live = answer((truth + 2) % 3, 1.0);
            }
            o
        })
        .collect()
    }

    #[test]
    fn a_candidate_right_at_least_as_often_where_they_disagree_passes_below_the_threshold() {
        let config = GateConfig::default();
        let better = agreement(&disagreeing(8, 2, 0), &config);
        assert_eq!(better.verdict, Verdict::Pass, "{better:?}");
        assert_eq!(better.value, Some(0.9));
        assert_eq!(better.evidence["who_is_right"]["only_candidate_right"], 8);
        let worse = agreement(&disagreeing(0, 10, 0), &config);
        assert_eq!(worse.verdict, Verdict::Fail, "{worse:?}");
        let unclear = agreement(&disagreeing(2, 4, 4), &config);
        assert_eq!(unclear.verdict, Verdict::Inconclusive, "{unclear:?}");
    }

    #[test]
    fn a_repeated_input_is_one_piece_of_evidence() {
        let mut obs = disagreeing(0, 10, 0);
        for o in obs.iter_mut().take(10) {
            o.input = Some("[same]".into());
        }
        let gate = agreement(&obs, &GateConfig::default());
        assert_eq!(gate.evidence["who_is_right"]["only_live_right"], 1);
        assert_eq!(gate.evidence["who_is_right"]["repeated_rows"], 9);
    }
}
