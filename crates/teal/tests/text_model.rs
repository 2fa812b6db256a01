//! The bundled text classifier (`models/reviews`: TF-IDF and logistic regression, exported
//! by skl2onnx with a string input): served in-process with BYTES tensors over REST and gRPC,
//! checked against its reference, and put through the gates on its holdout.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::rollouts::*;
use common::*;

/// An in-process slot of a bundled reviews version (or a variant under `variants/`).
fn reviews(version: &str) -> String {
    let dir = if version.starts_with("v2-") {
        format!("variants/{version}")
    } else {
        version.to_string()
    };
    format!(
        "version = \"{version}\"\nkind = \"onnx\"\npath = \"models/reviews/{dir}/model.onnx\"\n"
    )
}

fn holdout_texts() -> Vec<String> {
    std::fs::read_to_string(repo_root().join("models/reviews/holdout.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            row["features"][0].as_str().unwrap().to_string()
        })
        .collect()
}

fn reference_labels(version: &str) -> Vec<i64> {
    let text = std::fs::read_to_string(
        repo_root().join(format!("models/reviews/{version}/reference.json")),
    )
    .unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    reference["outputs"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_model_answers_its_reference_over_rest_and_grpc() {
    let mut config = config_with(&reviews("v1"), Some(&reviews("v2")));
    config.server.grpc_listen = Some("127.0.0.1:0".into());
    let running = start(&config).await;
    let data = data(&running);

    // The metadata says BYTES.
    let metadata = data.get("/v2/models/digits").await.unwrap().json();
    assert_eq!(metadata["inputs"][0]["datatype"], "BYTES", "{metadata}");
    assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 1]));

    // The whole holdout in one JSON request, strings as data.
    let texts = holdout_texts();
    let body = serde_json::json!({"inputs": [{
        "name": "input", "shape": [texts.len(), 1], "datatype": "BYTES", "data": texts,
    }]});
    let answer = data
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let labels: Vec<i64> = answer.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(labels, reference_labels("v1"));

    // The simple endpoint and KServe V1 take a row of one string.
    let predict =
        serde_json::json!({"features": [["great sturdy product"], ["broken and useless"]]});
    let answer = data
        .send(
            "POST",
            "/v1/models/digits/predict",
            &[],
            Bytes::from(predict.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(answer.json()["predictions"], serde_json::json!([1, 0]));
    let v1 = serde_json::json!({"instances": [["love it, works great"]]});
    let answer = data
        .send(
            "POST",
            "/v1/models/digits:predict",
            &[],
            Bytes::from(v1.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());

    // Bytes that are not UTF-8 text, in binary form: a 400 naming the element.
    let head = r#"{"inputs":[{"name":"input","shape":[1,1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
    let mut body = head.as_bytes().to_vec();
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&[0xff, 0xfe]);
    let length = head.len().to_string();
    let answer = data
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[
                ("content-type", "application/octet-stream"),
                ("inference-header-content-length", &length),
            ],
            Bytes::from(body),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert!(
        answer.error_message().contains("UTF-8"),
        "{}",
        answer.error_message()
    );

    // tritonclient over HTTP (binary and JSON) and gRPC, unchanged.
    let args = [
        running.data_addr.to_string(),
        running.grpc_addr.unwrap().to_string(),
        repo_root().display().to_string(),
    ];
    let checked = python_check("text_model_check.py", &args, Duration::from_secs(120)).await;
    stop(running).await;
    eprintln!("{checked}");
}

fn reviews_holdout() -> serde_json::Value {
    serde_json::json!({ "holdout": repo_root().join("models/reviews/holdout.jsonl") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_candidates_go_through_the_gates_on_text_inputs() {
    // v2 (words and word pairs) is as good as v1: it passes every gate.
    let running = start(&config_with(&reviews("v1"), Some(&reviews("v2")))).await;
    let report = validate(&admin(&running), reviews_holdout()).await;
    stop(running).await;
    assert_eq!(report["samples"], 400, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    // Trained on flipped labels: it loads, runs and is wrong; agreement and accuracy stop it.
    let running = start(&config_with(&reviews("v1"), Some(&reviews("v2-flipped")))).await;
    let report = validate(&admin(&running), reviews_holdout()).await;
    stop(running).await;
    assert_eq!(report["verdict"], "fail", "{report:#}");
    for gate in ["agreement", "accuracy"] {
        assert_eq!(verdict_of(&report, gate), "fail", "{gate} in {report:#}");
    }
}

/// Rolls the test model from reviews v1 to `candidate` under text traffic (one holdout review
/// per request) until the rollout reaches `phase`: its state, the version that answers then,
/// the requests answered and the failures.
async fn rollout_to(candidate: &str, phase: &str) -> (serde_json::Value, String, u64, Vec<String>) {
    let running = start(&config_with(&reviews("v1"), None)).await;
    let (client, admin) = (data(&running), admin(&running));
    let bodies = holdout_texts()
        .into_iter()
        .map(|t| Bytes::from(text_body(&[t]).to_string()))
        .collect();
    let load = Load::with_bodies(&client, 3, bodies);
    let dir = if candidate.starts_with("v2-") {
        format!("variants/{candidate}")
    } else {
        candidate.to_string()
    };
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["evidence"]["holdout"] = repo_root()
        .join("models/reviews/holdout.jsonl")
        .display()
        .to_string()
        .into();
    settings["abort_removes_green"] = true.into();
    let candidate = serde_json::json!({
        "version": candidate,
        "kind": "onnx",
        "path": repo_root().join(format!("models/reviews/{dir}/model.onnx")),
    });
    start_rollout(&admin, candidate, settings).await;
    let last = wait_phase(&admin, phase, Duration::from_secs(60)).await;
    let (ok, _, failures) = load.finish().await;
    let live = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[],
            Bytes::from(text_body(&["works great".into()]).to_string()),
        )
        .await
        .unwrap();
    let version = live.header("x-teal-version").unwrap_or("").to_string();
    stop(running).await;
    (last, version, ok, failures)
}

/// A V2 request of `texts`, one per row.
fn text_body(texts: &[String]) -> serde_json::Value {
    serde_json::json!({"inputs": [{
        "name": "input", "shape": [texts.len(), 1], "datatype": "BYTES", "data": texts,
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_model_rolls_out_under_text_traffic_and_a_wrong_one_is_stopped() {
    let (_, live, ok, failures) = rollout_to("v2", "torn_down").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > 50, "too little load to mean anything: {ok}");
    assert_eq!(live, "v2");
    let (failed, live, _, failures) = rollout_to("v2-flipped", "failed").await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        failed["outcome"]
            .as_str()
            .unwrap()
            .starts_with("gates failed"),
        "{failed:#}"
    );
    assert_eq!(live, "v1");
}
