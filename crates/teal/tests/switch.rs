//! Switching under load: concurrent clients hammer the gateway while it flips blue <-> green.
//! Nothing may fail, and every answer must come from the route table that was live when
//! its request started (or one published while it was in flight, never an older one).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use common::*;

const FLIPS: u64 = 120;
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_flips_under_load_fail_nothing_and_never_serve_from_a_stale_table() {
    let running = start(&example_config()).await;
    let client = data(&running);
    let admin = admin(&running);
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(64)
        .map(|(f, _)| f)
        .collect();
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        rows.iter()
            .map(|r| Bytes::from(infer_body(std::slice::from_ref(r)).to_string()))
            .collect(),
    );

    // `completed`: the newest generation whose switch call has returned (so it is live).
    // `issued`: the newest generation a switch call has been started for.
    let completed = Arc::new(AtomicU64::new(1));
    let issued = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, bodies, completed, issued, done) = (
            client.clone(),
            bodies.clone(),
            completed.clone(),
            issued.clone(),
            done.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut answered, mut failures) = (0u64, Vec::new());
            let mut i = c;
            // Bounded: stops when the flipper is done, or after 200 000 requests at most.
            while !done.load(Ordering::SeqCst) && answered < 200_000 {
                let floor = completed.load(Ordering::SeqCst);
                let answer = client
                    .send(
                        "POST",
                        "/v2/models/digits/infer",
                        &[("content-type", "application/json")],
                        bodies[i % bodies.len()].clone(),
                    )
                    .await;
                let ceiling = issued.load(Ordering::SeqCst);
                i += 1;
                answered += 1;
                let answer = match answer {
                    Ok(a) if a.status == 200 => a,
                    Ok(a) => {
                        failures.push(format!("status {}: {}", a.status, a.error_message()));
                        continue;
                    }
                    Err(e) => {
                        failures.push(e.to_string());
                        continue;
                    }
                };
                let generation: u64 = answer
                    .header("x-teal-route-generation")
                    .unwrap()
                    .parse()
                    .unwrap();
                // Generation 1 is blue (v1); every switch flips, so odd is blue and even is green.
                let (slot, version) = if generation % 2 == 1 {
                    ("blue", "v1")
                } else {
                    ("green", "v2")
                };
                if generation < floor || generation > ceiling {
                    failures.push(format!(
                        "generation {generation} outside [{floor}, {ceiling}]"
                    ));
                }
                if answer.header("x-teal-slot") != Some(slot)
                    || answer.header("x-teal-version") != Some(version)
                {
                    failures.push(format!(
                        "generation {generation} answered by {:?} {:?}",
                        answer.header("x-teal-slot"),
                        answer.header("x-teal-version")
                    ));
                }
                if answer.json()["model_version"] != version {
                    failures.push(format!(
                        "body says {} under generation {generation}",
                        answer.json()["model_version"]
                    ));
                }
            }
            (answered, failures)
        }));
    }

    for flip in 0..FLIPS {
        let to = if flip % 2 == 0 { "green" } else { "blue" };
        issued.store(flip + 2, Ordering::SeqCst);
        let answer = admin
            .post_json(
                "/api/v1/models/digits/switch",
                &serde_json::json!({ "to": to }),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.error_message());
        assert_eq!(answer.json()["generation"], flip + 2);
        completed.store(flip + 2, Ordering::SeqCst);
        // Let requests run on this table before the next flip; correctness does not depend on how many.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    done.store(true, Ordering::SeqCst);

    let (mut total, mut failures) = (0, Vec::new());
    for client in clients {
        let (answered, mut f) = client.await.unwrap();
        total += answered;
        failures.append(&mut f);
    }
    stop(running).await;
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed or were misrouted, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        total >= FLIPS * 2,
        "only {total} requests were sent across {FLIPS} flips"
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

    let switched = admin
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({"to": "green"}),
        )
        .await
        .unwrap();
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

    let again = admin
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({"to": "blue"}),
        )
        .await
        .unwrap();
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
        Some(20),
        "teal makes a request id when none is given"
    );
    let v2 = client
        .post_json("/v2/models/digits/versions/v2/infer", &body)
        .await
        .unwrap();
    assert_eq!(v2.header("x-teal-version"), Some("v2"));
    assert_eq!(v2.header("x-teal-slot"), Some("green"));
    stop(running).await;
}
