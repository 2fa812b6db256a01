//! Why a rollout ended: failed, aborted, rolled back, or done.

use std::fmt;
use std::str::FromStr;

use super::Rule;

/// Why a rollout ended. The state machine ends a rollout only through one of these, and the
/// sentence it writes (the rollout's `outcome`, and the cause of its last transition in the
/// audit log) is rendered here alone, by `Display`; `FromStr` reads the same sentences back
/// from the state file.
#[derive(Clone, Debug, PartialEq)]
pub enum EndReason {
    /// The candidate could not be loaded into its slot.
    DeployFailed {
        /// What the deploy reported.
        reason: String,
    },
    /// A `pre_rollout` webhook did not answer 2xx, so nothing was deployed.
    HookRefused {
        /// The webhook's name.
        hook: String,
        /// What it answered, or why it could not be reached.
        reason: String,
    },
    /// The candidate was loaded but never reported ready.
    NeverReady {
        /// What the readiness wait reported.
        reason: String,
    },
    /// The gates failed before any traffic moved.
    GatesFailed {
        /// The gates' summary.
        summary: String,
    },
    /// The gates failed at the end of a canary step, so the candidate's share went back.
    CanaryGatesFailed {
        /// The step, counted from 0 as in [`Phase::Canary`](super::Phase::Canary).
        step: usize,
        /// The gates' summary.
        summary: String,
    },
    /// A rollback rule failed `checks` checks in a row (or at once, for an exited server).
    RuleFailed {
        /// The rule that acted.
        rule: Rule,
        /// The rule's last detail.
        detail: String,
        /// The consecutive failures the settings require.
        checks: u32,
    },
    /// A sequential rule's evidence against the candidate reached its bound: with the
    /// candidate as good as the limit, that happens with a chance of at most `alpha`.
    RuleProven {
        /// The rule that acted.
        rule: Rule,
        /// The rule's last detail.
        detail: String,
        /// The rule's false-alarm bound.
        alpha: f64,
    },
    /// An operator rolled the candidate back.
    RolledBackBy {
        /// Who asked.
        actor: String,
    },
    /// An operator aborted before the switch.
    AbortedBy {
        /// Who asked.
        actor: String,
    },
    /// The candidate is live and the old version is gone.
    Completed {
        /// The version now live.
        version: String,
    },
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::DeployFailed { reason } => write!(f, "deploy failed: {reason}"),
            EndReason::HookRefused { hook, reason } => {
                write!(f, "pre_rollout webhook '{hook}' stopped it: {reason}")
            }
            EndReason::NeverReady { reason } => {
                write!(f, "candidate never became ready: {reason}")
            }
            EndReason::GatesFailed { summary } => write!(f, "gates failed: {summary}"),
            EndReason::CanaryGatesFailed { step, summary } => {
                write!(f, "gates failed at canary step {}: {summary}", step + 1)
            }
            EndReason::RuleFailed {
                rule,
                detail,
                checks,
            } => write!(f, "{rule}: {detail} (failed {checks} checks in a row)"),
            EndReason::RuleProven {
                rule,
                detail,
                alpha,
            } => write!(
                f,
                "{rule}: {detail} (proven at a false-alarm bound of {alpha})"
            ),
            EndReason::RolledBackBy { actor } => write!(f, "rolled back by {actor}"),
            EndReason::AbortedBy { actor } => write!(f, "aborted by {actor}"),
            EndReason::Completed { version } => {
                write!(f, "{version} is live; the old version is stopped")
            }
        }
    }
}

/// A sentence that is no [`EndReason`]'s, so that a rollout whose outcome cannot be read is
/// reported rather than read as something it is not.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a reason a rollout ends with")]
pub struct UnknownEndReason(pub String);

impl FromStr for EndReason {
    type Err = UnknownEndReason;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = parse(text).filter(|reason| reason.to_string() == text);
        parsed.ok_or_else(|| UnknownEndReason(text.to_string()))
    }
}

