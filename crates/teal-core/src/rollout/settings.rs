//! A model's rollout settings and where the gates' evidence comes from.

use serde::{Deserialize, Serialize};

use super::duration::duration_ms;
use super::{RollbackRules, Strategy};

/// Where the evidence for the validation phase comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Evidence {
    /// A labelled holdout file.
    Holdout(std::path::PathBuf),
    /// Up to this many requests captured from live traffic, replayed to both slots.
    Replay(usize),
    /// Up to this many live requests mirrored to the candidate.
    Shadow(usize),
}

/// What a watched phase (the bake, or a canary step) does when its window ends, or its
/// gates finish, without enough evidence to call the candidate good.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    /// Go on as if the evidence were good.
    Promote,
    /// Hold and wait for `teal promote` (or `teal abort`), saying why.
    Wait,
    /// Lengthen the window by its own length, up to `max_extensions` times, then wait.
    #[default]
    Extend,
}

/// A model's rollout settings (`[model.rollout]`), each overridable per rollout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
    /// How the candidate reaches traffic.
    pub strategy: Strategy,
    /// Switch (or start the canary) by itself once the gates pass; otherwise wait for
    /// `teal promote`.
    pub auto_switch: bool,
    /// How long to wait after the gates pass before an automatic switch.
    #[serde(deserialize_with = "duration_ms")]
    pub switch_delay_ms: u64,
    /// How long the new live version is watched (the bake) with the rollback rules armed.
    #[serde(deserialize_with = "duration_ms")]
    pub observe_ms: u64,
    /// How long the old version stays loaded after the bake, for an instant rollback.
    #[serde(deserialize_with = "duration_ms")]
    pub keep_warm_ms: u64,
    /// Whether an abort (or a failed gate) also stops the candidate; by default it stays
    /// loaded, without traffic, for inspection.
    pub abort_removes_green: bool,
    /// The evidence for the gates; none means only health is checked.
    pub evidence: Option<Evidence>,
    /// When a live candidate is rolled back.
    pub rules: RollbackRules,
    /// Whether a request the candidate fails (a server error or a timeout) is answered by
    /// the old version while it is warm: during canary steps, the bake and the keep-warm
    /// window. The failure still counts against the candidate.
    #[serde(skip_serializing_if = "is_true")]
    pub failover: bool,
    /// What the bake or a canary step does when it ends without enough evidence.
    #[serde(skip_serializing_if = "super::is_default")]
    pub on_inconclusive: OnInconclusive,
    /// How many times `on_inconclusive = "extend"` lengthens a window before it waits.
    #[serde(skip_serializing_if = "is_two")]
    pub max_extensions: u32,
    /// PromQL queries judged at the gates, through canary steps and through the bake
    /// (`[[model.rollout.analysis]]`); the config file's only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<super::Analysis>,
    /// Endpoints called at the rollout's points (`[[model.rollout.webhook]]`); the config
    /// file's only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<super::Webhook>,
    /// Commands run against the candidate before the switch (`[[model.rollout.smoke_test]]`);
    /// the config file's only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub smoke_test: Vec<super::SmokeTest>,
}

// Settings added after state files were written are left out at their defaults, so an older
// rollout writes back as it was read.
fn is_true(v: &bool) -> bool {
    *v
}
fn is_two(v: &u32) -> bool {
    *v == 2
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            strategy: Strategy::BlueGreen,
            auto_switch: true,
            switch_delay_ms: 0,
            observe_ms: 5 * 60_000,
            keep_warm_ms: 7 * 86_400_000,
            abort_removes_green: false,
            evidence: Some(Evidence::Replay(1_000)),
            rules: RollbackRules::default(),
            failover: true,
            on_inconclusive: OnInconclusive::Extend,
            max_extensions: 2,
            analysis: Vec::new(),
            webhook: Vec::new(),
            smoke_test: Vec::new(),
        }
    }
}

