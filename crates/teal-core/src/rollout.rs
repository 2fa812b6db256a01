//! The rollout state machine: one model's move from the live version (blue, whichever slot
//! holds it) to a candidate (green), as a pure function.
//!
//! [`Rollout::step`] consumes the state and one [`Event`] and returns the next state with
//! the [`Effect`]s a driver must perform. The driver persists the state (and the
//! transition's audit event, in the same transaction) before it acts, so a restart resumes
//! where it stood: [`Rollout::resume`] names the effects a phase still owes, and every
//! effect is idempotent (the route is a desired value, not a delta).
//!
//! Time is an input (`now_ms`), never read here, so tests drive it by hand.

use serde::{Deserialize, Deserializer, Serialize};

use crate::routing::{Color, WHOLE};

/// How the candidate reaches traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// Validate, then move all traffic at once (after the approval or the switch delay).
    #[default]
    BlueGreen,
    /// Validate, then raise the candidate's share step by step, watching it at each step.
    Canary { steps: Vec<CanaryStep> },
    /// Mirror live traffic to the candidate for a window, judge the gates on it, then switch.
    ShadowThenSwitch {
        /// How long the candidate sees mirrored traffic.
        #[serde(default = "default_shadow_window", deserialize_with = "duration_ms")]
        window_ms: u64,
        /// Share of live requests mirrored, 0 to 100.
        #[serde(default = "hundred")]
        percent: f64,
    },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary { .. } => "canary",
            Strategy::ShadowThenSwitch { .. } => "shadow-then-switch",
        }
    }
}

/// One canary step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Share of new requests for the candidate, 0 to 100 (to two decimals).
    pub percent: f64,
    /// How long the step holds before the next one; absent (or `"manual"`) waits for
    /// `teal promote`.
    #[serde(default, deserialize_with = "pause")]
    pub pause_ms: Option<u64>,
    /// Run the validation again at the end of the step, before the next one.
    #[serde(default)]
    pub gates: bool,
}

impl CanaryStep {
    fn weight(&self) -> u32 {
        ((self.percent * 100.0).round().clamp(0.0, f64::from(WHOLE))) as u32
    }
}

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

/// A model's rollout settings (`[model.rollout]`), each overridable per rollout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
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
    pub rules: RollbackRules,
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
        }
    }
}

impl RolloutSettings {
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
        Ok(())
    }
}

/// Where a rollout stands. Terminal phases are [`Phase::is_terminal`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Loading the candidate into the standby slot.
    Deploying,
    /// Waiting for the candidate to report ready.
    WarmingUp,
    /// Running the gates (for shadow-then-switch, over the mirrored window).
    Validating,
    /// Gates passed (or were inconclusive) and the switch waits for `teal promote`.
    AwaitingApproval,
    /// Gates passed; the automatic switch happens at `at_ms`.
    SwitchDelay { at_ms: i64 },
    /// A canary step holds the candidate at the step's weight.
    Canary { step: usize },
    /// The gates run again at the end of a canary step.
    CanaryGates { step: usize },
    /// All new requests are being moved to the candidate.
    Switching,
    /// The candidate is live; the rollback rules are armed until the bake ends.
    Observing,
    /// The bake passed; the old version stays loaded until the keep-warm window ends.
    Promoted,
    /// The old version is being drained and stopped.
    TearingDown,
    /// Done: the candidate is live and the old version is gone.
    TornDown,
    /// The candidate is being removed after an abort or a failure.
    RemovingCandidate { then: Box<Phase> },
    /// Stopped by an operator before the switch; the old version kept serving.
    Aborted,
    /// Traffic went back to the old version, by an operator or by a rule.
    RolledBack,
    /// The candidate could not be deployed, did not become ready, or failed a gate.
    Failed,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Deploying => "deploying",
            Phase::WarmingUp => "warming_up",
            Phase::Validating => "validating",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::SwitchDelay { .. } => "switch_delay",
            Phase::Canary { .. } => "canary",
            Phase::CanaryGates { .. } => "canary_gates",
            Phase::Switching => "switching",
            Phase::Observing => "observing",
            Phase::Promoted => "promoted",
            Phase::TearingDown => "tearing_down",
            Phase::TornDown => "torn_down",
            Phase::RemovingCandidate { .. } => "removing_candidate",
            Phase::Aborted => "aborted",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
        }
    }

    /// Every phase name, in lifecycle order (for metrics and documentation).
    pub const NAMES: [&'static str; 16] = [
        "deploying",
        "warming_up",
        "validating",
        "awaiting_approval",
        "switch_delay",
        "canary",
        "canary_gates",
        "switching",
        "observing",
        "promoted",
        "tearing_down",
        "torn_down",
        "removing_candidate",
        "aborted",
        "rolled_back",
        "failed",
    ];

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::TornDown | Phase::Aborted | Phase::RolledBack | Phase::Failed
        )
    }

    /// Whether the candidate has taken all traffic.
    fn after_switch(&self) -> bool {
        matches!(
            self,
            Phase::Switching
                | Phase::Observing
                | Phase::Promoted
                | Phase::TearingDown
                | Phase::TornDown
        )
    }
}

