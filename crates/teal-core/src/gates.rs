//! Gates: each one check with a threshold, a verdict (pass, fail, inconclusive) and its
//! evidence. Pure functions over observations the validation runner gathered: the same
//! request answered by the live slot and by the candidate.
//!
//! Too little data is inconclusive, never a pass and never a fail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::protocol::Signature;
use crate::stats::{self, Alternative};

/// A gate's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    /// The verdict of several gates: any fail fails, else any inconclusive is inconclusive.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut overall = Verdict::Pass;
        for v in verdicts {
            match v {
                Verdict::Fail => return Verdict::Fail,
                Verdict::Inconclusive => overall = Verdict::Inconclusive,
                Verdict::Pass => {}
            }
        }
        overall
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One gate's outcome and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GateResult {
    pub gate: String,
    pub verdict: Verdict,
    /// The measured value the threshold applies to, when there is one.
    pub value: Option<f64>,
    /// The threshold, as a reader would write it (`>= 0.95`).
    pub threshold: String,
    /// How many observations the gate used.
    pub samples: usize,
    /// Why, in a sentence.
    pub reason: String,
    /// The numbers behind the verdict.
    pub evidence: serde_json::Value,
}

/// Thresholds, per model (`[model.gates]`); the defaults follow common practice.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Fewer observations than this make a gate inconclusive.
    pub min_samples: usize,
    /// Requests sent to each slot before anything is measured.
    pub warmup: usize,
    /// Share of requests on which both slots must agree.
    pub agreement: f64,
    /// For scores and regression outputs: how close counts as agreeing.
    pub score_tolerance: f64,
    /// Largest normed Wasserstein distance between the slots' score distributions.
    pub max_drift: f64,
    /// The candidate's p95 latency must be under this, when set.
    pub latency_sla_ms: Option<f64>,
    /// The candidate's p95 latency must be at most this many times the live slot's.
    pub max_latency_ratio: f64,
    /// Significance level of the latency test (Mann-Whitney U).
    pub latency_alpha: f64,
    /// A candidate p95 within this many milliseconds of live's is never a latency failure:
    /// microsecond differences are significant to a test and to nobody else.
    pub min_latency_delta_ms: f64,
    /// Largest share of failed requests on the candidate.
    pub max_error_rate: f64,
    /// How much holdout accuracy the candidate may lose against the live slot.
    pub accuracy_tolerance: f64,
    /// Model-card fields the candidate must carry.
    pub card_fields: Vec<String>,
    /// Most resident memory the candidate's server may use (process slots), in MiB.
    pub max_rss_mb: Option<f64>,
    /// Most CPU the candidate's server may use during the validation, in cores.
    pub max_cpu_cores: Option<f64>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_samples: 30,
            warmup: 20,
            agreement: 0.95,
            score_tolerance: 0.05,
            max_drift: 0.15,
            latency_sla_ms: None,
            max_latency_ratio: 1.2,
            latency_alpha: 0.05,
            min_latency_delta_ms: 1.0,
            max_error_rate: 0.01,
            accuracy_tolerance: 0.02,
            card_fields: Vec::new(),
            max_rss_mb: None,
            max_cpu_cores: None,
        }
    }
}

/// What one slot answered to one request.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Answer {
    pub ok: bool,
    pub latency_ms: f64,
    /// The predicted label (classifiers).
    pub label: Option<i64>,
    /// Class scores (classifiers) or output values (regressors).
    pub scores: Vec<f64>,
}

/// One request answered by both slots, with the true label when it is known.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Observation {
    pub live: Answer,
    pub candidate: Answer,
    pub truth: Option<i64>,
}

fn result(
    gate: &str,
    verdict: Verdict,
    value: Option<f64>,
    threshold: String,
    samples: usize,
    reason: String,
    evidence: serde_json::Value,
) -> GateResult {
    GateResult {
        gate: gate.to_string(),
        verdict,
        value,
        threshold,
        samples,
        reason,
        evidence,
    }
}

fn too_few(gate: &str, threshold: String, samples: usize, config: &GateConfig) -> GateResult {
    result(
        gate,
        Verdict::Inconclusive,
        None,
        threshold,
        samples,
        format!(
            "{samples} observations, fewer than the {} needed",
            config.min_samples
        ),
        json!({}),
    )
}

