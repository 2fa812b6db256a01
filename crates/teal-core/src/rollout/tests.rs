use super::*;

const T0: i64 = 1_000_000;

fn settings(strategy: Strategy) -> RolloutSettings {
    RolloutSettings {
        strategy,
        observe_ms: 60_000,
        keep_warm_ms: 3_600_000,
        ..RolloutSettings::default()
    }
}

fn start(settings: RolloutSettings) -> Rollout {
    let (r, fx) = Rollout::start(
        7,
        "digits",
        "v2",
        Color::Blue,
        Some("v1".into()),
        settings,
        "ops",
        T0,
    );
    assert_eq!(r.phase, Phase::Deploying);
    assert_eq!(fx.last(), Some(&Effect::Deploy));
    assert!(matches!(&fx[0], Effect::Record(t) if t.to == "deploying" && t.actor == "ops"));
    r
}

/// Steps and returns the state with the effects that are not audit records.
fn step(r: Rollout, e: Event, now: i64) -> (Rollout, Vec<Effect>) {
    let from = r.phase.clone();
    let (r, fx) = r.step(e, now);
    let records = fx.iter().filter(|f| matches!(f, Effect::Record(_))).count();
    // A phase change is always recorded; no record without a phase change.
    if r.phase != from {
        assert!(records >= 1, "{from:?} -> {:?} without a record", r.phase);
    } else {
        assert_eq!(records, 0, "a record without a phase change in {from:?}");
    }
    let work = fx
        .into_iter()
        .filter(|f| !matches!(f, Effect::Record(_)))
        .collect();
    (r, work)
}

fn gates(verdict: &str) -> Event {
    Event::Gates {
        verdict: verdict.into(),
        summary: "test".into(),
    }
}

fn to_validating(r: Rollout) -> Rollout {
    let (r, fx) = step(r, Event::Deployed, T0 + 10);
    assert_eq!(r.phase, Phase::WarmingUp);
    assert_eq!(fx, vec![Effect::WarmUp]);
    let (r, fx) = step(r, Event::Ready, T0 + 20);
    assert_eq!(r.phase, Phase::Validating);
    assert!(fx.contains(&Effect::RunGates));
    r
}

fn route(active: Color, weight: u32, shadow: u32) -> Effect {
    Effect::Route(Route {
        active,
        weight,
        shadow,
    })
}

fn healthy(requests: u64) -> Check {
    Check {
        old: Window {
            requests,
            errors: 0,
            p95_ms: Some(10.0),
        },
        new: Window {
            requests,
            errors: 0,
            p95_ms: Some(10.0),
        },
        new_ready: true,
        new_exited: None,
        accuracy: None,
    }
}

fn failing(requests: u64) -> Check {
    let mut c = healthy(requests);
    c.new.errors = requests / 2;
    c
}

fn tick(check: Option<Check>) -> Event {
    Event::Tick { check }
}

#[test]
fn blue_green_goes_live_bakes_and_tears_down() {
    let r = to_validating(start(settings(Strategy::BlueGreen)));
    let (r, fx) = step(r, gates("pass"), T0 + 30);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
    let (r, fx) = step(r, Event::Switched, T0 + 31);
    assert_eq!(r.phase, Phase::Observing);
    assert!(fx.is_empty());
    // The bake holds until its window ends.
    let (r, _) = step(r, tick(Some(healthy(100))), T0 + 31 + 59_999);
    assert_eq!(r.phase, Phase::Observing);
    let (r, fx) = step(r, tick(None), T0 + 31 + 60_000);
    assert_eq!(r.phase, Phase::Promoted);
    assert!(fx.is_empty(), "blue stays warm: {fx:?}");
    // The keep-warm window is over, but the old version stays while the new one is unwell.
    let unwell = Check {
        new_ready: false,
        ..Check::default()
    };
    let (r, fx) = step(r, tick(Some(unwell)), T0 + 31 + 60_000 + 3_600_000);
    assert_eq!(r.phase, Phase::Promoted);
    assert!(fx.is_empty());
    let (r, fx) = step(r, tick(None), T0 + 31 + 60_000 + 3_600_000);
    assert_eq!(r.phase, Phase::Promoted, "no check, no teardown");
    assert!(fx.is_empty());
    let (r, fx) = step(r, tick(Some(healthy(0))), T0 + 31 + 60_000 + 3_600_001);
    assert_eq!(r.phase, Phase::TearingDown);
    assert_eq!(fx, vec![Effect::TearDownOld]);
    let (r, fx) = step(r, Event::TornDown, T0 + 4_000_000);
    assert_eq!(r.phase, Phase::TornDown);
    assert!(fx.is_empty());
    assert!(r.phase.is_terminal());
    // A terminal rollout ignores everything.
    let (r2, fx) = r
        .clone()
        .step(Event::Rollback { actor: "x".into() }, T0 + 5_000_000);
    assert_eq!(r2, r);
    assert!(fx.is_empty());
}

