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
    let (r, _, work) = step_recorded(r, e, now);
    (r, work)
}

/// Steps and returns the state, the audit records, and the other effects.
fn step_recorded(r: Rollout, e: Event, now: i64) -> (Rollout, Vec<Transition>, Vec<Effect>) {
    let (from, since) = (r.phase.clone(), r.since_ms);
    let (r, fx) = r.step(e, now);
    let (records, work): (Vec<Effect>, Vec<Effect>) =
        fx.into_iter().partition(|f| matches!(f, Effect::Record(_)));
    // A phase change is always recorded, and so is a phase entered again (a lengthened
    // window, or a hold for an operator), which restarts its clock; nothing else is.
    if r.phase != from || r.since_ms != since {
        assert!(
            !records.is_empty(),
            "{from:?} -> {:?} without a record",
            r.phase
        );
    } else {
        assert!(
            records.is_empty(),
            "a record without a phase change in {from:?}: {records:?}"
        );
    }
    let records = records
        .into_iter()
        .map(|f| match f {
            Effect::Record(t) => t,
            _ => unreachable!(),
        })
        .collect();
    (r, records, work)
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
        ..Route::all_on(active)
    })
}

/// The route while the candidate (green) is watched: blue answers what green fails, and 5%
/// of requests go to both as pairs.
fn watched(active: Color, weight: u32) -> Effect {
    Effect::Route(Route {
        active,
        weight,
        shadow: 0,
        fallback: Some(Color::Blue),
        baseline: 500,
    })
}

/// The route once the bake has passed: blue, still warm, answers what green fails; the pairs
/// have stopped.
fn warm() -> Effect {
    Effect::Route(Route {
        active: Color::Green,
        weight: 0,
        shadow: 0,
        fallback: Some(Color::Blue),
        baseline: 0,
    })
}

fn healthy(requests: u64) -> Check {
    let window = Window {
        requests,
        errors: 0,
        p95_ms: Some(10.0),
        p50_ms: Some(5.0),
        ..Window::default()
    };
    Check {
        old: window.clone(),
        new: window,
        new_ready: true,
        ..Check::default()
    }
}

fn failing(requests: u64) -> Check {
    let mut c = healthy(requests);
    c.new.errors = requests / 2;
    c
}

fn tick(check: Option<Check>) -> Event {
    Event::Tick {
        check: check.map(Box::new),
    }
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

/// A rollout observing after a check before the switch that taught it the old version's
/// behaviour (`before.old`).
fn observing_after(s: RolloutSettings, before: Check) -> Rollout {
    let r = to_validating(start(s));
    let (r, _) = step(r, tick(Some(before)), T0 + 25);
    let (r, _) = step(r, gates(Verdict::Pass), T0 + 30);
    let (r, _) = step(r, Event::Switched, T0 + 31);
    assert_eq!(r.phase, Phase::Observing);
    r
}

/// A small deterministic generator (SplitMix64), so the simulations are reproducible.
struct Rng(u64);

impl Rng {
    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with chance `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.next() < p
    }

    /// How many of `n` trials succeed, each with chance `p`.
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.chance(p)).count() as u64
    }

    /// A service time in milliseconds: 3 ms plus an exponential tail of mean 5 ms.
    fn latency(&mut self) -> f64 {
        3.0 - 5.0 * (1.0 - self.next()).ln()
    }
}
