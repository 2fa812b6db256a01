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
    assert_eq!(r.resume(), vec![watched(Color::Green, 0)]);
}

#[test]
fn state_round_trips_through_json() {
    let r = to_validating(start(settings(canary_steps())));
    let (r, _) = step(r, gates(Verdict::Pass), T0 + 30);
    let json = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_rollout_saved_before_the_sequential_rules_still_reads_and_runs() {
    // A bake as the state file held it before pairs, failover and the sequential rules: no
    // tally, baseline or extensions, a route without fallback or pairs, fewer settings.
    let json = r#"{
        "id": 7, "model": "digits", "version": "v2", "old_version": "v1", "old": "blue",
        "settings": {
            "strategy": { "kind": "blue_green" }, "auto_switch": true, "switch_delay_ms": 0,
            "observe_ms": 60000, "keep_warm_ms": 3600000, "abort_removes_green": false,
            "evidence": { "replay": 1000 },
            "rules": {
                "latency_ratio": 1.2, "latency_slack_ms": 2.0, "max_error_rate": 0.01,
                "min_accuracy": null, "consecutive": 3, "min_requests": 20,
                "check_interval_ms": 1000
            }
        },
        "phase": { "phase": "observing" },
        "since_ms": 1000031, "started_ms": 1000000,
        "route": { "active": "green", "weight": 0, "shadow": 0 },
        "strikes": { "latency": 1, "errors": 0, "ready": 0, "accuracy": 0 },
        "baseline_p95_ms": 10.0, "baseline_requests": 100,
        "last_check": [
            { "rule": "ready", "verdict": "pass", "detail": "candidate ready" },
            { "rule": "latency", "verdict": "fail", "detail": "p95 15.0 ms (limit 14.0 ms)" }
        ],
        "outcome": null
    }"#;
    let r: Rollout = serde_json::from_str(json).unwrap();
    assert_eq!(r.phase, Phase::Observing);
    assert_eq!(r.route, Route::all_on(Color::Green));
    assert_eq!(r.resume(), vec![route(Color::Green, 0, 0)]);
    assert_eq!((r.tally.clone(), r.extended), (Tally::default(), 0));
    assert_eq!(r.baseline, Baseline::default());
    assert_eq!((r.strikes.latency, r.strikes.outputs), (1, 0));
    assert_eq!(r.baseline_p95_ms, Some(10.0));
    // The settings it lacked are the defaults.
    let defaults = RolloutSettings::default();
    assert_eq!(r.settings.rules.alpha, defaults.rules.alpha);
    assert_eq!(
        r.settings.rules.baseline_share,
        defaults.rules.baseline_share
    );
    assert_eq!(r.settings.on_inconclusive, OnInconclusive::Extend);
    assert_eq!(r.settings.max_extensions, defaults.max_extensions);
    assert!(r.settings.failover);
    // Its rules are armed: the evidence starts from the next check.
    let mut failing_all = healthy(20);
    failing_all.new.errors = 20;
    let (r, fx) = step(r, tick(Some(failing_all)), T0 + 1_031);
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(fx, vec![route(Color::Blue, 0, 0)]);
    assert!(matches!(
        r.outcome,
        Some(EndReason::RuleProven {
            rule: Rule::Errors,
            ..
        })
    ));
}

#[test]
fn answers_per_class_are_read_back_inside_a_flattened_view() {
    // The admin API sends a rollout flattened into a view with fields of its own; JSON's
    // string keys must still read back as classes and value buckets.
    #[derive(Serialize, Deserialize)]
    struct View {
        #[serde(flatten)]
        tally: Tally,
        phase_name: String,
    }
    let tally = Tally {
        requests: 5,
        classes: BTreeMap::from([(0, 3), (7, 2)]),
        values: BTreeMap::from([(-3, 1), (12, 4)]),
        ..Tally::default()
    };
    let text = serde_json::to_string(&View {
        tally: tally.clone(),
        phase_name: "observing".into(),
    })
    .unwrap();
    assert!(text.contains(r#""classes":{"0":3,"7":2}"#), "{text}");
    let back: View = serde_json::from_str(&text).unwrap();
    assert_eq!(back.tally, tally);
    let from_value: View = serde_json::from_value(serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(from_value.tally, tally);
    assert!(serde_json::from_str::<Tally>(r#"{"classes":{"x":1}}"#).is_err());
}
