//! Canary rollouts: steps, pauses, the gates at a step, and the rules watching each step.

use super::*;

#[test]
fn canary_walks_its_steps_then_switches() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 30);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    assert_eq!(fx, vec![watched(Color::Blue, 1_000)]);
    // Timed pause.
    let (r, fx) = step(r, tick(Some(healthy(50))), T0 + 1_030);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(fx, vec![watched(Color::Blue, 5_000)]);
    // Manual pause: time does nothing, promote moves on.
    let (r, fx) = step(r, tick(None), T0 + 100_000_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert!(fx.is_empty());
    let (r, fx) = step(r, Event::Promote { actor: "a".into() }, T0 + 100_000_001);
    assert_eq!(r.phase, Phase::Canary { step: 2 });
    assert_eq!(fx, vec![watched(Color::Blue, 7_550)]);
    // A step with gates runs them when its pause ends.
    let (r, fx) = step(r, tick(None), T0 + 100_001_001);
    assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
    assert_eq!(fx, vec![Effect::RunGates]);
    assert_eq!(
        r.resume(),
        vec![watched(Color::Blue, 7_550), Effect::RunGates]
    );
    let (r, fx) = step(r, gates(Verdict::Pass), T0 + 100_001_002);
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![watched(Color::Green, 0)]);
}

