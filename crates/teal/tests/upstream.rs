//! Upstream and process slots: teal in front of model servers it did not write or that it
//! starts itself; replicas that die; teardown that drains; deploys that fail safely.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use teal::core::config::{BackendConfig, RemoteConfig};

fn bodies(n: usize) -> Vec<Bytes> {
    holdout("digits")
        .into_iter()
        .take(n)
        .map(|(f, _)| Bytes::from(infer_body(&[f]).to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slots_switch_a_hundred_times_under_load_without_a_failure() {
    let (a, b) = (free_port(), free_port());
    let _replicas = (teal_replica(a, "v1"), teal_replica(b, "v2"));
    let config = config_with(
        &upstream("v1", &[format!("http://127.0.0.1:{a}")], ""),
        Some(&upstream("v2", &[format!("http://127.0.0.1:{b}")], "")),
    );
    let running = start(&config).await;
    let labels = [
        reference_labels("digits", "v1"),
        reference_labels("digits", "v2"),
    ];
    let run = flip_under_load(
        &data(&running),
        &admin(&running),
        "digits",
        bodies(16),
        16,
        100,
        move |answer, generation, row| {
            let version = if generation % 2 == 1 { "v1" } else { "v2" };
            let want = labels[usize::from(version == "v2")][row];
            let body = answer.json();
            (answer.header("x-teal-version") != Some(version)
                || body["outputs"][0]["data"][0].as_i64() != Some(want))
            .then(|| {
                format!(
                    "generation {generation}: {:?} label {}",
                    answer.header("x-teal-version"),
                    body["outputs"][0]["data"][0]
                )
            })
        },
    )
    .await;
    stop(running).await;
    assert!(
        run.failures.is_empty(),
        "{} of {} failed: {:?}",
        run.failures.len(),
        run.requests,
        &run.failures[..run.failures.len().min(5)]
    );
    assert!(run.requests >= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_answering_is_retried_elsewhere_then_ejected() {
    let (live, doomed) = (free_port(), free_port());
    let _replica = teal_replica(live, "v1");
    let mut doomed_replica = Some(teal_replica(doomed, "v1"));
    // No readiness checks after start-up: only passive ejection can notice the dead replica.
    let settings = "balance = \"round_robin\"\neject_after_failures = 3\neject_ms = 60000\nhealth_interval_ms = 600000";
    let config = config_with(
        &upstream(
            "v1",
            &[
                format!("http://127.0.0.1:{doomed}"),
                format!("http://127.0.0.1:{live}"),
            ],
            settings,
        ),
        None,
    );
    let running = start(&config).await;
    drop(doomed_replica.take());
    let client = data(&running);
    let labels = reference_labels("digits", "v1");
    for (row, body) in bodies(40).into_iter().enumerate() {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &[], body)
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            200,
            "request {row}: {}",
            answer.error_message()
        );
        assert_eq!(
            answer.json()["outputs"][0]["data"][0].as_i64(),
            Some(labels[row])
        );
    }
    let status = admin(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    let replicas = status["slots"][0]["replicas"].as_array().unwrap().clone();
    let dead = replicas
        .iter()
        .find(|r| r["url"].as_str().unwrap().ends_with(&doomed.to_string()))
        .unwrap();
    assert_eq!(dead["ejected"], true, "{dead}");
    assert_eq!(dead["failures"], 3, "no more attempts once ejected: {dead}");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_not_ready_gets_no_traffic() {
    let (live, dead) = (free_port(), free_port());
    let _replica = teal_replica(live, "v1");
    let config = config_with(
        &upstream(
            "v1",
            &[
                format!("http://127.0.0.1:{dead}"),
                format!("http://127.0.0.1:{live}"),
            ],
            "balance = \"round_robin\"",
        ),
        None,
    );
    let running = start(&config).await;
    for body in bodies(10) {
        assert_eq!(
            data(&running)
                .send("POST", "/v2/models/digits/infer", &[], body)
                .await
                .unwrap()
                .status,
            200
        );
    }
    let status = admin(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    let dead_one = status["slots"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"].as_str().unwrap().ends_with(&dead.to_string()))
        .unwrap()
        .clone();
    assert_eq!(
        (dead_one["ready"].clone(), dead_one["requests"].clone()),
        (serde_json::json!(false), serde_json::json!(0)),
        "{dead_one}"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_costs_at_most_the_requests_in_flight_on_it() {
    let (a, b) = (free_port(), free_port());
    let mut first = Some(teal_replica(a, "v1"));
    let _second = teal_replica(b, "v1");
    let settings = "eject_after_failures = 2\neject_ms = 300\nhealth_interval_ms = 100";
    let config = config_with(
        &upstream(
            "v1",
            &[
                format!("http://127.0.0.1:{a}"),
                format!("http://127.0.0.1:{b}"),
            ],
            settings,
        ),
        None,
    );
    let running = start(&config).await;
    let client = data(&running);
    let bodies = std::sync::Arc::new(bodies(32));
    const CLIENTS: usize = 8;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, bodies, sent, stop_flag) = (
            client.clone(),
            bodies.clone(),
            sent.clone(),
            stop_flag.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = c;
            while !stop_flag.load(std::sync::atomic::Ordering::SeqCst) && i < 100_000 {
                let answer = client
                    .send(
                        "POST",
                        "/v2/models/digits/infer",
                        &[],
                        bodies[i % bodies.len()].clone(),
                    )
                    .await;
                match answer {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) => failures.push(format!("{}: {}", a.status, a.error_message())),
                    Err(e) => failures.push(e.to_string()),
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                i += CLIENTS;
            }
            failures
        }));
    }
    let reached = |n: u64| {
        let sent = sent.clone();
        async move {
            eventually(Duration::from_secs(30), async || {
                sent.load(std::sync::atomic::Ordering::SeqCst) >= n
            })
            .await
        }
    };
    assert!(reached(500).await);
    drop(first.take()); // SIGKILL, with its whole process group.
    let at_kill = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reached(at_kill + 1000).await);
    stop_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    println!(
        "replica killed under load: {} of {} requests failed: {failures:?}",
        failures.len(),
        sent.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        failures.len() <= CLIENTS,
        "only requests in flight on the killed replica may fail: {failures:?}"
    );

    // Restarted on the same port, the replica is re-admitted once its readiness check passes.
    let _back = teal_replica(a, "v1");
    let admin = admin(&running);
    let readmitted = eventually(Duration::from_secs(20), async || {
        let status = admin.get("/api/v1/models/digits").await.unwrap().json();
        status["slots"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ready"] == true && r["ejected"] == false)
    })
    .await;
    assert!(readmitted, "the restarted replica was not re-admitted");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_lets_requests_in_flight_finish_then_stops_the_process() {
    let config = config_with(
        &onnx("v1"),
        Some(&python_server("slow", "v2", "--delay-ms 400")),
    );
    let running = start(&config).await;
    let client = data(&running);
    let admin = admin(&running);
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let pid = status["slots"][1]["process"]["pid"].as_u64().unwrap();

    let mut requests = Vec::new();
    for body in bodies(6) {
        let client = client.clone();
        requests.push(tokio::spawn(async move {
            client
                .send(
                    "POST",
                    "/v2/models/digits/infer",
                    &[("x-teal-slot", "green")],
                    body,
                )
                .await
                .unwrap()
        }));
    }
    let all_in = eventually(Duration::from_secs(10), async || {
        admin.get("/api/v1/models/digits").await.unwrap().json()["slots"][1]["in_flight"] == 6
    })
    .await;
    assert!(all_in, "the six requests never were in flight together");
    let teardown = admin
        .post_json(
            "/api/v1/models/digits/teardown",
            &serde_json::json!({"slot": "green"}),
        )
        .await
        .unwrap();
    assert_eq!(teardown.status, 200, "{}", teardown.error_message());
    assert_eq!(teardown.json()["in_flight_at_start"], 6);
    assert_eq!(teardown.json()["abandoned"], 0);
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.error_message());
        assert_eq!(answer.header("x-teal-version"), Some("slow"));
    }
    let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
    assert!(gone, "the slot's process {pid} is still running");
    let after = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("x-teal-slot", "green")],
            bodies(1).remove(0),
        )
        .await
        .unwrap();
    assert_eq!(
        after.status,
        404,
        "green is gone: {}",
        after.error_message()
    );
    let live = admin
        .post_json(
            "/api/v1/models/digits/teardown",
            &serde_json::json!({"slot": "blue"}),
        )
        .await
        .unwrap();
    assert_eq!(live.status, 409, "the live slot cannot be torn down");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_that_fail_leave_the_live_slot_serving_and_a_good_one_lands_in_standby() {
    let mut config = config_with(&onnx("v1"), None);
    // Process slots are sent through the API here: the operator allows that.
    config.server.allow_commands = true;
    let running = start(&config).await;
    let admin = admin(&running);
    let client = data(&running);
    let row = bodies(1).remove(0);

    let exits = admin
        .post_json("/api/v1/models/digits/deploy", &serde_json::json!({"version": "v9", "kind": "process", "command": "python3 -c \"print('cannot load weights'); raise SystemExit(3)\""}))
        .await
        .unwrap();
    assert_eq!(exits.status, 422);
    assert!(
        exits.error_message().contains("exited")
            && exits.error_message().contains("cannot load weights"),
        "{}",
        exits.error_message()
    );

    let unreachable = admin
        .post_json("/api/v1/models/digits/deploy", &serde_json::json!({"version": "v9", "kind": "upstream", "urls": [format!("http://127.0.0.1:{}", free_port())], "ready_timeout_ms": 300}))
        .await
        .unwrap();
    assert_eq!(unreachable.status, 422);
    assert!(
        unreachable
            .error_message()
            .contains("no replica became ready"),
        "{}",
        unreachable.error_message()
    );

    let missing = admin
        .post_json(
            "/api/v1/models/digits/deploy",
            &serde_json::json!({"version": "v9", "kind": "onnx", "path": "/nonexistent.onnx"}),
        )
        .await
        .unwrap();
    assert_eq!(missing.status, 422);
    let garbled = admin
        .post_json(
            "/api/v1/models/digits/deploy",
            &serde_json::json!({"version": "v9", "kind": "tensorflow"}),
        )
        .await
        .unwrap();
    assert_eq!(garbled.status, 400);
    let same = admin.post_json("/api/v1/models/digits/deploy", &serde_json::json!({"version": "v1", "kind": "onnx", "path": repo_root().join("models/digits/v1/model.onnx")})).await.unwrap();
    assert_eq!(same.status, 400, "{}", same.error_message());

    let live = client
        .send("POST", "/v2/models/digits/infer", &[], row.clone())
        .await
        .unwrap();
    assert_eq!(
        (live.status, live.header("x-teal-version")),
        (200, Some("v1")),
        "the live slot is untouched"
    );

    // A simple-JSON model server, started by teal, deployed into the standby slot.
    let mut slot: serde_json::Value = serde_json::json!({
        "version": "v2-json",
        "kind": "process",
        "protocol": "json",
        "workdir": repo_root(),
        "command": format!("{} tests/python/onnx_model_server.py --port {{port}} --model models/digits/v2/model.onnx --protocol json", python_word()),
    });
    let deployed = admin
        .post_json("/api/v1/models/digits/deploy", &slot)
        .await
        .unwrap();
    assert_eq!(deployed.status, 200, "{}", deployed.error_message());
    assert_eq!(deployed.json()["slot"], "green");
    let labels = reference_labels("digits", "v2");
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(20)
        .map(|(f, _)| f)
        .collect();
    let predict = client
        .send(
            "POST",
            "/v1/models/digits/predict",
            &[
                ("x-teal-slot", "green"),
                ("content-type", "application/json"),
            ],
            Bytes::from(serde_json::json!({"features": rows}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(predict.status, 200, "{}", predict.error_message());
    assert_eq!(
        predict.json()["predictions"],
        serde_json::json!(labels[..20])
    );
    let v2 = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("x-teal-slot", "green")],
            row.clone(),
        )
        .await
        .unwrap();
    assert_eq!(v2.json()["outputs"][0]["name"], "prediction");
    assert_eq!(v2.json()["outputs"][0]["data"][0].as_i64(), Some(labels[0]));

    // Deploying again replaces the standby and stops the old one.
    slot["version"] = "v2-onnx".into();
    let replaced = admin.post_json("/api/v1/models/digits/deploy", &serde_json::json!({"version": "v2-onnx", "kind": "onnx", "path": repo_root().join("models/digits/v2/model.onnx")})).await.unwrap();
    assert_eq!(replaced.json()["replaced"], "v2-json");
    let switched = switch_digits(&admin, "green").await;
    assert_eq!(switched.json()["to_version"], "v2-onnx");
    stop(running).await;
}

#[test]
fn remote_config_defaults_are_what_the_docs_say() {
    let config = config_with(
        &upstream("v1", &["http://127.0.0.1:1".to_string()], ""),
        None,
    );
    let BackendConfig::Upstream(RemoteConfig {
        timeout_ms,
        eject_after_failures,
        ..
    }) = &config.models[0].blue.as_ref().unwrap().backend
    else {
        panic!("upstream")
    };
    assert_eq!((*timeout_ms, *eject_after_failures), (30_000, 5));
}
