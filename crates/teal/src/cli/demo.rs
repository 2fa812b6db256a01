//! `teal demo`: the whole rollout lifecycle on the bundled models, under real traffic.
//!
//! It writes the embedded models and a config to a temporary folder, starts a real teal on
//! loopback, and keeps several clients sending V2 requests from the holdout set over HTTP
//! while three rollouts run through the admin API: a good version (v2) goes live, a bad one
//! (labels shifted by one) is stopped by the gates, and a third, served by a separate model
//! server that starts failing after its switch, is rolled back by the rules on their own.
//! Then it reports what each version served in each step.
//!
//! Longer than most files (about 600 lines) because it is one script, read top to bottom:
//! the three rollouts, the load that runs through them and the table that sums them up.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use teal_core::config::Config;

use crate::cli::client::HttpClient;
use crate::gateway::{FAILOVER_HEADER, SLOT_HEADER, VERSION_HEADER};
use crate::server;

pub(super) const DIGITS_V1: &[u8] = include_bytes!("../../../../models/digits/v1/model.onnx");
const DIGITS_V1_REFERENCE: &[u8] = include_bytes!("../../../../models/digits/v1/reference.json");
pub(super) const DIGITS_V2: &[u8] = include_bytes!("../../../../models/digits/v2/model.onnx");
const DIGITS_V2_REFERENCE: &[u8] = include_bytes!("../../../../models/digits/v2/reference.json");
pub(super) const DIGITS_HOLDOUT: &str = include_str!("../../../../models/digits/holdout.jsonl");
pub(super) const DIGITS_PERMUTED: &[u8] =
    include_bytes!("../../../../models/digits/variants/v2-permuted/model.onnx");
const FAULTY_SERVER: &str = include_str!("../../../../tests/python/onnx_model_server.py");

const DEMO_CONFIG: &str = r#"# Written by `teal demo`: the bundled digits model, v1 live in blue.
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
state_dir = "state"
# Rollout #3 sends a model server's command through the admin API, which only a config
# file that allows commands lets it do.
allow_commands = true

[[model]]
name = "digits"
live = "blue"
prediction_output = "label"

# Short windows so the demo takes seconds; the defaults are a 5 minute bake and 7 days warm.
[model.rollout]
observe_ms = "3s"
keep_warm_ms = "0s"
abort_removes_green = true
evidence = { holdout = "digits/holdout.jsonl" }
rules = { check_interval_ms = 250, consecutive = 3, min_requests = 10 }
# A bake that ends without enough traffic to judge is lengthened (twice), then waits for
# `teal promote`; it never counts as a pass. (This is the default, written out.)
on_inconclusive = "extend"
# While a new version is watched and the old one warm, the old one answers what the new fails.
failover = true

[model.blue]
version = "v1"
kind = "onnx"
path = "digits/v1/model.onnx"
reference = "digits/v1/reference.json"
card = { notes = "LogisticRegression on scikit-learn's digits", owner = "examples" }
"#;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Requests sent while each version is simply live, before the next rollout starts.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Let a model registry drive the rollouts instead: start an MLflow tracking server,
    /// register digits v1, v2 and a bad v2 there, and move its @champion alias, which teal
    /// follows (needs MLflow: scripts/setup dev installs it into .deps/mlflow).
    #[arg(long)]
    pub registry: bool,
}

struct Row {
    body: Bytes,
    label: i64,
}

fn holdout() -> anyhow::Result<Vec<Row>> {
    DIGITS_HOLDOUT
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)?;
            let features = row["features"].clone();
            let n = features.as_array().map_or(0, Vec::len);
            let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, n], "datatype": "FP32", "data": features}]});
            Ok(Row { body: Bytes::from(body.to_string()), label: row["label"].as_i64().unwrap_or(-1) })
        })
        .collect()
}

fn write_demo_files(dir: &Path) -> std::io::Result<()> {
    for (path, bytes) in [
        ("digits/v1/model.onnx", DIGITS_V1),
        ("digits/v1/reference.json", DIGITS_V1_REFERENCE),
        ("digits/v2/model.onnx", DIGITS_V2),
        ("digits/v2/reference.json", DIGITS_V2_REFERENCE),
        ("digits/v2-permuted/model.onnx", DIGITS_PERMUTED),
        ("digits/holdout.jsonl", DIGITS_HOLDOUT.as_bytes()),
        ("faulty_server.py", FAULTY_SERVER.as_bytes()),
        ("teal.toml", DEMO_CONFIG.as_bytes()),
    ] {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, bytes)?;
    }
    Ok(())
}

