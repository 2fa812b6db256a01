//! The rollback rules: what each check measures, how each rule judges it, and the
//! consecutive strikes that make a rule act.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Rollout;
use super::duration::duration_ms;
use crate::gates::{Verdict, wire_names};

/// When an observed candidate is rolled back.
///
/// The errors, latency and outputs rules are sequential tests: they add up the evidence
/// since the phase began (the switch, or the canary step) and act the moment it is strong
/// enough, with a chance of at most `alpha` that a candidate within the limits is rolled
/// back, however long the bake (see [`crate::stats::sequential`]). The ready and accuracy
/// rules act after `consecutive` failing checks in a row. A rule with too little traffic is
/// inconclusive and neither counts nor clears.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackRules {
    /// The candidate is slower when its time is over this multiple of the old version's ...
    pub latency_ratio: f64,
    /// ... plus this many milliseconds, so sub-millisecond noise never counts; the latency
    /// rule rolls back once the candidate is slower in more than half of the comparisons.
    pub latency_slack_ms: f64,
    /// The candidate's share of failed requests (5xx) may exceed the old version's by at
    /// most this much, 0 to 1.
    pub max_error_rate: f64,
    /// The candidate's live accuracy from feedback, when set.
    pub min_accuracy: Option<f64>,
    /// Failing checks in a row before the ready and accuracy rules act.
    pub consecutive: u32,
    /// Requests (or pairs, or labels) a rule needs before it judges at all.
    pub min_requests: u64,
    /// Time between checks.
    #[serde(deserialize_with = "duration_ms")]
    pub check_interval_ms: u64,
    /// The chance, per sequential rule, that a candidate within the limits is rolled back.
    #[serde(skip_serializing_if = "is_default_alpha")]
    pub alpha: f64,
    /// Share of live requests also sent, as a pair, to both versions at once while the
    /// candidate is watched: the concurrent baseline the latency, errors and outputs rules
    /// compare against. 0 turns it off (the rules then use the old version's traffic before
    /// the switch). Skipped while the model is saturated, as shadow copies are.
    #[serde(skip_serializing_if = "is_default_baseline_share")]
    pub baseline_share: f64,
    /// The outputs rule: the share of paired answers whose predictions may differ between
    /// the two versions.
    #[serde(skip_serializing_if = "is_default_max_disagreement")]
    pub max_disagreement: f64,
    /// The outputs rule without pairs: how much each predicted class's share may grow over
    /// its share before the switch.
    #[serde(skip_serializing_if = "is_default_max_class_shift")]
    pub max_class_shift: f64,
    /// The outputs rule for a model whose answers are numbers (a regressor): with pairs, the
    /// share of them in which the candidate answers higher (or lower) than the old version
    /// may exceed one half by at most this much; without pairs, the candidate's share of
    /// answers in each fifth of the old version's answers before the switch may grow by at
    /// most this much.
    #[serde(skip_serializing_if = "is_default_max_value_shift")]
    pub max_value_shift: f64,
}

// Rules added after state files were written are left out at their defaults, so an older
// rollout writes back as it was read.
fn is_default_alpha(v: &f64) -> bool {
    *v == RollbackRules::default().alpha
}
fn is_default_baseline_share(v: &f64) -> bool {
    *v == RollbackRules::default().baseline_share
}
fn is_default_max_disagreement(v: &f64) -> bool {
    *v == RollbackRules::default().max_disagreement
}
fn is_default_max_class_shift(v: &f64) -> bool {
    *v == RollbackRules::default().max_class_shift
}
fn is_default_max_value_shift(v: &f64) -> bool {
    *v == RollbackRules::default().max_value_shift
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
            alpha: 0.01,
            baseline_share: 0.05,
            max_disagreement: 0.2,
            max_class_shift: 0.2,
            max_value_shift: 0.2,
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
    /// The slot's median latency, when it answered anything.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// Requests slower than [`Rollout::latency_limit_ms`] (counted only when certainly over).
    #[serde(default)]
    pub over_limit: u64,
    /// Answers per predicted class, where the answers name one.
    #[serde(default, deserialize_with = "super::int_keys")]
    pub classes: BTreeMap<i64, u64>,
    /// Answers per bucket of their value (a regressor's output, a classifier's top score),
    /// on the buckets of [`crate::stats::values`].
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::int_keys"
    )]
    pub values: crate::stats::values::Histogram,
}

