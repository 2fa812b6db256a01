//! `teal demo --registry`: a model registry drives the rollouts. An MLflow tracking server
//! (`mlflow` from the checkout's `.deps/mlflow`, which `scripts/setup dev` installs, or from
//! the PATH) is started on loopback with a SQLite store in a temporary folder; the bundled
//! digits v1, v2 and a bad v2 (labels shifted by one) are registered there through MLflow's
//! REST API, as versions 1, 2 and 3 of `digits`, and `@champion` points at version 1. teal
//! serves it and follows the alias (`[model.source] watch`). Moving the alias to 2 rolls
//! version 2 out, timed from the move to the new version serving; moving it to 3 is stopped
//! by the gates. Clients send requests throughout; none may fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use teal_core::config::Config;

use super::demo::{DIGITS_HOLDOUT, DIGITS_PERMUTED, DIGITS_V1, DIGITS_V2, DemoArgs, progress};
use crate::cli::client::HttpClient;
use crate::server;

/// The MLflow command: the checkout's `.deps/mlflow`, else `mlflow` on the PATH.
fn mlflow_command() -> Option<std::path::PathBuf> {
    let checkout = std::env::current_dir()
        .ok()
        .map(|d| d.join(".deps/mlflow/bin/mlflow"))
        .filter(|p| p.exists());
    checkout.or_else(|| {
        std::process::Command::new("mlflow")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| "mlflow".into())
    })
}

/// A model's `MLmodel` file with the ONNX flavour, as `mlflow.onnx.log_model` writes it.
fn mlmodel(run_id: &str) -> String {
    format!(
        "artifact_path: model\nflavors:\n  onnx:\n    code: null\n    data: model.onnx\n    onnx_version: 1.23.2\n    providers:\n    - CPUExecutionProvider\n  python_function:\n    data: model.onnx\n    loader_module: mlflow.onnx\n    python_version: 3.11.7\nrun_id: {run_id}\n"
    )
}

