//! Helpers shared by the integration tests: a real teal on 127.0.0.1:0 with the bundled models.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use teal::client::HttpClient;
use teal::core::config::Config;
use teal::server::{self, Running};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The example config, on free ports, with its state in a fresh temporary folder.
pub fn example_config() -> Config {
    let mut config =
        server::load_config(&repo_root().join("examples/teal.toml")).expect("example config");
    config.server.listen = "127.0.0.1:0".into();
    config.server.admin = "127.0.0.1:0".into();
    config.server.state_dir = temp_dir("state");
    config
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "teal-test-{what}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub const TOKEN: &str = "test-token";

pub async fn start(config: &Config) -> Running {
    server::start(config, Some(TOKEN.to_string()))
        .await
        .expect("teal starts")
}

pub fn data(running: &Running) -> HttpClient {
    HttpClient::new(&running.data_url())
}

pub fn admin(running: &Running) -> HttpClient {
    HttpClient::new(&running.admin_url()).with_token(Some(TOKEN.to_string()))
}

pub async fn stop(running: Running) {
    running.shutdown(Duration::from_secs(5)).await;
}

/// Rows of a model's holdout file: features and label.
pub fn holdout(model: &str) -> Vec<(Vec<f64>, i64)> {
    let text = std::fs::read_to_string(repo_root().join(format!("models/{model}/holdout.jsonl")))
        .expect("holdout");
    text.lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("holdout row");
            let features = row["features"]
                .as_array()
                .expect("features")
                .iter()
                .map(|v| v.as_f64().expect("number"))
                .collect();
            (features, row["label"].as_i64().expect("label"))
        })
        .collect()
}

/// The reference outputs onnxruntime-Python computed for a version.
pub fn reference(model: &str, version: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(
        repo_root().join(format!("models/{model}/{version}/reference.json")),
    )
    .expect("reference");
    serde_json::from_str(&text).expect("reference json")
}

/// A V2 infer body with one FP32 input named `input`.
pub fn infer_body(rows: &[Vec<f64>]) -> serde_json::Value {
    let width = rows.first().map_or(0, Vec::len);
    serde_json::json!({"inputs": [{"name": "input", "shape": [rows.len(), width], "datatype": "FP32", "data": rows}]})
}

/// The teal binary built for these tests.
pub fn teal_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_teal"))
}
