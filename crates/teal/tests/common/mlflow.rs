//! A real MLflow tracking server for the tests that read models from its registry: started on
//! a free port (SQLite backend, its artifact proxy on a local folder), and the script that
//! registers versions in it as a team would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Proc, eventually, free_port, repo_root, spawn_group};

/// The Python of `.deps/mlflow`, with MLflow installed by `scripts/setup dev`.
pub fn mlflow_python() -> PathBuf {
    let python = repo_root().join(".deps/mlflow/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup dev, which installs MLflow there",
        python.display()
    );
    python
}

/// An MLflow tracking server on a free port, stopped (with its workers) when dropped.
pub struct Mlflow {
    pub uri: String,
    _server: Proc,
}

pub async fn start_mlflow(dir: &Path) -> Mlflow {
    mlflow_python();
    let port = free_port();
    let server = spawn_group(
        std::process::Command::new(repo_root().join(".deps/mlflow/bin/mlflow"))
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            // No telemetry: tests reach only 127.0.0.1.
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .args(["--workers", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("mlflow.log")).unwrap()),
    );
    let uri = format!("http://127.0.0.1:{port}");
    let health = teal::cli::client::HttpClient::new(&uri);
    let ready = eventually(
        Duration::from_secs(120),
        async || matches!(health.get("/health").await, Ok(a) if a.status == 200),
    )
    .await;
    assert!(
        ready,
        "MLflow did not start: {}",
        std::fs::read_to_string(dir.join("mlflow.log")).unwrap_or_default()
    );
    Mlflow {
        uri,
        _server: server,
    }
}

/// Runs `tests/python/mlflow_registry.py` against the server with one or more commands, in
/// one Python process (it takes seconds to import MLflow); returns each command's answer,
/// separated by a space (`"1 2"` for two versions registered).
pub fn registry(mlflow: &Mlflow, commands: &[&[&str]]) -> String {
    let args = commands.join(&"+");
    let output = std::process::Command::new(mlflow_python())
        .current_dir(repo_root())
        // No telemetry: tests reach only 127.0.0.1, and MLflow 3's telemetry thread sets and
        // unsets a variable while the client's requests read the environment (a KeyError
        // seen in this test).
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .arg(repo_root().join("tests/python/mlflow_registry.py"))
        .arg(&mlflow.uri)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mlflow_registry.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // MLflow prints links to its runs on lines of their own; the answers start with "= ".
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("= "))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Points a registered model's alias at a version through MLflow's REST API, as its client's
/// `set_registered_model_alias` does (no Python process to start).
pub async fn set_alias(mlflow: &Mlflow, name: &str, alias: &str, version: u32) {
    let client = teal::cli::client::HttpClient::new(&mlflow.uri);
    let answer = client
        .post_json(
            "/api/2.0/mlflow/registered-models/alias",
            &serde_json::json!({"name": name, "alias": alias, "version": version.to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        200,
        "setting {name}@{alias} to {version}: {}",
        answer.error_message()
    );
}
