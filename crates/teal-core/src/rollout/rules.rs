//! The rollback rules: what each check measures, how each rule judges it, and the
//! consecutive strikes that make a rule act.

use serde::{Deserialize, Serialize};

use super::Rollout;
use super::duration::duration_ms;
use crate::gates::{Verdict, wire_names};

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

/// One slot's behaviour over the last interval: what the errors and latency rules read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Window {
    /// Requests the slot answered; too few make the errors and latency rules inconclusive.
    pub requests: u64,
    /// Requests that failed on the slot's side (5xx).
    pub errors: u64,
    /// The slot's p95 latency, when it answered anything.
    pub p95_ms: Option<f64>,
}

/// What the driver measured since the last check; the rules judge only this, so the state
/// machine never measures anything itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// The slot that held the old version.
    pub old: Window,
    /// The candidate's slot.
    pub new: Window,
    /// Whether the candidate reports ready.
    pub new_ready: bool,
    /// Why the candidate's server process ended, when teal ran it and it did: no noise to
    /// wait out, so the ready rule fails at once.
    #[serde(default)]
    pub new_exited: Option<String>,
    /// The candidate's live accuracy from feedback so far, and how many labels it rests on.
    pub accuracy: Option<(f64, u64)>,
}

/// Failing checks in a row, per rule, kept in the state so a restart does not forgive them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Strikes {
    /// Checks in a row where the candidate's p95 was over the limit.
    pub latency: u32,
    /// Checks in a row where the candidate's error rate was over the limit.
    pub errors: u32,
    /// Checks in a row where the candidate was not ready.
    pub ready: u32,
    /// Checks in a row where the candidate's live accuracy was under the floor.
    pub accuracy: u32,
}

impl Strikes {
    /// The counter of one rule.
    fn of(&mut self, rule: Rule) -> &mut u32 {
        match rule {
            Rule::Ready => &mut self.ready,
            Rule::Errors => &mut self.errors,
            Rule::Latency => &mut self.latency,
            Rule::Accuracy => &mut self.accuracy,
        }
    }
}

/// A rollback rule's name, as checks and outcomes name it. Typed so that the state machine
/// cannot compare against a misspelt rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The candidate reports ready (and its server, when teal runs it, has not exited).
    Ready,
    /// The candidate's share of failed requests.
    Errors,
    /// The candidate's p95 against the old version's.
    Latency,
    /// The candidate's live accuracy from feedback, when a floor is set.
    Accuracy,
}

wire_names!("rule", Rule {
    Ready => "ready",
    Errors => "errors",
    Latency => "latency",
    Accuracy => "accuracy",
});

/// A rule's verdict with the reason the strikes act on. The state keeps only the
/// [`Verdict`] each maps to; the reason decides how the check counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleVerdict {
    /// Within the limit: the rule's strikes start over.
    Pass,
    /// Over the limit: one strike.
    Fail,
    /// The candidate's server process exited: no noise to wait out, so the rule acts at once.
    Exited,
    /// Too few requests or labels to judge: neither counts nor clears.
    TooLittleData,
    /// No baseline latency for the old version yet: neither counts nor clears.
    NoBaseline,
}

impl RuleVerdict {
    /// The verdict as status displays and the state file show it.
    pub fn verdict(self) -> Verdict {
        match self {
            RuleVerdict::Pass => Verdict::Pass,
            RuleVerdict::Fail | RuleVerdict::Exited => Verdict::Fail,
            RuleVerdict::TooLittleData | RuleVerdict::NoBaseline => Verdict::Inconclusive,
        }
    }
}

