//! Canary weights and sticky sessions: the weight is honoured within statistical tolerance,
//! and a session stays on its slot while the weight holds, moving only when it passes.

mod common;

use bytes::Bytes;
use common::*;

async fn canary(running: &teal::server::Running, percent: f64) -> teal::cli::client::Answer {
    admin(running)
        .post_json(
            "/api/v1/models/digits/canary",
            &serde_json::json!({ "percent": percent }),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_weight_is_honoured_within_tolerance() {
    let running = start(&config_with(&onnx("v1"), Some(&onnx("v2")))).await;
    let client = data(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    assert_eq!(canary(&running, 20.0).await.status, 200);
    let n = 2000;
    let mut green = 0;
    for _ in 0..n {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        if answer.header("x-teal-slot") == Some("green") {
            green += 1;
        }
    }
    // Binomial(2000, 0.2): standard deviation 0.0089; four of them either side.
    let share = f64::from(green) / f64::from(n);
    assert!(
        (share - 0.2).abs() < 0.036,
        "green served {share:.3} of requests at weight 20%"
    );

    assert_eq!(canary(&running, 0.0).await.status, 200);
    for _ in 0..200 {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
        assert_eq!(
            answer.header("x-teal-slot"),
            Some("blue"),
            "weight 0 sends nothing to green"
        );
    }
    assert_eq!(canary(&running, 120.0).await.status, 400);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_hold_while_the_weight_holds_and_move_only_forward() {
    let config = config_with_model_settings(
        "sticky_header = \"x-user-id\"\nsticky_cookie = \"session\"\n",
        &onnx("v1"),
        Some(&onnx("v2")),
    );
    let running = start(&config).await;
    let client = data(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let slot_of = async |user: &str| -> String {
        let answer = client
            .send(
                "POST",
                "/v2/models/digits/infer",
                &[("x-user-id", user)],
                body.clone(),
            )
            .await
            .unwrap();
        answer.header("x-teal-slot").unwrap().to_string()
    };
    let mut previous: Vec<String> = Vec::new();
    for percent in [10.0, 30.0, 60.0] {
        assert_eq!(canary(&running, percent).await.status, 200);
        let mut now = Vec::new();
        for user in &users {
            let first = slot_of(user).await;
            for _ in 0..3 {
                assert_eq!(
                    slot_of(user).await,
                    first,
                    "{user} moved while the weight held at {percent}%"
                );
            }
            now.push(first);
        }
        for (i, (before, after)) in previous.iter().zip(&now).enumerate() {
            assert!(
                !(before == "green" && after == "blue"),
                "user-{i} went back to blue when the weight rose to {percent}%"
            );
        }
        let share = now.iter().filter(|s| *s == "green").count() as f64 / users.len() as f64;
        assert!(
            (share - percent / 100.0).abs() < 0.12,
            "{share} of users on green at {percent}%"
        );
        previous = now;
    }
    // The cookie works as the header does.
    let by_cookie = client
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[("cookie", "theme=dark; session=user-7")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(by_cookie.header("x-teal-slot"), Some(previous[7].as_str()));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_needs_a_ready_candidate_and_a_switch_ends_it() {
    let running = start(&config_with(&onnx("v1"), None)).await;
    assert_eq!(
        canary(&running, 10.0).await.status,
        409,
        "no green slot to send traffic to"
    );
    stop(running).await;
    let running = start(&config_with(&onnx("v1"), Some(&onnx("v2")))).await;
    assert_eq!(canary(&running, 50.0).await.status, 200);
    admin(&running)
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({"to": "green"}),
        )
        .await
        .unwrap();
    let status = admin(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    assert_eq!(
        status["candidate_weight"], 0,
        "a switch moves everything and ends the canary"
    );
    stop(running).await;
}