#[test]
fn deploy_failure_fails_and_keeps_blue() {
    let r = start(settings(Strategy::BlueGreen));
    let (r, fx) = step(
        r,
        Event::DeployFailed {
            reason: "no such file".into(),
        },
        T0 + 1,
    );
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    assert!(r.outcome.unwrap().contains("no such file"));
}

#[test]
fn never_ready_fails() {
    let r = start(settings(Strategy::BlueGreen));
    let (r, _) = step(r, Event::Deployed, T0 + 1);
    let (r, _) = step(
        r,
        Event::NotReady {
            reason: "timeout".into(),
        },
        T0 + 2,
    );
    assert_eq!(r.phase, Phase::Failed);
}

#[test]
fn failed_gate_stops_the_candidate_and_removes_it_when_asked() {
    let r = to_validating(start(settings(Strategy::BlueGreen)));
    let (kept, fx) = step(r.clone(), gates("fail"), T0 + 30);
    assert_eq!(kept.phase, Phase::Failed);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);

    let mut removing = r;
    removing.settings.abort_removes_green = true;
    let (r, fx) = step(removing, gates("fail"), T0 + 30);
    assert_eq!(
        r.phase,
        Phase::RemovingCandidate {
            then: Box::new(Phase::Failed)
        }
    );
    assert_eq!(fx, vec![route(Color::Blue, 0, 0), Effect::RemoveCandidate]);
    assert_eq!(
        r.resume(),
        vec![route(Color::Blue, 0, 0), Effect::RemoveCandidate]
    );
    let (r, _) = step(r, Event::CandidateRemoved, T0 + 40);
    assert_eq!(r.phase, Phase::Failed);
}

#[test]
fn inconclusive_gates_wait_for_approval() {
    let r = to_validating(start(settings(Strategy::BlueGreen)));
    let (r, _) = step(r, gates("inconclusive"), T0 + 30);
    assert_eq!(r.phase, Phase::AwaitingApproval);
    // Time alone does not switch.
    let (r, fx) = step(r, tick(Some(healthy(100))), T0 + 10_000_000);
    assert_eq!(r.phase, Phase::AwaitingApproval);
    assert!(fx.is_empty());
    let (r, fx) = step(
        r,
        Event::Promote {
            actor: "ana".into(),
        },
        T0 + 10_000_001,
    );
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
}

#[test]
fn manual_approval_when_auto_switch_is_off() {
    let mut s = settings(Strategy::BlueGreen);
    s.auto_switch = false;
    let r = to_validating(start(s));
    let (r, fx) = step(r, gates("pass"), T0 + 30);
    assert_eq!(r.phase, Phase::AwaitingApproval);
    assert!(fx.is_empty());
}

#[test]
fn switch_delay_switches_when_it_ends_or_on_promote() {
    let mut s = settings(Strategy::BlueGreen);
    s.switch_delay_ms = 5_000;
    let r = to_validating(start(s));
    let (r, _) = step(r, gates("pass"), T0 + 30);
    assert_eq!(r.phase, Phase::SwitchDelay { at_ms: T0 + 5_030 });
    let (early, _) = step(r.clone(), tick(None), T0 + 5_029);
    assert_eq!(early.phase, r.phase);
    let (late, fx) = step(r.clone(), tick(None), T0 + 5_030);
    assert_eq!(late.phase, Phase::Switching);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
    let (promoted, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 100);
    assert_eq!(promoted.phase, Phase::Switching);
}

