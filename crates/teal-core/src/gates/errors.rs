//! The error-rate gate.

use serde_json::json;

use super::result::{result, too_few};
use super::{Gate, GateConfig, GateResult, Observation, Verdict};

/// The share of requests the candidate failed.
pub fn errors(observations: &[Observation], config: &GateConfig) -> GateResult {
    let threshold = format!("<= {}", config.max_error_rate);
    let n = observations.len();
    if n < config.min_samples {
        return too_few(Gate::Errors, threshold, n, config);
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
        Gate::Errors,
        verdict,
        Some(rate),
        threshold,
        n,
        reason,
        json!({ "candidate_failed": failed, "live_failed": live_failed }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::Answer;
    use crate::gates::fixtures::{answer, observations};

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
}
