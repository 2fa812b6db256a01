//! Rollouts end to end, on real slots under real load: each strategy takes a good version
//! live, a gate stops a bad one, a version that degrades after the switch is rolled back by
//! the rules, and the request log agrees with the audit log about who served what.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::rollouts::*;
use common::*;
use teal::cli::client::HttpClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_strategy_takes_a_good_version_live_without_a_failed_request() {
    let strategies = [
        serde_json::json!({ "kind": "blue_green" }),
        serde_json::json!({ "kind": "canary", "steps": [
            { "percent": 20, "pause_ms": 400 },
            { "percent": 60, "pause_ms": 400, "gates": true },
        ] }),
        serde_json::json!({ "kind": "shadow_then_switch", "window_ms": 800, "percent": 100 }),
    ];
    for (i, strategy) in strategies.into_iter().enumerate() {
        // The gates' own thresholds: evidence goes to both slots as pairs, so a busy machine
        // slows both sides alike.
        let config = config_with_model_settings("", &onnx("v1"), None);
        let running = start(&config).await;
        let (client, admin) = (data(&running), admin(&running));
        let load = Load::start(&client, 4);
        let id = start_rollout(&admin, onnx_candidate("v2"), quick(strategy.clone())).await;
        let done = wait_phase(&admin, "torn_down", Duration::from_secs(60)).await;
        let (ok, failed, why) = load.finish().await;
        assert_eq!(failed, 0, "strategy {strategy}: {why:?}");
        assert!(ok > 50, "too little load to mean anything: {ok}");
        assert_eq!(live_version(&client).await, "v2");
        let status = admin.get("/api/v1/models/digits").await.unwrap().json();
        assert_eq!(
            status["slots"].as_array().unwrap().len(),
            1,
            "blue torn down: {status}"
        );
        let path: Vec<String> = transitions(&admin, id)
            .await
            .into_iter()
            .map(|t| t.1)
            .collect();
        let expected: &[&str] = match i {
            0 => &[
                "deploying",
                "warming_up",
                "validating",
                "switching",
                "observing",
                "promoted",
                "tearing_down",
                "torn_down",
            ],
            1 => &[
                "deploying",
                "warming_up",
                "validating",
                "canary",
                "canary",
                "canary_gates",
                "switching",
                "observing",
                "promoted",
                "tearing_down",
                "torn_down",
            ],
            _ => &[
                "deploying",
                "warming_up",
                "validating",
                "switching",
                "observing",
                "promoted",
                "tearing_down",
                "torn_down",
            ],
        };
        assert_eq!(path, expected, "strategy {strategy}");
        assert_eq!(done["outcome"], "v2 is live; the old version is stopped");
        stop(running).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_stops_a_bad_version_and_blue_keeps_serving() {
    let config = config_with(&onnx("v1"), None);
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let load = Load::start(&client, 2);
    // Same architecture, labels shifted by one: agreement and accuracy collapse.
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["abort_removes_green"] = true.into();
    start_rollout(&admin, onnx_candidate("v2-permuted"), settings).await;
    let failed = wait_phase(&admin, "failed", Duration::from_secs(60)).await;
    let (_, errors, why) = load.finish().await;
    assert_eq!(errors, 0, "{why:?}");
    assert!(
        failed["outcome"]
            .as_str()
            .unwrap()
            .starts_with("gates failed"),
        "{failed:#}"
    );
    assert_eq!(live_version(&client).await, "v1");
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(
        status["slots"].as_array().unwrap().len(),
        1,
        "the candidate was removed"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_degrades_after_the_switch_is_rolled_back_by_the_rules() {
    // Old and new run on the same kind of model server, so the latency rule compares like
    // with like (a Python server is rightly slower than in-process ONNX).
    let blue = format!(
        "version = \"v1\"\nkind = \"process\"\nworkdir = \"{}\"\ncommand = \"{} tests/python/onnx_model_server.py --port {{port}} --model models/digits/v1/model.onnx --version v1\"\nready_timeout_ms = 30000\nstop_grace_ms = 2000\n",
        repo_root().display(),
        python_word()
    );
    let mut config = config_with(&blue, None);
    // The candidate is a process slot sent through the API: the operator allows that.
    config.server.allow_commands = true;
    let fault = temp_dir("fault").join("now");
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let load = Load::start(&client, 3);
    let candidate = serde_json::json!({
        "version": "v2-py", "kind": "process", "workdir": repo_root(),
        "command": format!("{} tests/python/onnx_model_server.py --port {{port}} --model models/digits/v2/model.onnx --version v2-py --fail-when {}", python_word(), fault.display()),
        "ready_timeout_ms": 30000, "stop_grace_ms": 2000,
    });
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    // This test is about what happens after the switch, so only health is checked before.
    settings["evidence"] = serde_json::Value::Null;
    settings["observe_ms"] = 60_000.into();
    settings["rules"] =
        serde_json::json!({ "check_interval_ms": 200, "consecutive": 3, "min_requests": 5 });
    let id = start_rollout(&admin, candidate, settings).await;
    wait_phase(&admin, "observing", Duration::from_secs(60)).await;
    let (ok_before, failed_before, why) = load.finish().await;
    assert_eq!(failed_before, 0, "{why:?}");
    assert!(ok_before > 0);
    // The fault appears; the rules must see it and roll back on their own.
    std::fs::write(&fault, b"").unwrap();
    let load = Load::start(&client, 3);
    let back = wait_phase(&admin, "rolled_back", Duration::from_secs(30)).await;
    let (_, failed_during, _) = load.finish().await;
    // A server answering 500s fails the error rule, and teal's passive ejection takes its
    // only replica out, which fails the readiness rule: either may act first.
    let outcome = back["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("errors") || outcome.starts_with("ready"),
        "{back:#}"
    );
    // v1, warm beside it, answered what v2-py failed: no client saw the fault.
    assert_eq!(failed_during, 0, "failover");
    assert_eq!(live_version(&client).await, "v1");
    let path = transitions(&admin, id).await;
    assert_eq!(
        path.last().unwrap(),
        &("observing".to_string(), "rolled_back".to_string())
    );
    let metrics = admin.get("/metrics").await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains("teal_rollbacks_total{model=\"digits\"} 1"),
        "{text}"
    );
    // The rule acted on evidence, not on one sample: the failures it saw were counted.
    let failovers = metric_value(
        &text,
        "teal_failover_total{model=\"digits\",version=\"v2-py\"}",
    );
    assert!(failovers >= 3.0, "{failovers} failovers\n{text}");
    assert!(text.contains("teal_rollout_phase{model=\"digits\",phase=\"rolled_back\"} 1"));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_approval_abort_and_operator_commands_follow_the_phase() {
    let config = config_with(&onnx("v1"), None);
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["auto_switch"] = false.into();
    start_rollout(&admin, onnx_candidate("v2"), settings.clone()).await;
    wait_phase(&admin, "awaiting_approval", Duration::from_secs(60)).await;
    // A second rollout, a manual switch and a rollback are refused while it waits.
    let again = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": onnx_candidate("v2-reseed") }),
        )
        .await
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.error_message());
    let switch = admin
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({ "to": "green" }),
        )
        .await
        .unwrap();
    assert_eq!(switch.status, 409);
    assert!(
        switch.error_message().contains("teal promote"),
        "{}",
        switch.error_message()
    );
    let abort = admin
        .post_json("/api/v1/models/digits/abort", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(abort.status, 200, "{}", abort.error_message());
    assert_eq!(abort.json()["phase_name"], "aborted");
    assert_eq!(live_version(&client).await, "v1");
    let late = admin
        .post_json("/api/v1/models/digits/promote", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(late.status, 409);
    // Bad bodies are 400s that say what to send.
    for body in [&b"{"[..], b"{\"candidate\": 3}", b"{\"candidate\": {\"version\": \"v3\", \"kind\": \"onnx\", \"path\": \"x.onnx\"}, \"settings\": {\"observe_ms\": \"soon\"}}"] {
        let a = admin
            .send("POST", "/api/v1/models/digits/rollouts", &[("content-type", "application/json")], Bytes::copy_from_slice(body))
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{}", a.error_message());
    }
    let unknown = admin
        .post_json(
            "/api/v1/models/nope/rollouts",
            &serde_json::json!({ "candidate": onnx_candidate("v2") }),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    // A new rollout, approved by hand this time.
    start_rollout(&admin, onnx_candidate("v2"), settings).await;
    wait_phase(&admin, "awaiting_approval", Duration::from_secs(60)).await;
    let promote = admin
        .send(
            "POST",
            "/api/v1/models/digits/promote",
            &[("x-teal-actor", "ana@laptop")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(promote.status, 200, "{}", promote.error_message());
    wait_phase(&admin, "observing", Duration::from_secs(10)).await;
    assert_eq!(live_version(&client).await, "v2");
    let rolled = admin
        .post_json("/api/v1/models/digits/rollback", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(rolled.status, 200, "{}", rolled.error_message());
    assert_eq!(rolled.json()["phase_name"], "rolled_back");
    assert_eq!(live_version(&client).await, "v1");
    let history = admin
        .get("/api/v1/models/digits/history")
        .await
        .unwrap()
        .json();
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ana@laptop" && e["detail"]["to"] == "switching"),
        "the approval is in the audit log with its actor"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_agrees_with_the_rollouts_switch_time() {
    let config = config_with(&onnx("v1"), None);
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let load = Load::start(&client, 3);
    let id = start_rollout(
        &admin,
        onnx_candidate("v2"),
        quick(serde_json::json!({ "kind": "blue_green" })),
    )
    .await;
    wait_phase(&admin, "observing", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, _) = load.finish().await;
    assert_eq!(failed, 0);
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    let at = |to: &str| {
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["detail"]["rollout"] == id && e["detail"]["to"] == to)
            .unwrap()["at_ms"]
            .as_i64()
            .unwrap()
    };
    let (switching, observing) = (at("switching"), at("observing"));
    // Every request is in the state file's request log; read it directly.
    let db = rusqlite::Connection::open(config.server.state_dir.join("teal.db")).unwrap();
    let logged = eventually(Duration::from_secs(10), async || {
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM requests WHERE status = 200",
                [],
                |r| r.get(0),
            )
            .unwrap();
        n as u64 >= ok
    })
    .await;
    assert!(logged, "every answered request is in the request log");
    let wrong: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM requests WHERE model = 'digits' AND status = 200 AND ((at_ms < ?1 AND version != 'v1') OR (at_ms > ?2 AND version != 'v2'))",
            [switching, observing],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        wrong, 0,
        "before the switch only v1 served, after it only v2"
    );
    let (before, after): (i64, i64) = db
        .query_row(
            "SELECT SUM(at_ms < ?1), SUM(at_ms > ?2) FROM requests WHERE status = 200",
            [switching, observing],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        before > 0 && after > 0,
        "traffic on both sides: {before} {after}"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_gives_live_accuracy_per_version() {
    let config = config_with_model_settings("prediction_output = \"label\"", &onnx("v1"), None);
    let running = start(&config).await;
    let client = data(&running);
    let rows = holdout("digits");
    for (i, (features, label)) in rows.iter().take(30).enumerate() {
        let id = format!("fb-{i}");
        let body = Bytes::from(infer_body(std::slice::from_ref(features)).to_string());
        let a = client
            .send(
                "POST",
                "/v2/models/digits/infer",
                &[("x-request-id", &id)],
                body,
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        let fb = client
            .post_json(
                "/v2/models/digits/feedback",
                &serde_json::json!({ "request_id": id, "label": label }),
            )
            .await
            .unwrap();
        assert_eq!(fb.status, 200, "{}", fb.error_message());
        assert_eq!(fb.json()["version"], "v1");
        assert!(fb.json()["correct"].is_boolean());
    }
    let unknown = client
        .post_json(
            "/v2/models/digits/feedback",
            &serde_json::json!({ "request_id": "never-sent", "label": 3 }),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.error_message());
    let bad = client
        .post_json(
            "/v2/models/digits/feedback",
            &serde_json::json!({ "request": "x" }),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.error_message().contains("request_id"));
    let db = rusqlite::Connection::open(config.server.state_dir.join("teal.db")).unwrap();
    let (n, correct): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), SUM(correct) FROM feedback WHERE version = 'v1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, 30);
    let expected = reference_labels("digits", "v1")
        .iter()
        .zip(&rows)
        .take(30)
        .filter(|(p, (_, l))| *p == l)
        .count() as i64;
    assert_eq!(
        correct, expected,
        "correct means the logged prediction equals the label"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_hold_through_a_canary_rollout() {
    let config = config_with_model_settings("sticky_header = \"x-user\"", &onnx("v1"), None);
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let mut settings = quick(serde_json::json!({ "kind": "canary", "steps": [
        { "percent": 10, "pause_ms": null },
        { "percent": 50, "pause_ms": null },
    ] }));
    settings["evidence"] = serde_json::Value::Null;
    start_rollout(&admin, onnx_candidate("v2"), settings).await;
    wait_phase(&admin, "canary", Duration::from_secs(60)).await;
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let versions = async |client: &HttpClient| {
        let mut out = Vec::new();
        for u in &users {
            let a = client
                .send(
                    "POST",
                    "/v2/models/digits/infer",
                    &[("x-user", u)],
                    body.clone(),
                )
                .await
                .unwrap();
            out.push(a.header("x-teal-version").unwrap().to_string());
        }
        out
    };
    let at10 = versions(&client).await;
    assert_eq!(
        at10,
        versions(&client).await,
        "a session stays on its slot while the weight holds"
    );
    let green10 = at10.iter().filter(|v| *v == "v2").count();
    assert!(
        (20..=60).contains(&green10),
        "10% of 400 sessions, within tolerance: {green10}"
    );
    admin
        .post_json("/api/v1/models/digits/promote", &serde_json::json!({}))
        .await
        .unwrap();
    wait_phase(&admin, "canary", Duration::from_secs(5)).await;
    let at50 = versions(&client).await;
    for (before, after) in at10.iter().zip(&at50) {
        assert!(
            !(before == "v2" && after == "v1"),
            "raising the weight never moves a session back"
        );
    }
    let green50 = at50.iter().filter(|v| *v == "v2").count();
    assert!(
        (160..=240).contains(&green50),
        "50% of 400 sessions: {green50}"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_each_phase_resumes_the_same_phase_and_live_slot_without_lost_or_doubled_events()
{
    let dir = temp_dir("crash");
    let root = repo_root();
    let text = format!(
        "[server]\nstate_dir = \"{}\"\n\n[[model]]\nname = \"digits\"\n[model.rollout]\nauto_switch = false\nobserve_ms = \"1h\"\nkeep_warm_ms = \"1h\"\nrules = {{ check_interval_ms = 200 }}\nevidence = {{ holdout = \"{}\" }}\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"{}\"\n",
        dir.join("state").display(),
        root.join("models/digits/holdout.jsonl").display(),
        root.join("models/digits/v1/model.onnx").display(),
    );
    let config = dir.join("teal.toml");
    std::fs::write(&config, text).unwrap();
    let (data_port, admin_port) = (free_port(), free_port());
    let teal = serve(&config, data_port, admin_port);
    let id = start_rollout(&teal.admin, onnx_candidate("v2"), serde_json::json!({})).await;

    // Each stop: the phase to kill in, what is live there, and how to move on afterwards.
    let stops: [(&str, &str, Option<&str>); 3] = [
        ("awaiting_approval", "v1", Some("promote")),
        ("observing", "v2", Some("promote")),
        ("promoted", "v2", None),
    ];
    let mut teal = teal;
    for (phase, live, next) in stops {
        wait_phase(&teal.admin, phase, Duration::from_secs(60)).await;
        assert_eq!(live_version(&teal.data).await, live);
        let before = transitions(&teal.admin, id).await;
        kill9(teal);
        teal = serve(&config, data_port, admin_port);
        let state = teal
            .admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json();
        assert_eq!(
            state["phase_name"], phase,
            "resumed in the same phase: {state:#}"
        );
        assert_eq!(
            live_version(&teal.data).await,
            live,
            "the same version is live after the restart"
        );
        let after = transitions(&teal.admin, id).await;
        assert_eq!(
            after, before,
            "no event lost or written twice across the crash"
        );
        if let Some(verb) = next {
            let a = teal
                .admin
                .post_json(
                    &format!("/api/v1/models/digits/{verb}"),
                    &serde_json::json!({}),
                )
                .await
                .unwrap();
            assert_eq!(a.status, 200, "{}", a.error_message());
        }
    }
    // End the keep-warm window: blue is torn down and the rollout ends.
    let a = teal
        .admin
        .post_json("/api/v1/models/digits/promote", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.error_message());
    wait_phase(&teal.admin, "torn_down", Duration::from_secs(30)).await;
    kill9(teal);
    teal = serve(&config, data_port, admin_port);
    assert_eq!(
        live_version(&teal.data).await,
        "v2",
        "a finished rollout stays finished"
    );
    let status = teal
        .admin
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    assert_eq!(status["slots"].as_array().unwrap().len(), 1, "{status}");

    // A canary held at a manual step keeps its weight across a crash.
    let settings = serde_json::json!({ "strategy": { "kind": "canary", "steps": [{ "percent": 25, "pause_ms": null }] } });
    let canary = start_rollout(&teal.admin, onnx_candidate("v2-reseed"), settings).await;
    wait_phase(&teal.admin, "awaiting_approval", Duration::from_secs(60)).await;
    let a = teal
        .admin
        .post_json("/api/v1/models/digits/promote", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.error_message());
    wait_phase(&teal.admin, "canary", Duration::from_secs(10)).await;
    let before = transitions(&teal.admin, canary).await;
    kill9(teal);
    teal = serve(&config, data_port, admin_port);
    let state = teal
        .admin
        .get("/api/v1/models/digits/rollout")
        .await
        .unwrap()
        .json();
    assert_eq!(state["phase_name"], "canary");
    let status = teal
        .admin
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    assert_eq!(status["candidate_weight"], 2500, "{status}");
    assert_eq!(status["live_version"], "v2");
    assert_eq!(transitions(&teal.admin, canary).await, before);

    // The audit chain is whole after the crashes.
    let verify = teal.admin.get("/api/v1/audit/verify").await.unwrap().json();
    assert_eq!(verify["intact"], true, "{verify}");
    let counted = AtomicU64::new(0);
    for (from, to) in transitions(&teal.admin, id).await {
        counted.fetch_add(1, Ordering::Relaxed);
        assert_ne!(from, to);
    }
    assert!(counted.load(Ordering::Relaxed) >= 6);
    kill9(teal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_capture_off_validates_on_mirrored_traffic_instead_of_stopping() {
    // No holdout and nothing captured: the rollout mirrors live traffic for its evidence
    // rather than waiting, inconclusive, for an operator.
    let config = config_with(&onnx("v1"), None);
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let load = Load::start(&client, 2);
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["evidence"] = serde_json::json!({ "replay": 100 });
    let id = start_rollout(&admin, onnx_candidate("v2"), settings).await;
    wait_phase(&admin, "torn_down", Duration::from_secs(120)).await;
    let (_, failed, why) = load.finish().await;
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    stop(running).await;
    assert_eq!(failed, 0, "{why:?}");
    let passed = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["detail"]["rollout"] == id && e["detail"]["from"] == "validating")
        .unwrap_or_else(|| panic!("no end of validation in {history:#}"))
        .clone();
    assert_eq!(passed["detail"]["to"], "switching", "{passed:#}");
    let cause = passed["detail"]["cause"].as_str().unwrap();
    assert!(
        cause.contains("capture is off") && cause.contains("shadow"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_waiting_for_approval_says_why_in_its_status() {
    let config = config_with(&onnx("v1"), None);
    let running = start(&config).await;
    let admin = admin(&running);
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["auto_switch"] = false.into();
    start_rollout(&admin, onnx_candidate("v2"), settings).await;
    let state = wait_phase(&admin, "awaiting_approval", Duration::from_secs(60)).await;
    let waiting = state["waiting"].as_str().unwrap_or_default().to_string();
    assert!(waiting.contains("teal promote"), "{state:#}");
    // The same words in what `teal status` and `teal deploy --watch` print.
    let view: teal::routing::RolloutView = serde_json::from_value(state.clone()).unwrap();
    let shown = teal::cli::render_rollout(&view);
    assert!(shown.contains(&format!("waiting: {waiting}")), "{shown}");
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(status["rollout"]["waiting"], waiting.as_str(), "{status:#}");
    stop(running).await;
}
