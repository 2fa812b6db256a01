//! `teal demo`: the bundled example models, real traffic, a switch to green and a rollback.
//!
//! It writes the embedded models and a config to a temporary folder, starts a real teal on
//! loopback, sends V2 requests from the holdout set over HTTP from several clients, switches
//! through the admin API while they run, and reports what each version served.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use teal_core::config::Config;

use crate::client::HttpClient;
use crate::gateway::{GENERATION_HEADER, SLOT_HEADER, VERSION_HEADER};
use crate::server;

const DIGITS_V1: &[u8] = include_bytes!("../../../models/digits/v1/model.onnx");
const DIGITS_V1_REFERENCE: &[u8] = include_bytes!("../../../models/digits/v1/reference.json");
const DIGITS_V2: &[u8] = include_bytes!("../../../models/digits/v2/model.onnx");
const DIGITS_V2_REFERENCE: &[u8] = include_bytes!("../../../models/digits/v2/reference.json");
const DIGITS_HOLDOUT: &str = include_str!("../../../models/digits/holdout.jsonl");

const DEMO_CONFIG: &str = r#"# Written by `teal demo`: the bundled digits model, v1 in blue (live) and v2 in green.
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
state_dir = "state"

[[model]]
name = "digits"
live = "blue"

[model.blue]
version = "v1"
kind = "onnx"
path = "digits/v1/model.onnx"
reference = "digits/v1/reference.json"
card = { notes = "LogisticRegression on scikit-learn's digits", owner = "examples" }

[model.green]
version = "v2"
kind = "onnx"
path = "digits/v2/model.onnx"
reference = "digits/v2/reference.json"
card = { notes = "StandardScaler + MLP on scikit-learn's digits", owner = "examples" }
"#;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Requests in each of the three phases (blue live, green live, rolled back).
    #[arg(long, default_value_t = 3000)]
    pub requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
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
    generation: u64,
    version: String,
    slot: String,
    ok: bool,
    latency: Duration,
    correct: bool,
}