/// Calls MLflow's REST API; fails with what it answered.
async fn call(
    mlflow: &HttpClient,
    method: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<serde_json::Value> {
    let answer = mlflow
        .send(method, path, &[("content-type", "application/json")], body)
        .await
        .map_err(|e| anyhow::anyhow!("MLflow {path}: {e}"))?;
    anyhow::ensure!(
        answer.status == 200,
        "MLflow {path} answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    Ok(serde_json::from_slice(&answer.body).unwrap_or_default())
}

async fn post(
    mlflow: &HttpClient,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    call(mlflow, "POST", path, Bytes::from(body.to_string())).await
}

/// Logs `onnx` as a run's model (its file and `MLmodel`, through the artifact proxy) and
/// registers it as a new version of `name`; returns the version.
async fn register(mlflow: &HttpClient, name: &str, onnx: &'static [u8]) -> anyhow::Result<String> {
    let run = post(
        mlflow,
        "/api/2.0/mlflow/runs/create",
        serde_json::json!({ "experiment_id": "0", "run_name": format!("{name}-demo") }),
    )
    .await?;
    let info = &run["run"]["info"];
    let run_id = info["run_id"].as_str().unwrap_or_default().to_string();
    let artifacts = info["artifact_uri"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(path) = artifacts.strip_prefix("mlflow-artifacts:/") else {
        anyhow::bail!("MLflow keeps this run's artifacts at {artifacts}, not behind its proxy");
    };
    let path = path.trim_start_matches('/');
    for (file, bytes) in [
        ("model.onnx", Bytes::from_static(onnx)),
        ("MLmodel", Bytes::from(mlmodel(&run_id))),
    ] {
        call(
            mlflow,
            "PUT",
            &format!("/api/2.0/mlflow-artifacts/artifacts/{path}/model/{file}"),
            bytes,
        )
        .await?;
    }
    post(
        mlflow,
        "/api/2.0/mlflow/runs/update",
        serde_json::json!({ "run_id": run_id, "status": "FINISHED" }),
    )
    .await?;
    // Made once; a second call says it exists.
    let _ = post(
        mlflow,
        "/api/2.0/mlflow/registered-models/create",
        serde_json::json!({ "name": name }),
    )
    .await;
    let version = post(
        mlflow,
        "/api/2.0/mlflow/model-versions/create",
        serde_json::json!({ "name": name, "source": format!("{artifacts}/model"), "run_id": run_id }),
    )
    .await?;
    Ok(version["model_version"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

async fn point(mlflow: &HttpClient, alias: &str, version: &str) -> anyhow::Result<()> {
    post(
        mlflow,
        "/api/2.0/mlflow/registered-models/alias",
        serde_json::json!({ "name": "digits", "alias": alias, "version": version }),
    )
    .await
    .map(|_| ())
}

/// The model's live version, as teal's status says it.
async fn live(admin: &HttpClient) -> String {
    match admin.get("/api/v1/models/digits").await {
        Ok(a) if a.status == 200 => a.json()["live_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// When each phase of `version`'s rollout began, in ms after `since_ms`, from the audit trail.
async fn phases(admin: &HttpClient, version: &str, since_ms: i64) -> Vec<(String, i64)> {
    let history = match admin.get("/api/v1/models/digits/history?limit=200").await {
        Ok(a) if a.status == 200 => a.json(),
        _ => return Vec::new(),
    };
    history["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "rollout" && e["detail"]["version"] == version)
        .map(|e| {
            (
                e["detail"]["to"].as_str().unwrap_or_default().to_string(),
                e["at_ms"].as_i64().unwrap_or(since_ms) - since_ms,
            )
        })
        .collect()
}

/// The outcome of `version`'s rollout once it has ended (bounded wait).
async fn ended(admin: &HttpClient, version: &str, limit: Duration) -> Option<(String, String)> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(a) = admin.get("/api/v1/models/digits/rollout").await
            && a.status == 200
        {
            let r = a.json();
            let phase = r["phase_name"].as_str().unwrap_or_default();
            if r["version"] == version
                && ["torn_down", "failed", "aborted", "rolled_back"].contains(&phase)
            {
                return Some((
                    phase.to_string(),
                    r["outcome"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn now_ms() -> i64 {
    crate::state::store::now_ms()
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let Some(mlflow_bin) = mlflow_command() else {
        anyhow::bail!(
            "teal demo --registry needs MLflow: in a checkout, scripts/setup dev installs it into .deps/mlflow; elsewhere, pip install mlflow"
        );
    };
    let dir = std::env::temp_dir().join(format!("teal-demo-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("holdout.jsonl"), DIGITS_HOLDOUT)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    progress(
        args.json,
        &format!(
            "starting an MLflow tracking server on 127.0.0.1:{port} (SQLite, artifacts in {})",
            dir.display()
        ),
    );
    let log = std::fs::File::create(dir.join("mlflow.log"))?;
    let mut server = tokio::process::Command::new(&mlflow_bin)
        .args([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
        ])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        // A throwaway server on loopback: it sends no usage data anywhere.
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", mlflow_bin.display()))?;
    let outcome = drive(&args, &format!("http://127.0.0.1:{port}"), &dir).await;
    if let Some(pid) = server.id() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    let _ = server.kill().await;
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

async fn drive(args: &DemoArgs, uri: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let mlflow = HttpClient::new(uri);
    let started = Instant::now();
    loop {
        if matches!(mlflow.get("/health").await, Ok(a) if a.status == 200) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(180),
            "MLflow did not answer within 180 s: see {}",
            dir.join("mlflow.log").display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress(
        args.json,
        &format!(
            "MLflow ready after {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    let mut versions = Vec::new();
    for (what, bytes) in [
        ("digits v1", DIGITS_V1),
        ("digits v2", DIGITS_V2),
        ("a bad v2 (labels shifted by one)", DIGITS_PERMUTED),
    ] {
        let version = register(&mlflow, "digits", bytes).await?;
        progress(
            args.json,
            &format!("registered {what} as models:/digits/{version}"),
        );
        versions.push(version);
    }
    point(&mlflow, "champion", &versions[0]).await?;
    progress(args.json, &format!("@champion -> version {}", versions[0]));

    let text = format!(
        r#"# Written by `teal demo --registry`.
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
state_dir = "state"
mlflow_uri = "{uri}"

[[model]]
name = "digits"

[model.source]
watch = "models:/digits@champion"
poll_ms = 500

[model.rollout]
observe_ms = "3s"
keep_warm_ms = "0s"
evidence = {{ holdout = "holdout.jsonl" }}
rules = {{ check_interval_ms = 250, min_requests = 10 }}

[model.blue]
version = "digits-{first}"
kind = "onnx"
source = "models:/digits/{first}"
"#,
        first = versions[0]
    );
    std::fs::write(dir.join("teal.toml"), &text)?;
    let mut config = Config::parse(&text)?;
    config.resolve_paths(dir);
    config.validate()?;
    let token = format!("demo-{:016x}", fastrand::u64(..));
    let running = server::start(&config, Some(token.clone())).await?;
    let admin = HttpClient::new(&running.admin_url()).with_token(Some(token));
    progress(
        args.json,
        &format!(
            "teal serves models:/digits/{} as digits-{} on {} and follows @champion; {} clients send requests",
            versions[0],
            versions[0],
            running.data_url(),
            args.clients
        ),
    );

    // Clients, from the holdout, counting answers by the version that gave them.
    let rows: Arc<Vec<Bytes>> = Arc::new(
        DIGITS_HOLDOUT
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|r| {
                let n = r["features"].as_array().map_or(0, Vec::len);
                Bytes::from(
                    serde_json::json!({"inputs": [{"name": "input", "shape": [1, n], "datatype": "FP32", "data": r["features"]}]})
                        .to_string(),
                )
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let by_version = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    let data = HttpClient::new(&running.data_url());
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let (data, rows, stop, ok, failed, by_version) = (
            data.clone(),
            rows.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            by_version.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i += 7;
                let body = rows[i % rows.len()].clone();
                match data
                    .send(
                        "POST",
                        "/v2/models/digits/infer",
                        &[("content-type", "application/json")],
                        body,
                    )
                    .await
                {
                    Ok(a) if a.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let v = a
                            .header(crate::gateway::VERSION_HEADER)
                            .unwrap_or("?")
                            .to_string();
                        *by_version
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(v)
                            .or_default() += 1;
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The alias moves: teal rolls the new version out.
    let good = format!("digits-{}", versions[1]);
    let moved = Instant::now();
    let moved_ms = now_ms();
    point(&mlflow, "champion", &versions[1]).await?;
    progress(
        args.json,
        &format!(
            "@champion -> version {}: teal rolls {good} out",
            versions[1]
        ),
    );
    let mut serving_ms = None;
    while moved.elapsed() < Duration::from_secs(120) {
        if live(&admin).await == good {
            serving_ms = Some(moved.elapsed().as_millis() as i64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let good_phases = phases(&admin, &good, moved_ms).await;
    for (phase, at) in &good_phases {
        progress(args.json, &format!("  {good}: {phase} from +{at} ms"));
    }
    let serving_ms =
        serving_ms.ok_or_else(|| anyhow::anyhow!("{good} did not go live within 120 s"))?;
    progress(
        args.json,
        &format!("{good} serves {serving_ms} ms after the alias moved"),
    );
    let good_end = ended(&admin, &good, Duration::from_secs(60)).await;

    // The alias moves to a bad version: the gates stop it, the good one keeps serving.
    let bad = format!("digits-{}", versions[2]);
    let moved_ms = now_ms();
    point(&mlflow, "champion", &versions[2]).await?;
    progress(
        args.json,
        &format!("@champion -> version {}: teal rolls {bad} out", versions[2]),
    );
    let bad_end = ended(&admin, &bad, Duration::from_secs(120)).await;
    let bad_phases = phases(&admin, &bad, moved_ms).await;
    for (phase, at) in &bad_phases {
        progress(args.json, &format!("  {bad}: {phase} from +{at} ms"));
    }
    let live_after = live(&admin).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    running.shutdown(Duration::from_secs(5)).await;

    let summary = serde_json::json!({
        "registered": versions,
        "alias_to_serving_ms": serving_ms,
        "good": { "version": good, "phases": good_phases, "end": good_end },
        "bad": { "version": bad, "phases": bad_phases, "end": bad_end },
        "live_at_the_end": live_after,
        "requests": { "ok": ok.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed) },
        "answered_by": *by_version.lock().unwrap_or_else(|p| p.into_inner()),
    });
    if args.json {
        println!("{summary:#}");
    } else {
        println!(
            "registry demo: @champion moved to {good}: serving after {serving_ms} ms; moved to {bad}: {}",
            bad_end
                .as_ref()
                .map_or("did not end".to_string(), |(p, o)| format!("{p} ({o})"))
        );
        println!(
            "live at the end: {live_after}; requests: {} ok, {} failed; answered by {}",
            summary["requests"]["ok"], summary["requests"]["failed"], summary["answered_by"]
        );
    }
    let bad_stopped = bad_end.as_ref().is_some_and(|(p, _)| p == "failed");
    anyhow::ensure!(
        failed.load(Ordering::Relaxed) == 0 && bad_stopped && live_after == good,
        "the demo did not go as it should: {summary}"
    );
    Ok(())
}