fn canary_steps() -> Strategy {
    Strategy::Canary {
        steps: vec![
            CanaryStep {
                percent: 10.0,
                pause_ms: Some(1_000),
                gates: false,
            },
            CanaryStep {
                percent: 50.0,
                pause_ms: None,
                gates: false,
            },
            CanaryStep {
                percent: 75.5,
                pause_ms: Some(1_000),
                gates: true,
            },
        ],
    }
}

#[test]
fn canary_walks_its_steps_then_switches() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, fx) = step(r, gates("pass"), T0 + 30);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    assert_eq!(fx, vec![route(Color::Blue, 1_000, 0)]);
    // Timed pause.
    let (r, fx) = step(r, tick(Some(healthy(50))), T0 + 1_030);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(fx, vec![route(Color::Blue, 5_000, 0)]);
    // Manual pause: time does nothing, promote moves on.
    let (r, fx) = step(r, tick(None), T0 + 100_000_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert!(fx.is_empty());
    let (r, fx) = step(r, Event::Promote { actor: "a".into() }, T0 + 100_000_001);
    assert_eq!(r.phase, Phase::Canary { step: 2 });
    assert_eq!(fx, vec![route(Color::Blue, 7_550, 0)]);
    // A step with gates runs them when its pause ends.
    let (r, fx) = step(r, tick(None), T0 + 100_001_001);
    assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
    assert_eq!(fx, vec![Effect::RunGates]);
    assert_eq!(
        r.resume(),
        vec![route(Color::Blue, 7_550, 0), Effect::RunGates]
    );
    let (r, fx) = step(r, gates("pass"), T0 + 100_001_002);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
}

#[test]
fn canary_gates_failing_roll_back_and_inconclusive_hold() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, _) = step(r, gates("pass"), T0);
    let (r, _) = step(r, tick(None), T0 + 1_000);
    let (r, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 1_001);
    let (r, _) = step(r, tick(None), T0 + 2_001);
    assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
    let (failed, fx) = step(r.clone(), gates("fail"), T0 + 2_002);
    assert_eq!(failed.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    let (held, _) = step(r, gates("inconclusive"), T0 + 2_002);
    assert_eq!(held.phase, Phase::Canary { step: 2 });
    assert_eq!(
        held.deadline_ms(),
        None,
        "an inconclusive step waits for an operator"
    );
}

#[test]
fn canary_rolls_back_after_consecutive_failing_checks_only() {
    let r = to_validating(start(settings(canary_steps())));
    let (mut r, _) = step(r, gates("pass"), T0);
    // Two failures, then a pass: the count starts over.
    for i in 0..2 {
        (r, _) = step(r, tick(Some(failing(100))), T0 + 10 + i);
        assert_eq!(r.phase, Phase::Canary { step: 0 });
    }
    (r, _) = step(r, tick(Some(healthy(100))), T0 + 20);
    assert_eq!(r.strikes.errors, 0);
    for i in 0..2 {
        (r, _) = step(r, tick(Some(failing(100))), T0 + 30 + i);
    }
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    let (r, fx) = step(r, tick(Some(failing(100))), T0 + 40);
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    assert!(r.outcome.unwrap().contains("errors"));
}

fn observing(s: RolloutSettings) -> Rollout {
    let r = to_validating(start(s));
    let (r, _) = step(r, tick(Some(healthy(100))), T0 + 25);
    let (r, _) = step(r, gates("pass"), T0 + 30);
    let (r, _) = step(r, Event::Switched, T0 + 31);
    assert_eq!(r.phase, Phase::Observing);
    r
}

