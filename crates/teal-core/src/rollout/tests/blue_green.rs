//! Blue-green and shadow-then-switch rollouts from start to end, and the ways they stop early.

use super::*;

#[test]
fn blue_green_goes_live_bakes_and_tears_down() {
    let r = to_validating(start(settings(Strategy::BlueGreen)));
    // Blue's traffic before the switch: the latency the bake compares green's with.
    let (r, fx) = step(r, tick(Some(healthy(100))), T0 + 25);
    assert!(fx.is_empty());
    assert_eq!(r.baseline.p50_ms, Some(5.0));
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![watched(Color::Green, 0)]);
    let (r, fx) = step(r, Event::Switched, T0 + 31);
    assert_eq!(r.phase, Phase::Observing);
    assert!(fx.is_empty());
    // The bake holds until its window ends.
    let (r, _) = step(r, tick(Some(healthy(100))), T0 + 31 + 59_999);
    assert_eq!(r.phase, Phase::Observing);
    let (r, fx) = step(r, tick(None), T0 + 31 + 60_000);
    assert_eq!(r.phase, Phase::Promoted);
    // Blue stays warm and still answers what green fails; only the pairs stop.
    assert_eq!(fx, vec![warm()]);
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
    // Nothing falls back to blue before it stops.
    assert_eq!(fx, vec![route(Color::Green, 0, 0), Effect::TearDownOld]);
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
    assert_eq!(fx, vec![watched(Color::Green, 0)]);
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
    assert_eq!(fx, vec![watched(Color::Green, 0)]);
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
    assert_eq!(fx, vec![route(Color::Blue, 0, 0), watched(Color::Green, 0)]);
}

#[test]
fn zero_keep_warm_tears_down_right_after_the_bake() {
    let mut s = settings(Strategy::BlueGreen);
    s.keep_warm_ms = 0;
    let r = observing(s);
    let (r, _) = step(r, tick(Some(healthy(100))), T0 + 31 + 30_000);
    let (r, fx) = step(r, tick(None), T0 + 31 + 60_000);
    assert_eq!(r.phase, Phase::TearingDown);
    // The route that drops the pairs, then the one that no longer falls back to blue,
    // before blue stops.
    assert!(
        fx.ends_with(&[route(Color::Green, 0, 0), Effect::TearDownOld]),
        "{fx:?}"
    );
    assert_eq!(r.route, Route::all_on(Color::Green));
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

/// When the bake of a rollout from [`observing`] ends.
const BAKE_END: i64 = T0 + 31 + 60_000;

/// A check with no traffic at all: the errors and latency rules cannot judge it.
fn no_traffic() -> Check {
    Check {
        new_ready: true,
        ..Check::default()
    }
}

fn on_inconclusive(how: OnInconclusive) -> RolloutSettings {
    RolloutSettings {
        on_inconclusive: how,
        ..settings(Strategy::BlueGreen)
    }
}

#[test]
fn a_bake_without_traffic_promotes_when_told_to() {
    let r = observing(on_inconclusive(OnInconclusive::Promote));
    let (r, _) = step(r, tick(Some(no_traffic())), BAKE_END - 1);
    assert_eq!(r.phase, Phase::Observing);
    assert!(r.inconclusive().is_some());
    let (r, records, fx) = step_recorded(r, tick(Some(no_traffic())), BAKE_END);
    assert_eq!(r.phase, Phase::Promoted);
    assert_eq!(records.len(), 1);
    let cause = &records[0].cause;
    assert!(
        cause.starts_with("bake ended without enough evidence (errors: 0 requests, 20 needed")
            && cause.ends_with("going on, as on_inconclusive = \"promote\" says"),
        "{cause}"
    );
    assert_eq!(fx, vec![warm()]);
}

#[test]
fn a_bake_without_traffic_waits_for_an_operator_when_told_to() {
    let r = observing(on_inconclusive(OnInconclusive::Wait));
    let (r, records, fx) = step_recorded(r, tick(Some(no_traffic())), BAKE_END);
    assert_eq!(r.phase, Phase::Observing);
    assert!(fx.is_empty());
    assert_eq!(
        (records[0].from.as_str(), records[0].to.as_str()),
        ("observing", "observing")
    );
    let waiting = r.waiting.clone().expect("a wait says why");
    assert!(
        waiting.starts_with("bake ended without enough evidence")
            && waiting.contains("teal promote"),
        "{waiting}"
    );
    assert_eq!(r.deadline_ms(), None);
    // Neither time nor evidence ends the wait; the rules stay armed.
    let (r, fx) = step(r, tick(Some(healthy(100))), BAKE_END + 86_400_000);
    assert_eq!(r.phase, Phase::Observing);
    assert!(fx.is_empty());
    assert!(r.inconclusive().is_none());
    let (r, _) = step(r, tick(Some(failing(100))), BAKE_END + 86_400_001);
    assert_eq!(
        r.phase,
        Phase::RolledBack,
        "a wait does not disarm the rules"
    );
    // An operator ends it.
    let r = observing(on_inconclusive(OnInconclusive::Wait));
    let (r, _) = step(r, tick(Some(no_traffic())), BAKE_END);
    let (r, fx) = step(
        r,
        Event::Promote {
            actor: "ana".into(),
        },
        BAKE_END + 5,
    );
    assert_eq!(r.phase, Phase::Promoted);
    assert_eq!(r.waiting, None);
    assert_eq!(fx, vec![warm()]);
}

#[test]
fn a_bake_without_traffic_is_lengthened_twice_then_waits() {
    let r = observing(settings(Strategy::BlueGreen));
    assert_eq!(r.settings.on_inconclusive, OnInconclusive::Extend);
    // Ten requests: too few, but kept.
    let (r, _) = step(r, tick(Some(healthy(10))), T0 + 1_031);
    let mut r = r;
    for (n, end) in [(1, BAKE_END), (2, BAKE_END + 60_000)] {
        let records;
        (r, records, _) = step_recorded(r, tick(Some(no_traffic())), end);
        assert_eq!(r.phase, Phase::Observing);
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].from.as_str(), records[0].to.as_str()),
            ("observing", "observing")
        );
        assert!(
            records[0]
                .cause
                .starts_with("bake ended without enough evidence")
                && records[0]
                    .cause
                    .ends_with(&format!("window lengthened ({n} of 2)")),
            "{}",
            records[0].cause
        );
        assert_eq!((r.extended, r.since_ms), (n, end));
        assert_eq!(r.deadline_ms(), Some(end + 60_000));
        assert_eq!(r.waiting, None);
        assert_eq!(r.tally.requests, 10, "a longer window keeps the evidence");
    }
    // Just before the lengthened window ends, nothing happens.
    let (r, fx) = step(r, tick(None), BAKE_END + 119_999);
    assert_eq!(
        (r.phase.clone(), r.since_ms),
        (Phase::Observing, BAKE_END + 60_000)
    );
    assert!(fx.is_empty());
    let (r, records, _) = step_recorded(r, tick(Some(no_traffic())), BAKE_END + 120_000);
    assert_eq!(r.phase, Phase::Observing);
    assert_eq!(r.extended, 2);
    assert!(
        records[0].cause.contains("after 2 longer windows: waiting"),
        "{}",
        records[0].cause
    );
    assert!(r.waiting.is_some());
    assert_eq!(r.deadline_ms(), None);
    let (r, _) = step(
        r,
        Event::Promote {
            actor: "ana".into(),
        },
        BAKE_END + 120_001,
    );
    assert_eq!(r.phase, Phase::Promoted);
}

