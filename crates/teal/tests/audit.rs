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

/// Runs `teal audit verify` (with `extra` arguments) against a running teal.
async fn audit_verify(running: &teal::server::Running, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new(teal_bin())
        .args(["audit", "verify"])
        .args(extra)
        .env("TEAL_ADMIN_URL", running.admin_url())
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap()
}

/// A teal with five events: start-up and four hand-made switches.
async fn five_events() -> (teal::server::Running, std::path::PathBuf) {
    let config = config_with(&onnx("v1"), Some(&onnx("v2")));
    let state = config.server.state_dir.clone();
    let running = start(&config).await;
    let admin = admin(&running);
    for to in ["green", "blue", "green", "blue"] {
        let answer = switch_digits(&admin, to).await;
        assert_eq!(answer.status, 200, "{}", answer.error_message());
    }
    let verified = audit_verify(&running, &[]).await;
    let text = String::from_utf8_lossy(&verified.stdout).to_string();
    assert!(verified.status.success(), "{text}");
    assert!(
        text.contains("audit log intact: 5 events") && text.contains("anchored (event #5)"),
        "{text}"
    );
    (running, state.join("teal.db"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_newest_events_is_detected_by_audit_verify() {
    let (running, db) = five_events().await;
    // Someone hides the last two switches: what is left still chains.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM events WHERE id > 3", []).unwrap();
    let verified = audit_verify(&running, &[]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{text}");
    assert!(
        text.contains("TAMPERED")
            && text.contains("event #5, the newest teal wrote, is gone")
            && text.contains("the newest events were deleted"),
        "{text}"
    );
    let json = audit_verify(&running, &["--json"]).await;
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (
            &answer["intact"],
            &answer["anchor"],
            &answer["anchored_head"],
            &answer["first_broken"]
        ),
        (
            &serde_json::json!(false),
            &serde_json::json!("truncated"),
            &serde_json::json!(5),
            &serde_json::Value::Null
        ),
        "{answer}"
    );
    // teal goes on writing: the next event reuses a deleted id and chains to what is left,
    // yet the deletion stays found.
    let admin = admin(&running);
    let answer = switch_digits(&admin, "green").await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let verified = audit_verify(&running, &[]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{text}");
    assert!(
        text.contains("when teal wrote event #4") && text.contains("deleted"),
        "{text}"
    );
    stop(running).await;
}

/// The chain's hash as teal computes it: SHA-256 over the previous hash and the event's
/// fields, each followed by a zero byte. Anyone can compute it; only the anchor needs a key.
fn chain_hash(prev: &str, at_ms: i64, fields: &[Option<String>]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update([0u8]);
    hasher.update(at_ms.to_string().as_bytes());
    hasher.update([0u8]);
    for field in fields {
        hasher.update(field.as_deref().unwrap_or("").as_bytes());
        hasher.update([0u8]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_with_recomputed_hashes_is_detected_by_audit_verify() {
    let (running, db) = five_events().await;
    // Someone rewrites history (the first switch now claims blue stayed live) and recomputes
    // every hash after it, so the chain follows again.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE events SET live_version = 'v1', live_slot = 'blue' WHERE id = 2",
        [],
    )
    .unwrap();
    type Row = (i64, i64, Vec<Option<String>>);
    let rows: Vec<Row> = conn
        .prepare("SELECT id, at_ms, model, kind, actor, live_slot, live_version, detail FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                (2..8).map(|i| r.get(i)).collect::<Result<_, _>>()?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = String::new();
    for (id, at_ms, fields) in rows {
        let hash = chain_hash(&prev, at_ms, &fields);
        conn.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            rusqlite::params![prev, hash, id],
        )
        .unwrap();
        prev = hash;
    }
    // And moves the anchor's hash to the new head, without the key to sign it.
    let json = audit_verify(&running, &["--json"]).await;
    let answer: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(answer["first_broken"], serde_json::Value::Null, "{answer}");
    assert_eq!(answer["anchor"], "rewritten", "{answer}");
    let verified = audit_verify(&running, &[]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{text}");
    assert!(
        text.contains("TAMPERED") && text.contains("the chain was rewritten"),
        "{text}"
    );
    conn.execute("UPDATE audit_anchor SET hash = ?1", [&prev])
        .unwrap();
    let verified = audit_verify(&running, &[]).await;
    let text = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{text}");
    assert!(text.contains("not signed by the audit key"), "{text}");
    stop(running).await;
}
