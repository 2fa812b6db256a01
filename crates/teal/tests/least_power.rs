//! Least power: the admin token is not a shell, and the data plane cannot steer a rollout.
//! Commands come only from the operator's config file unless it allows them; a command does
//! not see teal's secrets; calls without the token change nothing; feedback can require a
//! token and never replaces a label; only the live version answers by name unless the model
//! allows the override; metrics can be scraped from a listener that serves nothing else.

mod common;

use bytes::Bytes;
use common::*;
use teal::cli::client::HttpClient;

/// A shell script in a fresh folder that appends a line to `started` each time it runs,
/// writes its environment to `env`, then serves digits `model_version` as `version` on the
/// port teal gave it.
fn serving_script(version: &str, model_version: &str) -> std::path::PathBuf {
    let dir = temp_dir("script");
    let script = dir.join("serve.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho started >> \"{dir}/started\"\nenv > \"{dir}/env\"\nexec {python} tests/python/onnx_model_server.py --port \"$TEAL_PORT\" --model models/digits/{model_version}/model.onnx --version {version}\n",
            dir = dir.display(),
            python = python_word()
        ),
    )
    .unwrap();
    script
}

fn process_slot(version: &str, script: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "version": version,
        "kind": "process",
        "command": format!("sh {}", script.display()),
        "workdir": repo_root(),
        "env": { "NAMED_BY_THE_SLOT": "yes" },
        "ready_timeout_ms": 30000,
        "stop_grace_ms": 2000,
    })
}