impl RolloutSettings {
    /// The keys only the config file may set: they reach network addresses and run
    /// commands.
    pub const OPERATOR_ONLY: [&'static str; 3] = ["analysis", "webhook", "smoke_test"];

    /// These settings with the operator's own checks taken from `config` (the config file's
    /// settings for the same model), whatever these held.
    pub fn with_checks_of(mut self, config: &RolloutSettings) -> RolloutSettings {
        self.analysis = config.analysis.clone();
        self.webhook = config.webhook.clone();
        self.smoke_test = config.smoke_test.clone();
        self
    }

    /// The analyses evaluated at `stage`.
    pub fn analyses_at(&self, stage: super::Stage) -> impl Iterator<Item = &super::Analysis> {
        self.analysis.iter().filter(move |a| a.at.contains(&stage))
    }

    /// The webhooks called at `event`.
    pub fn hooks_on(&self, event: super::HookEvent) -> impl Iterator<Item = &super::Webhook> {
        self.webhook.iter().filter(move |w| w.on.contains(&event))
    }

    /// Checks the settings; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, r: String| Err((f.to_string(), r));
        if let Strategy::Canary { steps } = &self.strategy {
            if steps.is_empty() {
                return err(
                    "strategy.steps",
                    "a canary needs at least one step, like { percent = 10, pause_ms = \"1m\" }"
                        .into(),
                );
            }
            for (i, s) in steps.iter().enumerate() {
                if !(0.0..=100.0).contains(&s.percent) || s.percent.is_nan() {
                    return err(
                        &format!("strategy.steps[{i}].percent"),
                        format!("must be between 0 and 100, not {}", s.percent),
                    );
                }
            }
        }
        if let Strategy::ShadowThenSwitch { percent, .. } = &self.strategy
            && !(*percent > 0.0 && *percent <= 100.0)
        {
            return err(
                "strategy.percent",
                format!("must be above 0 and at most 100, not {percent}"),
            );
        }
        let r = &self.rules;
        if r.latency_ratio.is_nan() || r.latency_ratio < 1.0 {
            return err(
                "rules.latency_ratio",
                format!("must be at least 1, not {}", r.latency_ratio),
            );
        }
        if !(0.0..=1.0).contains(&r.max_error_rate) {
            return err(
                "rules.max_error_rate",
                format!("must be between 0 and 1, not {}", r.max_error_rate),
            );
        }
        if r.consecutive == 0 {
            return err("rules.consecutive", "must be at least 1".into());
        }
        if r.check_interval_ms < 100 {
            return err("rules.check_interval_ms", "must be at least 100 ms".into());
        }
        if !(r.alpha > 0.0 && r.alpha < 0.5) {
            return err(
                "rules.alpha",
                format!("must be above 0 and below 0.5, not {}", r.alpha),
            );
        }
        for (field, value) in [
            ("rules.baseline_share", r.baseline_share),
            ("rules.max_disagreement", r.max_disagreement),
            ("rules.max_class_shift", r.max_class_shift),
            ("rules.max_value_shift", r.max_value_shift),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return err(field, format!("must be between 0 and 1, not {value}"));
            }
        }
        if r.latency_slack_ms.is_nan() || r.latency_slack_ms < 0.0 {
            return err(
                "rules.latency_slack_ms",
                format!("must be 0 or more, not {}", r.latency_slack_ms),
            );
        }
        super::checks::validate(&self.analysis, &self.webhook, &self.smoke_test)?;
        if self.max_extensions > 100 {
            return err(
                "max_extensions",
                format!("must be at most 100, not {}", self.max_extensions),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::parse_duration;

    #[test]
    fn settings_read_durations_and_refuse_nonsense() {
        let s: RolloutSettings = toml::from_str(
        r#"
        observe_ms = "10m"
        keep_warm_ms = "7d"
        switch_delay_ms = 1500
        strategy = { kind = "canary", steps = [{ percent = 5, pause_ms = "30s" }, { percent = 50, pause_ms = "manual", gates = true }] }
        rules = { consecutive = 2, check_interval_ms = "2s" }
        "#,
    )
    .unwrap();
        assert_eq!(s.observe_ms, 600_000);
        assert_eq!(s.keep_warm_ms, 604_800_000);
        assert_eq!(s.switch_delay_ms, 1_500);
        assert_eq!(s.rules.check_interval_ms, 2_000);
        assert_eq!(s.rules.latency_ratio, 1.2);
        let Strategy::Canary { steps } = &s.strategy else {
            panic!()
        };
        assert_eq!(steps[0].pause_ms, Some(30_000));
        assert_eq!(steps[1].pause_ms, None);
        assert!(s.validate().is_ok());

        let bad: Result<RolloutSettings, _> = toml::from_str(r#"observe_ms = "10 minutes""#);
        assert!(bad.unwrap_err().to_string().contains("unknown unit"));
        let empty = RolloutSettings {
            strategy: Strategy::Canary { steps: vec![] },
            ..RolloutSettings::default()
        };
        assert_eq!(empty.validate().unwrap_err().0, "strategy.steps");
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
    }
}
