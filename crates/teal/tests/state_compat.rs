//! A state file written by the release at 8b5a7f7 (`fixtures/state-8b5a7f7.db`, see
//! `fixtures/README.md`) still opens: its audit chain verifies, its rollouts read into the
//! typed state machine and write back the same JSON, its validation reports' verdicts and gate
//! names read back, and its slots and route are there. A renamed verdict, gate, rule, phase or
//! end reason makes this fail, because the old file spells them the old way.

mod common;

use std::path::PathBuf;

use serde_json::Value;
use teal::control::validation::Report;
use teal::core::gates::{Gate, Verdict};
use teal::core::rollout::{EndReason, Phase, Rollout, Rule};
use teal::core::routing::Color;
use teal::state::store::{AnchorCheck, NewEvent, Store};

/// A copy of the fixture in a fresh folder, so the test never writes the committed file.
fn fixture_copy() -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-8b5a7f7.db");
    let path = common::temp_dir("state-compat").join("teal.db");
    std::fs::copy(&source, &path).expect("the fixture copies");
    path
}

#[test]
fn an_old_state_file_is_anchored_from_its_next_event() {
    let path = fixture_copy();
    let store = Store::open(&path).expect("the library opens the old state file");
    store
        .append(NewEvent {
            model: "digits".into(),
            kind: "switched".into(),
            actor: "test".into(),
            live_slot: Some("blue".into()),
            live_version: Some("v1".into()),
            detail: serde_json::json!({}),
        })
        .expect("an event appends");
    let verification = store.verify().expect("the chain reads");
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.anchor, AnchorCheck::Holds);
    assert!(
        verification.finding.contains("before #21"),
        "{}",
        verification.finding
    );
}

/// Every value of one column, oldest row first, read without the library.
fn column(path: &PathBuf, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("the state file opens");
    let mut statement = conn.prepare(sql).expect("the query prepares");
    statement
        .query_map([], |r| r.get::<_, String>(0))
        .expect("the query runs")
        .collect::<Result<_, _>>()
        .expect("the rows read")
}

#[test]
fn the_audit_chain_of_the_old_release_verifies() {
    let path = fixture_copy();
    let store = Store::open(&path).expect("the library opens the old state file");
    let verification = store.verify().expect("the chain reads");
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.events, 20);
    assert_eq!(verification.first_broken, None);
    // The old release anchored nothing: the chain verifies, with a note saying so.
    assert_eq!(verification.anchor, AnchorCheck::Absent);
    assert!(
        verification.finding.contains("not anchored yet"),
        "{}",
        verification.finding
    );
    let events = store.events("digits", 100).expect("the events read");
    assert_eq!(events.len(), 20);
    // Each rollout transition names phases the state machine still has.
    let transitions: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind == "rollout")
        .map(|e| &e.detail)
        .collect();
    assert_eq!(transitions.len(), 12);
    for t in transitions {
        for end in ["from", "to"] {
            let name = t[end].as_str().unwrap();
            assert!(
                name == "none" || Phase::NAMES.contains(&name),
                "{end} {name}"
            );
        }
    }
}

#[test]
fn old_rollouts_read_into_the_typed_state_and_write_back_unchanged() {
    let path = fixture_copy();
    let store = Store::open(&path).expect("the library opens the old state file");
    let states = column(&path, "SELECT state FROM rollouts ORDER BY id");
    assert_eq!(states.len(), 2);
    let mut rollouts = Vec::new();
    for text in &states {
        let rollout: Rollout = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("a stored rollout no longer reads: {e}\n{text}"));
        let stored: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_value(&rollout).unwrap(),
            stored,
            "rollout {} writes back differently",
            rollout.id
        );
        rollouts.push(rollout);
    }

    let failed = &rollouts[0];
    assert_eq!(failed.phase, Phase::Failed);
    assert!(
        matches!(&failed.outcome, Some(EndReason::GatesFailed { summary })
            if summary.starts_with("450 samples from holdout")),
        "{:?}",
        failed.outcome
    );

    let live = &rollouts[1];
    assert_eq!(live.phase, Phase::TornDown);
    assert_eq!(live.route.active, Color::Green);
    assert_eq!(
        live.outcome,
        Some(EndReason::Completed {
            version: "v4".into()
        })
    );
    let checks: Vec<(Rule, Verdict)> = live
        .last_check
        .iter()
        .map(|o| (o.rule, o.verdict))
        .collect();
    assert_eq!(
        checks,
        [
            (Rule::Ready, Verdict::Pass),
            (Rule::Errors, Verdict::Inconclusive),
            (Rule::Latency, Verdict::Inconclusive),
        ]
    );

    // The library's own reader keeps every one of them.
    let through_store = store.rollouts("digits", 10).expect("the rollouts read");
    assert_eq!(through_store.len(), 2);
    assert_eq!(through_store[0], rollouts[1], "newest first");
    assert_eq!(through_store[1], rollouts[0]);
}

