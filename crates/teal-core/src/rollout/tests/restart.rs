//! What a restart relies on: the state round-trips through JSON and each phase re-issues
//! what it owes.

use super::*;

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
    let (r, _) = step(r, gates(Verdict::Pass), T0 + 30);
    let json = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}
