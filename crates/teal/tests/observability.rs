//! What operators watch: the shipped alert rules and the metrics pass `promtool`, every
//! metric the rules use is one teal exports, logs come as JSON lines with request and trace
//! ids and one line per rollout transition, and a caller's `traceparent` reaches the model
//! server behind an upstream slot.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use teal::cli::client::HttpClient;

/// Debian's `promtool` (package `prometheus`): the one on the PATH, or else one unpacked
/// (once) into `.deps/prometheus` with `apt-get download` and `dpkg -x`, no root needed.
fn promtool_bin() -> std::path::PathBuf {
    let on_path = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return "promtool".into();
    }
    let deps = repo_root().join(".deps");
    let unpacked = deps.join("prometheus");
    let bin = unpacked.join("usr/bin/promtool");
    if !bin.exists() {
        let debs = deps.join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        let download = Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&debs)
            .status()
            .expect("apt-get runs");
        assert!(download.success(), "apt-get download prometheus");
        let deb = std::fs::read_dir(&debs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("prometheus_"))
            })
            .expect("the downloaded package");
        // Unpacked beside, then moved into place, so a half-unpacked folder is never used.
        let partial = deps.join(format!("prometheus.partial-{}", std::process::id()));
        let unpack = Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&partial)
            .status()
            .expect("dpkg runs");
        assert!(unpack.success(), "dpkg -x {}", deb.display());
        if std::fs::rename(&partial, &unpacked).is_err() {
            // Another test unpacked it first.
            let _ = std::fs::remove_dir_all(&partial);
        }
    }
    bin
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup dev installs Debian's prometheus package)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Metric names an expression uses (identifiers followed by `{`, `[` or a space that look
/// like teal's or the model server's).
fn metric_names(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut word = String::new();
        for c in line.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if word.starts_with("teal_") || word.starts_with("model_server_") {
                    names.insert(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_rules_and_the_metrics_and_the_rules_use_real_names() {
    let rules_path = repo_root().join("deploy/prometheus/teal-alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules_path.to_str().unwrap()], None);
    assert!(ok, "{out}");

    // Produce every metric the rules read: traffic on both slots, a validation, a rollout
    // that is rolled back.
    let config = config_with(&onnx("v1"), None);
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    for _ in 0..20 {
        client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
    }
    let candidate = serde_json::json!({ "version": "v2", "kind": "onnx", "path": repo_root().join("models/digits/v2/model.onnx") });
    let settings = serde_json::json!({ "auto_switch": false, "evidence": { "holdout": repo_root().join("models/digits/holdout.jsonl") } });
    let started = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": candidate, "settings": settings }),
        )
        .await
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.error_message());
    let waiting = eventually(Duration::from_secs(60), async || {
        admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json()["phase_name"]
            == "awaiting_approval"
    })
    .await;
    assert!(waiting);
    for verb in ["promote", "rollback"] {
        let a = admin
            .post_json(
                &format!("/api/v1/models/digits/{verb}"),
                &serde_json::json!({}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{verb}: {}", a.error_message());
    }
    for _ in 0..5 {
        client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
    }
    // A bad request, so the error counter has a series.
    let bad = client
        .send("POST", "/v2/models/digits/infer", &[], Bytes::from("{"))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let metrics = admin.get("/metrics").await.unwrap();
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics: {out}");

    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let used = metric_names(&rules);
    assert!(used.len() >= 8, "{used:?}");
    for name in &used {
        let exported = text
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(
            exported,
            "the rules use {name}, which teal does not export:\n{text}"
        );
    }
    for series in [
        "teal_rollout_phase{model=\"digits\",phase=\"rolled_back\"} 1",
        "teal_rollbacks_total{model=\"digits\"} 1",
        "teal_gate_passed{model=\"digits\",gate=\"agreement\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // Scrapers that ask for OpenMetrics get it.
    let open = admin
        .send(
            "GET",
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert!(
        open.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        String::from_utf8_lossy(&open.body)
            .trim_end()
            .ends_with("# EOF")
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_and_trace_ids_and_the_traceparent_reaches_the_model_server() {
    let dir = temp_dir("logs");
    let trace_log = dir.join("traces.txt");
    let log_file = dir.join("teal.log");
    let root = repo_root();
    let config = format!(
        "[server]\nstate_dir = \"{state}\"\n\n[[model]]\nname = \"digits\"\n[model.rollout]\nevidence = {{ holdout = \"{holdout}\" }}\nobserve_ms = \"1s\"\nkeep_warm_ms = \"0s\"\non_inconclusive = \"promote\"\nrules = {{ check_interval_ms = 200 }}\n[model.blue]\nversion = \"v1\"\nkind = \"process\"\nworkdir = \"{root}\"\ncommand = \"{python} tests/python/onnx_model_server.py --port {{port}} --model models/digits/v1/model.onnx --version v1 --trace-log {traces}\"\nready_timeout_ms = 30000\n",
        state = dir.join("state").display(),
        holdout = root.join("models/digits/holdout.jsonl").display(),
        root = root.display(),
        traces = trace_log.display(),
        python = python_word(),
    );
    std::fs::write(dir.join("teal.toml"), config).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut command = Command::new(teal_bin());
    command
        .args(["serve", "--config"])
        .arg(dir.join("teal.toml"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .args(["--log-format", "json", "--log-file"])
        .arg(&log_file)
        .env("TEAL_LOG", "info,teal::gateway=debug")
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut teal = spawn_teal(&mut command);
    let client = HttpClient::new(&format!("http://127.0.0.1:{port}"));
    let admin =
        HttpClient::new(&format!("http://127.0.0.1:{admin_port}")).with_token(Some(TOKEN.into()));

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let answer = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("traceparent", traceparent), ("x-request-id", "traced-1")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    // An invalid one is dropped, not forwarded.
    client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("traceparent", "not-a-trace")],
            body,
        )
        .await
        .unwrap();
    let forwarded = std::fs::read_to_string(&trace_log).unwrap();
    let lines: Vec<&str> = forwarded.lines().collect();
    assert_eq!(lines, [traceparent, "-"], "what the model server received");

    // A rollout, for its transition lines.
    let candidate = serde_json::json!({ "version": "v2", "kind": "onnx", "path": root.join("models/digits/v2/model.onnx") });
    let started = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": candidate }),
        )
        .await
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.error_message());
    let done = eventually(Duration::from_secs(60), async || {
        admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json()["phase_name"]
            == "torn_down"
    })
    .await;
    assert!(done, "the rollout finished");
    terminate(teal.0.id());
    let _ = teal.0.wait();
    teal.1 = true;

    let log = std::fs::read_to_string(&log_file).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let served = entries
        .iter()
        .find(|e| e["fields"]["request_id"] == "traced-1")
        .expect("a line about the request, with its id");
    assert_eq!(
        served["fields"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let transitions: Vec<&str> = entries
        .iter()
        .filter(|e| e["fields"]["message"] == "rollout transition")
        .map(|e| e["fields"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        transitions,
        [
            "deploying",
            "warming_up",
            "validating",
            "switching",
            "observing",
            "promoted",
            "tearing_down",
            "torn_down"
        ],
        "one line per rollout transition"
    );
}

/// The samples of a scrape in the classic text format, by series (`name{labels}`), with their
/// values as written.
fn samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.to_string()))
        })
        .collect()
}

/// The series of each scrape, one minute apart, as `promtool test rules` input: every series
/// of a metric the rules use, `_` where a scrape did not have it.
fn input_series(scrapes: &[&str], used: &BTreeSet<String>) -> String {
    let scrapes: Vec<BTreeMap<String, String>> = scrapes.iter().map(|s| samples(s)).collect();
    let all: BTreeSet<&String> = scrapes.iter().flat_map(|s| s.keys()).collect();
    let mut out = String::new();
    for series in all {
        let name = series.split('{').next().unwrap_or(series);
        if !used.contains(name) {
            continue;
        }
        let values: Vec<&str> = scrapes
            .iter()
            .map(|s| s.get(series).map_or("_", String::as_str))
            .collect();
        out.push_str(&format!(
            "      - series: '{}'\n        values: '{}'\n",
            series.replace('\'', "''"),
            values.join(" ")
        ));
    }
    out
}

/// The rollback alert fires on a model's first rollback: `teal_rollbacks_total` (and every
/// other labelled series the rules read) exists at 0 from start-up, so the step to 1 is an
/// increase. Checked by `promtool test rules` on two scrapes of the real binary: right after
/// start-up, and after the first rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_alert_fires_on_the_first_rollback() {
    let config = config_file(&format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\n{}",
        onnx("v1")
    ));
    let teal = serve_binary(&config, None);
    let start = teal.admin.get("/metrics").await.unwrap();
    let start = String::from_utf8_lossy(&start.body).to_string();
    for series in [
        "teal_rollbacks_total{model=\"digits\"} 0",
        "teal_switches_total{model=\"digits\"} 0",
        "teal_rollout_phase{model=\"digits\",phase=\"warming_up\"} 0",
        "model_server_errors_total{model=\"digits\",version=\"v1\",slot=\"blue\",error_type=\"backend\"} 0",
        "model_server_requests_total{model=\"digits\",version=\"v1\",slot=\"blue\",endpoint=\"infer\"} 0",
        "model_server_latency_seconds_count{model=\"digits\",version=\"v1\",slot=\"blue\"} 0",
    ] {
        assert!(start.contains(series), "{series} at start-up:\n{start}");
    }

    let root = repo_root();
    let candidate = serde_json::json!({ "version": "v2", "kind": "onnx", "path": root.join("models/digits/v2/model.onnx") });
    let settings = serde_json::json!({ "auto_switch": false, "evidence": { "holdout": root.join("models/digits/holdout.jsonl") } });
    let started = teal
        .admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": candidate, "settings": settings }),
        )
        .await
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.error_message());
    let waiting = eventually(Duration::from_secs(60), async || {
        teal.admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json()["phase_name"]
            == "awaiting_approval"
    })
    .await;
    assert!(waiting, "the candidate waits for approval");
    // Deployed: the new version's series exist before it answers a request.
    let deployed = teal.admin.get("/metrics").await.unwrap();
    let deployed = String::from_utf8_lossy(&deployed.body).to_string();
    let green = "model_server_errors_total{model=\"digits\",version=\"v2\",slot=\"green\",error_type=\"backend\"} 0";
    assert!(deployed.contains(green), "{green}:\n{deployed}");
    for verb in ["promote", "rollback"] {
        let a = teal
            .admin
            .post_json(
                &format!("/api/v1/models/digits/{verb}"),
                &serde_json::json!({}),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{verb}: {}", a.error_message());
    }
    let rolled_back = eventually(Duration::from_secs(30), async || {
        let text = teal.admin.get("/metrics").await.unwrap();
        String::from_utf8_lossy(&text.body).contains("teal_rollbacks_total{model=\"digits\"} 1")
    })
    .await;
    assert!(rolled_back, "the rollback is counted");
    let after = teal.admin.get("/metrics").await.unwrap();
    let after = String::from_utf8_lossy(&after.body).to_string();

    let rules_path = root.join("deploy/prometheus/teal-alerts.yml");
    let used = metric_names(&std::fs::read_to_string(&rules_path).unwrap());
    let test = format!(
        "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n      - eval_time: 0m\n        alertname: TealAutomaticRollback\n        exp_alerts: []\n      - eval_time: 1m\n        alertname: TealAutomaticRollback\n        exp_alerts:\n          - exp_labels:\n              severity: warning\n              model: digits\n            exp_annotations:\n              summary: \"digits: a rollout was rolled back\"\n              runbook: docs/runbook.md#tealautomaticrollback\n",
        rules = rules_path.display(),
        series = input_series(&[&start, &after], &used),
    );
    let dir = config.parent().unwrap();
    let test_path = dir.join("rollback-alert.test.yml");
    std::fs::write(&test_path, &test).unwrap();
    let (ok, out) = promtool(&["test", "rules", test_path.to_str().unwrap()], None);
    assert!(ok, "promtool test rules: {out}\n{test}");
}
