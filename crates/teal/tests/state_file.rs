//! The state file does not fill from the data plane: requests for models teal does not serve
//! are not logged, and the request log is pruned to its bound. Real sockets, a real SQLite
//! file, measured on disk.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;

/// The state file's size on disk, with its write-ahead log.
fn state_bytes(state: &Path) -> u64 {
    ["teal.db", "teal.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(state.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn request_rows(state: &Path, model: Option<&str>) -> i64 {
    let db = rusqlite::Connection::open(state.join("teal.db")).unwrap();
    match model {
        Some(m) => db.query_row("SELECT count(*) FROM requests WHERE model = ?1", [m], |r| {
            r.get(0)
        }),
        None => db.query_row("SELECT count(*) FROM requests", [], |r| r.get(0)),
    }
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_model_requests_does_not_grow_the_state_file() {
    let config = config_with(&onnx("v1"), None);
    let state = config.server.state_dir.clone();
    let running = start(&config).await;
    let client = data(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    // One request teal serves, logged in order with everything before it, marks where the
    // request log's writer has got to: measured once it is on disk, no sleeping on timing.
    let marker = async |rows: i64| {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        let written = eventually(Duration::from_secs(10), async || {
            request_rows(&state, Some("digits")) == rows
        })
        .await;
        assert!(written, "{} rows", request_rows(&state, Some("digits")));
    };
    marker(1).await;
    let before = state_bytes(&state);
    for i in 0..3_000 {
        let path = format!("/v2/models/nope-{i}/infer");
        let answer = client.send("POST", &path, &[], body.clone()).await.unwrap();
        assert_eq!(answer.status, 404, "{}", answer.error_message());
        let simple = client
            .send(
                "POST",
                &format!("/v1/models/nope-{i}/predict"),
                &[("content-type", "application/json")],
                Bytes::from_static(b"{\"features\": [[1.0]]}"),
            )
            .await
            .unwrap();
        assert_eq!(simple.status, 404);
    }
    // The marker after the flood is written only once the writer has passed the flood.
    marker(2).await;
    let after = state_bytes(&state);
    assert_eq!(request_rows(&state, None), 2, "no unknown model was logged");
    // The marker's own row writes a few pages to the WAL (its table and index pages, about
    // 4 kB each); 6000 logged rows would be several hundred kB.
    assert!(
        after <= before + 16 * 1024,
        "6000 unknown-model requests grew the state file from {before} to {after} bytes"
    );
    // The same number of requests for the model teal serves is logged, so the measure can
    // see growth.
    for _ in 0..3_000 {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let logged = eventually(Duration::from_secs(10), async || {
        request_rows(&state, Some("digits")) == 3_002
    })
    .await;
    assert!(logged, "{} rows", request_rows(&state, Some("digits")));
    assert!(
        state_bytes(&state) > after + 64 * 1024,
        "3000 logged requests show on disk"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_is_pruned_to_its_bound() {
    let mut config = config_with(&onnx("v1"), None);
    config.server.request_log_max_rows = 200;
    let state = config.server.state_dir.clone();
    let running = start(&config).await;
    let client = data(&running);
    let admin = admin(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    for round in 0..3 {
        for i in 0..500 {
            let id = format!("r{round}-{i}");
            let answer = client
                .send(
                    "POST",
                    "/v2/models/digits/infer",
                    &[("x-request-id", &id)],
                    body.clone(),
                )
                .await
                .unwrap();
            assert_eq!(answer.status, 200);
        }
    }
    // The newest request is logged, and within a prune or two the log holds its bound.
    let pruned = eventually(Duration::from_secs(10), async || {
        admin
            .get("/api/v1/models/digits/audit?request=r2-499")
            .await
            .unwrap()
            .status
            == 200
            && request_rows(&state, None) <= 200
    })
    .await;
    let rows = request_rows(&state, None);
    assert!(pruned, "{rows} rows kept, the bound is 200");
    assert!(rows >= 100, "the newest rows are kept: {rows}");
    let oldest = admin
        .get("/api/v1/models/digits/audit?request=r0-0")
        .await
        .unwrap();
    assert_eq!(oldest.status, 404, "the oldest request was pruned");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_whose_audit_event_cannot_be_written_leaves_routing_unchanged() {
    let config = config_with(&onnx("v1"), Some(&onnx("v2")));
    let state = config.server.state_dir.clone();
    let running = start(&config).await;
    let client = data(&running);
    let admin = admin(&running);
    assert_eq!(live_version(&client).await, "v1");
    // Another process holds the state file's write lock past teal's busy timeout (5 s): the
    // write of the switch's route and audit event fails, with the state file not yet known
    // to be unwritable, so only the one-transaction record stands between the switch and
    // the routing.
    let db = rusqlite::Connection::open(state.join("teal.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let switched = switch_digits(&admin, "green").await;
    assert!(
        switched.status >= 500,
        "{}: {}",
        switched.status,
        switched.error_message()
    );
    assert_eq!(
        live_version(&client).await,
        "v1",
        "a switch that was not recorded did not happen"
    );
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(status["live"], "blue", "{status}");
    db.execute_batch("COMMIT").unwrap();
    // Now the state file says it failed: hand-made changes are refused up front.
    let refused = admin
        .post_json(
            "/api/v1/models/digits/teardown",
            &serde_json::json!({"slot": "green"}),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 507, "{}", refused.error_message());
    let history = admin
        .get("/api/v1/models/digits/history")
        .await
        .unwrap()
        .json();
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["started"],
        "no event for a change that did not happen"
    );
    stop(running).await;
}