#[derive(serde::Serialize)]
struct PhaseSummary {
    phase: String,
    route_generation: u64,
    requests: usize,
    errors: usize,
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
    switch_ms: Vec<f64>,
    phases: Vec<PhaseSummary>,
    requests_per_second: f64,
    /// Answers whose version is not the one their route table made live.
    misrouted: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn progress(json: bool, line: &str) {
    if !json {
        eprintln!("  {line}");
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
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
        "loading digits v1 (blue) and v2 (green); checking each against its reference outputs",
    );
    let token = format!("demo-{:016x}", fastrand::u64(..));
    let running = server::start(&config, Some(token.clone())).await?;
    progress(
        args.json,
        &format!(
            "teal is serving on {} (admin {})",
            running.data_url(),
            running.admin_url()
        ),
    );

    let rows = Arc::new(holdout()?);
    let data = HttpClient::new(&running.data_url());
    let admin = HttpClient::new(&running.admin_url()).with_token(Some(token));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut clients = Vec::new();
    for c in 0..args.clients {
        let (data, rows, done, stop) = (data.clone(), rows.clone(), done.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let row = &rows[i % rows.len()];
                i += 7;
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
                        generation: a
                            .header(GENERATION_HEADER)
                            .and_then(|g| g.parse().ok())
                            .unwrap_or(0),
                        version: a.header(VERSION_HEADER).unwrap_or("?").to_string(),
                        slot: a.header(SLOT_HEADER).unwrap_or("?").to_string(),
                        ok: a.status == 200,
                        latency,
                        correct: a.json()["outputs"][0]["data"][0].as_i64() == Some(row.label),
                    },
                    Err(_) => Sample {
                        generation: 0,
                        version: "-".into(),
                        slot: "-".into(),
                        ok: false,
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

    let wait_for = |target: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let mut switch_ms = Vec::new();
    progress(
        args.json,
        &format!("phase 1: {} requests with blue (v1) live", args.requests),
    );
    wait_for(args.requests).await;
    for (step, (path, body, what)) in [
        (
            "/api/v1/models/digits/switch",
            serde_json::json!({"to": "green"}),
            "switched to green (v2)",
        ),
        (
            "/api/v1/models/digits/rollback",
            serde_json::json!({}),
            "rolled back to blue (v1)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let t = Instant::now();
        let answer = admin.post_json(path, &body).await?;
        anyhow::ensure!(
            answer.status == 200,
            "switch failed: {}",
            answer.error_message()
        );
        switch_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        progress(
            args.json,
            &format!(
                "phase {}: {what} under load; {} more requests",
                step + 2,
                args.requests
            ),
        );
        wait_for(args.requests * (step + 2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for client in clients {
        samples.extend(client.await?);
    }
    let elapsed = started.elapsed();
    running.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);

    let names = [
        "blue (v1) live",
        "switched to green (v2)",
        "rolled back to blue (v1)",
    ];
    let mut phases = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let generation = i as u64 + 1;
        let mut phase: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.generation == generation)
            .collect();
        phase.sort_by_key(|s| s.latency);
        let latencies: Vec<Duration> = phase.iter().map(|s| s.latency).collect();
        let mut versions = BTreeMap::new();
        for s in &phase {
            *versions
                .entry(format!("{} ({})", s.version, s.slot))
                .or_insert(0) += 1;
        }
        let ok = phase.iter().filter(|s| s.ok).count();
        phases.push(PhaseSummary {
            phase: name.to_string(),
            route_generation: generation,
            requests: phase.len(),
            errors: phase.len() - ok,
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
    let summary = DemoSummary {
        model: "digits".into(),
        clients: args.clients,
        requests: samples.len(),
        errors: samples.iter().filter(|s| !s.ok).count(),
        switch_ms,
        phases,
        requests_per_second: samples.len() as f64 / elapsed.as_secs_f64(),
        // Generations 1 and 3 have blue (v1) live, generation 2 green (v2).
        misrouted: samples
            .iter()
            .filter(|s| s.ok && s.version != if s.generation == 2 { "v2" } else { "v1" })
            .count(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    anyhow::ensure!(summary.errors == 0, "{} requests failed", summary.errors);
    anyhow::ensure!(
        summary.misrouted == 0,
        "{} answers came from the wrong slot",
        summary.misrouted
    );
    Ok(())
}

fn render(s: &DemoSummary) -> String {
    let mut out = format!(
        "\nteal demo: model {}, {} requests from {} clients, {:.0} requests/s, {} failed\n\n",
        s.model, s.requests, s.clients, s.requests_per_second, s.errors
    );
    out.push_str(&format!(
        "  {:<26} {:>8} {:>7}  {:<22} {:>8} {:>8} {:>9}\n",
        "PHASE", "REQUESTS", "ERRORS", "SERVED BY", "P50 MS", "P99 MS", "ACCURACY"
    ));
    for p in &s.phases {
        let served: Vec<String> = p
            .versions
            .iter()
            .map(|(v, n)| format!("{v} {}%", (n * 100 + p.requests / 2) / p.requests.max(1)))
            .collect();
        out.push_str(&format!(
            "  {:<26} {:>8} {:>7}  {:<22} {:>8.2} {:>8.2} {:>8.1}%\n",
            p.phase,
            p.requests,
            p.errors,
            served.join(", "),
            p.p50_ms,
            p.p99_ms,
            p.accuracy * 100.0
        ));
    }
    let switches: Vec<String> = s.switch_ms.iter().map(|ms| format!("{ms:.2} ms")).collect();
    out.push_str(&format!(
        "\n  switches: {} (admin call round trip {}); each is one atomic store of a new route table.\n  answers from a slot other than the one their route table made live: {}\n",
        s.switch_ms.len(),
        switches.join(", "),
        s.misrouted
    ));
    out.push_str("\nNext: teal serve --config examples/teal.toml, then in another terminal:\n");
    out.push_str("  teal status\n  teal switch digits --to green\n  teal rollback digits\n");
    out
}