/// The candidate answers its readiness check.
pub fn health(ready: bool) -> GateResult {
    let (verdict, reason) = if ready {
        (Verdict::Pass, "the candidate is ready".to_string())
    } else {
        (Verdict::Fail, "the candidate is not ready".to_string())
    };
    result(
        "health",
        verdict,
        None,
        "ready".into(),
        1,
        reason,
        json!({ "ready": ready }),
    )
}

/// The candidate takes and gives what the live slot does: names, datatypes, compatible shapes.
pub fn schema(live: Option<&Signature>, candidate: Option<&Signature>) -> GateResult {
    let threshold = "same names and types".to_string();
    let (Some(live), Some(candidate)) = (live, candidate) else {
        return result(
            "schema",
            Verdict::Inconclusive,
            None,
            threshold,
            0,
            "a slot's server publishes no metadata to compare".into(),
            json!({}),
        );
    };
    let mut problems = Vec::new();
    for (what, a, b) in [
        ("input", &live.inputs, &candidate.inputs),
        ("output", &live.outputs, &candidate.outputs),
    ] {
        for spec in a {
            match b.iter().find(|s| s.name == spec.name) {
                None => problems.push(format!(
                    "{what} '{}' is missing from the candidate",
                    spec.name
                )),
                Some(other) if other.datatype != spec.datatype => problems.push(format!(
                    "{what} '{}' is {} on the candidate, {} live",
                    spec.name, other.datatype, spec.datatype
                )),
                Some(other) => {
                    let compatible = other.shape.len() == spec.shape.len()
                        && other
                            .shape
                            .iter()
                            .zip(&spec.shape)
                            .all(|(x, y)| *x < 0 || *y < 0 || x == y);
                    if !compatible {
                        problems.push(format!(
                            "{what} '{}' has shape {:?} on the candidate, {:?} live",
                            spec.name, other.shape, spec.shape
                        ));
                    }
                }
            }
        }
        for spec in b {
            if !a.iter().any(|s| s.name == spec.name) {
                problems.push(format!("the candidate has an extra {what} '{}'", spec.name));
            }
        }
    }
    if problems.is_empty() {
        result(
            "schema",
            Verdict::Pass,
            None,
            threshold,
            1,
            "inputs and outputs match".into(),
            json!({}),
        )
    } else {
        result(
            "schema",
            Verdict::Fail,
            None,
            threshold,
            1,
            problems.join("; "),
            json!({ "differences": problems }),
        )
    }
}

fn both_ok(observations: &[Observation]) -> Vec<&Observation> {
    observations
        .iter()
        .filter(|o| o.live.ok && o.candidate.ok)
        .collect()
}

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
        return too_few("agreement", threshold, pairs.len(), config);
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
        "agreement",
        verdict,
        Some(share),
        threshold,
        pairs.len(),
        reason,
        json!({ "agreed": agreed, "confusion_live_by_candidate": confusion }),
    )
}

/// How far the candidate's score distributions moved from the live slot's: normed Wasserstein
/// per class score (or per output), with PSI, KS and Jensen-Shannon beside it.
pub fn drift(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = format!("< {}", config.max_drift);
    let pairs = both_ok(observations);
    if pairs.len() < config.min_samples {
        return too_few("drift", threshold, pairs.len(), config);
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
            "drift",
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
        "drift",
        verdict,
        Some(worst.0),
        threshold,
        pairs.len(),
        reason,
        evidence,
    )
}

