//! teal's answers equal onnxruntime-Python's, bit for bit, on every bundled model's whole
//! holdout set, through every endpoint that can reach a version.

mod common;

use common::*;

/// Flattens nested JSON numbers, keeping their exact values.
fn flat(value: &serde_json::Value, out: &mut Vec<f64>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| flat(v, out)),
        other => out.push(other.as_f64().expect("number")),
    }
}

fn as_f32_bits(values: &[f64]) -> Vec<u32> {
    values.iter().map(|v| (*v as f32).to_bits()).collect()
}

async fn check_version(
    client: &teal::cli::client::HttpClient,
    model: &str,
    version: &str,
    path: &str,
) {
    check_version_in(client, model, version, version, path).await;
}

/// As `check_version`, for a version whose files are in `models/{model}/{dir}`.
async fn check_version_in(
    client: &teal::cli::client::HttpClient,
    model: &str,
    version: &str,
    dir: &str,
    path: &str,
) {
    let rows: Vec<Vec<f64>> = holdout(model).into_iter().map(|(f, _)| f).collect();
    let reference = reference(model, dir);
    let answer = client
        .post_json(path, &infer_body(&rows))
        .await
        .expect("answer");
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(answer.header("x-teal-version"), Some(version));
    let body = answer.json();
    assert_eq!(body["model_version"], version);
    for output in body["outputs"].as_array().expect("outputs") {
        let name = output["name"].as_str().expect("name");
        let (mut got, mut want) = (Vec::new(), Vec::new());
        flat(&output["data"], &mut got);
        flat(&reference["outputs"][name], &mut want);
        assert_eq!(
            got.len(),
            want.len(),
            "{model} {version} {name}: element count"
        );
        // FP32 values compare as f32 bits: JSON carries them exactly both ways.
        assert_eq!(
            as_f32_bits(&got),
            as_f32_bits(&want),
            "{model} {version} output {name} differs from onnxruntime-Python"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_reproduces_onnxruntime_python_on_its_holdout() {
    let running = start(&example_config()).await;
    let client = data(&running);
    check_version(&client, "digits", "v1", "/v2/models/digits/infer").await;
    check_version(
        &client,
        "digits",
        "v1",
        "/v2/models/digits/versions/v1/infer",
    )
    .await;
    check_version(
        &client,
        "digits",
        "v2",
        "/v2/models/digits/versions/v2/infer",
    )
    .await;
    check_version(&client, "cancer", "v1", "/v2/models/cancer/infer").await;
    stop(running).await;
}

/// A config serving iris v1 on blue and one of its variants on green, each checked against
/// its reference at start.
fn iris_config(variant: &str) -> teal::core::config::Config {
    let slot = |version: &str, dir: &str| {
        format!(
            "version = \"{version}\"\nkind = \"onnx\"\npath = \"models/iris/{dir}/model.onnx\"\nreference = \"models/iris/{dir}/reference.json\"\n"
        )
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[[model]]\nname = \"iris\"\n[model.blue]\n{}\n[model.green]\n{}\n",
        slot("v1", "v1"),
        slot(variant, &format!("variants/{variant}")),
    );
    let mut config = teal::core::config::Config::parse(&text).unwrap();
    config.resolve_paths(&repo_root());
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_iris_version_reproduces_onnxruntime_python_on_its_holdout() {
    for variant in ["forest", "shuffled"] {
        let running = start(&iris_config(variant)).await;
        let client = data(&running);
        check_version(&client, "iris", "v1", "/v2/models/iris/infer").await;
        check_version_in(
            &client,
            "iris",
            variant,
            &format!("variants/{variant}"),
            &format!("/v2/models/iris/versions/{variant}/infer"),
        )
        .await;
        stop(running).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_predict_answers_the_reference_labels_row_by_row_and_in_batches() {
    let running = start(&example_config()).await;
    let client = data(&running);
    for (model, version) in [("digits", "v1"), ("cancer", "v1")] {
        let rows = holdout(model);
        let reference = reference(model, version);
        let labels: Vec<i64> = reference["outputs"]["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let features: Vec<Vec<f64>> = rows.iter().map(|(f, _)| f.clone()).collect();
        let batch = client
            .post_json(
                &format!("/v1/models/{model}/predict"),
                &serde_json::json!({ "features": features }),
            )
            .await
            .unwrap();
        assert_eq!(batch.status, 200, "{}", batch.error_message());
        let body = batch.json();
        assert_eq!(body["model_version"], version);
        assert_eq!(body["slot"], "blue");
        let predicted: Vec<i64> = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(predicted, labels, "{model}: batch predictions");
        for (i, row) in features.iter().enumerate().take(25) {
            let one = client
                .post_json(
                    &format!("/v1/models/{model}/predict"),
                    &serde_json::json!({ "features": row }),
                )
                .await
                .unwrap();
            assert_eq!(
                one.json()["predictions"],
                serde_json::json!([labels[i]]),
                "{model} row {i}"
            );
        }
    }
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_does_not_reproduce_its_reference_is_refused_at_start() {
    let mut config = example_config();
    config.models.retain(|m| m.name == "digits");
    // Pair v2's model with v1's reference outputs: it loads and runs, but answers differently.
    let green = config.models[0].green.as_mut().unwrap();
    let teal::core::config::BackendConfig::Onnx { reference, .. } = &mut green.backend else {
        panic!("digits green is an onnx slot")
    };
    *reference = Some(repo_root().join("models/digits/v1/reference.json"));
    let err = teal::server::start(&config, Some(TOKEN.into()))
        .await
        .err()
        .expect("start must fail")
        .to_string();
    assert!(
        err.contains("model 'digits', green slot (version v2)"),
        "{err}"
    );
    assert!(err.contains("differs from the reference"), "{err}");
}
