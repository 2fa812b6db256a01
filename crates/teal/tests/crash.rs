//! SIGKILL in every rollout phase, under load. teal kills itself right after writing a
//! phase and before acting on it (`TEAL_FAULT_KILL_AFTER_PHASE`), the worst moment; the
//! restarted teal resumes the rollout from the state file, finishes it as it would have
//! finished, serves without a failure from the restart on, and its audit log holds every
//! transition once.

mod common;

use std::time::Duration;

use common::rollouts::*;
use common::*;

struct Case {
    /// The phase after whose persisting teal dies.
    phase: &'static str,
    candidate: &'static str,
    /// Settings over the quick blue-green defaults.
    settings: serde_json::Value,
    /// Operator commands before the crash: wait for the phase, then send the verb.
    before: &'static [(&'static str, &'static str)],
    /// And after the restart.
    after: &'static [(&'static str, &'static str)],
    end: &'static str,
    live: &'static str,
    /// Slots loaded at the end: the old one is torn down after a good rollout, the
    /// candidate removed when asked.
    slots: usize,
}

impl Case {
    fn new(phase: &'static str) -> Case {
        Case {
            phase,
            candidate: "v2",
            settings: serde_json::json!({}),
            before: &[],
            after: &[],
            end: "torn_down",
            live: "v2",
            slots: 1,
        }
    }
}

async fn command(teal: &Teal, phase: &str, verb: &str) {
    wait_phase(&teal.admin, phase, Duration::from_secs(60)).await;
    // The command that triggers the crash may lose its answer with the process.
    let _ = teal
        .admin
        .post_json(
            &format!("/api/v1/models/digits/{verb}"),
            &serde_json::json!({}),
        )
        .await;
}

async fn crash_in(case: Case) {
    let dir = temp_dir(&format!("crash-{}", case.phase));
    let root = repo_root();
    let text = format!(
        "[server]\nstate_dir = \"{}\"\n\n[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"{}\"\n",
        dir.join("state").display(),
        root.join("models/digits/v1/model.onnx").display(),
    );
    let config = dir.join("teal.toml");
    std::fs::write(&config, text).unwrap();
    let (data_port, admin_port) = (free_port(), free_port());
    let mut teal = serve_with(
        &config,
        data_port,
        admin_port,
        &[("TEAL_FAULT_KILL_AFTER_PHASE", case.phase)],
    );
    let load = Load::start(&teal.data, 2);
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["keep_warm_ms"] = 1000.into();
    for (key, value) in case.settings.as_object().unwrap() {
        settings[key] = value.clone();
    }
    // The first rollout in a fresh state file is number 1. When teal dies in `deploying`,
    // which is written while the start request is answered, the answer is lost with it.
    let id = 1;
    let _ = teal
        .admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": onnx_candidate(case.candidate), "settings": settings }),
        )
        .await;
    for (phase, verb) in case.before {
        command(&teal, phase, verb).await;
    }
    let died = eventually(Duration::from_secs(60), async || teal.proc.has_exited()).await;
    assert!(died, "teal did not die after writing {}", case.phase);
    let (_, failed_while_down, _) = load.finish().await;

    let teal = serve(&config, data_port, admin_port);
    let load = Load::start(&teal.data, 2);
    for (phase, verb) in case.after {
        command(&teal, phase, verb).await;
    }
    let state = wait_phase(&teal.admin, case.end, Duration::from_secs(60)).await;
    assert_eq!(state["id"], id);
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(
        failed, 0,
        "{}: requests failed after the restart: {failures:?}",
        case.phase
    );
    assert!(ok > 0);
    assert_eq!(live_version(&teal.data).await, case.live, "{}", case.phase);
    let status = teal
        .admin
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    assert_eq!(
        status["slots"].as_array().unwrap().len(),
        case.slots,
        "{}: {status}",
        case.phase
    );
    // Every transition is in the audit log once, each starting where the last one ended.
    let steps = transitions(&teal.admin, id).await;
    let into_phase = steps.iter().filter(|(_, to)| to == case.phase).count();
    assert_eq!(into_phase, 1, "{}: {steps:?}", case.phase);
    for pair in steps.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "{}: a gap in {steps:?}", case.phase);
    }
    assert_eq!(steps.last().unwrap().1, case.end);
    let verify = teal.admin.get("/api/v1/audit/verify").await.unwrap().json();
    assert_eq!(verify["intact"], true, "{verify}");
    eprintln!(
        "{}: {failed_while_down} requests failed while teal was down, none after",
        case.phase
    );
    kill9(teal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying() {
    crash_in(Case::new("deploying")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_up() {
    crash_in(Case::new("warming_up")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating() {
    crash_in(Case::new("validating")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching() {
    crash_in(Case::new("switching")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observing() {
    crash_in(Case::new("observing")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted() {
    crash_in(Case::new("promoted")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tearing_down() {
    crash_in(Case::new("tearing_down")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_down() {
    crash_in(Case::new("torn_down")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_delay() {
    crash_in(Case {
        settings: serde_json::json!({ "switch_delay_ms": 1000 }),
        ..Case::new("switch_delay")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaiting_approval() {
    crash_in(Case {
        settings: serde_json::json!({ "auto_switch": false }),
        after: &[("awaiting_approval", "promote")],
        ..Case::new("awaiting_approval")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary() {
    crash_in(Case {
        settings: serde_json::json!({ "strategy": { "kind": "canary", "steps": [{ "percent": 50, "pause_ms": 1000 }] } }),
        ..Case::new("canary")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_gates() {
    crash_in(Case {
        settings: serde_json::json!({ "strategy": { "kind": "canary", "steps": [{ "percent": 50, "pause_ms": 500, "gates": true }] } }),
        ..Case::new("canary_gates")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed() {
    crash_in(Case {
        candidate: "v2-permuted",
        end: "failed",
        live: "v1",
        slots: 2,
        ..Case::new("failed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_candidate() {
    crash_in(Case {
        candidate: "v2-permuted",
        settings: serde_json::json!({ "abort_removes_green": true }),
        end: "failed",
        live: "v1",
        ..Case::new("removing_candidate")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted() {
    crash_in(Case {
        settings: serde_json::json!({ "auto_switch": false }),
        before: &[("awaiting_approval", "abort")],
        end: "aborted",
        live: "v1",
        slots: 2,
        ..Case::new("aborted")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back() {
    crash_in(Case {
        settings: serde_json::json!({ "observe_ms": 3_600_000 }),
        before: &[("observing", "rollback")],
        end: "rolled_back",
        live: "v1",
        slots: 2,
        ..Case::new("rolled_back")
    })
    .await;
}