/// The candidate's latency: p95 under the SLA (when set), and not slower than the live slot by
/// more than the ratio, judged with a one-sided Mann-Whitney U test against the live samples
/// scaled by the ratio, so one slow sample cannot fail it and a real slowdown cannot hide.
pub fn latency(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = match config.latency_sla_ms {
        Some(sla) => format!("p95 <= {sla} ms and <= {}x live", config.max_latency_ratio),
        None => format!("p95 <= {}x live", config.max_latency_ratio),
    };
    let pairs = both_ok(observations);
    if pairs.len() < config.min_samples {
        return too_few("latency", threshold, pairs.len(), config);
    }
    let live: Vec<f64> = pairs.iter().map(|o| o.live.latency_ms).collect();
    let candidate: Vec<f64> = pairs.iter().map(|o| o.candidate.latency_ms).collect();
    let (live_p95, candidate_p95) = (
        stats::quantile(&live, 0.95),
        stats::quantile(&candidate, 0.95),
    );
    let ratio = if live_p95 > 0.0 {
        candidate_p95 / live_p95
    } else {
        f64::INFINITY
    };
    let scaled: Vec<f64> = live.iter().map(|v| v * config.max_latency_ratio).collect();
    let test = stats::mann_whitney(&candidate, &scaled, Alternative::Greater);
    let evidence = json!({
        "live_p50_ms": stats::quantile(&live, 0.5),
        "live_p95_ms": live_p95,
        "candidate_p50_ms": stats::quantile(&candidate, 0.5),
        "candidate_p95_ms": candidate_p95,
        "p95_ratio": ratio,
        "mann_whitney_u": test.u,
        "mann_whitney_p_value": test.p_value,
    });
    if let Some(sla) = config.latency_sla_ms
        && candidate_p95 > sla
    {
        let reason = format!("candidate p95 {candidate_p95:.2} ms is over the {sla} ms SLA");
        return result(
            "latency",
            Verdict::Fail,
            Some(candidate_p95),
            threshold,
            pairs.len(),
            reason,
            evidence,
        );
    }
    if candidate_p95 - live_p95 < config.min_latency_delta_ms {
        let reason = format!(
            "candidate p95 {candidate_p95:.3} ms is within {} ms of live's {live_p95:.3} ms",
            config.min_latency_delta_ms
        );
        return result(
            "latency",
            Verdict::Pass,
            Some(ratio),
            threshold,
            pairs.len(),
            reason,
            evidence,
        );
    }
    let significant = test.p_value < config.latency_alpha;
    let (verdict, reason) = match (ratio <= config.max_latency_ratio, significant) {
        (_, true) => (
            Verdict::Fail,
            format!(
                "the candidate is slower than {}x live (p95 {candidate_p95:.2} ms against {live_p95:.2} ms; Mann-Whitney p = {:.2e})",
                config.max_latency_ratio, test.p_value
            ),
        ),
        (true, false) => (
            Verdict::Pass,
            format!("candidate p95 {candidate_p95:.2} ms, {ratio:.2}x live"),
        ),
        (false, false) => (
            Verdict::Inconclusive,
            format!(
                "candidate p95 is {ratio:.2}x live but the difference is not significant (p = {:.3}); gather more samples",
                test.p_value
            ),
        ),
    };
    result(
        "latency",
        verdict,
        Some(ratio),
        threshold,
        pairs.len(),
        reason,
        evidence,
    )
}

/// The share of requests the candidate failed.
pub fn errors(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = format!("<= {}", config.max_error_rate);
    let n = observations.len();
    if n < config.min_samples {
        return too_few("errors", threshold, n, config);
    }
    let failed = observations.iter().filter(|o| !o.candidate.ok).count();
    let live_failed = observations.iter().filter(|o| !o.live.ok).count();
    let rate = failed as f64 / n as f64;
    let verdict = if rate <= config.max_error_rate {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let reason = format!(
        "the candidate failed {failed} of {n} requests ({:.2}%); live failed {live_failed}",
        rate * 100.0
    );
    result(
        "errors",
        verdict,
        Some(rate),
        threshold,
        n,
        reason,
        json!({ "candidate_failed": failed, "live_failed": live_failed }),
    )
}

/// Accuracy on labelled requests: the candidate may not fall more than the tolerance below live.
pub fn accuracy(observations: &[Observation], config: &GateConfig) -> Option<GateResult> {
    let labelled: Vec<&Observation> = observations.iter().filter(|o| o.truth.is_some()).collect();
    if labelled.is_empty() {
        return None;
    }
    let threshold = format!(">= live - {}", config.accuracy_tolerance);
    if labelled.len() < config.min_samples {
        return Some(too_few("accuracy", threshold, labelled.len(), config));
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
        "accuracy",
        verdict,
        Some(candidate),
        threshold,
        labelled.len(),
        reason,
        json!({ "live_accuracy": live, "candidate_accuracy": candidate }),
    ))
}

