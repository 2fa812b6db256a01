//! Per-model execution settings of in-process models: sessions (workers), intra-op and
//! inter-op threads and the graph optimisation level. A model loads with them (ONNX Runtime
//! gets them when each session is made; it does not report them back) and answers as its
//! reference says, the status shows them, and out-of-range values are refused with the field
//! named.

mod common;

use bytes::Bytes;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_loads_with_its_execution_settings_and_shows_them_in_the_status() {
    let slot = format!(
        "{}workers = 3\nintra_op_threads = 2\ninter_op_threads = 2\noptimization = \"basic\"\nreference = \"models/digits/v1/reference.json\"\n",
        onnx("v1")
    );
    let running = start(&config_with(&slot, None)).await;
    let status = admin(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    assert_eq!(
        status["slots"][0]["execution"],
        serde_json::json!({
            "workers": 3, "intra_op_threads": 2, "inter_op_threads": 2, "optimization": "basic",
        }),
        "{status:#}"
    );
    // The version loaded with these settings reproduced its reference (checked at load) and
    // answers the holdout as the reference says.
    let rows: Vec<Vec<f64>> = holdout("digits").into_iter().map(|(x, _)| x).collect();
    let body = Bytes::from(infer_body(&rows).to_string());
    let answer = data(&running)
        .send("POST", "/v2/models/digits/infer", &[], body)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let labels: Vec<i64> = answer.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(labels, reference_labels("digits", "v1")[..labels.len()]);
    stop(running).await;
}

#[test]
fn out_of_range_execution_settings_are_refused_with_the_field_named() {
    for (setting, field) in [
        ("intra_op_threads = 0", "intra_op_threads"),
        ("inter_op_threads = 65", "inter_op_threads"),
        ("workers = 0", "workers"),
        ("optimization = \"fastest\"", "optimization"),
    ] {
        let text = format!(
            "[[model]]\nname = \"m\"\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"m.onnx\"\n{setting}\n"
        );
        let error = match teal::core::config::Config::parse(&text) {
            Err(e) => e.to_string(),
            Ok(config) => config.validate().unwrap_err().to_string(),
        };
        assert!(error.contains(field), "{setting}: {error}");
    }
}
