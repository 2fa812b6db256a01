//! Helpers for the rollout tests: load, starting a rollout, waiting for a phase, the
//! transitions the audit log holds, and a `teal serve` process to kill.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use teal::cli::client::HttpClient;

use super::*;

/// Clients sending inference requests until stopped, counting answers per version and
/// failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, Vec<String>)>>,
}

impl Load {
    pub fn start(client: &HttpClient, clients: usize) -> Load {
        // Varied rows, like real traffic: shadow gates compare score distributions.
        let bodies = holdout("digits")
            .iter()
            .map(|(x, _)| Bytes::from(infer_body(std::slice::from_ref(x)).to_string()))
            .collect();
        Load::with_bodies(client, clients, bodies)
    }

    /// Clients sending `bodies` in turn to the test model's infer endpoint until stopped.
    pub fn with_bodies(client: &HttpClient, clients: usize, bodies: Vec<Bytes>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let bodies = Arc::new(bodies);
        let tasks = (0..clients)
            .map(|c| {
                let (client, stop, bodies) = (client.clone(), stop.clone(), bodies.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed, mut failures) = (0, 0, Vec::new());
                    let mut i = c * 97;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let body = bodies[i % bodies.len()].clone();
                        match client
                            .send("POST", "/v2/models/digits/infer", &[], body)
                            .await
                        {
                            Ok(a) if a.status == 200 => ok += 1,
                            Ok(a) => {
                                failed += 1;
                                failures.push(format!("{}: {}", a.status, a.error_message()));
                            }
                            Err(e) => {
                                failed += 1;
                                failures.push(e.to_string());
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    (ok, failed, failures)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed, mut failures) = (0, 0, Vec::new());
        for t in self.tasks {
            let (o, f, mut why) = t.await.unwrap();
            ok += o;
            failed += f;
            failures.append(&mut why);
        }
        (ok, failed, failures)
    }
}

pub async fn start_rollout(
    admin: &HttpClient,
    candidate: serde_json::Value,
    settings: serde_json::Value,
) -> i64 {
    let answer = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": candidate, "settings": settings }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.error_message());
    answer.json()["id"].as_i64().unwrap()
}

/// Waits (bounded) for the rollout to reach `phase`; returns its state.
pub async fn wait_phase(admin: &HttpClient, phase: &str, limit: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let reached = eventually(limit, async || {
        last = admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json();
        last["phase_name"] == phase
    })
    .await;
    assert!(reached, "rollout never reached {phase}: {last:#}");
    last
}

pub fn onnx_candidate(version: &str) -> serde_json::Value {
    let path = if version.starts_with("v2-") {
        repo_root().join(format!("models/digits/variants/{version}/model.onnx"))
    } else {
        repo_root().join(format!("models/digits/{version}/model.onnx"))
    };
    serde_json::json!({ "version": version, "kind": "onnx", "path": path })
}

/// Fast rollout settings for tests about phases and steps. Most of these tests send no
/// traffic during the bake, so they say what a bake without evidence does: go on (the
/// default waits; the tests of `on_inconclusive` show that).
pub fn quick(strategy: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "strategy": strategy,
        "evidence": { "holdout": repo_root().join("models/digits/holdout.jsonl") },
        "observe_ms": 1500,
        "keep_warm_ms": 0,
        "on_inconclusive": "promote",
        "rules": { "check_interval_ms": 200 },
    })
}

/// One sample's value in a Prometheus text scrape (`name{labels}` as written), or 0.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn transitions(admin: &HttpClient, id: i64) -> Vec<(String, String)> {
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "rollout" && e["detail"]["rollout"] == id)
        .map(|e| {
            (
                e["detail"]["from"].as_str().unwrap().to_string(),
                e["detail"]["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A `teal serve` process over a config file, for the crash tests.
pub struct Teal {
    pub proc: Proc,
    pub data: HttpClient,
    pub admin: HttpClient,
}

pub fn serve(config: &std::path::Path, data_port: u16, admin_port: u16) -> Teal {
    serve_with(config, data_port, admin_port, &[])
}

/// [`serve`] with extra environment variables.
pub fn serve_with(
    config: &std::path::Path,
    data_port: u16,
    admin_port: u16,
    env: &[(&str, &str)],
) -> Teal {
    let mut command = std::process::Command::new(teal_bin());
    command.envs(env.iter().copied());
    command
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--listen",
            &format!("127.0.0.1:{data_port}"),
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .env("TEAL_LOG", "warn")
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let proc = spawn_teal(&mut command);
    Teal {
        proc,
        data: HttpClient::new(&format!("http://127.0.0.1:{data_port}")),
        admin: HttpClient::new(&format!("http://127.0.0.1:{admin_port}"))
            .with_token(Some(TOKEN.into())),
    }
}

pub fn kill9(teal: Teal) {
    let Teal { mut proc, .. } = teal;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proc.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = proc.0.wait();
    proc.1 = true;
}
