//! Dynamic batching of in-process models (`[model.batching]`): requests that arrive together
//! run as one call, and each caller gets exactly the answer it would have had alone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::rollouts::metric_value;
use common::*;

/// Every bundled model file (each version and variant), with its model's rows: the holdout's
/// features where the model has a holdout, else the inputs of the version's reference.
fn bundled_models() -> Vec<(String, String, Vec<serde_json::Value>)> {
    let root = repo_root().join("models");
    let mut found = Vec::new();
    let mut models: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("v1/model.onnx").is_file())
        .collect();
    models.sort();
    for model in models {
        let name = model.file_name().unwrap().to_str().unwrap().to_string();
        let holdout = model.join("holdout.jsonl");
        let rows: Vec<serde_json::Value> = if holdout.is_file() {
            std::fs::read_to_string(&holdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["features"].clone())
                .collect()
        } else {
            let reference = reference(&name, "v1");
            let inputs = reference["inputs"].as_object().unwrap();
            assert_eq!(inputs.len(), 1, "{name}: one input");
            inputs.values().next().unwrap().as_array().unwrap().clone()
        };
        let mut files = Vec::new();
        for dir in ["", "variants/"] {
            let Ok(entries) = std::fs::read_dir(model.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.path().join("model.onnx");
                if file.is_file() {
                    let version = entry.file_name().to_str().unwrap().to_string();
                    files.push((version, file.display().to_string()));
                }
            }
        }
        files.sort();
        for (version, file) in files {
            found.push((format!("{name}-{version}"), file, rows.clone()));
        }
    }
    found
}

/// Requests of 1 to 5 rows, cut from `rows` in a fixed pattern.
fn chunks(rows: &[serde_json::Value]) -> Vec<Vec<serde_json::Value>> {
    let sizes = [1, 1, 2, 1, 3, 1, 1, 5, 1, 4];
    let mut out = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= rows.len() {
            break;
        }
        let end = (at + size).min(rows.len());
        out.push(rows[at..end].to_vec());
        at = end;
    }
    out
}