#[test]
fn canary_gates_failing_roll_back_and_inconclusive_lengthen_the_step() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, _) = step(r, gates(Verdict::Pass), T0);
    let (r, _) = step(r, tick(Some(healthy(50))), T0 + 1_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    let (r, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 1_001);
    let (r, _) = step(r, tick(None), T0 + 2_001);
    assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
    let (failed, fx) = step(r.clone(), gates(Verdict::Fail), T0 + 2_002);
    assert_eq!(failed.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    // By default (on_inconclusive = "extend") the step holds for another pause.
    let (held, records, fx) = step_recorded(r.clone(), gates(Verdict::Inconclusive), T0 + 2_002);
    assert_eq!(held.phase, Phase::Canary { step: 2 });
    assert!(fx.is_empty(), "the route stays: {fx:?}");
    assert_eq!(held.waiting, None);
    assert_eq!(held.extended, 1);
    assert_eq!(held.deadline_ms(), Some(T0 + 3_002));
    assert!(
        records[0]
            .cause
            .contains("gates inconclusive at canary step 3")
            && records[0].cause.contains("window lengthened (1 of 2)"),
        "{records:?}"
    );
    // Told to wait, it waits for an operator.
    let mut r = r;
    r.settings.on_inconclusive = OnInconclusive::Wait;
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
fn canary_rolls_back_on_proven_errors_and_each_step_gathers_its_own_evidence() {
    let r = to_validating(start(settings(canary_steps())));
    let (mut r, _) = step(r, gates(Verdict::Pass), T0);
    // 3 failures in 100 requests against a limit of 1%: not yet enough evidence.
    let mut some_errors = healthy(100);
    some_errors.new.errors = 3;
    (r, _) = step(r, tick(Some(some_errors)), T0 + 10);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    // A good check adds to the evidence; it does not wipe it as a strike count would.
    (r, _) = step(r, tick(Some(healthy(100))), T0 + 20);
    assert_eq!((r.tally.requests, r.tally.errors), (200, 3));
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    // The next step starts its own test.
    (r, _) = step(r, tick(Some(healthy(100))), T0 + 1_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(r.tally, Tally::default());
    // Half the requests failing is proven at once, with no strikes to wait out.
    let (r, fx) = step(r, tick(Some(failing(100))), T0 + 1_010);
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    assert!(
        matches!(
            &r.outcome,
            Some(EndReason::RuleProven {
                rule: Rule::Errors,
                detail,
                alpha,
            }) if detail.starts_with("error rate 50.00% over 100 requests") && *alpha == 0.01
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
    assert_eq!(fx, vec![watched(Color::Blue, 5_000)]);
}

/// A canary rollout at its first step (10%, a pause of one second, no gates) since T0.
fn first_step(how: OnInconclusive) -> Rollout {
    let mut s = settings(canary_steps());
    s.on_inconclusive = how;
    let (r, _) = step(to_validating(start(s)), gates(Verdict::Pass), T0);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    r
}

/// A tick whose check saw no traffic.
fn no_traffic() -> Event {
    tick(Some(Check {
        new_ready: true,
        ..Check::default()
    }))
}

#[test]
fn a_canary_step_without_evidence_follows_on_inconclusive() {
    // Promote: the next step.
    let r = first_step(OnInconclusive::Promote);
    let (r, records, fx) = step_recorded(r, no_traffic(), T0 + 1_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(fx, vec![watched(Color::Blue, 5_000)]);
    assert!(
        records[0]
            .cause
            .starts_with("canary step 1 ended without enough evidence (errors: 0 requests")
            && records[0]
                .cause
                .contains("going on, as on_inconclusive = \"promote\" says"),
        "{}",
        records[0].cause
    );

    // Wait: the step holds, without a timer, until an operator promotes it.
    let r = first_step(OnInconclusive::Wait);
    let (r, fx) = step(r, no_traffic(), T0 + 1_000);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    assert!(fx.is_empty());
    assert!(r.waiting.as_deref().unwrap_or("").contains("teal promote"));
    assert_eq!(r.deadline_ms(), None);
    let (r, fx) = step(r, tick(Some(healthy(100))), T0 + 100_000);
    assert_eq!(
        r.phase,
        Phase::Canary { step: 0 },
        "evidence does not end a wait"
    );
    assert!(fx.is_empty());
    let (r, fx) = step(r, Event::Promote { actor: "a".into() }, T0 + 100_001);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(r.waiting, None);
    assert_eq!(fx, vec![watched(Color::Blue, 5_000)]);

    // Extend: two more pauses, then a wait.
    let mut r = first_step(OnInconclusive::Extend);
    for (n, end) in [(1, T0 + 1_000), (2, T0 + 2_000)] {
        let (records, fx);
        (r, records, fx) = step_recorded(r, no_traffic(), end);
        assert_eq!(r.phase, Phase::Canary { step: 0 });
        assert!(fx.is_empty());
        assert!(
            records[0]
                .cause
                .ends_with(&format!("window lengthened ({n} of 2)")),
            "{}",
            records[0].cause
        );
        assert_eq!((r.extended, r.deadline_ms()), (n, Some(end + 1_000)));
    }
    let (r, _) = step(r, no_traffic(), T0 + 3_000);
    assert_eq!(r.phase, Phase::Canary { step: 0 });
    assert!(r.waiting.is_some());
    assert_eq!(r.deadline_ms(), None);
    // The next step starts with its own allowance.
    let (r, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 3_001);
    assert_eq!(
        (r.phase.clone(), r.extended),
        (Phase::Canary { step: 1 }, 0)
    );
}

#[test]
fn a_lengthened_canary_step_goes_on_once_its_evidence_suffices() {
    let r = first_step(OnInconclusive::Extend);
    let (r, _) = step(r, tick(Some(healthy(10))), T0 + 500);
    let (r, _) = step(r, no_traffic(), T0 + 1_000);
    assert_eq!(
        (r.phase.clone(), r.extended),
        (Phase::Canary { step: 0 }, 1)
    );
    let (r, _) = step(r, tick(Some(healthy(10))), T0 + 1_500);
    let (r, fx) = step(r, tick(None), T0 + 2_000);
    assert_eq!(r.phase, Phase::Canary { step: 1 });
    assert_eq!(fx, vec![watched(Color::Blue, 5_000)]);
}

#[test]
fn inconclusive_canary_gates_follow_on_inconclusive() {
    // The third step (75.5%) has gates at the end of its one-second pause.
    let at_gates = |how: OnInconclusive| {
        let r = first_step(how);
        let (r, _) = step(r, tick(Some(healthy(50))), T0 + 1_000);
        let (r, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 1_001);
        let (r, _) = step(r, tick(None), T0 + 2_001);
        assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
        r
    };
    // Promote: past the last step, the switch.
    let (r, records, fx) = step_recorded(
        at_gates(OnInconclusive::Promote),
        gates(Verdict::Inconclusive),
        T0 + 2_002,
    );
    assert_eq!(r.phase, Phase::Switching);
    assert_eq!(fx, vec![watched(Color::Green, 0)]);
    assert!(
        records[0]
            .cause
            .starts_with("gates inconclusive at canary step 3 (test); going on"),
        "{}",
        records[0].cause
    );
    // Wait: the step holds for an operator.
    let (r, _) = step(
        at_gates(OnInconclusive::Wait),
        gates(Verdict::Inconclusive),
        T0 + 2_002,
    );
    assert_eq!(r.phase, Phase::Canary { step: 2 });
    assert_eq!(r.deadline_ms(), None);
    let (r, _) = step(r, Event::Promote { actor: "a".into() }, T0 + 2_003);
    assert_eq!(r.phase, Phase::Switching);
    // Extend: another pause and the gates again, twice, then a wait.
    let mut r = at_gates(OnInconclusive::Extend);
    let mut now = T0 + 2_002;
    for n in 1..=2 {
        (r, _) = step(r, gates(Verdict::Inconclusive), now);
        assert_eq!(
            (r.phase.clone(), r.extended),
            (Phase::Canary { step: 2 }, n)
        );
        assert_eq!(r.deadline_ms(), Some(now + 1_000));
        now += 1_000;
        let fx;
        (r, fx) = step(r, tick(None), now);
        assert_eq!(r.phase, Phase::CanaryGates { step: 2 });
        assert_eq!(fx, vec![Effect::RunGates]);
        now += 1;
    }
    let (r, _) = step(r, gates(Verdict::Inconclusive), now);
    assert_eq!(r.phase, Phase::Canary { step: 2 });
    assert!(r.waiting.is_some());
    assert_eq!(r.deadline_ms(), None);
}
