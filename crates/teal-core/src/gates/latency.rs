//! The latency gate, on paired evidence.
//!
//! Each observation is one input sent to both slots at the same moment, with each slot's
//! service time (the backend's own time, apart from queueing inside teal). Load that comes
//! and goes therefore slows both sides of a pair alike, and the gate judges the per-pair
//! differences rather than two samples taken at different moments.

use serde_json::json;

use super::observation::both_ok;
use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};
use crate::stats::{self, BootstrapOptions, Paired, SignedRankMethod};

/// The smallest service time the gate divides by, so a zero reading cannot make a ratio
/// infinite.
const FLOOR_MS: f64 = 1e-6;

/// Seed of the bootstrap: fixed, so the same evidence always gets the same verdict.
const BOOTSTRAP_SEED: u64 = 0x7ea1_5eed;

/// Resamples of the bootstrap interval of the p95 ratio.
const BOOTSTRAP_RESAMPLES: usize = 1_000;

/// What the paired evidence says, before it becomes a verdict.
struct Decision {
    verdict: Verdict,
    /// Neither confidently slower nor confidently within: more pairs could decide.
    undecided: bool,
    reason: String,
    value: f64,
    evidence: serde_json::Value,
}

/// Whether the latency evidence straddles the threshold, so that more pairs could decide
/// it: the validation then sends more, up to [`GateConfig::max_pairs`].
pub fn latency_undecided(observations: &[Observation], config: &GateConfig) -> bool {
    let pairs = both_ok(observations);
    pairs.len() >= config.min_samples && decide(&pairs, config).undecided
}

/// The candidate's latency, judged on paired service times.
///
/// It fails only when the candidate is, with confidence `1 - latency_alpha`, slower than
/// `max_latency_ratio` times live *and* by at least `min_latency_delta_ms`: for the typical
/// request (Wilcoxon signed-rank tests on the per-pair log ratios and differences), or in
/// the tail (the lower end of a bootstrap interval of the ratio of p95s, resampling pairs
/// together). It passes when the typical request is confidently within either bound. In
/// between it is inconclusive and says so; the validation gathers more pairs first. A p95
/// over `latency_sla_ms` fails on its own.
pub fn latency(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = match config.latency_sla_ms {
        Some(sla) => format!(
            "p95 <= {sla} ms; not slower than {}x live and {} ms (paired)",
            config.max_latency_ratio, config.min_latency_delta_ms
        ),
        None => format!(
            "not slower than {}x live and {} ms (paired)",
            config.max_latency_ratio, config.min_latency_delta_ms
        ),
    };
    let pairs = both_ok(observations);
    if pairs.len() < config.min_samples {
        return too_few(Gate::Latency, threshold, pairs.len(), config);
    }
    let decision = decide(&pairs, config);
    result(
        Gate::Latency,
        decision.verdict,
        Some(decision.value),
        threshold,
        pairs.len(),
        decision.reason,
        decision.evidence,
    )
}