/// The traffic a rollout wants for its model; the driver publishes it (idempotently).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    pub active: Color,
    /// Candidate share, basis points.
    pub weight: u32,
    /// Shadow share, basis points.
    pub shadow: u32,
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

/// What happened to a rollout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The candidate is loaded in its slot.
    Deployed,
    DeployFailed {
        reason: String,
    },
    Ready,
    NotReady {
        reason: String,
    },
    /// The gates' verdict: `pass`, `fail` or `inconclusive`.
    Gates {
        verdict: String,
        summary: String,
    },
    /// Time passed; `check` carries measurements when one was due.
    Tick {
        check: Option<Check>,
    },
    /// The published route now matches the switch.
    Switched,
    /// The old version is stopped.
    TornDown,
    /// The candidate is stopped after an abort or a failure.
    CandidateRemoved,
    /// Approve the switch, or skip a pause.
    Promote {
        actor: String,
    },
    Abort {
        actor: String,
    },
    Rollback {
        actor: String,
    },
}

/// Work for the driver.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Effect {
    /// Load the candidate into `slot` (a no-op when it is already there).
    Deploy,
    /// Wait (bounded) for the candidate to report ready.
    WarmUp,
    /// Validate the candidate; shadow-then-switch mirrors `percent` for `window_ms`.
    RunGates,
    /// Publish this route.
    Route(Route),
    /// Drain and stop the old version's slot.
    TearDownOld,
    /// Drain and stop the candidate's slot.
    RemoveCandidate,
    /// An audit event: the phase changed.
    Record(Transition),
}

/// A phase change, as the audit log keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub cause: String,
    pub actor: String,
}