/// One input sent to both versions at the same moment (the concurrent baseline).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Pair {
    /// The old version's service time.
    pub old_ms: f64,
    /// The candidate's service time.
    pub new_ms: f64,
    /// Whether the old version answered.
    pub old_ok: bool,
    /// Whether the candidate answered.
    pub new_ok: bool,
    /// Whether the two predictions differ, when both answered with one.
    pub differ: Option<bool>,
    /// The old version's answer, when it is a number (a regressor's).
    #[serde(default)]
    pub old_value: Option<f64>,
    /// The candidate's answer, when it is a number.
    #[serde(default)]
    pub new_value: Option<f64>,
}

impl Pair {
    /// The pair of two answers to one input: their times, whether each answered, whether
    /// their labels differ (classifiers), and their first values when neither names a label
    /// (regressors; a classifier's scores are not compared, its labels are).
    pub fn of(old: &crate::gates::Answer, new: &crate::gates::Answer) -> Pair {
        let value = |a: &crate::gates::Answer| {
            (a.ok && old.label.is_none() && new.label.is_none())
                .then(|| a.scores.first().copied())
                .flatten()
        };
        Pair {
            old_ms: old.latency_ms,
            new_ms: new.latency_ms,
            old_ok: old.ok,
            new_ok: new.ok,
            differ: match (old.label, new.label) {
                (Some(a), Some(b)) => Some(a != b),
                _ => None,
            },
            old_value: value(old),
            new_value: value(new),
        }
    }
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
    /// The concurrent baseline's pairs since the last check.
    #[serde(default)]
    pub pairs: Vec<Pair>,
    /// The operator's analyses measured since the last check (each at its own interval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<super::Measurement>,
}

/// The evidence since the watched phase began (the switch, or the canary step), which the
/// sequential rules judge; kept in the state so a restart continues the tests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Tally {
    /// Requests the candidate answered.
    pub requests: u64,
    /// Of them, failed (5xx).
    pub errors: u64,
    /// Of them, slower than the limit drawn from the old version's median before the switch.
    pub over_limit: u64,
    /// Concurrent-baseline pairs.
    pub pairs: u64,
    /// Pairs where the candidate was slower than the old version by the latency limit.
    pub slower: u64,
    /// Pairs where the old version failed.
    pub old_errors: u64,
    /// Pairs where both answered with a prediction.
    pub compared: u64,
    /// Of them, pairs whose predictions differ.
    pub differ: u64,
    /// The candidate's answers per predicted class.
    #[serde(deserialize_with = "super::int_keys")]
    pub classes: BTreeMap<i64, u64>,
    /// The candidate's answers per value bucket.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::int_keys"
    )]
    pub values: crate::stats::values::Histogram,
    /// Pairs where both versions answered with a number.
    #[serde(skip_serializing_if = "super::is_default")]
    pub value_pairs: u64,
    /// Of them, pairs where the candidate's number was higher.
    #[serde(skip_serializing_if = "super::is_default")]
    pub higher: u64,
    /// Of them, pairs where the candidate's number was lower.
    #[serde(skip_serializing_if = "super::is_default")]
    pub lower: u64,
}

/// The old version's traffic before the switch (and beside the canary): what the rules
/// compare against when there are no pairs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Baseline {
    /// The old version's median latency (request-weighted mean of its per-check medians).
    pub p50_ms: Option<f64>,
    /// Requests it rests on.
    pub requests: u64,
    /// Of them, failed.
    pub errors: u64,
    /// The old version's answers per predicted class.
    #[serde(deserialize_with = "super::int_keys")]
    pub classes: BTreeMap<i64, u64>,
    /// The old version's answers per value bucket.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::int_keys"
    )]
    pub values: crate::stats::values::Histogram,
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
    /// Set when the outputs rule's evidence reached its bound.
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub outputs: u32,
    /// Failing measurements in a row, per analysis.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub analysis: BTreeMap<String, u32>,
}