#[test]
fn no_traffic_is_inconclusive_and_never_rolls_back() {
    let mut r = observing(settings(Strategy::BlueGreen));
    for i in 0..10 {
        (r, _) = step(
            r,
            tick(Some(Check {
                new_ready: true,
                ..Check::default()
            })),
            T0 + 100 + i,
        );
    }
    assert_eq!(r.phase, Phase::Observing);
    assert!(r.last_check.iter().any(|o| o.verdict == "inconclusive"));
}

#[test]
fn latency_regression_rolls_back_against_the_baseline() {
    let mut r = observing(settings(Strategy::BlueGreen));
    assert_eq!(r.baseline_p95_ms, Some(10.0));
    let mut slow = healthy(100);
    slow.old = Window::default();
    slow.new.p95_ms = Some(14.1); // limit 10 * 1.2 + 2 = 14
    for i in 0..2 {
        (r, _) = step(r, tick(Some(slow.clone())), T0 + 100 + i);
    }
    assert_eq!(r.phase, Phase::Observing);
    let (r, fx) = step(r, tick(Some(slow)), T0 + 200);
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    let mut fine = observing(settings(Strategy::BlueGreen));
    let mut ok = healthy(100);
    ok.new.p95_ms = Some(13.9);
    for i in 0..5 {
        (fine, _) = step(fine, tick(Some(ok.clone())), T0 + 100 + i);
    }
    assert_eq!(fine.phase, Phase::Observing);
}

#[test]
fn not_ready_and_low_accuracy_roll_back() {
    let mut r = observing(settings(Strategy::BlueGreen));
    let down = Check {
        new_ready: false,
        ..Check::default()
    };
    for i in 0..2 {
        (r, _) = step(r, tick(Some(down.clone())), T0 + 100 + i);
        assert_eq!(r.phase, Phase::Observing, "not ready: waited out");
    }
    (r, _) = step(r, tick(Some(down.clone())), T0 + 102);
    assert_eq!(r.phase, Phase::RolledBack);

    // A server process that exited is not waited out: one check rolls back.
    let mut r = observing(settings(Strategy::BlueGreen));
    let exited = Check {
        new_exited: Some("killed by SIGKILL".into()),
        ..healthy(100)
    };
    (r, _) = step(r, tick(Some(exited)), T0 + 100);
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(
        r.outcome
            .as_deref()
            .unwrap_or("")
            .contains("exited (killed by SIGKILL)"),
        "{:?}",
        r.outcome
    );

    let mut s = settings(Strategy::BlueGreen);
    s.rules.min_accuracy = Some(0.9);
    let mut r = observing(s);
    let mut c = healthy(100);
    c.accuracy = Some((0.5, 10)); // too few labels
    for i in 0..5 {
        (r, _) = step(r, tick(Some(c.clone())), T0 + 100 + i);
    }
    assert_eq!(r.phase, Phase::Observing);
    c.accuracy = Some((0.5, 100));
    for i in 0..3 {
        (r, _) = step(r, tick(Some(c.clone())), T0 + 200 + i);
    }
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(r.outcome.unwrap().starts_with("accuracy"));
}

#[test]
fn shadow_then_switch_mirrors_during_validation_only() {
    let s = settings(Strategy::ShadowThenSwitch {
        window_ms: 30_000,
        percent: 100.0,
    });
    let r = start(s);
    let (r, _) = step(r, Event::Deployed, T0);
    let (r, fx) = step(r, Event::Ready, T0 + 1);
    assert_eq!(r.phase, Phase::Validating);
    assert_eq!(fx, vec![route(Color::Blue, 0, 10_000), Effect::RunGates]);
    let (r, fx) = step(r, gates("pass"), T0 + 30_001);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(
        fx,
        vec![route(Color::Blue, 0, 0), route(Color::Green, 0, 0)]
    );
}