/// The reason a sentence reads as, before the check that it renders back to the same text.
fn parse(text: &str) -> Option<EndReason> {
    let owned = |s: &str| s.to_string();
    if let Some(reason) = text.strip_prefix("deploy failed: ") {
        return Some(EndReason::DeployFailed {
            reason: owned(reason),
        });
    }
    if let Some(rest) = text.strip_prefix("pre_rollout webhook '") {
        let (hook, reason) = rest.split_once("' stopped it: ")?;
        return Some(EndReason::HookRefused {
            hook: owned(hook),
            reason: owned(reason),
        });
    }
    if let Some(reason) = text.strip_prefix("candidate never became ready: ") {
        return Some(EndReason::NeverReady {
            reason: owned(reason),
        });
    }
    if let Some(rest) = text.strip_prefix("gates failed at canary step ") {
        let (number, summary) = rest.split_once(": ")?;
        let step = number.parse::<usize>().ok()?.checked_sub(1)?;
        return Some(EndReason::CanaryGatesFailed {
            step,
            summary: owned(summary),
        });
    }
    if let Some(summary) = text.strip_prefix("gates failed: ") {
        return Some(EndReason::GatesFailed {
            summary: owned(summary),
        });
    }
    if let Some(actor) = text.strip_prefix("rolled back by ") {
        return Some(EndReason::RolledBackBy {
            actor: owned(actor),
        });
    }
    if let Some(actor) = text.strip_prefix("aborted by ") {
        return Some(EndReason::AbortedBy {
            actor: owned(actor),
        });
    }
    if let Some(version) = text.strip_suffix(" is live; the old version is stopped") {
        return Some(EndReason::Completed {
            version: owned(version),
        });
    }
    let (rule, rest) = text.split_once(": ")?;
    if let Some((detail, alpha)) = rest
        .strip_suffix(')')
        .and_then(|r| r.rsplit_once(" (proven at a false-alarm bound of "))
    {
        return Some(EndReason::RuleProven {
            rule: rule.parse().ok()?,
            detail: owned(detail),
            alpha: alpha.parse().ok()?,
        });
    }
    let (detail, checks) = rest
        .strip_suffix(" checks in a row)")?
        .rsplit_once(" (failed ")?;
    Some(EndReason::RuleFailed {
        rule: rule.parse().ok()?,
        detail: owned(detail),
        checks: checks.parse().ok()?,
    })
}

impl serde::Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EndReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_reason() -> Vec<EndReason> {
        vec![
            EndReason::DeployFailed {
                reason: "no such file: model.onnx".into(),
            },
            EndReason::NeverReady {
                reason: "not ready within 30 s: connection refused".into(),
            },
            EndReason::HookRefused {
                hook: "change-ticket".into(),
                reason: "answered 403 Forbidden: no open change ticket".into(),
            },
            EndReason::RuleFailed {
                rule: Rule::Analysis,
                detail: "error-rate: value 0.2, needs < 0.01".into(),
                checks: 2,
            },
            EndReason::GatesFailed {
                summary: "450 samples from holdout h.jsonl: agreement fail; agreement: the slots agreed on 2 of 450 requests (0.4%)".into(),
            },
            EndReason::CanaryGatesFailed {
                step: 2,
                summary: "drift fail: largest distance 0.3".into(),
            },
            EndReason::RuleFailed {
                rule: Rule::Errors,
                detail: "error rate 50.00% (limit 1.00%) over 100 requests".into(),
                checks: 3,
            },
            EndReason::RuleProven {
                rule: Rule::Latency,
                detail: "slower in 40 of 41 pairs; evidence 2.1e3 (bound 100)".into(),
                alpha: 0.01,
            },
            EndReason::RuleFailed {
                rule: Rule::Ready,
                detail: "candidate's server process exited (killed by SIGKILL)".into(),
                checks: 3,
            },
            EndReason::RolledBackBy {
                actor: "ana@ops: night shift".into(),
            },
            EndReason::AbortedBy {
                actor: "kubectl annotate".into(),
            },
            EndReason::Completed {
                version: "v4".into(),
            },
        ]
    }

    #[test]
    fn every_reason_reads_back_from_the_sentence_it_writes() {
        for reason in every_reason() {
            let json = serde_json::to_string(&reason).unwrap();
            let back: EndReason = serde_json::from_str(&json).unwrap();
            assert_eq!(back, reason, "{json}");
        }
    }

    #[test]
    fn the_sentences_are_the_ones_the_state_file_holds() {
        let written: Vec<String> = every_reason().iter().map(|r| r.to_string()).collect();
        assert_eq!(written[0], "deploy failed: no such file: model.onnx");
        assert!(written[5].starts_with("gates failed at canary step 3: "));
        assert_eq!(
            written[2],
            "pre_rollout webhook 'change-ticket' stopped it: answered 403 Forbidden: no open change ticket"
        );
        assert_eq!(
            written[3],
            "analysis: error-rate: value 0.2, needs < 0.01 (failed 2 checks in a row)"
        );
        assert_eq!(
            written[6],
            "errors: error rate 50.00% (limit 1.00%) over 100 requests (failed 3 checks in a row)"
        );
        assert_eq!(
            written[7],
            "latency: slower in 40 of 41 pairs; evidence 2.1e3 (bound 100) (proven at a false-alarm bound of 0.01)"
        );
        assert_eq!(written[9], "rolled back by ana@ops: night shift");
        assert_eq!(written[11], "v4 is live; the old version is stopped");
    }

    #[test]
    fn a_sentence_no_reason_writes_is_refused() {
        for text in [
            "",
            "rollout ended",
            "gates failed at canary step 0: x",
            "gates failed at canary step 02: x",
            "speed: too slow (failed 3 checks in a row)",
            "speed: too slow (proven at a false-alarm bound of 0.01)",
            "errors: too many (proven at a false-alarm bound of often)",
            "errors: too many (proven at a false-alarm bound of 0.010)",
        ] {
            assert!(text.parse::<EndReason>().is_err(), "{text}");
        }
    }
}