/// The candidate carries the model-card fields the model requires.
pub fn card(fields: &BTreeMap<String, String>, config: &GateConfig) -> Option<GateResult> {
    if config.card_fields.is_empty() {
        return None;
    }
    let missing: Vec<&String> = config
        .card_fields
        .iter()
        .filter(|f| fields.get(*f).is_none_or(|v| v.trim().is_empty()))
        .collect();
    let threshold = format!("fields {}", config.card_fields.join(", "));
    Some(if missing.is_empty() {
        result(
            "card",
            Verdict::Pass,
            None,
            threshold,
            1,
            "every required model-card field is present".into(),
            json!({}),
        )
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        result(
            "card",
            Verdict::Fail,
            None,
            threshold,
            1,
            format!("missing model-card fields: {}", names.join(", ")),
            json!({ "missing": names }),
        )
    })
}

/// What teal could see of the candidate's server process during a validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceUse {
    /// Resident memory of the server's process group at the end, MiB.
    pub rss_mb: f64,
    /// CPU time it used divided by the wall time, in cores.
    pub cpu_cores: f64,
}

/// The candidate's server stays under the configured memory and CPU limits. Runs only when a
/// limit is set; inconclusive when teal cannot see the server's process (in-process or remote).
pub fn resources(used: Option<ResourceUse>, config: &GateConfig) -> Option<GateResult> {
    if config.max_rss_mb.is_none() && config.max_cpu_cores.is_none() {
        return None;
    }
    let limits: Vec<String> = [
        config.max_rss_mb.map(|m| format!("rss <= {m} MiB")),
        config.max_cpu_cores.map(|c| format!("cpu <= {c} cores")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let threshold = limits.join(", ");
    let Some(used) = used else {
        return Some(result(
            "resources",
            Verdict::Inconclusive,
            None,
            threshold,
            0,
            "teal cannot see this slot's process (it is in-process or remote)".into(),
            json!({}),
        ));
    };
    let mut over = Vec::new();
    if let Some(max) = config.max_rss_mb
        && used.rss_mb > max
    {
        over.push(format!(
            "resident memory {:.1} MiB is over {max} MiB",
            used.rss_mb
        ));
    }
    if let Some(max) = config.max_cpu_cores
        && used.cpu_cores > max
    {
        over.push(format!("CPU {:.2} cores is over {max}", used.cpu_cores));
    }
    let evidence = json!({ "rss_mb": used.rss_mb, "cpu_cores": used.cpu_cores });
    Some(if over.is_empty() {
        result(
            "resources",
            Verdict::Pass,
            Some(used.rss_mb),
            threshold,
            1,
            format!(
                "{:.1} MiB resident, {:.2} cores",
                used.rss_mb, used.cpu_cores
            ),
            evidence,
        )
    } else {
        result(
            "resources",
            Verdict::Fail,
            Some(used.rss_mb),
            threshold,
            1,
            over.join("; "),
            evidence,
        )
    })
}

/// The gates that judge observations, in report order.
pub fn judge(observations: &[Observation], config: &GateConfig) -> Vec<GateResult> {
    let mut gates = vec![
        agreement(observations, config),
        drift(observations, config),
        latency(observations, config),
        errors(observations, config),
    ];
    gates.extend(accuracy(observations, config));
    gates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Datatype, TensorSpec};

    fn answer(label: i64, latency_ms: f64) -> Answer {
        let mut scores = vec![0.1; 3];
        scores[label as usize] = 0.8;
        Answer {
            ok: true,
            latency_ms,
            label: Some(label),
            scores,
        }
    }

    fn observations(n: usize, candidate: impl Fn(usize) -> Answer) -> Vec<Observation> {
        (0..n)
            .map(|i| Observation {
                live: answer((i % 3) as i64, 1.0 + (i % 7) as f64 * 0.1),
                candidate: candidate(i),
                truth: Some((i % 3) as i64),
            })
            .collect()
    }

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

    #[test]
    fn wrong_labels_fail_agreement_and_accuracy() {
        let obs = observations(200, |i| answer(((i + 1) % 3) as i64, 1.0));
        let config = GateConfig::default();
        assert_eq!(agreement(&obs, &config).verdict, Verdict::Fail);
        assert_eq!(accuracy(&obs, &config).unwrap().verdict, Verdict::Fail);
        let table = &agreement(&obs, &config).evidence["confusion_live_by_candidate"];
        assert_eq!(table["0"]["1"], 67);
    }

    #[test]
    fn a_slower_candidate_fails_and_one_slow_sample_does_not() {
        let config = GateConfig::default();
        let slow = observations(100, |i| answer((i % 3) as i64, 21.0 + (i % 5) as f64));
        let gate = latency(&slow, &config);
        assert_eq!(gate.verdict, Verdict::Fail, "{gate:?}");
        assert!(gate.reason.contains("slower than 1.2x"), "{}", gate.reason);
        let one_spike = observations(100, |i| {
            answer(
                (i % 3) as i64,
                if i == 50 {
                    500.0
                } else {
                    1.0 + (i % 7) as f64 * 0.1
                },
            )
        });
        assert_eq!(latency(&one_spike, &config).verdict, Verdict::Pass);
        let tiny = observations(100, |i| {
            answer((i % 3) as i64, (1.0 + (i % 7) as f64 * 0.1) * 1.5)
        });
        assert_eq!(
            latency(&tiny, &config).verdict,
            Verdict::Pass,
            "0.9 ms slower is within the 1 ms floor"
        );
        let strict = GateConfig {
            min_latency_delta_ms: 0.0,
            ..GateConfig::default()
        };
        assert_eq!(
            latency(&tiny, &strict).verdict,
            Verdict::Fail,
            "without the floor, 1.5x is a failure"
        );
        let sla = GateConfig {
            latency_sla_ms: Some(1.2),
            ..GateConfig::default()
        };
        assert_eq!(
            latency(
                &observations(100, |i| answer((i % 3) as i64, 1.0 + (i % 7) as f64 * 0.1)),
                &sla
            )
            .verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn errors_over_the_limit_fail() {
        let config = GateConfig::default();
        let obs = observations(200, |i| {
            if i % 20 == 0 {
                Answer::default()
            } else {
                answer((i % 3) as i64, 1.0)
            }
        });
        let gate = errors(&obs, &config);
        assert_eq!(gate.verdict, Verdict::Fail);
        assert_eq!(gate.value, Some(0.05));
    }

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

    #[test]
    fn schema_names_each_difference() {
        let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype,
            shape,
        };
        let live = Signature {
            inputs: vec![spec("input", Datatype::Fp32, vec![-1, 64])],
            outputs: vec![spec("label", Datatype::Int64, vec![-1])],
        };
        let same = Signature {
            inputs: vec![spec("input", Datatype::Fp32, vec![8, 64])],
            outputs: live.outputs.clone(),
        };
        assert_eq!(schema(Some(&live), Some(&same)).verdict, Verdict::Pass);
        let renamed = Signature {
            inputs: vec![spec("pixels", Datatype::Fp32, vec![-1, 64])],
            outputs: live.outputs.clone(),
        };
        let gate = schema(Some(&live), Some(&renamed));
        assert_eq!(gate.verdict, Verdict::Fail);
        assert!(
            gate.reason.contains("input 'input' is missing"),
            "{}",
            gate.reason
        );
        assert_eq!(schema(Some(&live), None).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn resources_run_only_with_limits_and_fail_over_them() {
        let used = Some(ResourceUse {
            rss_mb: 300.0,
            cpu_cores: 0.5,
        });
        assert!(resources(used, &GateConfig::default()).is_none());
        let limited = GateConfig {
            max_rss_mb: Some(256.0),
            ..GateConfig::default()
        };
        assert_eq!(resources(used, &limited).unwrap().verdict, Verdict::Fail);
        assert_eq!(
            resources(None, &limited).unwrap().verdict,
            Verdict::Inconclusive
        );
        let roomy = GateConfig {
            max_rss_mb: Some(512.0),
            max_cpu_cores: Some(1.0),
            ..GateConfig::default()
        };
        assert_eq!(resources(used, &roomy).unwrap().verdict, Verdict::Pass);
    }

    #[test]
    fn verdicts_combine_worst_first() {
        assert_eq!(
            Verdict::combine([Verdict::Pass, Verdict::Inconclusive]),
            Verdict::Inconclusive
        );
        assert_eq!(
            Verdict::combine([Verdict::Inconclusive, Verdict::Fail]),
            Verdict::Fail
        );
        assert_eq!(Verdict::combine([]), Verdict::Pass);
    }
}