/// One rule's verdict on one check, kept as the rollout's last check so status displays can
/// say why a candidate is (or is not) close to a rollback.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleOutcome {
    /// Which rule judged.
    pub rule: Rule,
    /// What it decided.
    pub verdict: Verdict,
    /// The numbers behind the verdict, in a sentence.
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

    /// Each rule's verdict on one check, as status displays and the state file show it.
    /// During a canary both slots have traffic, so the candidate is compared with the old
    /// version in the same interval when it can be.
    pub fn judge(&self, check: &Check, canary: bool) -> Vec<RuleOutcome> {
        self.judgements(check, canary)
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect()
    }

    /// [`judge`](Rollout::judge) with each verdict's reason, which the strikes act on.
    pub(super) fn judgements(
        &self,
        check: &Check,
        canary: bool,
    ) -> Vec<(RuleVerdict, RuleOutcome)> {
        let r = &self.settings.rules;
        let out = |rule: Rule, why: RuleVerdict, detail: String| {
            (
                why,
                RuleOutcome {
                    rule,
                    verdict: why.verdict(),
                    detail,
                },
            )
        };
        let mut outcomes = vec![match (&check.new_exited, check.new_ready) {
            (Some(exit), _) => out(
                Rule::Ready,
                RuleVerdict::Exited,
                format!("{EXITED} ({exit})"),
            ),
            (None, true) => out(Rule::Ready, RuleVerdict::Pass, "candidate ready".into()),
            (None, false) => out(Rule::Ready, RuleVerdict::Fail, "candidate not ready".into()),
        }];
        let new = &check.new;
        if new.requests < r.min_requests {
            let detail = format!("{} requests, {} needed", new.requests, r.min_requests);
            outcomes.push(out(
                Rule::Errors,
                RuleVerdict::TooLittleData,
                detail.clone(),
            ));
            outcomes.push(out(Rule::Latency, RuleVerdict::TooLittleData, detail));
        } else {
            let rate = new.errors as f64 / new.requests as f64;
            let verdict = if rate > r.max_error_rate {
                RuleVerdict::Fail
            } else {
                RuleVerdict::Pass
            };
            outcomes.push(out(
                Rule::Errors,
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
                    let verdict = if p95 > limit {
                        RuleVerdict::Fail
                    } else {
                        RuleVerdict::Pass
                    };
                    outcomes.push(out(
                        Rule::Latency,
                        verdict,
                        format!(
                            "p95 {p95:.2} ms, limit {limit:.2} ms ({:.2} ms baseline x {} + {} ms)",
                            base, r.latency_ratio, r.latency_slack_ms
                        ),
                    ));
                }
                _ => outcomes.push(out(
                    Rule::Latency,
                    RuleVerdict::NoBaseline,
                    "no baseline latency for the old version".into(),
                )),
            }
        }
        if let Some(min) = r.min_accuracy {
            outcomes.push(match check.accuracy {
                Some((acc, n)) if n >= r.min_requests => out(
                    Rule::Accuracy,
                    if acc < min {
                        RuleVerdict::Fail
                    } else {
                        RuleVerdict::Pass
                    },
                    format!("live accuracy {acc:.3} (minimum {min}) from {n} labels"),
                ),
                Some((_, n)) => out(
                    Rule::Accuracy,
                    RuleVerdict::TooLittleData,
                    format!("{n} labels, {} needed", r.min_requests),
                ),
                None => out(
                    Rule::Accuracy,
                    RuleVerdict::TooLittleData,
                    "no feedback yet".into(),
                ),
            });
        }
        outcomes
    }

    /// Counts failing checks in a row (an exited server counts as enough at once); returns
    /// the first rule that reached the limit, with its detail.
    pub(super) fn strike(
        &mut self,
        judgements: &[(RuleVerdict, RuleOutcome)],
    ) -> Option<(Rule, String)> {
        let limit = self.settings.rules.consecutive;
        let mut failed = None;
        for (why, o) in judgements {
            let counter = self.strikes.of(o.rule);
            match why {
                // A server that exited will not come back by waiting.
                RuleVerdict::Exited => *counter = limit,
                RuleVerdict::Fail => *counter += 1,
                RuleVerdict::Pass => *counter = 0,
                RuleVerdict::TooLittleData | RuleVerdict::NoBaseline => {}
            }
            if *counter >= limit && failed.is_none() {
                failed = Some((o.rule, o.detail.clone()));
            }
        }
        failed
    }
}

/// How the ready rule says the candidate's server process ended.
const EXITED: &str = "candidate's server process exited";
