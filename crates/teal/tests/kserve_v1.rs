//! KServe's V1 protocol, as its clients call it (curl here, as in KServe's own examples):
//! `GET /v1/models/{m}` for readiness and `POST /v1/models/{m}:predict` with
//! `{"instances": [...]}`, answered `{"predictions": [...]}`, routed like every other
//! request: after a switch the other version answers, and bad input is a 4xx in the same
//! `{"error": ...}` form.

mod common;

use std::process::Command;

use common::*;

struct Curl {
    status: u16,
    body: serde_json::Value,
    headers: String,
}

/// `curl` as a user runs it, with the JSON content type KServe's examples send.
fn curl(base: &str, method: &str, path: &str, body: Option<&str>) -> Curl {
    let mut command = Command::new("curl");
    command.args(["-s", "-D", "-", "-X", method, &format!("{base}{path}")]);
    if let Some(body) = body {
        command.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let output = command.output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Curl {
        status,
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        headers: headers.to_ascii_lowercase(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v1_clients_get_readiness_and_predictions_routed_like_every_request() {
    let running = start(&example_config()).await;
    let base = data(&running).base().to_string();
    let rows: Vec<Vec<f64>> = holdout("digits")
        .into_iter()
        .take(5)
        .map(|(f, _)| f)
        .collect();
    let instances = serde_json::json!({ "instances": rows }).to_string();

    let ready = tokio::task::spawn_blocking({
        let base = base.clone();
        move || curl(&base, "GET", "/v1/models/digits", None)
    })
    .await
    .unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.body,
        serde_json::json!({"name": "digits", "ready": true})
    );

    let predict = |body: String| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            curl(&base, "POST", "/v1/models/digits:predict", Some(&body))
        })
    };
    let blue = predict(instances.clone()).await.unwrap();
    assert_eq!(blue.status, 200, "{}", blue.body);
    let labels: Vec<i64> = reference_labels("digits", "v1")
        .into_iter()
        .take(5)
        .collect();
    // The answer is KServe's: the predictions alone, the version in the headers.
    assert_eq!(blue.body, serde_json::json!({ "predictions": labels }));
    assert!(
        blue.headers.contains("x-teal-version: v1"),
        "{}",
        blue.headers
    );

    // A switch moves V1 requests as it moves every other.
    assert_eq!(switch_digits(&admin(&running), "green").await.status, 200);
    let green = predict(instances.clone()).await.unwrap();
    assert_eq!(green.status, 200, "{}", green.body);
    assert!(
        green.headers.contains("x-teal-version: v2"),
        "{}",
        green.headers
    );
    assert_eq!(green.body["predictions"].as_array().unwrap().len(), 5);

    // Bad input: the client's error, said in the same form.
    for (path, body, status, says) in [
        (
            "/v1/models/digits:predict",
            r#"{"instances": [[1, 2, 3]]}"#,
            400,
            "shape",
        ),
        (
            "/v1/models/digits:predict",
            r#"{"instances": "abc"}"#,
            400,
            "\"instances\" must be",
        ),
        (
            "/v1/models/digits:predict",
            r#"{"features": [[1, 2]]}"#,
            400,
            "instances",
        ),
        ("/v1/models/digits:predict", "{", 400, "EOF"),
        (
            "/v1/models/nope:predict",
            r#"{"instances": [[1]]}"#,
            404,
            "nope",
        ),
        (
            "/v1/models/digits:explain",
            r#"{"instances": [[1]]}"#,
            404,
            "no such endpoint",
        ),
    ] {
        let answer = tokio::task::spawn_blocking({
            let base = base.clone();
            move || curl(&base, "POST", path, Some(body))
        })
        .await
        .unwrap();
        assert_eq!(answer.status, status, "{path} {body}: {}", answer.body);
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{path} {body}: {error}");
    }
    stop(running).await;
}
