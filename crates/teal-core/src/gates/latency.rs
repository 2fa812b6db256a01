//! The latency gate.

use serde_json::json;

use super::observation::both_ok;
use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};
use crate::stats::{self, Alternative};

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
        return too_few(Gate::Latency, threshold, pairs.len(), config);
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
            Gate::Latency,
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
            Gate::Latency,
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
        Gate::Latency,
        verdict,
        Some(ratio),
        threshold,
        pairs.len(),
        reason,
        evidence,
    )
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