fn decide(pairs: &[&Observation], config: &GateConfig) -> Decision {
    let alpha = config.latency_alpha;
    let times: Vec<Paired<f64>> = pairs
        .iter()
        .map(|o| Paired {
            candidate: o.candidate.latency_ms.max(FLOOR_MS),
            live: o.live.latency_ms.max(FLOOR_MS),
        })
        .collect();
    let live: Vec<f64> = times.iter().map(|p| p.live).collect();
    let candidate: Vec<f64> = times.iter().map(|p| p.candidate).collect();
    let (live_p95, candidate_p95) = (
        stats::quantile(&live, 0.95),
        stats::quantile(&candidate, 0.95),
    );
    let log_ratios: Vec<f64> = times.iter().map(|p| (p.candidate / p.live).ln()).collect();
    let median_ratio = stats::quantile(&log_ratios, 0.5).exp();
    let median_delta = stats::quantile(
        &times
            .iter()
            .map(|p| p.candidate - p.live)
            .collect::<Vec<_>>(),
        0.5,
    );
    let bound = config.max_latency_ratio.ln();
    let ratio_test = stats::signed_rank(
        &log_ratios.iter().map(|r| r - bound).collect::<Vec<_>>(),
        SignedRankMethod::Exact,
    );
    let delta_test = stats::signed_rank(
        &times
            .iter()
            .map(|p| p.candidate - p.live - config.min_latency_delta_ms)
            .collect::<Vec<_>>(),
        SignedRankMethod::Exact,
    );
    let options = BootstrapOptions {
        resamples: BOOTSTRAP_RESAMPLES,
        confidence: (1.0 - 2.0 * alpha).clamp(0.5, 0.999),
        seed: BOOTSTRAP_SEED,
    };
    let tail = stats::bootstrap_quantile_ratio(&times, 0.95, &options).ok();
    let (tail_low, tail_high) = tail
        .as_ref()
        .map_or((f64::NAN, f64::NAN), |t| (t.low, t.high));
    // The p95 delta at the interval's low end: how much slower the tail is at least.
    let tail_delta_low = live_p95 * (tail_low - 1.0);
    let typical_slower = ratio_test.p_greater < alpha && delta_test.p_greater < alpha;
    let tail_slower =
        tail_low > config.max_latency_ratio && tail_delta_low > config.min_latency_delta_ms;
    let within = ratio_test.p_less < alpha || delta_test.p_less < alpha;
    let evidence = json!({
        "pairs": times.len(),
        "measure": "service time, both slots of a pair at the same moment",
        "live_p50_ms": stats::quantile(&live, 0.5),
        "live_p95_ms": live_p95,
        "candidate_p50_ms": stats::quantile(&candidate, 0.5),
        "candidate_p95_ms": candidate_p95,
        "median_ratio": median_ratio,
        "median_delta_ms": median_delta,
        "test": "Wilcoxon signed-rank on paired log ratios and differences",
        "ratio_p_slower": ratio_test.p_greater,
        "ratio_p_within": ratio_test.p_less,
        "delta_p_slower": delta_test.p_greater,
        "delta_p_within": delta_test.p_less,
        "p95_ratio": tail.as_ref().map(|t| t.estimate),
        "p95_ratio_low": tail.as_ref().map(|t| t.low),
        "p95_ratio_high": tail.as_ref().map(|t| t.high),
        "p95_ratio_confidence": options.confidence,
        "alpha": alpha,
    });
    let pairs_n = times.len();
    if let Some(sla) = config.latency_sla_ms
        && candidate_p95 > sla
    {
        return Decision {
            verdict: Verdict::Fail,
            undecided: false,
            reason: format!("candidate p95 {candidate_p95:.2} ms is over the {sla} ms SLA"),
            value: candidate_p95,
            evidence,
        };
    }
    let (verdict, undecided, reason) = if typical_slower {
        (
            Verdict::Fail,
            false,
            format!(
                "the candidate is slower than {}x live and by more than {} ms on {pairs_n} paired requests: median {median_ratio:.2}x ({median_delta:+.2} ms), p95 {candidate_p95:.2} ms against {live_p95:.2} ms (Wilcoxon signed-rank p = {:.1e})",
                config.max_latency_ratio,
                config.min_latency_delta_ms,
                ratio_test.p_greater.max(delta_test.p_greater)
            ),
        )
    } else if tail_slower {
        (
            Verdict::Fail,
            false,
            format!(
                "the candidate's tail is slower than {}x live and by more than {} ms on {pairs_n} paired requests: p95 {candidate_p95:.2} ms against {live_p95:.2} ms, ratio at least {tail_low:.2}x ({:.0}% bootstrap interval {tail_low:.2}-{tail_high:.2})",
                config.max_latency_ratio,
                config.min_latency_delta_ms,
                options.confidence * 100.0
            ),
        )
    } else if within {
        (
            Verdict::Pass,
            false,
            format!(
                "on {pairs_n} paired requests the candidate is within {}x live or {} ms: median {median_ratio:.2}x ({median_delta:+.3} ms), p95 {candidate_p95:.3} ms against {live_p95:.3} ms",
                config.max_latency_ratio, config.min_latency_delta_ms
            ),
        )
    } else {
        (
            Verdict::Inconclusive,
            true,
            format!(
                "{pairs_n} paired requests straddle the threshold: median {median_ratio:.2}x ({median_delta:+.2} ms), p95 ratio interval {tail_low:.2}-{tail_high:.2} around {}x; more pairs would decide: give a larger holdout, raise max_pairs, or promote by hand",
                config.max_latency_ratio
            ),
        )
    };
    Decision {
        verdict,
        undecided,
        reason,
        value: median_ratio,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::fixtures::{answer, observations};

    #[test]
    fn a_slower_candidate_fails_and_one_slow_sample_does_not() {
        let config = GateConfig::default();
        let slow = observations(100, |i| answer((i % 3) as i64, 21.0 + (i % 5) as f64));
        let gate = latency(&slow, &config);
        assert_eq!(gate.verdict, Verdict::Fail, "{gate:?}");
        assert!(gate.reason.contains("slower than 1.2x"), "{}", gate.reason);
        assert!(!latency_undecided(&slow, &config));
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
}
