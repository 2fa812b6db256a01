//! Operators' commands: abort, rollback and promote, accepted or refused by phase.

use super::*;

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
    assert_eq!(
        aborted.outcome,
        Some(EndReason::AbortedBy {
            actor: "ana".into()
        })
    );
    assert_eq!(aborted.outcome.unwrap().to_string(), "aborted by ana");

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
    assert_eq!(fx, vec![route(Color::Green, 0, 0), Effect::TearDownOld]);
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
