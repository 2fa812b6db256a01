//! Interop with a model server nobody here wrote: MLServer 1.7.1 with its scikit-learn
//! runtime (from PyPI; `scripts/setup dev` installs it in .deps/mlserver), serving two
//! versions of the digits model, as upstream slots and as process slots teal starts.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use teal::core::config::Config;

fn venv() -> PathBuf {
    std::env::var_os("TEAL_MLSERVER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".deps/mlserver"))
}

/// Trains the two versions with MLServer's own scikit-learn; returns the folder and the
/// rows with each version's expected labels.
fn models() -> (PathBuf, Vec<Vec<f64>>, Vec<i64>, Vec<i64>) {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "MLServer is not installed at {}: run scripts/setup dev",
        venv().display()
    );
    let dir = temp_dir("mlserver");
    let status = Command::new(&python)
        .arg(repo_root().join("tests/python/mlserver_models.py"))
        .arg(&dir)
        .arg(repo_root())
        .status()
        .unwrap();
    assert!(status.success());
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let rows = serde_json::from_value(expected["rows"].clone()).unwrap();
    let labels = |v: &str| serde_json::from_value(expected["labels"][v].clone()).unwrap();
    (dir.clone(), rows, labels("v1"), labels("v2"))
}

fn mlserver_command(folder: &std::path::Path) -> String {
    format!(
        "{} start {}",
        venv().join("bin/mlserver").display(),
        folder.display()
    )
}

/// MLServer writes its metrics files into `metrics_dir` (its working folder by default):
/// keep them in the test's temporary folder.
fn mlserver_env(dir: &std::path::Path) -> String {
    format!(
        "env = {{ MLSERVER_HTTP_PORT = \"{{port}}\", MLSERVER_GRPC_PORT = \"0\", MLSERVER_METRICS_PORT = \"0\", MLSERVER_METRICS_DIR = \"{}\" }}",
        dir.display()
    )
}

async fn predictions_through(
    client: &teal::cli::client::HttpClient,
    rows: &[Vec<f64>],
) -> (Option<String>, Vec<i64>) {
    let body = serde_json::json!({"inputs": [{"name": "input-0", "shape": [rows.len(), 64], "datatype": "FP64", "data": rows}]});
    let answer = client
        .post_json("/v2/models/digits/infer", &body)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let json = answer.json();
    assert_eq!(json["outputs"][0]["name"], "predict");
    let labels = json["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    (answer.header("x-teal-version").map(str::to_string), labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mlserver_instances_serve_blue_and_green_as_upstreams() {
    let (dir, rows, v1, v2) = models();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for version in ["v1", "v2"] {
        let port = free_port();
        let mut command = Command::new(venv().join("bin/mlserver"));
        command
            .args(["start"])
            .arg(dir.join(version))
            .env("MLSERVER_HTTP_PORT", port.to_string())
            .env("MLSERVER_GRPC_PORT", "0")
            .env("MLSERVER_METRICS_PORT", "0")
            .env("MLSERVER_METRICS_DIR", dir.join(version))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(spawn_group(&mut command));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"v1\"\nkind = \"upstream\"\nurls = [\"{}\"]\nready_timeout_ms = 60000\n[model.green]\nversion = \"v2\"\nkind = \"upstream\"\nurls = [\"{}\"]\nready_timeout_ms = 60000\n",
        urls[0], urls[1]
    );
    let mut config = Config::parse(&text).unwrap();
    config.server.state_dir = temp_dir("state");
    let running = start(&config).await;
    let client = data(&running);
    assert_eq!(
        predictions_through(&client, &rows).await,
        (Some("v1".into()), v1.clone())
    );
    admin(&running)
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({"to": "green"}),
        )
        .await
        .unwrap();
    assert_eq!(
        predictions_through(&client, &rows).await,
        (Some("v2".into()), v2.clone())
    );
    // The simple endpoint reaches MLServer too; its [rows, 1] output comes back as one label per row.
    let simple = client
        .post_json(
            "/v1/models/digits/predict",
            &serde_json::json!({"features": rows[..5]}),
        )
        .await
        .unwrap();
    assert_eq!(
        simple.json()["predictions"],
        serde_json::json!(v2[..5]),
        "{}",
        simple.error_message()
    );
    stop(running).await;
    drop(servers);
}

fn process_config(dir: &std::path::Path) -> PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"v1\"\nkind = \"process\"\ncommand = \"{}\"\n{env1}\n[model.green]\nversion = \"v2\"\nkind = \"process\"\ncommand = \"{}\"\n{env2}\n",
        mlserver_command(&dir.join("v1")),
        mlserver_command(&dir.join("v2")),
        env1 = mlserver_env(&dir.join("v1")),
        env2 = mlserver_env(&dir.join("v2")),
    );
    let path = dir.join("teal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Live (not zombie) process ids in a process group, with their command lines, from /proc.
fn group_members(pgid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields: Vec<String> = stat
                        .rsplit(") ")
                        .next()?
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    // Field 0 is the state (Z: exited, waiting to be reaped), field 2 the group.
                    Some(fields.first()? != "Z" && fields.get(2)? == &pgid.to_string())
                })
                .unwrap_or(false)
        })
        .map(|pid| {
            format!(
                "{pid} {}",
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_process_slots_serve_and_leave_no_orphans_after_sigterm() {
    let (dir, rows, v1, v2) = models();
    let config = process_config(&dir);
    let state = temp_dir("state");
    let mut command = Command::new(teal_bin());
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("TEAL_STATE_DIR", &state)
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .env("TEAL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut teal = spawn_group(&mut command);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(teal.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("teal ready:"), "{line:?}");
    let data_url = line.split_whitespace().nth(4).unwrap().to_string();
    let admin_url = std::fs::read_to_string(state.join("admin.url")).unwrap();
    let client = teal::cli::client::HttpClient::new(&data_url);
    let admin = teal::cli::client::HttpClient::new(admin_url.trim()).with_token(Some(TOKEN.into()));

    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let pids: Vec<u32> = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["process"]["pid"].as_u64().unwrap() as u32)
        .collect();
    assert!(
        pids.iter().all(|p| !group_members(*p).is_empty()),
        "both MLServer process groups are running"
    );

    assert_eq!(
        predictions_through(&client, &rows).await,
        (Some("v1".into()), v1)
    );
    switch_digits(&admin, "green").await;
    assert_eq!(
        predictions_through(&client, &rows).await,
        (Some("v2".into()), v2)
    );

    terminate(teal.0.id());
    let exited = eventually(Duration::from_secs(40), async || teal.has_exited()).await;
    assert!(exited, "teal did not exit after SIGTERM");
    let left: Vec<String> = pids.iter().flat_map(|p| group_members(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
