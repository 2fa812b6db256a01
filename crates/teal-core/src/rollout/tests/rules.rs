//! The rollback rules while the candidate is live: what rolls back, and what is waited out.

use super::*;

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
    assert!(
        r.last_check
            .iter()
            .any(|o| o.verdict == Verdict::Inconclusive)
    );
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
        matches!(
            &r.outcome,
            Some(EndReason::RuleFailed { rule: Rule::Ready, detail, .. })
                if detail.ends_with("exited (killed by SIGKILL)")
        ),
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
    assert!(
        matches!(
            r.outcome,
            Some(EndReason::RuleFailed {
                rule: Rule::Accuracy,
                ..
            })
        ),
        "{:?}",
        r.outcome
    );
}