/// What one answered request tells.
struct Sample {
    step: usize,
    version: String,
    slot: String,
    ok: bool,
    /// A failure the faulty model server caused on cue: its answer carries the marker the
    /// server writes, so it is told apart by its cause, not by when it was sent (a request
    /// sent just before the fault can be answered after it).
    injected: bool,
    /// Answered by the old version after the new one failed it (failover).
    failed_over: bool,
    latency: Duration,
    correct: bool,
}

/// What the faulty model server answers while its fault is on.
const INJECTED_FAILURE: &[u8] = b"injected failure";

#[derive(serde::Serialize)]
struct PhaseSummary {
    phase: String,
    requests: usize,
    errors: usize,
    /// Requests the new version failed that the old one answered.
    failovers: usize,
    versions: BTreeMap<String, usize>,
    p50_ms: f64,
    p99_ms: f64,
    accuracy: f64,
}

#[derive(serde::Serialize)]
struct DemoSummary {
    model: String,
    clients: usize,
    requests: usize,
    errors: usize,
    /// Failures from the faulty version that reached a client.
    errors_from_the_fault: usize,
    /// Requests the faulty version failed that the old version answered instead.
    failovers: usize,
    phases: Vec<PhaseSummary>,
    rollouts: Vec<RolloutSummary>,
    requests_per_second: f64,
    /// From the fault appearing to traffic back on the previous version.
    rollback_after_fault_ms: Option<f64>,
}