impl Strikes {
    /// The counter of one built-in rule; analyses count apart, by name
    /// (`Rollout::judge_analyses`).
    fn of(&mut self, rule: Rule) -> Option<&mut u32> {
        match rule {
            Rule::Ready => Some(&mut self.ready),
            Rule::Errors => Some(&mut self.errors),
            Rule::Latency => Some(&mut self.latency),
            Rule::Accuracy => Some(&mut self.accuracy),
            Rule::Outputs => Some(&mut self.outputs),
            Rule::Analysis => None,
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
    /// The candidate's predictions against the old version's.
    Outputs,
    /// One of the operator's Prometheus analyses.
    Analysis,
}

wire_names!("rule", Rule {
    Ready => "ready",
    Errors => "errors",
    Latency => "latency",
    Accuracy => "accuracy",
    Outputs => "outputs",
    Analysis => "analysis",
});

/// A rule's verdict with the reason the strikes act on. The state keeps only the
/// [`Verdict`] each maps to; the reason decides how the check counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleVerdict {
    /// Within the limit: the rule's strikes start over.
    Pass,
    /// Over the limit: one strike.
    Fail,
    /// A sequential rule's evidence reached its bound: the rule acts at once.
    Proven,
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
            RuleVerdict::Fail | RuleVerdict::Exited | RuleVerdict::Proven => Verdict::Fail,
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
    /// The analysis's name, for [`Rule::Analysis`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The detail of a sequential rule: the evidence against the candidate and its bound.
fn evidence(log_e: f64, alpha: f64) -> String {
    let e = log_e.exp();
    let shown = if e >= 1e4 {
        format!("{e:.1e}")
    } else {
        format!("{e:.2}")
    };
    format!("evidence {shown} against it, {:.0} rolls back", 1.0 / alpha)
}

impl Rollout {
    /// Learns the old version's behaviour from a check before the switch (or beside a
    /// canary), for the rules to compare against when there are no pairs.
    pub(super) fn learn_baseline(&mut self, old: &Window) {
        if old.requests == 0 {
            return;
        }
        let b = &mut self.baseline;
        if let Some(p50) = old.p50_ms {
            let (n, m) = (b.requests as f64, old.requests as f64);
            let mean = b.p50_ms.unwrap_or(p50);
            b.p50_ms = Some((mean * n + p50 * m) / (n + m));
        }
        if let Some(p95) = old.p95_ms {
            let (n, m) = (self.baseline_requests as f64, old.requests as f64);
            let mean = self.baseline_p95_ms.unwrap_or(p95);
            self.baseline_p95_ms = Some((mean * n + p95 * m) / (n + m));
            self.baseline_requests += old.requests;
        }
        b.requests += old.requests;
        b.errors += old.errors;
        for (class, n) in &old.classes {
            *b.classes.entry(*class).or_default() += n;
        }
        crate::stats::values::add(&mut b.values, &old.values);
    }

    /// The latency over which a candidate's request counts as slower when there are no
    /// pairs: the old version's median before the switch, times the ratio, plus the slack.
    pub fn latency_limit_ms(&self) -> Option<f64> {
        let r = &self.settings.rules;
        self.baseline
            .p50_ms
            .map(|p50| p50 * r.latency_ratio + r.latency_slack_ms)
    }

    /// Adds a check to the evidence of the watched phase.
    pub(super) fn add_evidence(&mut self, check: &Check) {
        let r = &self.settings.rules;
        let t = &mut self.tally;
        t.requests += check.new.requests;
        t.errors += check.new.errors;
        t.over_limit += check.new.over_limit;
        for (class, n) in &check.new.classes {
            *t.classes.entry(*class).or_default() += n;
        }
        crate::stats::values::add(&mut t.values, &check.new.values);
        for pair in &check.pairs {
            t.pairs += 1;
            if !pair.old_ok {
                t.old_errors += 1;
            }
            // A failed candidate answer is the errors rule's; latency compares answers.
            if pair.new_ok
                && pair.old_ok
                && pair.new_ms > pair.old_ms * r.latency_ratio + r.latency_slack_ms
            {
                t.slower += 1;
            }
            if let Some(differ) = pair.differ {
                t.compared += 1;
                t.differ += u64::from(differ);
            }
            if let (Some(old), Some(new)) = (pair.old_value, pair.new_value) {
                t.value_pairs += 1;
                t.higher += u64::from(new > old);
                t.lower += u64::from(new < old);
            }
        }
    }

    /// Each rule's verdict on the evidence so far, as status displays and the state file
    /// show it.
    pub fn judge(&self, check: &Check) -> Vec<RuleOutcome> {
        self.judgements(check)
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect()
    }

    /// [`judge`](Rollout::judge) with each verdict's reason, which the strikes act on.
    pub(super) fn judgements(&self, check: &Check) -> Vec<(RuleVerdict, RuleOutcome)> {
        let r = &self.settings.rules;
        let t = &self.tally;
        let bound = crate::stats::sequential::threshold(r.alpha);
        let out = |rule: Rule, why: RuleVerdict, detail: String| {
            (
                why,
                RuleOutcome {
                    rule,
                    verdict: why.verdict(),
                    detail,
                    name: None,
                },
            )
        };
        let test = |log_e: f64| {
            if log_e >= bound {
                RuleVerdict::Proven
            } else {
                RuleVerdict::Pass
            }
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
        let paired = t.pairs >= r.min_requests;

        // Errors: the candidate's share of failures against the old version's plus the limit.
        if t.requests < r.min_requests {
            outcomes.push(out(
                Rule::Errors,
                RuleVerdict::TooLittleData,
                format!("{} requests, {} needed", t.requests, r.min_requests),
            ));
        } else {
            // The old version's share is itself measured: the limit adds the allowance to an
            // upper bound on it that holds at every check (at most a share alpha of the time
            // too low), so a short sample of the old version never tightens the limit.
            let upper = crate::stats::sequential::upper_bound;
            let (old_rate, basis) = if paired {
                (
                    upper(t.pairs, t.old_errors, r.alpha),
                    format!("in {} pairs sent to both at once", t.pairs),
                )
            } else if self.baseline.requests >= r.min_requests {
                (
                    upper(self.baseline.requests, self.baseline.errors, r.alpha),
                    format!("in {} requests before the switch", self.baseline.requests),
                )
            } else {
                (0.0, "with no traffic to measure".to_string())
            };
            let limit = (old_rate + r.max_error_rate).min(1.0);
            let log_e = crate::stats::sequential::exceedance(t.requests, t.errors, limit);
            outcomes.push(out(
                Rule::Errors,
                test(log_e),
                format!(
                    "error rate {:.2}% over {} requests, limit {:.2}% (the old version's at most {:.2}% {basis}, + {:.2}%); {}",
                    t.errors as f64 * 100.0 / t.requests as f64,
                    t.requests,
                    limit * 100.0,
                    old_rate * 100.0,
                    r.max_error_rate * 100.0,
                    evidence(log_e, r.alpha)
                ),
            ));
        }

        // Latency: slower than the old version (times the ratio, plus the slack) in more
        // than half of the comparisons.
        let ratio = format!("x {} + {} ms", r.latency_ratio, r.latency_slack_ms);
        if paired {
            let log_e = crate::stats::sequential::exceedance(t.pairs, t.slower, 0.5);
            outcomes.push(out(
                Rule::Latency,
                test(log_e),
                format!(
                    "slower than the old version {ratio} in {} of {} pairs sent to both at once; {}",
                    t.slower,
                    t.pairs,
                    evidence(log_e, r.alpha)
                ),
            ));
        } else if let Some(limit) = self.latency_limit_ms() {
            if t.requests < r.min_requests {
                outcomes.push(out(
                    Rule::Latency,
                    RuleVerdict::TooLittleData,
                    format!("{} requests, {} needed", t.requests, r.min_requests),
                ));
            } else {
                let log_e = crate::stats::sequential::exceedance(t.requests, t.over_limit, 0.5);
                outcomes.push(out(
                    Rule::Latency,
                    test(log_e),
                    format!(
                        "{} of {} requests over {limit:.2} ms (the old version's median {:.2} ms before the switch {ratio}); {}",
                        t.over_limit,
                        t.requests,
                        self.baseline.p50_ms.unwrap_or_default(),
                        evidence(log_e, r.alpha)
                    ),
                ));
            }
        } else {
            outcomes.push(out(
                Rule::Latency,
                RuleVerdict::NoBaseline,
                format!(
                    "no latency to compare with: {} of {} pairs with the old version, and no traffic on it before the switch",
                    t.pairs, r.min_requests
                ),
            ));
        }

        // Outputs: the candidate's predictions against the old version's, on the same inputs
        // when there are pairs, else as class shares against those before the switch.
        if let Some(outcome) = self.judge_outputs(&out, bound) {
            outcomes.push(outcome);
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

    /// The outputs rule, when there is anything to compare: none for a model whose answers
    /// name no class and that has no pairs.
    fn judge_outputs(
        &self,
        out: &impl Fn(Rule, RuleVerdict, String) -> (RuleVerdict, RuleOutcome),
        bound: f64,
    ) -> Option<(RuleVerdict, RuleOutcome)> {
        let r = &self.settings.rules;
        let t = &self.tally;
        let verdict = |log_e: f64, bound: f64| {
            if log_e >= bound {
                RuleVerdict::Proven
            } else {
                RuleVerdict::Pass
            }
        };
        if t.compared >= r.min_requests {
            let log_e =
                crate::stats::sequential::exceedance(t.compared, t.differ, r.max_disagreement);
            return Some(out(
                Rule::Outputs,
                verdict(log_e, bound),
                format!(
                    "predictions differ in {} of {} pairs (limit {:.1}%); {}",
                    t.differ,
                    t.compared,
                    r.max_disagreement * 100.0,
                    evidence(log_e, r.alpha)
                ),
            ));
        }
        let before: u64 = self.baseline.classes.values().sum();
        let after: u64 = t.classes.values().sum();
        if t.compared == 0 && before == 0 && after == 0 {
            return self.judge_values(out);
        }
        if before < r.min_requests || after < r.min_requests {
            return Some(out(
                Rule::Outputs,
                RuleVerdict::TooLittleData,
                format!(
                    "{} pairs compared and {after} predictions since the switch against {before} before it, {} needed",
                    t.compared, r.min_requests
                ),
            ));
        }
        // Each class's share may grow by at most the limit; one test per class seen, each at
        // an equal part of alpha, so together they keep alpha.
        let classes: std::collections::BTreeSet<i64> = self
            .baseline
            .classes
            .keys()
            .chain(t.classes.keys())
            .copied()
            .collect();
        let part = r.alpha / classes.len().max(1) as f64;
        let bound = crate::stats::sequential::threshold(part);
        let (class, log_e, share_before, share_after) = classes
            .iter()
            .map(|c| {
                let b = *self.baseline.classes.get(c).unwrap_or(&0) as f64 / before as f64;
                let n = *t.classes.get(c).unwrap_or(&0);
                let log_e = crate::stats::sequential::exceedance(
                    after,
                    n,
                    (b + r.max_class_shift).min(1.0),
                );
                (*c, log_e, b, n as f64 / after as f64)
            })
            .fold((0, f64::NEG_INFINITY, 0.0, 0.0), |best, x| {
                if x.1 > best.1 { x } else { best }
            });
        Some(out(
            Rule::Outputs,
            verdict(log_e, bound),
            format!(
                "class {class} in {:.1}% of {after} predictions against {:.1}% of {before} before the switch (may grow by {:.1} points); {}",
                share_after * 100.0,
                share_before * 100.0,
                r.max_class_shift * 100.0,
                evidence(log_e, part)
            ),
        ))
    }

    /// The outputs rule for a model whose answers are numbers, not classes: none when there
    /// are no numbers either.
    ///
    /// With pairs it is a sign test, the stochastic-order test of the paired latencies
    /// applied to the answers: a candidate that answers the same inputs higher than the old
    /// version in more than half the pairs plus the limit (or lower, the other side, each at
    /// half of alpha) has moved. A retrained regressor that differs everywhere but without a
    /// direction passes. Without pairs, the old version's answers before the switch are cut
    /// into fifths, and each fifth's share of the candidate's answers may grow by at most the
    /// limit (one test per fifth, each at a fifth of alpha).
    fn judge_values(
        &self,
        out: &impl Fn(Rule, RuleVerdict, String) -> (RuleVerdict, RuleOutcome),
    ) -> Option<(RuleVerdict, RuleOutcome)> {
        use crate::stats::sequential::{exceedance, threshold};
        use crate::stats::values;
        let r = &self.settings.rules;
        let t = &self.tally;
        let limit = (0.5 + r.max_value_shift).min(1.0);
        if t.value_pairs >= r.min_requests {
            let part = r.alpha / 2.0;
            let up = exceedance(t.value_pairs, t.higher, limit);
            let down = exceedance(t.value_pairs, t.lower, limit);
            let log_e = up.max(down);
            let verdict = if log_e >= threshold(part) {
                RuleVerdict::Proven
            } else {
                RuleVerdict::Pass
            };
            return Some(out(
                Rule::Outputs,
                verdict,
                format!(
                    "the candidate answers higher in {} and lower in {} of {} pairs sent to both at once (either may be at most {:.0}%); {}",
                    t.higher,
                    t.lower,
                    t.value_pairs,
                    limit * 100.0,
                    evidence(log_e, part)
                ),
            ));
        }
        let before: u64 = self.baseline.values.values().sum();
        let after: u64 = t.values.values().sum();
        if t.value_pairs == 0 && before == 0 && after == 0 {
            return None;
        }
        if before < r.min_requests || after < r.min_requests {
            return Some(out(
                Rule::Outputs,
                RuleVerdict::TooLittleData,
                format!(
                    "{} pairs with numbers and {after} answers since the switch against {before} before it, {} needed",
                    t.value_pairs, r.min_requests
                ),
            ));
        }
        let ends = values::quantile_bins(&self.baseline.values, 5);
        if ends.len() < 2 {
            // One bin holds everything: its share cannot grow, so the test could never fail.
            return Some(out(
                Rule::Outputs,
                RuleVerdict::TooLittleData,
                format!(
                    "the old version's {before} answers before the switch fall in one bucket (within 9% of each other), so shares cannot be compared; pairs sent to both at once can"
                ),
            ));
        }
        let old = values::binned(&self.baseline.values, &ends);
        let new = values::binned(&t.values, &ends);
        let part = r.alpha / ends.len() as f64;
        let (bin, log_e) = old
            .iter()
            .zip(&new)
            .map(|(o, n)| {
                let share = *o as f64 / before as f64;
                exceedance(after, *n, (share + r.max_value_shift).min(1.0))
            })
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, e)| {
                if e > best.1 { (i, e) } else { best }
            });
        let range = |i: usize| {
            let low = i.checked_sub(1).map_or("below".to_string(), |j| {
                format!("{:.4}", values::upper(ends[j]))
            });
            let high = if ends[i] == i32::MAX {
                "above".to_string()
            } else {
                format!("{:.4}", values::upper(ends[i]))
            };
            match (i, ends[i] == i32::MAX) {
                (0, true) => "all values".to_string(),
                (0, false) => format!("answers up to {high}"),
                (_, true) => format!("answers over {low}"),
                _ => format!("answers over {low} up to {high}"),
            }
        };
        let verdict = if log_e >= threshold(part) {
            RuleVerdict::Proven
        } else {
            RuleVerdict::Pass
        };
        Some(out(
            Rule::Outputs,
            verdict,
            format!(
                "{} are {:.1}% of {after} answers against {:.1}% of {before} before the switch (may grow by {:.1} points); {}",
                range(bin),
                new[bin] as f64 * 100.0 / after as f64,
                old[bin] as f64 * 100.0 / before as f64,
                r.max_value_shift * 100.0,
                evidence(log_e, part)
            ),
        ))
    }

    /// Whether the evidence of the watched phase is too thin to call the candidate good:
    /// the errors or latency rule could not judge. Returns why.
    pub(super) fn inconclusive(&self) -> Option<String> {
        if self.last_check.is_empty() {
            return Some("no check has run".into());
        }
        let mut thin: Vec<String> = self
            .last_check
            .iter()
            .filter(|o| matches!(o.rule, Rule::Errors | Rule::Latency))
            .filter(|o| o.verdict == Verdict::Inconclusive)
            .map(|o| format!("{}: {}", o.rule, o.detail))
            .collect();
        // An analysis of this phase must have passed at its latest measurement: no data, a
        // NaN or an error is never taken for a pass.
        if let Some(stage) = self.watched_stage() {
            for a in self.settings.analyses_at(stage) {
                let latest = self
                    .last_check
                    .iter()
                    .find(|o| o.rule == Rule::Analysis && o.name.as_deref() == Some(&a.name));
                match latest {
                    Some(o) if o.verdict == Verdict::Pass => {}
                    Some(o) => thin.push(format!("analysis {}", o.detail)),
                    None => thin.push(format!("analysis {}: not measured yet", a.name)),
                }
            }
        }
        (!thin.is_empty()).then(|| thin.join("; "))
    }

    /// Where the current phase's analyses come from: a canary step's, or the bake's.
    pub fn watched_stage(&self) -> Option<super::Stage> {
        match self.phase {
            super::Phase::Canary { .. } | super::Phase::CanaryGates { .. } => {
                Some(super::Stage::Canary)
            }
            super::Phase::Observing => Some(super::Stage::Bake),
            _ => None,
        }
    }

    /// Judges the check's analysis measurements of this phase: a failure is a strike, a pass
    /// clears them, an inconclusive one (no data, NaN, an error) neither counts nor clears.
    /// Returns the outcomes to show (the latest of every analysis of the phase, measured now
    /// or before) and the end reason of the first that failed its `consecutive` in a row.
    pub(super) fn judge_analyses(
        &mut self,
        check: &Check,
        previous: &[RuleOutcome],
    ) -> (Vec<RuleOutcome>, Option<super::EndReason>) {
        let Some(stage) = self.watched_stage() else {
            return (Vec::new(), None);
        };
        let analyses: Vec<super::Analysis> = self.settings.analyses_at(stage).cloned().collect();
        let mut outcomes = Vec::new();
        let mut failed = None;
        for a in analyses {
            let measured = check.analyses.iter().rev().find(|m| m.name == a.name);
            let Some(m) = measured else {
                if let Some(o) = previous
                    .iter()
                    .find(|o| o.rule == Rule::Analysis && o.name.as_deref() == Some(&a.name))
                {
                    outcomes.push(o.clone());
                }
                continue;
            };
            let strikes = self.strikes.analysis.entry(a.name.clone()).or_default();
            match m.verdict {
                Verdict::Pass => *strikes = 0,
                Verdict::Fail => *strikes += 1,
                Verdict::Inconclusive => {}
            }
            let detail = format!("{}: {}", a.name, m.detail);
            if *strikes >= a.consecutive && failed.is_none() {
                failed = Some(super::EndReason::RuleFailed {
                    rule: Rule::Analysis,
                    detail: detail.clone(),
                    checks: a.consecutive,
                });
            }
            outcomes.push(RuleOutcome {
                rule: Rule::Analysis,
                verdict: m.verdict,
                detail,
                name: Some(a.name.clone()),
            });
        }
        self.strikes.analysis.retain(|_, n| *n > 0);
        (outcomes, failed)
    }

    /// Counts failing checks in a row (an exited server, or a sequential rule's evidence,
    /// acts at once); returns the first rule that reached the limit with its end reason.
    pub(super) fn strike(
        &mut self,
        judgements: &[(RuleVerdict, RuleOutcome)],
    ) -> Option<super::EndReason> {
        let limit = self.settings.rules.consecutive;
        let alpha = self.settings.rules.alpha;
        let mut failed = None;
        for (why, o) in judgements {
            let Some(counter) = self.strikes.of(o.rule) else {
                continue;
            };
            match why {
                // A server that exited will not come back by waiting.
                RuleVerdict::Exited => *counter = limit,
                RuleVerdict::Proven => {
                    *counter = limit;
                    if failed.is_none() {
                        failed = Some(super::EndReason::RuleProven {
                            rule: o.rule,
                            detail: o.detail.clone(),
                            alpha,
                        });
                    }
                    continue;
                }
                RuleVerdict::Fail => *counter += 1,
                RuleVerdict::Pass => *counter = 0,
                RuleVerdict::TooLittleData | RuleVerdict::NoBaseline => {}
            }
            if *counter >= limit && failed.is_none() {
                failed = Some(super::EndReason::RuleFailed {
                    rule: o.rule,
                    detail: o.detail.clone(),
                    checks: limit,
                });
            }
        }
        failed
    }
}

/// How the ready rule says the candidate's server process ended.
const EXITED: &str = "candidate's server process exited";
