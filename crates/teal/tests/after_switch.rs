//! After the switch, with real slots and real load: the output watch rolls back a version
//! whose predictions moved, a harmless version is promoted by the sequential rules, and a
//! bake without traffic is not taken for a good one.

mod common;

use std::time::Duration;

use common::rollouts::*;
use common::*;

/// Settings for a rollout checked only after its switch: the gates are skipped (no
/// evidence), so what stops a bad version is the rules.
fn after_the_switch_only(observe_ms: u64) -> serde_json::Value {
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["evidence"] = serde_json::Value::Null;
    settings["observe_ms"] = observe_ms.into();
    settings["on_inconclusive"] = "wait".into();
    settings["rules"] = serde_json::json!({ "check_interval_ms": 200 });
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_predictions_moved_is_rolled_back_by_the_output_rule() {
    // v2-permuted answers every digit with the next label: it loads, is ready, fast and never
    // fails, so only the outputs can tell.
    let running = start(&config_with(&onnx("v1"), None)).await;
    let (client, admin) = (data(&running), admin(&running));
    let load = Load::start(&client, 2);
    start_rollout(
        &admin,
        onnx_candidate("v2-permuted"),
        after_the_switch_only(60_000),
    )
    .await;
    let back = wait_phase(&admin, "rolled_back", Duration::from_secs(60)).await;
    let (_, failed, why) = load.finish().await;
    assert_eq!(failed, 0, "{why:?}");
    let outcome = back["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("outputs: predictions differ"),
        "{back:#}"
    );
    assert_eq!(live_version(&client).await, "v1");
    // Both versions' predictions are exported per class.
    let text = String::from_utf8_lossy(&admin.get("/metrics").await.unwrap().body).to_string();
    for version in ["v1", "v2-permuted"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!(
                "teal_predictions_total{{model=\"digits\",version=\"{version}\",class="
            ))),
            "no predictions of {version}:\n{text}"
        );
    }
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regressor_whose_answers_moved_is_rolled_back_by_the_output_rule() {
    // diabetes v2-offset is v1's recipe trained on targets moved up by 60: it loads, is
    // ready, fast and never fails, and answers every input 60 too high. It names no class,
    // so only the numbers it answers can tell.
    let model = |version: &str, dir: &str| {
        format!(
            "version = \"{version}\"\nkind = \"onnx\"\npath = \"models/diabetes/{dir}/model.onnx\"\n"
        )
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[[model]]\nname = \"diabetes\"\n[model.blue]\n{}",
        model("v1", "v1")
    );
    let mut config = teal::core::config::Config::parse(&text).unwrap();
    config.resolve_paths(&repo_root());
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let rows: Vec<Vec<f64>> =
        serde_json::from_value(reference("diabetes", "v1")["inputs"]["input"].clone()).unwrap();
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|c| {
            let (client, rows, stop_load) = (client.clone(), rows.clone(), stop_load.clone());
            tokio::spawn(async move {
                let (mut i, mut failed) = (c * 37, Vec::new());
                while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let body = infer_body(std::slice::from_ref(&rows[i % rows.len()]));
                    let answer = client
                        .send(
                            "POST",
                            "/v2/models/diabetes/infer",
                            &[],
                            body.to_string().into(),
                        )
                        .await
                        .unwrap();
                    if answer.status != 200 {
                        failed.push(answer.error_message());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failed
            })
        })
        .collect();
    let mut settings = after_the_switch_only(60_000);
    settings["evidence"] = serde_json::Value::Null;
    let candidate = serde_json::json!({
        "version": "v2-offset",
        "kind": "onnx",
        "path": repo_root().join("models/diabetes/variants/v2-offset/model.onnx"),
    });
    let started = admin
        .post_json(
            "/api/v1/models/diabetes/rollouts",
            &serde_json::json!({ "candidate": candidate, "settings": settings }),
        )
        .await
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.error_message());
    let mut last = serde_json::Value::Null;
    let back = eventually(Duration::from_secs(60), async || {
        last = admin
            .get("/api/v1/models/diabetes/rollout")
            .await
            .unwrap()
            .json();
        last["phase_name"] == "rolled_back"
    })
    .await;
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failed = Vec::new();
    for task in load {
        failed.extend(task.await.unwrap());
    }
    assert!(back, "never rolled back: {last:#}");
    assert!(failed.is_empty(), "{failed:?}");
    let outcome = last["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("outputs: the candidate answers higher in ")
            || outcome.starts_with("outputs: answers over "),
        "{last:#}"
    );
    println!("{outcome}");
    // Both versions' answers are exported as histograms of their values.
    let text = String::from_utf8_lossy(&admin.get("/metrics").await.unwrap().body).to_string();
    for version in ["v1", "v2-offset"] {
        let count = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "teal_prediction_value_count{{model=\"diabetes\",version=\"{version}\"}} "
                ))
            })
            .and_then(|n| n.parse::<u64>().ok());
        assert!(
            count.is_some_and(|n| n > 0),
            "no values of {version}:\n{text}"
        );
        let infinite = text.lines().any(|l| {
            l.starts_with("teal_prediction_value_bucket{")
                && l.contains("le=\"+Inf\"")
                && l.contains(&format!("model=\"diabetes\",version=\"{version}\""))
        });
        assert!(infinite, "no +Inf bucket for {version}:\n{text}");
    }
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_model_under_load_is_promoted_by_the_sequential_rules() {
    // v1 again, as a new version: every rule's evidence stays under its bound however often
    // it is read (every 200 ms over a 6 s bake, about 30 looks).
    let running = start(&config_with(&onnx("v1"), None)).await;
    let (client, admin) = (data(&running), admin(&running));
    let load = Load::start(&client, 2);
    let mut candidate = onnx_candidate("v1");
    candidate["version"] = "v1-again".into();
    let id = start_rollout(&admin, candidate, after_the_switch_only(6_000)).await;
    let done = wait_phase(&admin, "torn_down", Duration::from_secs(60)).await;
    let (_, failed, why) = load.finish().await;
    assert_eq!(failed, 0, "{why:?}");
    let path = transitions(&admin, id).await;
    assert!(
        path.iter()
            .any(|(from, to)| from == "observing" && to == "promoted"),
        "{path:?}"
    );
    // The bake judged on evidence: pairs sent to both versions at once, and requests.
    let checks = done["last_check"].as_array().unwrap();
    let detail = |rule: &str| {
        checks
            .iter()
            .find(|c| c["rule"] == rule)
            .map(|c| c["detail"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert!(
        detail("latency").contains("pairs sent to both at once"),
        "{checks:?}"
    );
    assert!(
        detail("outputs").contains("predictions differ in 0 of"),
        "{checks:?}"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_without_traffic_waits_for_an_operator_then_promote_goes_on() {
    let running = start(&config_with(&onnx("v1"), None)).await;
    let admin = admin(&running);
    start_rollout(&admin, onnx_candidate("v2"), after_the_switch_only(1_000)).await;
    // No requests at all: when the bake ends, the rollout says why it waits.
    let mut last = serde_json::Value::Null;
    let held = eventually(Duration::from_secs(60), async || {
        last = admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json();
        last["waiting"].is_string()
    })
    .await;
    assert!(held, "{last:#}");
    assert_eq!(last["phase_name"], "observing", "{last:#}");
    let waiting = last["waiting"].as_str().unwrap();
    assert!(
        waiting.contains("without enough evidence") && waiting.contains("teal promote"),
        "{waiting}"
    );
    assert!(last["next_at_ms"].is_null(), "a held bake has no deadline");
    let promote = admin
        .post_json("/api/v1/models/digits/promote", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(promote.status, 200, "{}", promote.error_message());
    wait_phase(&admin, "torn_down", Duration::from_secs(30)).await;
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_and_windows_out_of_range_are_refused_with_the_field_named() {
    let running = start(&config_with(&onnx("v1"), None)).await;
    let admin = admin(&running);
    for (field, value, named) in [
        (
            "rules",
            serde_json::json!({ "baseline_share": 1.5 }),
            "rules.baseline_share",
        ),
        ("rules", serde_json::json!({ "alpha": 0.0 }), "rules.alpha"),
        (
            "rules",
            serde_json::json!({ "max_disagreement": -0.1 }),
            "rules.max_disagreement",
        ),
        ("max_extensions", serde_json::json!(1000), "max_extensions"),
    ] {
        let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
        settings[field] = value;
        let answer = admin
            .post_json(
                "/api/v1/models/digits/rollouts",
                &serde_json::json!({ "candidate": onnx_candidate("v2"), "settings": settings }),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 400, "{named}: {}", answer.error_message());
        assert!(
            answer.error_message().contains(named),
            "{named}: {}",
            answer.error_message()
        );
    }
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["on_inconclusive"] = "sometimes".into();
    let answer = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": onnx_candidate("v2"), "settings": settings }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 400, "{}", answer.error_message());
    assert!(
        answer.error_message().contains("sometimes") && answer.error_message().contains("extend"),
        "{}",
        answer.error_message()
    );
    stop(running).await;
}
