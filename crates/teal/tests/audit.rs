//! The audit trail: which version served each request, which was live at any time, and a
//! hash chain that shows tampering. All in a real SQLite file.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_and_events_answer_which_version_served() {
    let config = config_with(&onnx("v1"), Some(&onnx("v2")));
    let state = config.server.state_dir.clone();
    let running = start(&config).await;
    let client = data(&running);
    let admin = admin(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    for i in 0..40 {
        let id = format!("before-{i}");
        client
            .send(
                "POST",
                "/v2/models/digits/infer",
                &[("x-request-id", &id)],
                body.clone(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let switched = switch_digits(&admin, "green").await;
    assert_eq!(switched.status, 200);
    let history = admin
        .get("/api/v1/models/digits/history")
        .await
        .unwrap()
        .json();
    let switch_at = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "switched")
        .unwrap()["at_ms"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 0..40 {
        let id = format!("after-{i}");
        client
            .send(
                "POST",
                "/v1/models/digits/predict",
                &[("x-request-id", &id), ("content-type", "application/json")],
                Bytes::from(serde_json::json!({"features": holdout("digits")[0].0}).to_string()),
            )
            .await
            .unwrap();
    }
    // The log is written in batches off the request path: wait (bounded) for the last one.
    let logged = eventually(Duration::from_secs(10), async || {
        admin
            .get("/api/v1/models/digits/audit?request=after-39")
            .await
            .unwrap()
            .status
            == 200
    })
    .await;
    assert!(logged, "the request log never recorded the last request");
    for (prefix, version, slot) in [("before", "v1", "blue"), ("after", "v2", "green")] {
        for i in 0..40 {
            let answer = admin
                .get(&format!("/api/v1/models/digits/audit?request={prefix}-{i}"))
                .await
                .unwrap();
            assert_eq!(
                answer.status,
                200,
                "{prefix}-{i}: {}",
                answer.error_message()
            );
            let record = &answer.json()["requests"][0];
            assert_eq!(
                (
                    record["version"].as_str(),
                    record["slot"].as_str(),
                    record["status"].as_u64()
                ),
                (Some(version), Some(slot), Some(200)),
                "{prefix}-{i}"
            );
        }
    }
    let before = admin
        .get(&format!("/api/v1/models/digits/audit?at={}", switch_at - 1))
        .await
        .unwrap()
        .json();
    let after = admin
        .get(&format!(
            "/api/v1/models/digits/audit?at={}",
            teal::state::store::format_time(switch_at + 1)
        ))
        .await
        .unwrap()
        .json();
    assert_eq!(
        (
            before["live_version"].as_str(),
            after["live_version"].as_str()
        ),
        (Some("v1"), Some("v2"))
    );
    let bad_time = admin
        .get("/api/v1/models/digits/audit?at=yesterday")
        .await
        .unwrap();
    assert_eq!(bad_time.status, 400);
    let unknown = admin
        .get("/api/v1/models/digits/audit?request=nope")
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);

    let kinds: Vec<String> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["started", "switched"]);
    stop(running).await;
    assert!(
        state.join("teal.db").exists(),
        "the state lives in one SQLite file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_event_is_detected_by_audit_verify() {
    let config = config_with(&onnx("v1"), Some(&onnx("v2")));
    let state = config.server.state_dir.clone();
    let running = start(&config).await;
    let admin = admin(&running);
    for to in ["green", "blue", "green"] {
        admin
            .post_json(
                "/api/v1/models/digits/switch",
                &serde_json::json!({ "to": to }),
            )
            .await
            .unwrap();
    }
    let verify = |running: &teal::server::Running| {
        let url = running.admin_url();
        async move {
            tokio::process::Command::new(teal_bin())
                .args(["audit", "verify"])
                .env("TEAL_ADMIN_URL", url)
                .env("TEAL_ADMIN_TOKEN", TOKEN)
                .output()
                .await
                .unwrap()
        }
    };
    let intact = verify(&running).await;
    assert!(
        intact.status.success(),
        "{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(String::from_utf8_lossy(&intact.stdout).contains("audit log intact: 4 events"));

    // Someone rewrites history: the first switch now claims v1 stayed live.
    let db = rusqlite::Connection::open(state.join("teal.db")).unwrap();
    db.execute(
        "UPDATE events SET live_version = 'v1', live_slot = 'blue' WHERE id = 2",
        [],
    )
    .unwrap();
    let tampered = verify(&running).await;
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&tampered.stdout).contains("TAMPERED: event #2"),
        "{}",
        String::from_utf8_lossy(&tampered.stdout)
    );
    let history = tokio::process::Command::new(teal_bin())
        .args(["history", "digits"])
        .env("TEAL_ADMIN_URL", running.admin_url())
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        text.contains("switched") && text.contains("started"),
        "{text}"
    );
    stop(running).await;
}
