//! The state machine's behaviour, driven event by event with time in hand. The helpers here
//! walk a rollout to the phase a test starts from.

mod blue_green;
mod canary;
mod commands;
mod restart;
mod rules;

use crate::gates::Verdict;

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

fn gates(verdict: Verdict) -> Event {
    Event::Gates {
        verdict,
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

fn observing(s: RolloutSettings) -> Rollout {
    let r = to_validating(start(s));
    let (r, _) = step(r, tick(Some(healthy(100))), T0 + 25);
    let (r, _) = step(r, gates(Verdict::Pass), T0 + 30);
    let (r, _) = step(r, Event::Switched, T0 + 31);
    assert_eq!(r.phase, Phase::Observing);
    r
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
