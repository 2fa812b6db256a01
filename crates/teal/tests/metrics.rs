//! Prometheus metrics count what happened: requests per version and slot, errors by fault,
//! switches; a caller cannot add labels by naming models teal does not serve.

mod common;

use bytes::Bytes;
use common::*;

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_values_match_the_traffic_sent() {
    let running = start(&config_with(&onnx("v1"), Some(&onnx("v2")))).await;
    let client = data(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    for _ in 0..30 {
        assert_eq!(
            client
                .send("POST", "/v2/models/digits/infer", &[], body.clone())
                .await
                .unwrap()
                .status,
            200
        );
    }
    for _ in 0..20 {
        assert_eq!(
            client
                .send(
                    "POST",
                    "/v2/models/digits/infer",
                    &[("x-teal-slot", "green")],
                    body.clone()
                )
                .await
                .unwrap()
                .status,
            200
        );
    }
    for _ in 0..5 {
        assert_eq!(
            client
                .send("POST", "/v2/models/digits/infer", &[], Bytes::from("{"))
                .await
                .unwrap()
                .status,
            400
        );
    }
    for i in 0..50 {
        client
            .send(
                "POST",
                &format!("/v2/models/attacker-{i}/infer"),
                &[],
                body.clone(),
            )
            .await
            .unwrap();
    }
    let admin = admin(&running);
    switch_digits(&admin, "green").await;
    admin
        .post_json("/api/v1/models/digits/rollback", &serde_json::json!({}))
        .await
        .unwrap();
    admin
        .post_json(
            "/api/v1/models/digits/canary",
            &serde_json::json!({"percent": 25}),
        )
        .await
        .unwrap();

    let scrape = teal::cli::client::HttpClient::new(&running.admin_url())
        .get("/metrics")
        .await
        .unwrap();
    assert_eq!(scrape.status, 200, "metrics need no token");
    let text = String::from_utf8_lossy(&scrape.body).to_string();
    stop(running).await;
    assert_eq!(
        value(
            &text,
            r#"model_server_requests_total{model="digits",version="v1",slot="blue",endpoint="infer"}"#
        ),
        Some(30.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"model_server_requests_total{model="digits",version="v2",slot="green",endpoint="infer"}"#
        ),
        Some(20.0)
    );
    assert_eq!(
        value(
            &text,
            r#"model_server_errors_total{model="digits",version="",slot="",error_type="client"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &text,
            r#"model_server_latency_seconds_count{model="digits",version="v1",slot="blue"}"#
        ),
        Some(30.0)
    );
    assert_eq!(
        value(&text, r#"teal_switches_total{model="digits"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"teal_route_weight{model="digits",slot="green"}"#),
        Some(0.25)
    );
    assert_eq!(
        value(&text, r#"teal_route_weight{model="digits",slot="blue"}"#),
        Some(0.75)
    );
    assert_eq!(
        value(&text, r#"model_server_active_requests{model="digits"}"#),
        Some(0.0)
    );
    assert!(
        !text.contains("attacker"),
        "unknown model names must not become labels"
    );
}