fn times_started(script: &std::path::Path) -> usize {
    std::fs::read_to_string(script.with_file_name("started"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn slot_versions(status: &serde_json::Value) -> Vec<String> {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_slot_through_the_api_is_403_unless_the_config_allows_commands() {
    let script = serving_script("v2-py", "v2");
    let running = start(&config_with(&onnx("v1"), None)).await;
    let admin = admin(&running);
    let deploy = admin
        .post_json(
            "/api/v1/models/digits/deploy",
            &process_slot("v2-py", &script),
        )
        .await
        .unwrap();
    assert_eq!(deploy.status, 403, "{}", deploy.error_message());
    assert!(
        deploy.error_message().contains("allow_commands = true"),
        "the refusal says what to set: {}",
        deploy.error_message()
    );
    assert!(
        deploy
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let rollout = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": process_slot("v2-py", &script) }),
        )
        .await
        .unwrap();
    assert_eq!(rollout.status, 403, "{}", rollout.error_message());
    assert!(rollout.error_message().contains("allow_commands"));
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(slot_versions(&status), ["v1"], "nothing was deployed");
    let rollouts = admin
        .get("/api/v1/models/digits/rollouts")
        .await
        .unwrap()
        .json();
    assert_eq!(
        rollouts["rollouts"],
        serde_json::json!([]),
        "no rollout began"
    );
    assert_eq!(times_started(&script), 0, "the command never ran");
    stop(running).await;

    let mut config = config_with(&onnx("v1"), None);
    config.server.allow_commands = true;
    let running = start(&config).await;
    let deployed = admin_of(&running)
        .post_json(
            "/api/v1/models/digits/deploy",
            &process_slot("v2-py", &script),
        )
        .await
        .unwrap();
    assert_eq!(deployed.status, 200, "{}", deployed.error_message());
    assert_eq!(times_started(&script), 1);
    stop(running).await;
}

fn admin_of(running: &teal::server::Running) -> HttpClient {
    admin(running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_process_slot_is_not_started_again_when_commands_are_not_allowed() {
    let script = serving_script("v2-py", "v2");
    let mut config = config_with(&onnx("v1"), None);
    config.server.allow_commands = true;
    let running = start(&config).await;
    let deployed = admin(&running)
        .post_json(
            "/api/v1/models/digits/deploy",
            &process_slot("v2-py", &script),
        )
        .await
        .unwrap();
    assert_eq!(deployed.status, 200, "{}", deployed.error_message());
    stop(running).await;
    assert_eq!(times_started(&script), 1);

    // The same state file, and a config file that no longer allows commands.
    config.server.allow_commands = false;
    let running = start(&config).await;
    let admin = admin(&running);
    assert_eq!(
        times_started(&script),
        1,
        "the remembered command did not run"
    );
    let all = admin.get("/api/v1/status").await.unwrap().json();
    assert_eq!(slot_versions(&all["models"][0]), ["v1"]);
    let held = &all["not_started"][0];
    assert_eq!(held["model"], "digits", "{all}");
    assert_eq!(held["version"], "v2-py");
    assert_eq!(held["slot"], "green");
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("allow_commands = true"),
        "{held}"
    );
    assert_eq!(live_version(&data(&running)).await, "v1");
    stop(running).await;

    // The state file now records what ran: allowing commands again does not bring the
    // slot back by itself (deploy it again), and nothing is reported as held back.
    config.server.allow_commands = true;
    let running = start(&config).await;
    assert_eq!(times_started(&script), 1);
    let status = admin_of(&running)
        .get("/api/v1/status")
        .await
        .unwrap()
        .json();
    assert_eq!(slot_versions(&status["models"][0]), ["v1"]);
    assert!(status.get("not_started").is_none(), "{status}");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_command_sees_a_clean_environment_without_teal_secrets() {
    let script = serving_script("v2", "v2");
    let dir = temp_dir("clean-env");
    let config = dir.join("teal.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\nfeedback_token = \"feedback-secret\"\n\n[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"v2\"\nkind = \"process\"\ncommand = \"sh {script}\"\nworkdir = \"{root}\"\nready_timeout_ms = 30000\nstop_grace_ms = 2000\nenv = {{ NAMED_BY_THE_SLOT = \"yes\" }}\n",
            state = dir.join("state").display(),
            script = script.display(),
            root = repo_root().display(),
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(teal_bin());
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .env("TEAL_FEEDBACK_TOKEN", "feedback-from-env")
        .env("SOME_CLOUD_SECRET", "do-not-pass")
        .env("TEAL_LOG", "warn")
        .stderr(std::process::Stdio::null());
    let teal = spawn_teal(&mut command);
    let env = std::fs::read_to_string(script.with_file_name("env")).unwrap();
    for secret in [TOKEN, "feedback-from-env", "feedback-secret", "do-not-pass"] {
        assert!(!env.contains(secret), "the child saw {secret}:\n{env}");
    }
    for name in [
        "TEAL_ADMIN_TOKEN=",
        "TEAL_FEEDBACK_TOKEN=",
        "SOME_CLOUD_SECRET=",
    ] {
        assert!(!env.lines().any(|l| l.starts_with(name)), "{name}\n{env}");
    }
    assert!(env.lines().any(|l| l == "NAMED_BY_THE_SLOT=yes"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("TEAL_PORT=")), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    drop(teal);
}

/// A digits model with both slots loaded (v1 live, v2 standby).
fn two_slots(settings: &str) -> teal::core::config::Config {
    config_with_model_settings(settings, &onnx("v1"), Some(&onnx("v2")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_token_change_nothing() {
    let running = start(&two_slots("")).await;
    let admin = admin(&running);
    let before = admin.get("/api/v1/models/digits").await.unwrap().json();
    let history = |answer: serde_json::Value| answer["events"].as_array().unwrap().len();
    let events = history(
        admin
            .get("/api/v1/models/digits/history")
            .await
            .unwrap()
            .json(),
    );
    let changes: [(&str, serde_json::Value); 7] = [
        ("switch", serde_json::json!({ "to": "green" })),
        ("rollback", serde_json::json!({})),
        ("canary", serde_json::json!({ "percent": 50 })),
        ("shadow", serde_json::json!({ "percent": 50 })),
        ("teardown", serde_json::json!({ "slot": "green" })),
        (
            "deploy",
            serde_json::json!({ "version": "v3", "kind": "onnx", "path": repo_root().join("models/digits/v2/model.onnx") }),
        ),
        (
            "rollouts",
            serde_json::json!({ "candidate": { "version": "v3", "kind": "onnx", "path": repo_root().join("models/digits/v2/model.onnx") } }),
        ),
    ];
    let url = running.admin_url();
    let callers = [
        HttpClient::new(&url),
        HttpClient::new(&url).with_token(Some("wrong".into())),
        HttpClient::new(&url).with_token(Some(format!("{TOKEN}x"))),
        HttpClient::new(&url).with_header("authorization", &format!("Basic {TOKEN}")),
    ];
    for caller in &callers {
        for (verb, body) in &changes {
            let answer = caller
                .post_json(&format!("/api/v1/models/digits/{verb}"), body)
                .await
                .unwrap();
            assert_eq!(answer.status, 401, "{verb}: {}", answer.error_message());
            assert!(answer.error_message().contains("admin token"));
            assert!(
                !answer
                    .error_message()
                    .contains(&running.state_dir.display().to_string()),
                "the refusal does not say where teal keeps its state"
            );
        }
    }
    let after = admin.get("/api/v1/models/digits").await.unwrap().json();
    for field in ["live", "generation", "candidate_weight", "shadow"] {
        assert_eq!(before[field], after[field], "{field}");
    }
    assert_eq!(slot_versions(&after), ["v1", "v2"]);
    let events_after = history(
        admin
            .get("/api/v1/models/digits/history")
            .await
            .unwrap()
            .json(),
    );
    assert_eq!(events, events_after, "no audit event was written");
    stop(running).await;
}

async fn infer_with_id(client: &HttpClient, id: &str) -> String {
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let headers: Vec<(&str, &str)> = if id.is_empty() {
        Vec::new()
    } else {
        vec![("x-request-id", id)]
    };
    let answer = client
        .send("POST", "/v2/models/digits/infer", &headers, body)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    answer.header("x-request-id").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_feedback_is_refused_and_a_given_label_is_not_replaced() {
    let mut config = config_with_model_settings("prediction_output = \"label\"", &onnx("v1"), None);
    config.server.feedback_token = Some("labeller-secret".into());
    let running = start(&config).await;
    let client = data(&running);
    let id = infer_with_id(&client, "").await;
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_ne!(infer_with_id(&client, "").await, id);
    let feedback = |token: Option<&'static str>, label: i64| {
        let client = client.clone();
        let id = id.clone();
        async move {
            let body =
                Bytes::from(serde_json::json!({ "request_id": id, "label": label }).to_string());
            let mut headers = vec![("content-type", "application/json")];
            if let Some(token) = token {
                headers.push(("x-teal-feedback-token", token));
            }
            client
                .send("POST", "/v2/models/digits/feedback", &headers, body)
                .await
                .unwrap()
        }
    };
    for forged in [
        None,
        Some("guess"),
        Some("Labeller-secret"),
        Some("labeller-secre"),
    ] {
        let answer = feedback(forged, 3).await;
        assert_eq!(answer.status, 401, "{forged:?}: {}", answer.error_message());
        assert!(answer.error_message().contains("x-teal-feedback-token"));
    }
    let first = feedback(Some("labeller-secret"), 3).await;
    assert_eq!(first.status, 200, "{}", first.error_message());
    assert_eq!(first.json()["label"], "3");
    let again = feedback(Some("labeller-secret"), 3).await;
    assert_eq!(again.status, 200, "the same label again is harmless");
    let other = feedback(Some("labeller-secret"), 7).await;
    assert_eq!(other.status, 409, "{}", other.error_message());
    assert!(
        other.error_message().contains("already has the label 3"),
        "{}",
        other.error_message()
    );
    let db = rusqlite::Connection::open(config.server.state_dir.join("teal.db")).unwrap();
    let labels: Vec<String> = db
        .prepare("SELECT label FROM feedback WHERE request_id = ?1")
        .unwrap()
        .query_map([&id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(labels, ["3"], "the first label stands");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_version_answers_by_name_only_when_the_model_allows_the_override() {
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let running = start(&two_slots("header_override = false")).await;
    let client = data(&running);
    let standby = client
        .send(
            "POST",
            "/v2/models/digits/versions/v2/infer",
            &[],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(standby.status, 403, "{}", standby.error_message());
    assert!(standby.error_message().contains("not live"));
    assert!(
        standby
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let live = client
        .send(
            "POST",
            "/v2/models/digits/versions/v1/infer",
            &[],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(live.status, 200, "{}", live.error_message());
    assert_eq!(live.header("x-teal-version"), Some("v1"));
    let unknown = client
        .send(
            "POST",
            "/v2/models/digits/versions/v9/infer",
            &[],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    // The slot header is ignored, as before, so the standby is out of reach.
    let by_header = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("x-teal-slot", "green")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(by_header.header("x-teal-version"), Some("v1"));
    stop(running).await;

    let running = start(&two_slots("header_override = true")).await;
    let standby = data(&running)
        .send("POST", "/v2/models/digits/versions/v2/infer", &[], body)
        .await
        .unwrap();
    assert_eq!(standby.status, 200, "{}", standby.error_message());
    assert_eq!(standby.header("x-teal-version"), Some("v2"));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_serves_metrics_and_nothing_else() {
    let mut config = config_with(&onnx("v1"), None);
    config.server.metrics_listen = Some("127.0.0.1:0".into());
    let running = start(&config).await;
    let metrics_url = running.metrics_url().expect("a metrics listener");
    assert_ne!(metrics_url, running.admin_url());
    assert_eq!(live_version(&data(&running)).await, "v1");
    let scraper = HttpClient::new(&metrics_url);
    let scraped = scraper.get("/metrics").await.unwrap();
    assert_eq!(scraped.status, 200);
    let text = String::from_utf8_lossy(&scraped.body).to_string();
    assert!(text.contains("model_server_requests_total"), "{text}");
    // Even with the token, nothing but the metrics is there.
    let with_token = HttpClient::new(&metrics_url).with_token(Some(TOKEN.into()));
    for path in ["/api/v1/status", "/", "/dashboard", "/api/v1/openapi.json"] {
        let answer = with_token.get(path).await.unwrap();
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.error_message().contains("GET /metrics only"));
    }
    let switch = with_token
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({ "to": "blue" }),
        )
        .await
        .unwrap();
    assert_eq!(switch.status, 404);
    let post = scraper
        .post_json("/metrics", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_rollout_of_a_command_is_not_resumed_when_commands_are_not_allowed() {
    use common::rollouts::{quick, start_rollout, wait_phase};
    let script = serving_script("v2-py", "v2");
    let mut config = config_with(&onnx("v1"), None);
    config.server.allow_commands = true;
    let running = start(&config).await;
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["evidence"] = serde_json::Value::Null;
    settings["auto_switch"] = false.into();
    let id = start_rollout(&admin(&running), process_slot("v2-py", &script), settings).await;
    wait_phase(
        &admin(&running),
        "awaiting_approval",
        std::time::Duration::from_secs(60),
    )
    .await;
    stop(running).await;
    assert_eq!(times_started(&script), 1);

    config.server.allow_commands = false;
    let running = start(&config).await;
    let admin = admin(&running);
    assert_eq!(
        times_started(&script),
        1,
        "neither the slot nor the rollout started it"
    );
    let status = admin.get("/api/v1/status").await.unwrap().json();
    assert_eq!(slot_versions(&status["models"][0]), ["v1"]);
    let held = status["not_started"].as_array().unwrap();
    assert!(
        held.iter()
            .any(|h| h["rollout"] == id && h["version"] == "v2-py"),
        "{status:#}"
    );
    assert!(
        held.iter()
            .any(|h| h["slot"] == "green" && h["version"] == "v2-py"),
        "{status:#}"
    );
    // The rollout is left as it was, not driven: no driver holds the model.
    assert!(status["models"][0].get("rollout").is_none(), "{status:#}");
    assert_eq!(live_version(&data(&running)).await, "v1");
    stop(running).await;
}
