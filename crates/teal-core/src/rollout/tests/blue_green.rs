//! Blue-green and shadow-then-switch rollouts from start to end, and the ways they stop early.

use super::*;

#[test]
fn blue_green_goes_live_bakes_and_tears_down() {
    let r = to_validating(start(settings(Strategy::BlueGreen)));
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30);
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
    assert_eq!(
        r.outcome,
        Some(EndReason::DeployFailed {
            reason: "no such file".into()
        })
    );
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
    let (kept, fx) = step(r.clone(), gates(Verdict::Fail), T0 + 30);
    assert_eq!(kept.phase, Phase::Failed);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);

    let mut removing = r;
    removing.settings.abort_removes_green = true;
    let (r, fx) = step(removing, gates(Verdict::Fail), T0 + 30);
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
    let (r, _) = step(r, gates(Verdict::Inconclusive), T0 + 30);
    assert_eq!(r.phase, Phase::AwaitingApproval);
    let waiting = r.waiting.clone().expect("a wait says why");
    assert!(
        waiting.contains("inconclusive") && waiting.contains("teal promote"),
        "{waiting}"
    );
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
    assert_eq!(r.waiting, None, "the wait is over");
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
}

#[test]
fn manual_approval_when_auto_switch_is_off() {
    let mut s = settings(Strategy::BlueGreen);
    s.auto_switch = false;
    let r = to_validating(start(s));
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30);
    assert_eq!(r.phase, Phase::AwaitingApproval);
    assert!(fx.is_empty());
}

#[test]
fn switch_delay_switches_when_it_ends_or_on_promote() {
    let mut s = settings(Strategy::BlueGreen);
    s.switch_delay_ms = 5_000;
    let r = to_validating(start(s));
    let (r, _) = step(r, gates(Verdict::Pass), T0 + 30);
    assert_eq!(r.phase, Phase::SwitchDelay { at_ms: T0 + 5_030 });
    let (early, _) = step(r.clone(), tick(None), T0 + 5_029);
    assert_eq!(early.phase, r.phase);
    let (late, fx) = step(r.clone(), tick(None), T0 + 5_030);
    assert_eq!(late.phase, Phase::Switching);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
    let (promoted, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 100);
    assert_eq!(promoted.phase, Phase::Switching);
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
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30_001);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(
        fx,
        vec![route(Color::Blue, 0, 0), route(Color::Green, 0, 0)]
    );
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
        gates(Verdict::Fail),
        Event::TornDown,
    ] {
        let (same, fx) = step(r.clone(), e, T0 + 100);
        assert_eq!(same.phase, Phase::Observing);
        assert!(fx.is_empty());
    }
}