#[derive(serde::Serialize)]
struct RolloutSummary {
    id: i64,
    version: String,
    strategy: String,
    phases: Vec<String>,
    ended: String,
    outcome: String,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

pub(super) fn progress(json: bool, line: &str) {
    if !json {
        eprintln!("  {line}");
    }
}

const STEPS: [&str; 7] = [
    "v1 live",
    "rollout #1: v2 (blue-green)",
    "v2 live",
    "rollout #2: v2-permuted, bad",
    "rollout #3: v3, health only",
    "v3 fails after its switch",
    "rolled back: v2 live",
];

/// A Python with onnxruntime and numpy to run the demo's separate model server: the one in
/// teal's own environment or checkout first, then `python3` from the PATH.
fn python_for_model_server() -> Option<std::path::PathBuf> {
    crate::backends::python_env::interpreters()
        .into_iter()
        .find(|python| {
            std::process::Command::new(python)
                .args(["-c", "import onnxruntime, numpy"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A path as one word for `sh -c`.
fn shell_word(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Starts a rollout and follows it to its end (or to `until`), printing each phase.
async fn follow(
    admin: &HttpClient,
    json: bool,
    body: serde_json::Value,
    until: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let started = admin
        .post_json("/api/v1/models/digits/rollouts", &body)
        .await?;
    anyhow::ensure!(
        started.status == 202,
        "the rollout did not start: {}",
        started.error_message()
    );
    let id = started.json()["id"].as_i64().unwrap_or(0);
    let version = body["candidate"]["version"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = admin.get("/api/v1/models/digits/rollout").await?.json();
        let phase = state["phase_name"].as_str().unwrap_or("").to_string();
        if phase != seen {
            progress(
                json,
                &format!("  rollout #{id} {version}: {}", phase.replace('_', " ")),
            );
            seen = phase.clone();
        }
        if state["terminal"] == true || until == Some(phase.as_str()) {
            return Ok(state);
        }
        if phase == "awaiting_approval" || !state["waiting"].is_null() {
            // Nothing here approves by hand: a rollout that waits for an operator is an
            // outcome the demo reports, with the reason the rollout gives.
            anyhow::bail!(
                "rollout #{id} {version} waits for an operator: {}",
                state["waiting"].as_str().unwrap_or("no reason given")
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "rollout #{id} did not finish in 2 minutes (phase {phase})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.registry {
        return super::demo_registry::run(args).await;
    }
    anyhow::ensure!(
        args.clients > 0 && args.requests > 0,
        "--clients and --requests must be at least 1"
    );
    let dir = std::env::temp_dir().join(format!("teal-demo-{}", std::process::id()));
    write_demo_files(&dir)?;
    let mut config = Config::parse(DEMO_CONFIG)?;
    config.resolve_paths(&dir);
    config.validate()?;

    progress(
        args.json,
        "loading digits v1 into the blue slot and checking it against its reference outputs",
    );
    let token = format!("demo-{:016x}", fastrand::u64(..));
    let running = server::start(&config, Some(token.clone())).await?;
    progress(
        args.json,
        &format!(
            "teal is serving on {} (admin {}); {} clients send requests throughout",
            running.data_url(),
            running.admin_url(),
            args.clients
        ),
    );

    let rows = Arc::new(holdout()?);
    let data = HttpClient::new(&running.data_url());
    let admin = HttpClient::new(&running.admin_url()).with_token(Some(token));
    let done = Arc::new(AtomicUsize::new(0));
    let step = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut clients = Vec::new();
    for c in 0..args.clients {
        let (data, rows, done, stop, step) = (
            data.clone(),
            rows.clone(),
            done.clone(),
            stop.clone(),
            step.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let row = &rows[i % rows.len()];
                i += 7;
                let at_step = step.load(Ordering::Relaxed);
                let sent = Instant::now();
                let answer = data
                    .send(
                        "POST",
                        "/v2/models/digits/infer",
                        &[("content-type", "application/json")],
                        row.body.clone(),
                    )
                    .await;
                let latency = sent.elapsed();
                let sample = match answer {
                    Ok(a) => Sample {
                        step: at_step,
                        version: a.header(VERSION_HEADER).unwrap_or("-").to_string(),
                        slot: a.header(SLOT_HEADER).unwrap_or("-").to_string(),
                        ok: a.status == 200,
                        injected: a.status >= 500
                            && a.body
                                .windows(INJECTED_FAILURE.len())
                                .any(|w| w == INJECTED_FAILURE),
                        failed_over: a.status == 200 && a.header(FAILOVER_HEADER).is_some(),
                        latency,
                        correct: a.json()["outputs"][0]["data"][0].as_i64() == Some(row.label),
                    },
                    Err(_) => Sample {
                        step: at_step,
                        version: "-".into(),
                        slot: "-".into(),
                        ok: false,
                        injected: false,
                        failed_over: false,
                        latency,
                        correct: false,
                    },
                };
                samples.push(sample);
                done.fetch_add(1, Ordering::Relaxed);
            }
            samples
        }));
    }

    let wait_more = |n: usize| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::Relaxed) + n;
            while done.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let onnx = |version: &str, file: &str, reference: Option<&str>| {
        let mut slot = serde_json::json!({
            "version": version,
            "kind": "onnx",
            "path": dir.join(file),
        });
        if let Some(r) = reference {
            slot["reference"] = dir.join(r).display().to_string().into();
        }
        slot
    };

    progress(
        args.json,
        &format!("{}: {} requests", STEPS[0], args.requests),
    );
    wait_more(args.requests).await;

    step.store(1, Ordering::Relaxed);
    progress(
        args.json,
        "rollout #1: v2 into the green slot; gates on the holdout, then switch, bake 3 s, tear down v1",
    );
    let first = follow(
        &admin,
        args.json,
        serde_json::json!({ "candidate": onnx("v2", "digits/v2/model.onnx", Some("digits/v2/reference.json")) }),
        None,
    )
    .await?;
    step.store(2, Ordering::Relaxed);
    progress(
        args.json,
        &format!("{}: {} requests", STEPS[2], args.requests),
    );
    wait_more(args.requests).await;

    step.store(3, Ordering::Relaxed);
    progress(
        args.json,
        "rollout #2: v2-permuted (its labels are shifted by one); the gates must stop it",
    );
    let second = follow(
        &admin,
        args.json,
        serde_json::json!({ "candidate": onnx("v2-permuted", "digits/v2-permuted/model.onnx", None) }),
        None,
    )
    .await?;

    let mut third = None;
    let mut rollback_after_fault_ms = None;
    if let Some(python) = python_for_model_server() {
        step.store(4, Ordering::Relaxed);
        progress(
            args.json,
            "rollout #3: v3 on its own model server (a process teal starts), checked for health only",
        );
        let fault = dir.join("fault");
        let command = format!(
            "{} {} --port {{port}} --model {} --version v3 --fail-when {}",
            shell_word(&python),
            shell_word(&dir.join("faulty_server.py")),
            shell_word(&dir.join("digits/v2/model.onnx")),
            shell_word(&fault)
        );
        let body = serde_json::json!({
            "candidate": { "version": "v3", "kind": "process", "command": command, "ready_timeout_ms": 60000 },
            // v3 runs on a Python model server, a few milliseconds slower than v2 in-process
            // by design, so its latency budget says so (the default, 1.2x + 2 ms, would
            // rightly roll it back for that alone, before its fault); the rest are the
            // model's rules above.
            "settings": {
                "evidence": null,
                "observe_ms": 60000,
                "rules": {
                    "check_interval_ms": 250,
                    "consecutive": 3,
                    "min_requests": 10,
                    "latency_ratio": 1.2,
                    "latency_slack_ms": 25.0
                }
            },
        });
        follow(&admin, args.json, body, Some("observing")).await?;
        wait_more(args.requests / 2).await;
        step.store(5, Ordering::Relaxed);
        // Let the requests sent before this step answer first, so the table's steps stay
        // apart; the totals tell the fault's failures apart by their cause, not their step.
        tokio::time::sleep(Duration::from_millis(200)).await;
        progress(
            args.json,
            "  v3's server starts failing every request; the rollback rules are watching",
        );
        let before = admin.get("/api/v1/models/digits/rollout").await?.json();
        if before["terminal"] == true {
            // The rules ended the rollout before its fault: say so, rather than time a fault
            // that no longer reaches anything.
            anyhow::bail!(
                "rollout #3 ended before its fault was injected: {} ({})",
                before["phase_name"].as_str().unwrap_or(""),
                before["outcome"].as_str().unwrap_or("")
            );
        }
        std::fs::write(&fault, b"")?;
        let t = Instant::now();
        let deadline = t + Duration::from_secs(30);
        let state = loop {
            let state = admin.get("/api/v1/models/digits/rollout").await?.json();
            if state["terminal"] == true || Instant::now() > deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        rollback_after_fault_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        step.store(6, Ordering::Relaxed);
        progress(
            args.json,
            &format!(
                "  rollout #{} v3: {} ({})",
                state["id"],
                state["phase_name"].as_str().unwrap_or("").replace('_', " "),
                state["outcome"].as_str().unwrap_or("")
            ),
        );
        third = Some(state);
        progress(
            args.json,
            &format!("{}: {} requests", STEPS[6], args.requests),
        );
        wait_more(args.requests).await;
    } else {
        progress(
            args.json,
            "rollout #3 skipped: it needs a Python with onnxruntime and numpy for its model server (scripts/setup installs them in the checkout's .venv; a pip-installed teal has them in its own environment)",
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for client in clients {
        samples.extend(client.await?);
    }
    let elapsed = started.elapsed();

    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await?
        .json();
    let listed = admin.get("/api/v1/models/digits/rollouts").await?.json();
    let mut rollouts = Vec::new();
    for r in listed["rollouts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .rev()
    {
        let id = r["id"].as_i64().unwrap_or(0);
        let phases = history["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["kind"] == "rollout" && e["detail"]["rollout"] == id)
                    .map(|e| e["detail"]["to"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        rollouts.push(RolloutSummary {
            id,
            version: r["version"].as_str().unwrap_or("").to_string(),
            strategy: r["strategy"].as_str().unwrap_or("").to_string(),
            phases,
            ended: r["phase_name"].as_str().unwrap_or("").to_string(),
            outcome: r["outcome"].as_str().unwrap_or("").to_string(),
        });
    }
    running.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);

    let mut phases = Vec::new();
    for (i, name) in STEPS.iter().enumerate() {
        let mut phase: Vec<&Sample> = samples.iter().filter(|s| s.step == i).collect();
        if phase.is_empty() {
            continue;
        }
        phase.sort_by_key(|s| s.latency);
        let latencies: Vec<Duration> = phase.iter().map(|s| s.latency).collect();
        let mut versions = BTreeMap::new();
        for s in phase.iter().filter(|s| s.ok) {
            *versions
                .entry(format!("{} ({})", s.version, s.slot))
                .or_insert(0) += 1;
        }
        let ok = phase.iter().filter(|s| s.ok).count();
        phases.push(PhaseSummary {
            phase: name.to_string(),
            requests: phase.len(),
            errors: phase.len() - ok,
            failovers: phase.iter().filter(|s| s.failed_over).count(),
            versions,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            accuracy: if ok == 0 {
                0.0
            } else {
                phase.iter().filter(|s| s.correct).count() as f64 / ok as f64
            },
        });
    }
    // Failures are told apart by their cause: the fault's own answers, wherever their
    // request was sent from, and anything else.
    let failed = |injected: bool| {
        samples
            .iter()
            .filter(|s| !s.ok && s.injected == injected)
            .count()
    };
    let summary = DemoSummary {
        model: "digits".into(),
        clients: args.clients,
        requests: samples.len(),
        errors: failed(false),
        errors_from_the_fault: failed(true),
        failovers: samples.iter().filter(|s| s.failed_over).count(),
        phases,
        rollouts,
        requests_per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        rollback_after_fault_ms,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    anyhow::ensure!(
        summary.errors == 0,
        "{} requests failed outside the injected fault",
        summary.errors
    );
    anyhow::ensure!(
        summary.errors_from_the_fault == 0,
        "{} of v3's failures reached a client; the old version should have answered them",
        summary.errors_from_the_fault
    );
    anyhow::ensure!(
        first["phase_name"] == "torn_down",
        "rollout #1 should have gone live, but ended {}: {}",
        first["phase_name"],
        first["outcome"]
    );
    anyhow::ensure!(
        second["phase_name"] == "failed",
        "rollout #2 should have been stopped by the gates, but ended {}",
        second["phase_name"]
    );
    if let Some(third) = third {
        anyhow::ensure!(
            third["phase_name"] == "rolled_back",
            "rollout #3 should have been rolled back, but ended {}",
            third["phase_name"]
        );
    }
    Ok(())
}

fn render(s: &DemoSummary) -> String {
    let mut out = format!(
        "\nteal demo: model {}, {} requests from {} clients, {:.0} requests/s; {} failed outside the injected fault\n\n",
        s.model, s.requests, s.clients, s.requests_per_second, s.errors
    );
    out.push_str(&format!(
        "  {:<31} {:>8} {:>7} {:>8}  {:<34} {:>7} {:>7} {:>9}\n",
        "STEP", "REQUESTS", "ERRORS", "FAILOVER", "SERVED BY", "P50 MS", "P99 MS", "ACCURACY"
    ));
    for p in &s.phases {
        let served: Vec<String> = p
            .versions
            .iter()
            .map(|(v, n)| format!("{v} {}%", (n * 100 + p.requests / 2) / p.requests.max(1)))
            .collect();
        out.push_str(&format!(
            "  {:<31} {:>8} {:>7} {:>8}  {:<34} {:>7.2} {:>7.2} {:>8.1}%\n",
            p.phase,
            p.requests,
            p.errors,
            p.failovers,
            served.join(", "),
            p.p50_ms,
            p.p99_ms,
            p.accuracy * 100.0
        ));
    }
    out.push_str("\n  ROLLOUT                       ENDED        WHY\n");
    for r in &s.rollouts {
        out.push_str(&format!(
            "  #{} {:<12} {:<12} {:<12} {}\n",
            r.id,
            r.version,
            r.strategy,
            r.ended.replace('_', " "),
            r.outcome
        ));
        out.push_str(&format!(
            "     {}\n",
            r.phases.join(" > ").replace('_', " ")
        ));
    }
    if let Some(ms) = s.rollback_after_fault_ms {
        out.push_str(&format!(
            "\n  v3's fault to traffic back on v2: {ms:.0} ms; v3 failed {} requests in between and v2, still warm, answered them (failover), so {} failed for a client\n",
            s.failovers, s.errors_from_the_fault
        ));
    }
    out.push_str("\nNext: teal serve --config examples/teal.toml, then in another terminal:\n");
    out.push_str("  teal status --watch\n  teal deploy digits --version v2 --onnx models/digits/v2/model.onnx --watch\n  teal history digits\n");
    out
}