#[test]
fn evidence_that_arrives_in_a_lengthened_bake_lets_it_promote() {
    let r = observing(settings(Strategy::BlueGreen));
    let (r, _) = step(r, tick(Some(healthy(10))), T0 + 1_031);
    let (r, _) = step(r, tick(Some(healthy(0))), BAKE_END);
    assert_eq!(r.extended, 1);
    // Ten more requests: with the ten before, enough.
    let (r, _) = step(r, tick(Some(healthy(10))), BAKE_END + 1_000);
    assert_eq!(r.tally.requests, 20);
    assert!(r.inconclusive().is_none(), "{:?}", r.inconclusive());
    let (r, records, fx) = step_recorded(r, tick(None), BAKE_END + 60_000);
    assert_eq!(r.phase, Phase::Promoted);
    assert_eq!(records[0].cause, "bake passed with every rule holding");
    assert_eq!(fx, vec![warm()]);
}

#[test]
fn routes_fall_back_and_pair_only_while_the_candidate_is_watched() {
    // Watched: a canary step, then the bake.
    let r = to_validating(start(settings(canary_steps())));
    let (canary, fx) = step(r, gates(Verdict::Pass), T0 + 30);
    assert_eq!(fx, vec![watched(Color::Blue, 1_000)]);
    let (back, fx) = step(canary, Event::Rollback { actor: "a".into() }, T0 + 40);
    assert_eq!(back.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)], "rollback clears both");
    let r = observing(settings(Strategy::BlueGreen));
    assert_eq!(r.resume(), vec![watched(Color::Green, 0)]);
    let (back, fx) = step(r.clone(), Event::Rollback { actor: "a".into() }, T0 + 100);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    assert_eq!(back.route, Route::all_on(Color::Blue));
    // Promoted: the pairs stop, blue still answers what green fails.
    let (promoted, fx) = step(r, Event::Promote { actor: "a".into() }, T0 + 100);
    assert_eq!(fx, vec![warm()]);
    assert_eq!(promoted.resume(), vec![warm()]);
    let (back, fx) = step(
        promoted.clone(),
        Event::Rollback { actor: "a".into() },
        T0 + 200,
    );
    assert_eq!(back.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    // Blue stops only after a route that no longer falls back to it.
    let (down, fx) = step(promoted, Event::Promote { actor: "a".into() }, T0 + 200);
    assert_eq!(down.phase, Phase::TearingDown);
    assert_eq!(fx, vec![route(Color::Green, 0, 0), Effect::TearDownOld]);
    assert_eq!(
        down.resume(),
        vec![route(Color::Green, 0, 0), Effect::TearDownOld]
    );

    // Without failover or pairs the routes are the plain ones, and nothing is republished.
    let mut s = settings(Strategy::BlueGreen);
    s.failover = false;
    s.rules.baseline_share = 0.0;
    let r = to_validating(start(s));
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
    let (r, _) = step(r, Event::Switched, T0 + 31);
    let (r, fx) = step(r, Event::Promote { actor: "a".into() }, T0 + 100);
    assert_eq!(r.phase, Phase::Promoted);
    assert!(fx.is_empty());
    let (_, fx) = step(r, Event::Promote { actor: "a".into() }, T0 + 200);
    assert_eq!(fx, vec![Effect::TearDownOld]);
    // The pairs' share is in basis points.
    let mut s = settings(Strategy::BlueGreen);
    s.rules.baseline_share = 0.1234;
    let (r, fx) = step(to_validating(start(s)), gates(Verdict::Pass), T0 + 30);
    assert_eq!(r.route.baseline, 1_234);
    assert_eq!(fx, vec![Effect::Route(r.route)]);
}
