//! The rollback rules: what each check measures, how each rule judges it, and the
//! consecutive strikes that make a rule act.

use serde::{Deserialize, Serialize};

use super::Rollout;
use super::duration::duration_ms;

/// When an observed candidate is rolled back. Each rule acts only after `consecutive`
/// failing checks in a row; a check with too little traffic is inconclusive and neither
/// counts nor clears.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackRules {
    /// Green's p95 may be at most this multiple of blue's baseline p95 ...
    pub latency_ratio: f64,
    /// ... plus this many milliseconds, so sub-millisecond noise never rolls back.
    pub latency_slack_ms: f64,
    /// Green's share of failed requests (5xx) per check, 0 to 1.
    pub max_error_rate: f64,
    /// Green's live accuracy from feedback, when set.
    pub min_accuracy: Option<f64>,
    /// Failing checks in a row before a rule acts.
    pub consecutive: u32,
    /// Requests a check needs to judge latency and errors (and feedback to judge accuracy).
    pub min_requests: u64,
    /// Time between checks.
    #[serde(deserialize_with = "duration_ms")]
    pub check_interval_ms: u64,
}

impl Default for RollbackRules {
    fn default() -> Self {
        RollbackRules {
            latency_ratio: 1.2,
            latency_slack_ms: 2.0,
            max_error_rate: 0.01,
            min_accuracy: None,
            consecutive: 3,
            min_requests: 20,
            check_interval_ms: 1_000,
        }
    }
}

/// One check of the slots' behaviour over the last interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Window {
    pub requests: u64,
    /// Requests that failed on the slot's side (5xx).
    pub errors: u64,
    pub p95_ms: Option<f64>,
}

/// What the driver measured since the last check.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// The slot that held the old version.
    pub old: Window,
    /// The candidate's slot.
    pub new: Window,
    pub new_ready: bool,
    /// Why the candidate's server process ended, when teal ran it and it did: no noise to
    /// wait out, so the ready rule fails at once.
    #[serde(default)]
    pub new_exited: Option<String>,
    /// The candidate's live accuracy from feedback so far, and how many labels it rests on.
    pub accuracy: Option<(f64, u64)>,
}

/// Failing checks in a row, per rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Strikes {
    pub latency: u32,
    pub errors: u32,
    pub ready: u32,
    pub accuracy: u32,
}

/// One rule's verdict on one check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleOutcome {
    pub rule: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    pub detail: String,
}

impl Rollout {
    pub(super) fn learn_baseline(&mut self, old: &Window) {
        let Some(p95) = old.p95_ms.filter(|_| old.requests > 0) else {
            return;
        };
        let n = self.baseline_requests as f64;
        let m = old.requests as f64;
        let mean = self.baseline_p95_ms.unwrap_or(p95);
        self.baseline_p95_ms = Some((mean * n + p95 * m) / (n + m));
        self.baseline_requests += old.requests;
    }

    /// Each rule's verdict on one check. During a canary both slots have traffic, so the
    /// candidate is compared with the old version in the same interval when it can be.
    pub fn judge(&self, check: &Check, canary: bool) -> Vec<RuleOutcome> {
        let r = &self.settings.rules;
        let out = |rule: &str, verdict: &str, detail: String| RuleOutcome {
            rule: rule.into(),
            verdict: verdict.into(),
            detail,
        };
        let mut outcomes = vec![match (&check.new_exited, check.new_ready) {
            (Some(exit), _) => out("ready", "fail", format!("{EXITED} ({exit})")),
            (None, true) => out("ready", "pass", "candidate ready".into()),
            (None, false) => out("ready", "fail", "candidate not ready".into()),
        }];
        let new = &check.new;
        if new.requests < r.min_requests {
            let detail = format!("{} requests, {} needed", new.requests, r.min_requests);
            outcomes.push(out("errors", "inconclusive", detail.clone()));
            outcomes.push(out("latency", "inconclusive", detail));
        } else {
            let rate = new.errors as f64 / new.requests as f64;
            let verdict = if rate > r.max_error_rate {
                "fail"
            } else {
                "pass"
            };
            outcomes.push(out(
                "errors",
                verdict,
                format!(
                    "error rate {:.2}% (limit {:.2}%) over {} requests",
                    rate * 100.0,
                    r.max_error_rate * 100.0,
                    new.requests
                ),
            ));
            let concurrent = (canary && check.old.requests >= r.min_requests)
                .then_some(check.old.p95_ms)
                .flatten();
            match (new.p95_ms, concurrent.or(self.baseline_p95_ms)) {
                (Some(p95), Some(base)) => {
                    let limit = base * r.latency_ratio + r.latency_slack_ms;
                    let verdict = if p95 > limit { "fail" } else { "pass" };
                    outcomes.push(out(
                        "latency",
                        verdict,
                        format!(
                            "p95 {p95:.2} ms, limit {limit:.2} ms ({:.2} ms baseline x {} + {} ms)",
                            base, r.latency_ratio, r.latency_slack_ms
                        ),
                    ));
                }
                _ => outcomes.push(out(
                    "latency",
                    "inconclusive",
                    "no baseline latency for the old version".into(),
                )),
            }
        }
        if let Some(min) = r.min_accuracy {
            outcomes.push(match check.accuracy {
                Some((acc, n)) if n >= r.min_requests => out(
                    "accuracy",
                    if acc < min { "fail" } else { "pass" },
                    format!("live accuracy {acc:.3} (minimum {min}) from {n} labels"),
                ),
                Some((_, n)) => out(
                    "accuracy",
                    "inconclusive",
                    format!("{n} labels, {} needed", r.min_requests),
                ),
                None => out("accuracy", "inconclusive", "no feedback yet".into()),
            });
        }
        outcomes
    }

    /// Counts failing checks in a row (an exited server counts as enough at once); returns
    /// the first rule that reached the limit.
    pub(super) fn strike(&mut self, outcomes: &[RuleOutcome]) -> Option<String> {
        let limit = self.settings.rules.consecutive;
        let mut failed = None;
        for o in outcomes {
            let counter = match o.rule.as_str() {
                "ready" => &mut self.strikes.ready,
                "errors" => &mut self.strikes.errors,
                "latency" => &mut self.strikes.latency,
                "accuracy" => &mut self.strikes.accuracy,
                _ => continue,
            };
            match o.verdict.as_str() {
                // A server that exited will not come back by waiting.
                "fail" if o.detail.starts_with(EXITED) => *counter = limit,
                "fail" => *counter += 1,
                "pass" => *counter = 0,
                _ => {}
            }
            if *counter >= limit && failed.is_none() {
                failed = Some(format!("{}: {}", o.rule, o.detail));
            }
        }
        failed
    }
}

/// How the ready rule says the candidate's server process ended.
const EXITED: &str = "candidate's server process exited";