/// Sends every body to `path`, `clients` at a time, and returns the answers in order.
async fn send_all(
    data: &teal::cli::client::HttpClient,
    path: &str,
    bodies: Arc<Vec<Bytes>>,
    clients: usize,
) -> Vec<teal::cli::client::Answer> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (data, bodies, next, path) =
                (data.clone(), bodies.clone(), next.clone(), path.to_string());
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= bodies.len() {
                        return got;
                    }
                    let answer = tokio::time::timeout(
                        Duration::from_secs(60),
                        data.send("POST", &path, &[], bodies[i].clone()),
                    )
                    .await
                    .expect("a request hung")
                    .unwrap();
                    got.push((i, answer));
                }
            })
        })
        .collect();
    let mut answers: Vec<(usize, teal::cli::client::Answer)> = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_equal_unbatched_ones_bit_for_bit_on_every_bundled_model() {
    let models = bundled_models();
    assert!(models.len() >= 10, "{} model files", models.len());
    // Each file twice: alone, and batched (up to 16 rows a call, the first request waiting
    // up to 100 ms for others). One worker each, so a batched call is the only way two
    // requests share a session.
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndrain_ms = 5000\n",
    );
    for (name, file, _) in &models {
        for (suffix, batching) in [
            ("", ""),
            (
                "-batched",
                "[model.batching]\nmax_batch_size = 16\nmax_queue_delay_us = 100000\n",
            ),
        ] {
            let reference = file.replace("model.onnx", "reference.json");
            text.push_str(&format!(
                "\n[[model]]\nname = \"{name}{suffix}\"\n{batching}[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"{file}\"\nreference = \"{reference}\"\nworkers = 1\n"
            ));
        }
    }
    let mut config = teal::core::config::Config::parse(&text).unwrap();
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    let running = start(&config).await;
    let (data, admin) = (data(&running), admin(&running));
    // A scrape first: it resolves every version's series, which the workers record into.
    admin.get("/metrics").await.unwrap();
    let (mut batched_calls, mut batched_requests, mut batched_models) = (0.0, 0, 0);
    for (name, _, rows) in &models {
        let metadata = data
            .get(&format!("/v2/models/{name}"))
            .await
            .unwrap()
            .json();
        let input = &metadata["inputs"][0];
        let bodies: Vec<Bytes> = chunks(rows)
            .into_iter()
            .map(|chunk| {
                let width = chunk[0].as_array().map_or(1, Vec::len);
                let body = serde_json::json!({"inputs": [{
                    "name": input["name"], "datatype": input["datatype"],
                    "shape": [chunk.len(), width], "data": chunk,
                }]});
                Bytes::from(body.to_string())
            })
            .collect();
        let bodies = Arc::new(bodies);
        let alone = send_all(
            &data,
            &format!("/v2/models/{name}/infer"),
            bodies.clone(),
            4,
        )
        .await;
        let batched = send_all(
            &data,
            &format!("/v2/models/{name}-batched/infer"),
            bodies.clone(),
            16,
        )
        .await;
        for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
            assert_eq!(a.status, 200, "{name} request {i}: {}", a.error_message());
            assert_eq!(b.status, 200, "{name} request {i}: {}", b.error_message());
            // Floats are written as the shortest text that reads back as the same bits, so
            // equal JSON is equal bits.
            assert_eq!(
                a.json()["outputs"],
                b.json()["outputs"],
                "{name} request {i}: batched answer differs"
            );
        }
        let metrics =
            String::from_utf8_lossy(&admin.get("/metrics").await.unwrap().body).into_owned();
        let labels = format!("{{model=\"{name}-batched\",version=\"v1\"}}");
        let rows_run = metric_value(&metrics, &format!("teal_batch_rows_sum{labels}"));
        let calls = metric_value(&metrics, &format!("teal_batch_rows_count{labels}"));
        assert_eq!(
            rows_run,
            rows.len() as f64,
            "{name}: every row ran exactly once"
        );
        // The statistics extension counts the same calls: rows as inferences, calls as
        // executions, each request's queue and call time, and the calls by their rows.
        let stats = data
            .get(&format!("/v2/models/{name}-batched/versions/v1/stats"))
            .await
            .unwrap()
            .json();
        let entry = &stats["model_stats"][0];
        assert_eq!(entry["inference_count"], rows.len(), "{name}: {entry}");
        assert_eq!(
            entry["execution_count"].as_f64(),
            Some(calls),
            "{name}: {entry}"
        );
        let timed = &entry["inference_stats"];
        assert_eq!(timed["queue"]["count"], bodies.len(), "{name}: {entry}");
        assert_eq!(
            timed["compute_infer"]["count"],
            bodies.len(),
            "{name}: {entry}"
        );
        assert!(
            timed["compute_infer"]["ns"].as_u64() > Some(0),
            "{name}: {entry}"
        );
        let by_rows = entry["batch_stats"].as_array().unwrap();
        let rows_in_calls: u64 = by_rows
            .iter()
            .map(|b| {
                b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap()
            })
            .sum();
        assert_eq!(rows_in_calls, rows.len() as u64, "{name}: {entry}");
        // Batching is on unless the model computes a row differently in a batch than alone
        // (ONNX Runtime's linear models take another path for one row), which teal found when
        // it loaded the model and says.
        let status = admin
            .get(&format!("/api/v1/models/{name}-batched"))
            .await
            .unwrap()
            .json();
        let execution = &status["slots"][0]["execution"];
        eprintln!(
            "{name}: {} requests, {calls} calls; {execution}",
            bodies.len()
        );
        if execution["batching"]["max_batch_size"] == 16 {
            batched_requests += bodies.len();
            batched_calls += calls;
            batched_models += 1;
        } else {
            let reason = execution["batching_off"].as_str().unwrap_or_default();
            assert!(reason.contains("differs in a batch"), "{name}: {execution}");
            assert_eq!(calls, bodies.len() as f64, "{name}: one call per request");
        }
    }
    stop(running).await;
    // Requests were batched: far fewer calls than requests (how many fewer depends on how
    // the requests met in time, so only the sum over the batched models is asked).
    assert!(batched_models >= 2, "{batched_models} models batched");
    assert!(
        batched_calls < batched_requests as f64 / 2.0,
        "{batched_calls} calls for {batched_requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_among_batched_ones_fails_alone() {
    let config = config_with_model_settings(
        "[model.batching]\nmax_batch_size = 32\nmax_queue_delay_us = 200000\nexact = false\n",
        &format!("{}workers = 1\n", onnx("v1")),
        None,
    );
    let running = start(&config).await;
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(24)
        .map(|(x, _)| x)
        .collect();
    let labels = reference_labels("digits", "v1");
    // Good requests, and between them bad ones of every kind validation refuses.
    let bad = [
        serde_json::json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": vec![0.0; 63]}]}),
        serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT32", "data": vec![0; 64]}]}),
        serde_json::json!({"inputs": [{"name": "nope", "shape": [1, 64], "datatype": "FP32", "data": vec![0.0; 64]}]}),
        serde_json::json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": vec![0.0; 64]}]}),
        serde_json::json!({"inputs": []}),
    ];
    let mut bodies = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        bodies.push((Some(i), infer_body(std::slice::from_ref(row))));
        if i % 5 == 0 {
            bodies.push((None, bad[i / 5 % bad.len()].clone()));
        }
    }
    let expected: Vec<Option<usize>> = bodies.iter().map(|(i, _)| *i).collect();
    let bodies = Arc::new(
        bodies
            .into_iter()
            .map(|(_, b)| Bytes::from(b.to_string()))
            .collect::<Vec<_>>(),
    );
    let answers = send_all(&data(&running), "/v2/models/digits/infer", bodies, 32).await;
    stop(running).await;
    for (answer, row) in answers.iter().zip(expected) {
        match row {
            Some(row) => {
                assert_eq!(answer.status, 200, "row {row}: {}", answer.error_message());
                assert_eq!(
                    answer.json()["outputs"][0]["data"][0].as_i64(),
                    Some(labels[row]),
                    "row {row}"
                );
            }
            None => assert_eq!(answer.status, 400, "{}", answer.error_message()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_switches_with_batching_fail_nothing_and_each_answer_is_its_versions() {
    let config = config_with_model_settings(
        // digits computes one row by another path than several (see above): exact = false
        // lets it batch, so that this test has batches of both versions.
        "[model.batching]\nmax_batch_size = 16\nmax_queue_delay_us = 2000\nexact = false\n",
        &format!("{}workers = 1\n", onnx("v1")),
        Some(&format!("{}workers = 1\n", onnx("v2"))),
    );
    let running = start(&config).await;
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(64)
        .map(|(f, _)| f)
        .collect();
    let bodies = rows
        .iter()
        .map(|r| Bytes::from(infer_body(std::slice::from_ref(r)).to_string()))
        .collect();
    let labels = [
        reference_labels("digits", "v1"),
        reference_labels("digits", "v2"),
    ];
    assert!(
        (0..64).any(|i| labels[0][i] != labels[1][i]),
        "the versions answer some of these rows differently"
    );
    let run = flip_under_load(
        &data(&running),
        &admin(&running),
        "digits",
        bodies,
        16,
        100,
        move |answer, generation, row| {
            let (slot, version) = if generation % 2 == 1 {
                ("blue", "v1")
            } else {
                ("green", "v2")
            };
            let want = labels[usize::from(version == "v2")][row];
            let body = answer.json();
            (answer.header("x-teal-slot") != Some(slot)
                || answer.header("x-teal-version") != Some(version)
                || body["outputs"][0]["data"][0].as_i64() != Some(want))
            .then(|| {
                format!(
                    "generation {generation}: {:?} answered label {} for row {row}",
                    answer.header("x-teal-version"),
                    body["outputs"][0]["data"][0]
                )
            })
        },
    )
    .await;
    let metrics = admin(&running).get("/metrics").await.unwrap().body;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    stop(running).await;
    assert!(
        run.failures.is_empty(),
        "{} of {} failed: {:?}",
        run.failures.len(),
        run.requests,
        &run.failures[..run.failures.len().min(5)]
    );
    // The requests were batched on both versions.
    for version in ["v1", "v2"] {
        let labels = format!("{{model=\"digits\",version=\"{version}\"}}");
        let rows = metric_value(&metrics, &format!("teal_batch_rows_sum{labels}"));
        let calls = metric_value(&metrics, &format!("teal_batch_rows_count{labels}"));
        assert!(
            calls > 0.0 && rows > calls,
            "{version}: {rows} rows in {calls} calls"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_shows_in_the_status_and_a_fixed_first_dimension_turns_it_off_with_the_reason() {
    // A model whose input has a fixed first dimension, made with the onnx helper API.
    let dir = temp_dir("fixed");
    let file = dir.join("fixed.onnx");
    let script = r#"
import sys
from onnx import TensorProto, helper, save
x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "fixed", [x], [y])
save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), sys.argv[1])
"#;
    let made = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let batching = "[model.batching]\nmax_batch_size = 8\nmax_queue_delay_us = 500\npreferred_batch_sizes = [4, 8]\nexact = false\n";
    let config = config_with_model_settings(
        batching,
        &onnx("v1"),
        Some(&format!(
            "version = \"fixed\"\nkind = \"onnx\"\npath = \"{}\"\n",
            file.display()
        )),
    );
    let running = start(&config).await;
    let status = admin(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    let slots = status["slots"].as_array().unwrap();
    let slot = |version: &str| {
        slots
            .iter()
            .find(|s| s["version"] == version)
            .unwrap()
            .clone()
    };
    assert_eq!(
        slot("v1")["execution"]["batching"],
        serde_json::json!({"max_batch_size": 8, "max_queue_delay_us": 500, "preferred_batch_sizes": [4, 8], "exact": false}),
        "{status:#}"
    );
    let fixed = slot("fixed");
    assert!(fixed["execution"]["batching"].is_null(), "{fixed:#}");
    let reason = fixed["execution"]["batching_off"].as_str().unwrap();
    assert!(
        reason.contains("'input'") && reason.contains("first dimension is not dynamic"),
        "{reason}"
    );
    // The unbatched model still answers.
    let answer = data(&running)
        .send(
            "POST",
            "/v2/models/digits/versions/fixed/infer",
            &[],
            Bytes::from(
                serde_json::json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [-1.0, 2.0, -3.0, 4.0]}]})
                    .to_string(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(
        answer.json()["outputs"][0]["data"],
        serde_json::json!([0.0, 2.0, 0.0, 4.0])
    );
    stop(running).await;
}

#[test]
fn out_of_range_batching_settings_are_refused_with_the_field_named() {
    for (setting, field) in [
        ("max_batch_size = 0", "batching.max_batch_size"),
        ("max_batch_size = 5000", "batching.max_batch_size"),
        (
            "max_batch_size = 8\nmax_queue_delay_us = 2000000",
            "batching.max_queue_delay_us",
        ),
        (
            "max_batch_size = 8\npreferred_batch_sizes = [4, 16]",
            "batching.preferred_batch_sizes",
        ),
        (
            "max_batch_size = 8\npreferred_batch_sizes = [0]",
            "batching.preferred_batch_sizes",
        ),
        ("max_queue_delay_us = 100", "max_batch_size"),
        ("max_batch_size = 8\nmax_delay = 3", "max_delay"),
    ] {
        let text = format!(
            "[[model]]\nname = \"m\"\n[model.batching]\n{setting}\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"m.onnx\"\n"
        );
        let error = match teal::core::config::Config::parse(&text) {
            Err(e) => e.to_string(),
            Ok(config) => config.validate().unwrap_err().to_string(),
        };
        assert!(error.contains(field), "{setting}: {error}");
    }
}
