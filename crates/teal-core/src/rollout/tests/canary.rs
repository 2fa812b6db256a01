//! Canary rollouts: steps, pauses, the gates at a step, and the rules watching each step.

use super::*;

#[test]
fn canary_walks_its_steps_then_switches() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30);
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
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 100_001_002);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![route(Color::Green, 0, 0)]);
}

#[test]
fn canary_gates_failing_roll_back_and_inconclusive_hold() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, _) = step(r, gates(Verdict::Pass), T0);
    let (r, _) = step(r, tick(None), T0 + 1_000);
    let (r, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 1_001);
    let (r, _) = step(r, tick(None), T0 + 2_001);
    assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
    let (failed, fx) = step(r.clone(), gates(Verdict::Fail), T0 + 2_002);
    assert_eq!(failed.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    let (held, _) = step(r, gates(Verdict::Inconclusive), T0 + 2_002);
    assert_eq!(held.phase, Phase::Canary { step: 2 });
    assert!(
        held.waiting
            .as_deref()
            .unwrap_or("")
            .contains("teal promote")
    );
    assert_eq!(
        held.deadline_ms(),
        None,
        "an inconclusive step waits for an operator"
    );
}

#[test]
fn canary_rolls_back_after_consecutive_failing_checks_only() {
    let r = to_validating(start(settings(canary_steps())));
    let (mut r, _) = step(r, gates(Verdict::Pass), T0);
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
    assert!(
        matches!(
            r.outcome,
            Some(EndReason::RuleFailed {
                rule: Rule::Errors,
                checks: 3,
                ..
            })
        ),
        "{:?}",
        r.outcome
    );
}

#[test]
fn with_an_accuracy_floor_a_canary_step_waits_for_feedback_that_clears_it() {
    let mut s = settings(canary_steps());
    s.rules.min_accuracy = Some(0.9);
    let r = to_validating(start(s));
    let (r, _) = step(r, gates(Verdict::Pass), T0);
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