#[test]
fn old_validation_reports_and_their_audit_events_read_back_typed() {
    let path = fixture_copy();
    let store = Store::open(&path).expect("the library opens the old state file");
    let texts = column(&path, "SELECT report FROM reports ORDER BY id");
    assert_eq!(texts.len(), 3);
    let every_gate = [
        Gate::Health,
        Gate::Schema,
        Gate::Agreement,
        Gate::Drift,
        Gate::Latency,
        Gate::Errors,
        Gate::Accuracy,
    ];
    let mut verdicts = Vec::new();
    for text in &texts {
        let report: Report = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("a stored report no longer reads: {e}"));
        let stored: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&report).unwrap(), stored);
        let gates: Vec<Gate> = report.gates.iter().map(|g| g.gate).collect();
        assert_eq!(gates, every_gate);
        verdicts.push(report.verdict);
    }
    assert_eq!(verdicts, [Verdict::Pass, Verdict::Fail, Verdict::Pass]);
    let failed: Report = serde_json::from_str(&texts[1]).unwrap();
    let failing: Vec<Gate> = failed
        .gates
        .iter()
        .filter(|g| g.verdict == Verdict::Fail)
        .map(|g| g.gate)
        .collect();
    assert_eq!(failing, [Gate::Agreement, Gate::Accuracy]);
    let last = store.last_report("digits").unwrap().expect("a last report");
    assert_eq!(last, texts[2]);

    // The audit log's `validated` events name the same verdicts and gates.
    let events = store.events("digits", 100).expect("the events read");
    let validated: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind == "validated")
        .map(|e| &e.detail)
        .collect();
    assert_eq!(validated.len(), 3);
    let mut event_verdicts: Vec<(String, Verdict)> = validated
        .iter()
        .map(|d| {
            let verdict = d["verdict"].as_str().unwrap().parse().unwrap();
            (d["candidate"].as_str().unwrap().to_string(), verdict)
        })
        .collect();
    event_verdicts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        event_verdicts,
        [
            ("v2".to_string(), Verdict::Pass),
            ("v3".to_string(), Verdict::Fail),
            ("v4".to_string(), Verdict::Pass),
        ]
    );
    for detail in validated {
        for (gate, verdict) in detail["gates"].as_object().unwrap() {
            gate.parse::<Gate>()
                .expect("a gate name of the old release");
            verdict
                .as_str()
                .unwrap()
                .parse::<Verdict>()
                .expect("a verdict of the old release");
        }
    }
}

#[test]
fn old_slots_and_routes_read() {
    let path = fixture_copy();
    let store = Store::open(&path).expect("the library opens the old state file");
    let states = store.model_states().expect("the slots and routes read");
    assert_eq!(states.len(), 1);
    let digits = &states[0];
    assert_eq!(digits.model, "digits");
    assert_eq!(digits.active.parse::<Color>().unwrap(), Color::Green);
    assert_eq!((digits.weight, digits.shadow), (0, 0));
    assert_eq!(digits.slots.len(), 1);
    let (color, config) = &digits.slots[0];
    assert_eq!(color.parse::<Color>().unwrap(), Color::Green);
    assert_eq!(config["version"], "v4");
    assert_eq!(config["kind"], "onnx");
}
