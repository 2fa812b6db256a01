//! Switching under load: concurrent clients hammer the gateway while it flips blue <-> green.
//! Nothing may fail, and every answer must come from the route table that was live when
//! its request started (or one published while it was in flight, never an older one).

mod common;

use bytes::Bytes;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_flips_under_load_fail_nothing_and_never_serve_from_a_stale_table() {
    let running = start(&example_config()).await;
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(64)
        .map(|(f, _)| f)
        .collect();
    let bodies = rows
        .iter()
        .map(|r| Bytes::from(infer_body(std::slice::from_ref(r)).to_string()))
        .collect();
    let run = flip_under_load(
        &data(&running),
        &admin(&running),
        "digits",
        bodies,
        16,
        120,
        |answer, generation, _| {
            // Generation 1 is blue (v1); every switch flips, so odd is blue and even is green.
            let (slot, version) = if generation % 2 == 1 {
                ("blue", "v1")
            } else {
                ("green", "v2")
            };
            let body = answer.json();
            (answer.header("x-teal-slot") != Some(slot)
                || answer.header("x-teal-version") != Some(version)
                || body["model_version"] != version)
                .then(|| {
                    format!(
                        "generation {generation} answered by {:?} {:?}",
                        answer.header("x-teal-slot"),
                        body["model_version"]
                    )
                })
        },
    )
    .await;
    stop(running).await;
    assert!(
        run.failures.is_empty(),
        "{} of {} requests failed or were misrouted, first: {:?}",
        run.failures.len(),
        run.requests,
        &run.failures[..run.failures.len().min(5)]
    );
    assert!(
        run.requests >= 240,
        "only {} requests were sent across 120 flips",
        run.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_previous_slot_and_refuses_when_there_is_none() {
    let running = start(&example_config()).await;
    let admin = admin(&running);
    let client = data(&running);
    let nothing = admin
        .post_json("/api/v1/models/digits/rollback", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(nothing.status, 409);
    assert!(
        nothing.error_message().contains("nothing to roll back"),
        "{}",
        nothing.error_message()
    );

    let switched = switch_digits(&admin, "green").await;
    assert_eq!(switched.json()["to_version"], "v2");
    let body = infer_body(&[holdout("digits")[0].0.clone()]);
    assert_eq!(
        client
            .post_json("/v2/models/digits/infer", &body)
            .await
            .unwrap()
            .header("x-teal-version"),
        Some("v2")
    );

    let back = admin
        .post_json("/api/v1/models/digits/rollback", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(back.status, 200);
    assert_eq!(back.json()["to"], "blue");
    assert_eq!(
        client
            .post_json("/v2/models/digits/infer", &body)
            .await
            .unwrap()
            .header("x-teal-version"),
        Some("v1")
    );

    let again = switch_digits(&admin, "blue").await;
    assert_eq!(
        again.json()["changed"],
        false,
        "switching to the live slot changes nothing"
    );

    let empty = admin
        .post_json(
            "/api/v1/models/cancer/switch",
            &serde_json::json!({"to": "green"}),
        )
        .await
        .unwrap();
    assert_eq!(empty.status, 409, "cancer has no green slot");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_header_reaches_the_standby_and_the_version_path_reaches_one_version() {
    let running = start(&example_config()).await;
    let client = data(&running);
    let body = infer_body(&[holdout("digits")[0].0.clone()]);
    let green = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("x-teal-slot", "green"), ("x-request-id", "abc-123")],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(green.header("x-teal-slot"), Some("green"));
    assert_eq!(green.header("x-teal-version"), Some("v2"));
    assert_eq!(
        green.header("x-request-id"),
        Some("abc-123"),
        "the caller's request id is echoed"
    );
    let generated = client
        .post_json("/v2/models/digits/infer", &body)
        .await
        .unwrap();
    assert_eq!(
        generated.header("x-request-id").map(str::len),
        Some(32),
        "teal makes a request id of 128 random bits (32 hex digits) when none is given"
    );
    let v2 = client
        .post_json("/v2/models/digits/versions/v2/infer", &body)
        .await
        .unwrap();
    assert_eq!(v2.header("x-teal-version"), Some("v2"));
    assert_eq!(v2.header("x-teal-slot"), Some("green"));
    // A percent-encoded name (served through the router, not the direct infer path) is the
    // same model, and gets the same answer.
    let encoded = client
        .post_json("/v2/models/dig%69ts/infer", &body)
        .await
        .unwrap();
    assert_eq!(encoded.status, 200, "{}", encoded.error_message());
    assert_eq!(encoded.json(), generated.json());
    assert_eq!(encoded.header("x-teal-version"), Some("v1"));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_on_a_switch_never_serves_another_versions_answer() {
    let mut config = example_config();
    config
        .models
        .iter_mut()
        .find(|m| m.name == "digits")
        .unwrap()
        .cache = teal::core::config::CacheConfig {
        enabled: true,
        max_entries: 1000,
        ttl_ms: 600_000,
    };
    let running = start(&config).await;
    // Eight distinct rows, repeated: most answers come from the cache.
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(8)
        .map(|(f, _)| f)
        .collect();
    let bodies = rows
        .iter()
        .map(|r| Bytes::from(infer_body(std::slice::from_ref(r)).to_string()))
        .collect();
    let labels = [
        reference_labels("digits", "v1"),
        reference_labels("digits", "v2"),
    ];
    let run = flip_under_load(
        &data(&running),
        &admin(&running),
        "digits",
        bodies,
        8,
        100,
        move |answer, _, row| {
            let body = answer.json();
            let version = answer.header("x-teal-version").unwrap_or("?");
            let want = if version == "v1" {
                labels[0][row]
            } else {
                labels[1][row]
            };
            (body["model_version"] != version
                || body["outputs"][0]["data"][0].as_i64() != Some(want))
            .then(|| {
                format!(
                    "header {version} but body {} label {}",
                    body["model_version"], body["outputs"][0]["data"][0]
                )
            })
        },
    )
    .await;
    let status = admin(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    stop(running).await;
    assert!(
        run.failures.is_empty(),
        "{:?}",
        &run.failures[..run.failures.len().min(5)]
    );
    for slot in status["slots"].as_array().unwrap() {
        let hits = slot["cache"]["hits"].as_u64().unwrap();
        assert!(
            hits > 0,
            "{} served no cached answer: {slot}",
            slot["version"]
        );
        assert_eq!(slot["cache"]["version"], slot["version"]);
    }
}
