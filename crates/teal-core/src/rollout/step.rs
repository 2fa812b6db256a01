//! The transitions: one event moves a rollout from one phase to the next, with the effects
//! the move calls for.

use super::{
    CanaryStep, Check, Effect, EndReason, Event, OnInconclusive, Phase, Rollout, Route, Rule,
    Strategy, Strikes, Tally, Transition,
};
use crate::gates::Verdict;
use crate::routing::Color;
use crate::routing::WHOLE;

impl Rollout {
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
            (Phase::Deploying, Event::HookRefused { hook, reason }) => {
                self.fail(EndReason::HookRefused { hook, reason }, now_ms, &mut fx);
            }
            (Phase::Deploying, Event::DeployFailed { reason }) => {
                self.fail(EndReason::DeployFailed { reason }, now_ms, &mut fx);
            }
            (Phase::WarmingUp, Event::Ready) => {
                self.validate(now_ms, &mut fx);
            }
            (Phase::WarmingUp, Event::NotReady { reason }) => {
                self.fail(EndReason::NeverReady { reason }, now_ms, &mut fx);
            }
            (Phase::Validating, Event::Gates { verdict, summary }) => match verdict {
                Verdict::Pass => self.after_gates(&summary, now_ms, &mut fx),
                Verdict::Fail => self.fail(EndReason::GatesFailed { summary }, now_ms, &mut fx),
                Verdict::Inconclusive => {
                    self.route.shadow = 0;
                    fx.push(Effect::Route(self.route));
                    let cause = format!(
                        "gates inconclusive ({summary}): give the gates evidence (a holdout file, or capture_rate for replay) and deploy again, approve with teal promote, or teal abort"
                    );
                    self.wait_for_operator(Phase::AwaitingApproval, &cause, now_ms, &mut fx);
                }
            },
            (Phase::CanaryGates { step }, Event::Gates { verdict, summary }) => match verdict {
                Verdict::Pass => self.next_step(step + 1, &summary, "teal", now_ms, &mut fx),
                Verdict::Fail => self.roll_back(
                    EndReason::CanaryGatesFailed { step, summary },
                    "teal",
                    now_ms,
                    &mut fx,
                ),
                Verdict::Inconclusive => {
                    let why = format!("gates inconclusive at canary step {} ({summary})", step + 1);
                    self.when_inconclusive(Phase::Canary { step }, &why, now_ms, &mut fx);
                }
            },
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
                self.outcome = Some(EndReason::Completed {
                    version: self.version.clone(),
                });
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
            (phase, Event::Tick { check }) => self.tick(phase, check.map(|c| *c), now_ms, &mut fx),
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
                    Phase::Promoted => self.tear_down_old(
                        "keep-warm window ended early by an operator",
                        &actor,
                        now_ms,
                        &mut fx,
                    ),
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
                self.route = Route::all_on(self.old);
                fx.push(Effect::Route(self.route));
                let reason = EndReason::AbortedBy {
                    actor: actor.clone(),
                };
                self.end(Phase::Aborted, reason, &actor, now_ms, &mut fx);
            }
            (_, Event::Rollback { actor })
                if self
                    .accepts(&Event::Rollback {
                        actor: actor.clone(),
                    })
                    .is_ok() =>
            {
                let reason = EndReason::RolledBackBy {
                    actor: actor.clone(),
                };
                self.roll_back(reason, &actor, now_ms, &mut fx);
            }
            // Anything else is stale (a late answer to an effect of an earlier phase).
            _ => {}
        }
        (self, fx)
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
        self.waiting = None;
    }

    /// Moves to `to`, where the rollout waits for an operator, keeping why and what to do.
    fn wait_for_operator(&mut self, to: Phase, cause: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.go(to, cause, "teal", now_ms, fx);
        self.waiting = Some(cause.to_string());
    }

    /// Ends in `to` for `reason`, which becomes the outcome and the transition's cause,
    /// removing the candidate first when the settings say so.
    fn end(
        &mut self,
        to: Phase,
        reason: EndReason,
        actor: &str,
        now_ms: i64,
        fx: &mut Vec<Effect>,
    ) {
        let cause = &reason.to_string();
        self.outcome = Some(reason);
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

    fn fail(&mut self, reason: EndReason, now_ms: i64, fx: &mut Vec<Effect>) {
        self.route = Route::all_on(self.old);
        fx.push(Effect::Route(self.route));
        self.end(Phase::Failed, reason, "teal", now_ms, fx);
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
            let cause = format!("{cause}; waiting for teal promote (auto_switch is off)");
            self.wait_for_operator(Phase::AwaitingApproval, &cause, now_ms, fx);
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
        self.route = self.watched_route(self.old, weight);
        fx.push(Effect::Route(self.route));
        self.strikes = Strikes::default();
        self.tally = Tally::default();
        self.last_check.clear();
        self.extended = 0;
        let cause = format!("{cause}; candidate at {}%", f64::from(weight) / 100.0);
        self.go(Phase::Canary { step }, &cause, actor, now_ms, fx);
    }

    /// The route while the candidate is watched: the old version answers what the
    /// candidate fails (when failover is on), and a share of requests goes to both as pairs.
    fn watched_route(&self, active: Color, weight: u32) -> Route {
        Route {
            active,
            weight,
            shadow: 0,
            fallback: self.settings.failover.then_some(self.old),
            baseline: ((self.settings.rules.baseline_share * f64::from(WHOLE)).round() as u32)
                .min(WHOLE),
        }
    }

    fn switch(&mut self, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.route = self.watched_route(self.new_slot(), 0);
        self.tally = Tally::default();
        self.last_check.clear();
        self.extended = 0;
        fx.push(Effect::Route(self.route));
        self.go(Phase::Switching, cause, actor, now_ms, fx);
    }

    fn promote(&mut self, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        // Warm, the old version still answers what the new one fails; the pairs stop.
        if self.route.baseline != 0 {
            self.route.baseline = 0;
            fx.push(Effect::Route(self.route));
        }
        self.go(Phase::Promoted, cause, actor, now_ms, fx);
        if self.settings.keep_warm_ms == 0 {
            self.tear_down_old("no keep-warm window", "teal", now_ms, fx);
        }
    }

    /// Stops the old version, after a route that no longer falls back to it.
    fn tear_down_old(&mut self, cause: &str, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        if self.route.fallback.is_some() || self.route.baseline != 0 {
            self.route = Route::all_on(self.route.active);
            fx.push(Effect::Route(self.route));
        }
        self.go(Phase::TearingDown, cause, actor, now_ms, fx);
        fx.push(Effect::TearDownOld);
    }

    fn roll_back(&mut self, reason: EndReason, actor: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        self.route = Route::all_on(self.old);
        fx.push(Effect::Route(self.route));
        self.end(Phase::RolledBack, reason, actor, now_ms, fx);
    }

    /// A watched phase (`at`: the bake, or a canary step) ended, or its gates finished,
    /// without enough evidence: promote, wait for an operator, or lengthen the window, as
    /// the settings say.
    fn when_inconclusive(&mut self, at: Phase, why: &str, now_ms: i64, fx: &mut Vec<Effect>) {
        let max = self.settings.max_extensions;
        match self.settings.on_inconclusive {
            OnInconclusive::Promote => {
                let cause = format!("{why}; going on, as on_inconclusive = \"promote\" says");
                match at {
                    Phase::Canary { step } => self.next_step(step + 1, &cause, "teal", now_ms, fx),
                    _ => self.promote(&cause, "teal", now_ms, fx),
                }
            }
            OnInconclusive::Extend if self.extended < max => {
                let extended = self.extended + 1;
                let cause = format!("{why}; window lengthened ({extended} of {max})");
                self.go(at, &cause, "teal", now_ms, fx);
                self.extended = extended;
            }
            OnInconclusive::Extend | OnInconclusive::Wait => {
                let after = match self.settings.on_inconclusive {
                    OnInconclusive::Extend => format!(" after {max} longer windows"),
                    _ => String::new(),
                };
                let cause = format!(
                    "{why}{after}: waiting; send traffic, then teal promote to go on, or teal abort"
                );
                self.wait_for_operator(at, &cause, now_ms, fx);
            }
        }
    }

    fn tick(&mut self, phase: Phase, check: Option<Check>, now_ms: i64, fx: &mut Vec<Effect>) {
        let watched = matches!(
            phase,
            Phase::Canary { .. } | Phase::CanaryGates { .. } | Phase::Observing
        );
        if let Some(check) = &check {
            // Before the switch, and beside a canary, the old version's traffic is the
            // baseline the rules fall back on without pairs.
            if !phase.after_switch() {
                self.learn_baseline(&check.old);
            }
            if watched {
                self.add_evidence(check);
                let judgements = self.judgements(check);
                let failed = self.strike(&judgements);
                let previous = std::mem::take(&mut self.last_check);
                let (analyses, analysis_failed) = self.judge_analyses(check, &previous);
                self.last_check = judgements.into_iter().map(|(_, o)| o).collect();
                self.last_check.extend(analyses);
                if let Some(reason) = failed.or(analysis_failed) {
                    return self.roll_back(reason, "teal", now_ms, fx);
                }
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
                        .any(|o| o.rule == Rule::Accuracy && o.verdict == Verdict::Pass);
                if !accuracy_held {
                    return;
                }
                let gates = self.steps().get(step).is_some_and(|s| s.gates);
                if !gates && let Some(why) = self.inconclusive() {
                    let why = format!("canary step {} ended without enough evidence ({why})", step + 1);
                    return self.when_inconclusive(Phase::Canary { step }, &why, now_ms, fx);
                }
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
            Phase::Observing => match self.inconclusive() {
                None => self.promote("bake passed with every rule holding", "teal", now_ms, fx),
                Some(why) => {
                    let why = format!("bake ended without enough evidence ({why})");
                    self.when_inconclusive(Phase::Observing, &why, now_ms, fx)
                }
            },
            Phase::Promoted
                // The old version goes only while the new one is live and healthy; until
                // then it stays warm for a rollback.
                if check.as_ref().is_some_and(|c| c.new_ready) => {
                    self.tear_down_old("keep-warm window over", "teal", now_ms, fx);
                }
            _ => {}
        }
    }
}