#[test]
fn abort_before_the_switch_keeps_blue_and_is_refused_after() {
    let r = to_validating(start(settings(Strategy::BlueGreen)));
    let (aborted, fx) = step(
        r.clone(),
        Event::Abort {
            actor: "ana".into(),
        },
        T0 + 50,
    );
    assert_eq!(aborted.phase, Phase::Aborted);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    assert_eq!(aborted.outcome.as_deref(), Some("aborted by ana"));

    let live = observing(settings(Strategy::BlueGreen));
    let err = live
        .accepts(&Event::Abort { actor: "a".into() })
        .unwrap_err();
    assert!(err.0.contains("use rollback"), "{err}");
    let (same, fx) = step(live.clone(), Event::Abort { actor: "a".into() }, T0 + 500);
    assert_eq!(same.phase, Phase::Observing);
    assert!(fx.is_empty());
    assert!(r.accepts(&Event::Rollback { actor: "a".into() }).is_err());
}

#[test]
fn manual_rollback_while_observing_and_promoted() {
    let r = observing(settings(Strategy::BlueGreen));
    let (back, fx) = step(
        r.clone(),
        Event::Rollback {
            actor: "ana".into(),
        },
        T0 + 100,
    );
    assert_eq!(back.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    let (promoted, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 100);
    assert_eq!(promoted.phase, Phase::Promoted);
    let (back, _) = step(
        promoted.clone(),
        Event::Rollback { actor: "a".into() },
        T0 + 200,
    );
    assert_eq!(back.phase, Phase::RolledBack);
    let (down, fx) = step(promoted, Event::Promote { actor: "a".into() }, T0 + 200);
    assert_eq!(down.phase, Phase::TearingDown);
    assert_eq!(fx, vec![Effect::TearDownOld]);
}

#[test]
fn a_rollback_never_removes_the_candidate_even_when_aborts_do() {
    let mut s = settings(Strategy::BlueGreen);
    s.abort_removes_green = true;
    let r = observing(s);
    let (r, fx) = step(r, Event::Rollback { actor: "a".into() }, T0 + 100);
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(!fx.contains(&Effect::RemoveCandidate));
}

#[test]
fn zero_keep_warm_tears_down_right_after_the_bake() {
    let mut s = settings(Strategy::BlueGreen);
    s.keep_warm_ms = 0;
    let r = observing(s);
    let (r, fx) = step(r, tick(None), T0 + 31 + 60_000);
    assert_eq!(r.phase, Phase::TearingDown);
    assert_eq!(fx, vec![Effect::TearDownOld]);
}

#[test]
fn stale_answers_are_ignored() {
    let r = observing(settings(Strategy::BlueGreen));
    for e in [
        Event::Deployed,
        Event::Ready,
        gates("fail"),
        Event::TornDown,
    ] {
        let (same, fx) = step(r.clone(), e, T0 + 100);
        assert_eq!(same.phase, Phase::Observing);
        assert!(fx.is_empty());
    }
}

#[test]
fn resume_reissues_what_each_phase_owes() {
    let r = start(settings(Strategy::BlueGreen));
    assert_eq!(r.resume(), vec![route(Color::Blue, 0, 0), Effect::Deploy]);
    let (r, _) = step(r, Event::Deployed, T0);
    assert_eq!(r.resume(), vec![route(Color::Blue, 0, 0), Effect::WarmUp]);
    let r = observing(settings(Strategy::BlueGreen));
    assert_eq!(r.resume(), vec![route(Color::Green, 0, 0)]);
}

#[test]
fn state_round_trips_through_json() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, _) = step(r, gates("pass"), T0 + 30);
    let json = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

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

#[test]
fn with_an_accuracy_floor_a_canary_step_waits_for_feedback_that_clears_it() {
    let mut s = settings(canary_steps());
    s.rules.min_accuracy = Some(0.9);
    let r = to_validating(start(s));
    let (r, _) = step(r, gates("pass"), T0);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    // The pause is over, but no labels yet: the step holds.
    let (r, fx) = step(r, tick(Some(healthy(50))), T0 + 5_000);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    assert!(fx.is_empty());
    let mut labelled = healthy(50);
    labelled.accuracy = Some((0.95, 40));
    let (r, fx) = step(r, tick(Some(labelled)), T0 + 6_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(fx, vec![route(Color::Blue, 5_000, 0)]);
}