/// Why an operator's command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// One rollout of one model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rollout {
    pub id: i64,
    pub model: String,
    pub version: String,
    /// The version live when the rollout began, and its slot.
    pub old_version: Option<String>,
    pub old: Color,
    pub settings: RolloutSettings,
    pub phase: Phase,
    /// When the phase began.
    pub since_ms: i64,
    pub started_ms: i64,
    pub route: Route,
    /// Failing checks in a row, per rule.
    pub strikes: Strikes,
    /// Blue's p95 before the switch (request-weighted mean of its per-check p95s).
    pub baseline_p95_ms: Option<f64>,
    pub baseline_requests: u64,
    /// The last check's rule outcomes, for status displays.
    pub last_check: Vec<RuleOutcome>,
    /// Why the rollout ended, when it has.
    pub outcome: Option<String>,
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
    /// A new rollout of `version` onto the standby slot of a model whose live slot is `old`.
    /// Its first effects deploy the candidate.
    pub fn start(
        id: i64,
        model: &str,
        version: &str,
        old: Color,
        old_version: Option<String>,
        settings: RolloutSettings,
        actor: &str,
        now_ms: i64,
    ) -> (Rollout, Vec<Effect>) {
        let rollout = Rollout {
            id,
            model: model.to_string(),
            version: version.to_string(),
            old_version,
            old,
            settings,
            phase: Phase::Deploying,
            since_ms: now_ms,
            started_ms: now_ms,
            route: Route {
                active: old,
                weight: 0,
                shadow: 0,
            },
            strikes: Strikes::default(),
            baseline_p95_ms: None,
            baseline_requests: 0,
            last_check: Vec::new(),
            outcome: None,
        };
        let record = Effect::Record(Transition {
            from: "none".into(),
            to: Phase::Deploying.name().into(),
            cause: format!(
                "rollout of {version} started ({})",
                rollout.settings.strategy.name()
            ),
            actor: actor.to_string(),
        });
        (rollout, vec![record, Effect::Deploy])
    }

    /// The candidate's slot.
    pub fn new_slot(&self) -> Color {
        self.old.other()
    }

    /// The effects a phase still owes after a restart (the route first, always).
    pub fn resume(&self) -> Vec<Effect> {
        let mut effects = vec![Effect::Route(self.route)];
        match &self.phase {
            Phase::Deploying => effects.push(Effect::Deploy),
            Phase::WarmingUp => effects.push(Effect::WarmUp),
            Phase::Validating | Phase::CanaryGates { .. } => effects.push(Effect::RunGates),
            Phase::TearingDown => effects.push(Effect::TearDownOld),
            Phase::RemovingCandidate { .. } => effects.push(Effect::RemoveCandidate),
            _ => {}
        }
        effects
    }

    /// When the phase's timer fires, if it has one.
    pub fn deadline_ms(&self) -> Option<i64> {
        let s = &self.settings;
        match &self.phase {
            Phase::SwitchDelay { at_ms } => Some(*at_ms),
            Phase::Canary { step } => self
                .steps()
                .get(*step)
                .and_then(|st| st.pause_ms)
                .map(|p| self.since_ms + p as i64),
            Phase::Observing => Some(self.since_ms + s.observe_ms as i64),
            Phase::Promoted => Some(self.since_ms + s.keep_warm_ms as i64),
            _ => None,
        }
    }

    fn steps(&self) -> &[CanaryStep] {
        match &self.settings.strategy {
            Strategy::Canary { steps } => steps,
            _ => &[],
        }
    }

    /// Checks an operator command against the phase without changing anything, so the
    /// API can refuse it with the reason.
    pub fn accepts(&self, event: &Event) -> Result<(), Refused> {
        let phase = self.phase.name();
        let ok = match event {
            Event::Promote { .. } => matches!(
                self.phase,
                Phase::AwaitingApproval
                    | Phase::SwitchDelay { .. }
                    | Phase::Canary { .. }
                    | Phase::Observing
                    | Phase::Promoted
            ),
            Event::Abort { .. } => !self.phase.after_switch() && !self.phase.is_terminal(),
            Event::Rollback { .. } => {
                matches!(
                    self.phase,
                    Phase::Canary { .. }
                        | Phase::CanaryGates { .. }
                        | Phase::Switching
                        | Phase::Observing
                        | Phase::Promoted
                )
            }
            _ => true,
        };
        if ok {
            return Ok(());
        }
        let hint = match event {
            Event::Promote { .. } => {
                "promote applies while awaiting approval, in a switch delay or canary step, while observing, or to end the keep-warm window"
            }
            Event::Abort { .. } => "abort applies before the switch; after it, use rollback",
            Event::Rollback { .. } => {
                "rollback applies once the candidate has traffic; before that, use abort"
            }
            _ => "",
        };
        Err(Refused(format!(
            "rollout {} of '{}' is {phase}: {hint}",
            self.id, self.model
        )))
    }

    /// Moves the rollout on by one event.
    pub fn step(mut self, event: Event, now_ms: i64) -> (Rollout, Vec<Effect>) {
        if self.phase.is_terminal() {
            return (self, Vec::new());
        }
        let mut fx = Vec::new();
        match (self.phase.clone(), event) {
            (Phase::Deploying, Event::Deployed) => {
                self.go(
                    Phase::WarmingUp,
                    "candidate loaded",
                    "teal",
                    now_ms,
                    &mut fx,
                );
                fx.push(Effect::WarmUp);
            }
            (Phase::Deploying, Event::DeployFailed { reason }) => {
                self.fail(&format!("deploy failed: {reason}"), now_ms, &mut fx);
            }
            (Phase::WarmingUp, Event::Ready) => {
                self.validate(now_ms, &mut fx);
            }
            (Phase::WarmingUp, Event::NotReady { reason }) => {
                self.fail(
                    &format!("candidate never became ready: {reason}"),
                    now_ms,
                    &mut fx,
                );
            }
            (Phase::Validating, Event::Gates { verdict, summary }) => match verdict.as_str() {
                "pass" => self.after_gates(&summary, now_ms, &mut fx),
                "fail" => self.fail(&format!("gates failed: {summary}"), now_ms, &mut fx),
                _ => {
                    self.route.shadow = 0;
                    fx.push(Effect::Route(self.route));
                    let cause = format!(
                        "gates inconclusive ({summary}): approve with teal promote or abort"
                    );
                    self.go(Phase::AwaitingApproval, &cause, "teal", now_ms, &mut fx);
                }
            },
            (Phase::CanaryGates { step }, Event::Gates { verdict, summary }) => {
                match verdict.as_str() {
                    "pass" => self.next_step(step + 1, &summary, "teal", now_ms, &mut fx),
                    "fail" => self.roll_back(
                        &format!("gates failed at canary step {}: {summary}", step + 1),
                        "teal",
                        now_ms,
                        &mut fx,
                    ),
                    _ => {
                        // Hold the step and wait for an operator.
                        let cause = format!(
                            "gates inconclusive at canary step {} ({summary}): promote to go on",
                            step + 1
                        );
                        self.go(Phase::Canary { step }, &cause, "teal", now_ms, &mut fx);
                        self.settings_pause_manual(step);
                    }
                }
            }
            (Phase::Switching, Event::Switched) => {
                self.strikes = Strikes::default();
                self.go(
                    Phase::Observing,
                    "all new requests on the candidate",
                    "teal",
                    now_ms,
                    &mut fx,
                );
            }
            (Phase::TearingDown, Event::TornDown) => {
                self.outcome = Some(format!(
                    "{} is live; the old version is stopped",
                    self.version
                ));
                self.go(
                    Phase::TornDown,
                    "old version drained and stopped",
                    "teal",
                    now_ms,
                    &mut fx,
                );
            }
            (Phase::RemovingCandidate { then }, Event::CandidateRemoved) => {
                self.go(*then, "candidate stopped", "teal", now_ms, &mut fx);
            }
            (phase, Event::Tick { check }) => self.tick(phase, check, now_ms, &mut fx),
            (phase, Event::Promote { actor })
                if self
                    .accepts(&Event::Promote {
                        actor: actor.clone(),
                    })
                    .is_ok() =>
            {
                match phase {
                    Phase::AwaitingApproval | Phase::SwitchDelay { .. } => match self
                        .steps()
                        .is_empty()
                    {
                        true => self.switch("promoted by an operator", &actor, now_ms, &mut fx),
                        false => {
                            self.next_step(0, "promoted by an operator", &actor, now_ms, &mut fx)
                        }
                    },
                    Phase::Canary { step } => {
                        self.next_step(step + 1, "promoted by an operator", &actor, now_ms, &mut fx)
                    }
                    Phase::Observing => self.promote(
                        &format!("bake ended early by {actor}"),
                        &actor,
                        now_ms,
                        &mut fx,
                    ),
                    Phase::Promoted => {
                        self.go(
                            Phase::TearingDown,
                            "keep-warm window ended early by an operator",
                            &actor,
                            now_ms,
                            &mut fx,
                        );
                        fx.push(Effect::TearDownOld);
                    }
                    _ => {}
                }
            }
            (_, Event::Abort { actor })
                if self
                    .accepts(&Event::Abort {
                        actor: actor.clone(),
                    })
                    .is_ok() =>
            {
                self.route = Route {
                    active: self.old,
                    weight: 0,
                    shadow: 0,
                };
                fx.push(Effect::Route(self.route));
                self.outcome = Some(format!("aborted by {actor}"));
                self.end(
                    Phase::Aborted,
                    &format!("aborted by {actor}"),
                    &actor,
                    now_ms,
                    &mut fx,
                );
            }
            (_, Event::Rollback { actor })
                if self
                    .accepts(&Event::Rollback {
                        actor: actor.clone(),
                    })
                    .is_ok() =>
            {
                self.roll_back(&format!("rolled back by {actor}"), &actor, now_ms, &mut fx);
            }
            // Anything else is stale (a late answer to an effect of an earlier phase).
            _ => {}
        }
        (self, fx)
    }

    /// A manual hold after an inconclusive step: drop the step's timer.
    fn settings_pause_manual(&mut self, step: usize) {
        if let Strategy::Canary { steps } = &mut self.settings.strategy
            && let Some(s) = steps.get_mut(step)
        {
            s.pause_ms = None;
        }
    }

    fn go(&mut self, to: Phase, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        fx.push(Effect::Record(Transition {
            from: self.phase.name().into(),
            to: to.name().into(),
            cause: cause.to_string(),
            actor: actor.to_string(),
        }));
        self.phase = to;
        self.since_ms = now_ms;
    }

    /// Ends in `to`, removing the candidate first when the settings say so.
    fn end(&mut self, to: Phase, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.settings.abort_removes_green && to != Phase::RolledBack {
            self.go(
                Phase::RemovingCandidate { then: Box::new(to) },
                cause,
                actor,
                now_ms,
                fx,
            );
            fx.push(Effect::RemoveCandidate);
        } else {
            self.go(to, cause, actor, now_ms, fx);
        }
    }

    fn fail(&mut self, cause: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.route = Route {
            active: self.old,
            weight: 0,
            shadow: 0,
        };
        fx.push(Effect::Route(self.route));
        self.outcome = Some(cause.to_string());
        self.end(Phase::Failed, cause, "teal", now_ms, fx);
    }

    fn validate(&mut self, now_ms: i64, fx: &mut Vec<Effect>) {
        if let Strategy::ShadowThenSwitch { percent, .. } = self.settings.strategy {
            self.route.shadow = ((percent * 100.0).round() as u32).min(WHOLE);
            fx.push(Effect::Route(self.route));
        }
        self.go(Phase::Validating, "candidate ready", "teal", now_ms, fx);
        fx.push(Effect::RunGates);
    }

    fn after_gates(&mut self, summary: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.route.shadow != 0 {
            self.route.shadow = 0;
            fx.push(Effect::Route(self.route));
        }
        let cause = format!("gates passed: {summary}");
        if !self.settings.auto_switch {
            let cause = format!("{cause}; waiting for teal promote");
            self.go(Phase::AwaitingApproval, &cause, "teal", now_ms, fx);
        } else if self.settings.switch_delay_ms > 0 {
            let at_ms = now_ms + self.settings.switch_delay_ms as i64;
            self.go(Phase::SwitchDelay { at_ms }, &cause, "teal", now_ms, fx);
        } else if !self.steps().is_empty() {
            self.next_step(0, &cause, "teal", now_ms, fx);
        } else {
            self.switch(&cause, "teal", now_ms, fx);
        }
    }

    fn next_step(
        &mut self,
        step: usize,
        cause: &str,
        actor: &str,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        let Some(weight) = self.steps().get(step).map(CanaryStep::weight) else {
            return self.switch(cause, actor, now_ms, fx);
        };
        self.route = Route {
            active: self.old,
            weight,
            shadow: 0,
        };
        fx.push(Effect::Route(self.route));
        self.strikes = Strikes::default();
        let cause = format!("{cause}; candidate at {}%", f64::from(weight) / 100.0);
        self.go(Phase::Canary { step }, &cause, actor, now_ms, fx);
    }

    fn switch(&mut self, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.route = Route {
            active: self.new_slot(),
            weight: 0,
            shadow: 0,
        };
        fx.push(Effect::Route(self.route));
        self.go(Phase::Switching, cause, actor, now_ms, fx);
    }

    fn promote(&mut self, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.go(Phase::Promoted, cause, actor, now_ms, fx);
        if self.settings.keep_warm_ms == 0 {
            self.go(
                Phase::TearingDown,
                "no keep-warm window",
                "teal",
                now_ms,
                fx,
            );
            fx.push(Effect::TearDownOld);
        }
    }

    fn roll_back(&mut self, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.route = Route {
            active: self.old,
            weight: 0,
            shadow: 0,
        };
        fx.push(Effect::Route(self.route));
        self.outcome = Some(cause.to_string());
        self.end(Phase::RolledBack, cause, actor, now_ms, fx);
    }

    fn tick(&mut self, phase: Phase, check: Option<Check>, now_ms: i64, fx: &mut Vec<Effect>) {
        let watched = matches!(
            phase,
            Phase::Canary { .. } | Phase::CanaryGates { .. } | Phase::Observing
        );
        if let Some(check) = &check {
            if !phase.after_switch() && !watched {
                self.learn_baseline(&check.old);
            }
            if watched {
                let outcomes = self.judge(check, phase != Phase::Observing);
                if let Some(failed) = self.strike(&outcomes) {
                    self.last_check = outcomes;
                    let cause = format!(
                        "{failed} (failed {} checks in a row)",
                        self.settings.rules.consecutive
                    );
                    return self.roll_back(&cause, "teal", now_ms, fx);
                }
                self.last_check = outcomes;
            }
        }
        if self.deadline_ms().is_none_or(|d| now_ms < d) {
            return;
        }
        match phase {
            Phase::SwitchDelay { .. } => match self.steps().is_empty() {
                true => self.switch("switch delay over", "teal", now_ms, fx),
                false => self.next_step(0, "switch delay over", "teal", now_ms, fx),
            },
            Phase::Canary { step } => {
                // With a live-accuracy floor, feedback is a gate too: the canary moves on
                // only once the step's labels show the new version above it.
                let accuracy_held = self.settings.rules.min_accuracy.is_none()
                    || self
                        .last_check
                        .iter()
                        .any(|o| o.rule == "accuracy" && o.verdict == "pass");
                if !accuracy_held {
                    return;
                }
                let gates = self.steps().get(step).is_some_and(|s| s.gates);
                if gates {
                    let cause =
                        format!("canary step {} held its pause; running the gates", step + 1);
                    self.go(Phase::CanaryGates { step }, &cause, "teal", now_ms, fx);
                    fx.push(Effect::RunGates);
                } else {
                    self.next_step(
                        step + 1,
                        &format!("canary step {} held its pause", step + 1),
                        "teal",
                        now_ms,
                        fx,
                    );
                }
            }
            Phase::Observing => {
                self.promote("bake passed with every rule holding", "teal", now_ms, fx)
            }
            Phase::Promoted
                // The old version goes only while the new one is live and healthy; until
                // then it stays warm for a rollback.
                if check.as_ref().is_some_and(|c| c.new_ready) => {
                    self.go(
                        Phase::TearingDown,
                        "keep-warm window over",
                        "teal",
                        now_ms,
                        fx,
                    );
                    fx.push(Effect::TearDownOld);
                }
            _ => {}
        }
    }

    fn learn_baseline(&mut self, old: &Window) {
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
    fn strike(&mut self, outcomes: &[RuleOutcome]) -> Option<String> {
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

fn default_shadow_window() -> u64 {
    60_000
}
fn hundred() -> f64 {
    100.0
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"` (or a bare number of milliseconds).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write like 500ms, 30s, 5m, 2h or 7d"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use ms, s, m, h or d"
            ));
        }
    };
    Ok((n * scale).round() as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Ms(u64),
    Text(String),
}

fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match DurationText::deserialize(d)? {
        DurationText::Ms(ms) => Ok(ms),
        DurationText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn pause<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<DurationText>::deserialize(d)? {
        None => Ok(None),
        Some(DurationText::Ms(ms)) => Ok(Some(ms)),
        Some(DurationText::Text(t)) if t.trim() == "manual" => Ok(None),
        Some(DurationText::Text(t)) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests;
