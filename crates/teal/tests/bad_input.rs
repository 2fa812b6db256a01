//! Bad input is the caller's error: a 4xx with `{"error": ...}` that says what was wrong,
//! never a panic, a 5xx or a dropped connection, and the server stays healthy after it.

mod common;

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 64 * 1024;

fn row() -> serde_json::Value {
    serde_json::json!(vec![0.0; 64])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_clear_4xx() {
    let mut config = example_config();
    config.server.max_body_bytes = LIMIT;
    let running = start(&config).await;
    let client = data(&running);
    let json = [("content-type", "application/json")];
    let input = |name: &str, datatype: &str, shape: serde_json::Value, data: serde_json::Value| {
        serde_json::json!({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}).to_string()
    };
    let input_text = |data: &str| {
        format!(
            "{{\"inputs\": [{{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [1, 64], \"data\": {data}}}]}}"
        )
    };
    let big = format!(
        "{{\"inputs\": [{{\"name\": \"input\", \"data\": [{}]}}]}}",
        vec!["1.0"; LIMIT / 2].join(",")
    );
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, &str, Vec<(&str, &str)>, String, u16, &str)> = vec![
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            "{\"inputs\": [".into(),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            "[1, 2]".into(),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/v2/models/nope/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            404,
            "unknown model 'nope'",
        ),
        (
            "POST",
            "/v2/models/digits/versions/v9/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            404,
            "no loaded version 'v9'",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input("pixels", "FP32", serde_json::json!([1, 64]), row()),
            400,
            "unknown input 'pixels'",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input("input", "INT64", serde_json::json!([1, 64]), row()),
            400,
            "datatype INT64 but the model expects FP32",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input(
                "input",
                "FP32",
                serde_json::json!([1, 63]),
                serde_json::json!(vec![0.0; 63]),
            ),
            400,
            "expects [-1, 64]",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([2, 64]), row()),
            400,
            "holds 128 elements, but 64 were sent",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input(
                "input",
                "FP32",
                serde_json::json!([1, 64]),
                serde_json::json!(vec!["a"; 64]),
            ),
            400,
            r#"element 0 is "a", which is not a valid FP32"#,
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input(
                "input",
                "FP32",
                serde_json::json!([1, 64]),
                serde_json::json!(null),
            ),
            400,
            "has no data",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            big.clone(),
            413,
            "larger than the limit of 65536 bytes",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("content-type", "text/plain")],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            415,
            "content type 'text/plain'",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("content-type", "application/x-www-form-urlencoded")],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            415,
            "send application/json",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("content-encoding", "gzip")],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            415,
            "content encoding 'gzip'",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("inference-header-content-length", "999999")],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            400,
            "Inference-Header-Content-Length is 999999",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("inference-header-content-length", "abc")],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            400,
            "whole number of bytes",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("x-teal-slot", "red")],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            400,
            "x-teal-slot must be blue or green",
        ),
        (
            "POST",
            "/v2/models/cancer/infer",
            vec![("x-teal-slot", "green")],
            input(
                "input",
                "FP32",
                serde_json::json!([1, 30]),
                serde_json::json!(vec![0.0; 30]),
            ),
            404,
            "no green slot",
        ),
        (
            "GET",
            "/v2/models/digits/infer",
            vec![],
            String::new(),
            405,
            "GET is not allowed",
        ),
        (
            "GET",
            "/v2/models/digits/versions/v9",
            vec![],
            String::new(),
            404,
            "no loaded version 'v9'",
        ),
        (
            "GET",
            "/v2/models/..%2Fetc/ready",
            vec![],
            String::new(),
            404,
            "unknown model '../etc'",
        ),
        (
            "GET",
            "/v3/anything",
            vec![],
            String::new(),
            404,
            "no such endpoint",
        ),
        (
            "POST",
            "/v1/models/digits/predict",
            json.to_vec(),
            "{\"features\": [[1, 2], [3]]}".into(),
            400,
            "row 1 has 1 features but row 0 has 2",
        ),
        (
            "POST",
            "/v1/models/digits/predict",
            json.to_vec(),
            "{\"rows\": []}".into(),
            400,
            "unknown field `rows`",
        ),
        (
            "POST",
            "/v1/models/digits/predict",
            json.to_vec(),
            "{\"features\": [1, 2, 3]}".into(),
            400,
            "has shape [1, 3] but the model expects [-1, 64]",
        ),
        (
            "POST",
            "/v1/models/digits/predict",
            json.to_vec(),
            format!("{{\"features\": [[{}\"x\"]]}}", "0, ".repeat(63)),
            400,
            r#"element 63 is "x", which is not a valid FP32"#,
        ),
        (
            "POST",
            "/v1/models/digits/predict",
            vec![("content-type", "application/octet-stream")],
            "{\"features\": [1]}".into(),
            415,
            "content type",
        ),
        (
            "POST",
            "/v1/models/digits/predict",
            json.to_vec(),
            big,
            413,
            "larger than the limit",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            format!(
                "{{\"inputs\": [{{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [1, 64], \"data\": {}{}}}]}}",
                "[".repeat(20_000),
                "]".repeat(20_000)
            ),
            400,
            "recursion limit exceeded",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input_text(&format!("[1e400{}]", ", 0".repeat(63))),
            400,
            "number out of range",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input_text(&format!("[1e39{}]", ", 0".repeat(63))),
            400,
            "not a valid FP32",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input_text(&format!("[NaN{}]", ", 0".repeat(63))),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input_text(&format!("[null{}]", ", 0".repeat(63))),
            400,
            "null is not a tensor element",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input_text("{\"a\": 1}"),
            400,
            "invalid type: map",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input(
                "input",
                "FP32",
                serde_json::json!([u64::MAX / 2, u64::MAX / 2]),
                row(),
            ),
            400,
            "expects [-1, 64]",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([-1, 64]), row()),
            400,
            "expected u64",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            "{\"inputs\": [], \"tenant\": \"x\"}".into(),
            400,
            "unknown field `tenant`",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            format!(
                "{} trailing",
                input("input", "FP32", serde_json::json!([1, 64]), row())
            ),
            400,
            "trailing characters",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            "{\"inputs\": null}".into(),
            400,
            "invalid type: null",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            json.to_vec(),
            String::new(),
            400,
            "EOF while parsing",
        ),
        (
            "POST",
            "/v2/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            404,
            "unknown model '../../etc/passwd'",
        ),
        (
            "POST",
            "/v2/models/digits/versions/%2e%2e/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            404,
            "no loaded version '..'",
        ),
        (
            "POST",
            "/v2/models/dig%ffits/infer",
            json.to_vec(),
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            400,
            "UTF-8",
        ),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![
                ("content-type", "application/json"),
                ("x-teal-slot", "blue, green"),
            ],
            input("input", "FP32", serde_json::json!([1, 64]), row()),
            400,
            "x-teal-slot must be blue or green",
        ),
    ];
    for (method, path, headers, body, status, message) in cases {
        let answer = client
            .send(method, path, &headers, Bytes::from(body))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            answer.status,
            status,
            "{method} {path} {headers:?}: {}",
            answer.error_message()
        );
        assert!(
            answer
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{method} {path}: JSON error body"
        );
        if status == 413 || status == 415 {
            assert_eq!(
                answer.header("connection"),
                Some("close"),
                "{method} {path}: an unread body ends the connection"
            );
        }
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error field"))
            .to_string();
        assert!(
            error.contains(message),
            "{method} {path}: {error:?} does not say {message:?}"
        );
    }
    let ready = client.get("/v2/health/ready").await.unwrap();
    assert_eq!(
        ready.status, 200,
        "the server is healthy after the bad input"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_refused_without_a_declared_length() {
    let mut config = example_config();
    config.server.max_body_bytes = LIMIT;
    let running = start(&config).await;
    let stream = tokio::net::TcpStream::connect(running.data_addr)
        .await
        .unwrap();
    // Read while writing: teal answers 413 and closes as soon as the limit is passed, and
    // data the client sends after that close makes the kernel reset the connection, which
    // would discard an answer not yet read.
    let (mut reader, mut writer) = stream.into_split();
    let read = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        answer
    });
    let head = "POST /v2/models/digits/infer HTTP/1.1\r\nhost: teal\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = vec![b'['; 8192];
    let mut sent = writer.write_all(head.as_bytes()).await.is_ok();
    for _ in 0..(LIMIT / chunk.len() + 2) {
        if !sent {
            break;
        }
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        sent = writer.write_all(&piece).await.is_ok();
    }
    let _ = writer.write_all(b"0\r\n\r\n").await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("larger than the limit"), "{text}");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_connection_does_not_disturb_the_others() {
    let running = start(&example_config()).await;
    let client = data(&running);
    // Garbage that is not HTTP at all, on its own connection.
    let mut garbage = tokio::net::TcpStream::connect(running.data_addr)
        .await
        .unwrap();
    garbage
        .write_all(b"\x00\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        garbage.read_to_end(&mut sink),
    )
    .await;
    let body = infer_body(&[holdout("digits")[0].0.clone()]);
    let answer = client
        .post_json("/v2/models/digits/infer", &body)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_abuse_is_refused_and_the_server_stays_healthy() {
    let running = start(&example_config()).await;
    let client = data(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    // More headers than any client needs: refused by the HTTP layer (431) before teal reads
    // the body.
    let many: Vec<(String, String)> = (0..500).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = client
        .send("POST", "/v2/models/digits/infer", &many, body.clone())
        .await;
    assert!(
        answer.as_ref().is_ok_and(|a| a.status == 431) || answer.is_err(),
        "500 headers: {:?}",
        answer.map(|a| a.status)
    );
    // A long but legal header value, and a malformed trace context, are served.
    let long = "a".repeat(16 * 1024);
    for headers in [
        vec![("x-long", long.as_str())],
        vec![("traceparent", "00-zzzz-not-a-trace")],
        vec![("x-request-id", long.as_str())],
    ] {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &headers, body.clone())
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            200,
            "{headers:?}: {}",
            answer.error_message()
        );
    }
    // Two content lengths that disagree: request smuggling, refused.
    let mut raw = tokio::net::TcpStream::connect(running.data_addr)
        .await
        .unwrap();
    raw.write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: teal\r\ncontent-length: 5\r\ncontent-length: 50\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        raw.read_exact(&mut answer),
    )
    .await;
    assert!(
        read.is_ok_and(|r| r.is_ok()) && answer.starts_with(b"HTTP/1.1 400"),
        "conflicting lengths: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let ready = client.get("/v2/health/ready").await.unwrap();
    assert_eq!(ready.status, 200);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_admin_request_gets_a_clear_4xx_in_json() {
    let running = start(&example_config()).await;
    let admin = admin(&running);
    let m = "/api/v1/models/digits";
    let onnx_path = repo_root().join("models/digits/v1/model.onnx");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", format!("{m}/switch"), "{".into(), 400, "body must be"),
        ("POST", format!("{m}/switch"), "{\"to\": 5}".into(), 400, "body must be"),
        ("POST", format!("{m}/switch"), "{\"to\": \"red\"}".into(), 400, "unknown variant `red`"),
        ("POST", format!("{m}/switch"), "{\"to\": \"green\", \"now\": true}".into(), 400, "unknown field `now`"),
        ("POST", format!("{m}/switch"), "[]".into(), 400, "body must be"),
        ("POST", format!("{m}/switch"), format!("{{\"to\": \"green\"{}}}", " ".repeat(2 * 1024 * 1024)), 413, "larger than the limit"),
        ("POST", format!("{m}/canary"), "{\"percent\": 200}".into(), 400, "between 0 and 100"),
        ("POST", format!("{m}/canary"), "{\"percent\": -1}".into(), 400, "between 0 and 100"),
        ("POST", format!("{m}/canary"), "{\"percent\": 1e400}".into(), 400, "number out of range"),
        ("POST", format!("{m}/canary"), "{\"percent\": \"NaN\"}".into(), 400, "percent"),
        ("POST", format!("{m}/shadow"), "{\"percent\": 101}".into(), 400, "between 0 and 100"),
        ("POST", format!("{m}/deploy"), "{\"version\": \"v9\", \"kind\": \"tensorflow\"}".into(), 400, "unknown variant `tensorflow`"),
        ("POST", format!("{m}/deploy"), "{\"version\": \"v9\", \"kind\": \"onnx\", \"path\": \"/no/such/model.onnx\"}".into(), 422, "the live slot keeps serving"),
        ("POST", format!("{m}/deploy"), "{\"version\": \"v9\", \"kind\": \"process\", \"command\": \"sleep 9\", \"ready_timeout_ms\": 18446744073709551615}".into(), 400, "at most 86400000"),
        ("POST", format!("{m}/rollouts"), "{\"candidate\": 5}".into(), 400, "body must be"),
        ("POST", format!("{m}/rollouts"), format!("{{\"candidate\": {{\"version\": \"v9\", \"kind\": \"onnx\", \"path\": {:?}}}, \"settings\": {{\"observe_ms\": \"soon\"}}}}", onnx_path.display().to_string()), 400, "is not a duration"),
        ("POST", format!("{m}/rollouts"), format!("{{\"candidate\": {{\"version\": \"v9\", \"kind\": \"onnx\", \"path\": {:?}}}, \"settings\": {{\"rules\": 5}}}}", onnx_path.display().to_string()), 400, "invalid type"),
        ("POST", format!("{m}/validate"), "{\"replay\": -5}".into(), 400, "body must name one source"),
        ("POST", format!("{m}/validate"), "{\"holdout\": \"/etc/hostname\"}".into(), 400, "holdout /etc/hostname"),
        ("POST", format!("{m}/teardown"), "{\"slot\": 5}".into(), 400, "body must be"),
        ("POST", format!("{m}/promote"), String::new(), 409, "no rollout in progress"),
        ("POST", format!("{m}/rollback"), String::new(), 409, "nothing to roll back"),
        ("GET", format!("{m}/history?limit=-1"), String::new(), 400, "limit must be a whole number"),
        ("GET", format!("{m}/history?limit=99999999999999999999"), String::new(), 400, "limit must be"),
        ("GET", format!("{m}/audit?at=yesterday"), String::new(), 400, "is not a time"),
        ("GET", "/api/v1/models/..%2F..%2Fetc/history".into(), String::new(), 404, "unknown model '../../etc'"),
        ("GET", "/api/v1/models/nope".into(), String::new(), 404, "unknown model 'nope'"),
        ("GET", "/api/v1/validations/abc".into(), String::new(), 404, "no validation abc"),
        ("POST", "/api/v1/status".into(), String::new(), 405, "POST is not allowed"),
        ("GET", "/dashboard/../../etc/passwd".into(), String::new(), 404, "no admin endpoint"),
        ("GET", "/api/v1/models/dig%ffits".into(), String::new(), 400, "UTF-8"),
    ];
    for (method, path, body, status, message) in cases {
        let answer = admin
            .send(
                method,
                &path,
                &[("content-type", "application/json")],
                Bytes::from(body),
            )
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            answer
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{method} {path}: JSON error body, got {:?}",
            answer.header("content-type")
        );
        let error = answer.json()["error"].as_str().unwrap_or("").to_string();
        assert_eq!(answer.status, status, "{method} {path}: {error}");
        if status == 413 {
            assert_eq!(
                answer.header("connection"),
                Some("close"),
                "{method} {path}: an unread body ends the connection"
            );
        }
        assert!(
            error.contains(message),
            "{method} {path}: {error:?} does not say {message:?}"
        );
    }
    // Nothing changed, and the API still answers.
    let status = admin.get("/api/v1/models/digits").await.unwrap();
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["live"], "blue");
    // Many calls at once: each is answered (or refused with 429), none fails.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move { admin.get("/api/v1/models/digits/history").await })
        })
        .collect();
    for call in calls {
        let answer = call.await.unwrap().unwrap();
        assert!(matches!(answer.status, 200 | 429), "{}", answer.status);
    }
    stop(running).await;
}

/// One wide row and a million empty ones, 4 MB in all: the rows' lengths disagree, which is
/// what the answer says, and nothing was reserved for a million rows of the wide one's width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jagged_predict_body_is_refused_without_a_large_allocation() {
    let config = config_file(&format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\n{}",
        onnx("v1")
    ));
    let teal = serve_binary(&config, None);
    let (rss_before, virtual_before) = (teal.peak_rss(), teal.peak_virtual());
    let wide = vec!["0"; 500_000].join(",");
    let empty = vec!["[]"; 1_000_000].join(",");
    let body = format!("{{\"features\":[[{wide}],{empty}]}}");
    assert!(body.len() < teal::core::config::DEFAULT_MAX_BODY_BYTES);
    let answer = teal
        .data
        .send(
            "POST",
            "/v1/models/digits/predict",
            &[("content-type", "application/json")],
            Bytes::from(body),
        )
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(answer.status, 400, "{}", answer.error_message());
    let error = answer.error_message();
    assert!(
        error.contains("row 1 has 0 features but row 0 has 500000"),
        "{error}"
    );
    const MB: u64 = 1024 * 1024;
    let (rss, virtual_size) = (teal.peak_rss(), teal.peak_virtual());
    // The body (4 MB) and row 0's values are held, nothing per row: not the million rows of
    // a JSON tree (about 90 MB more), nor a million times row 0's width, reserved (terabytes).
    assert!(rss < 200 * MB, "peak resident memory {} MB", rss / MB);
    assert!(
        rss - rss_before < 64 * MB,
        "peak resident memory grew from {} MB to {} MB",
        rss_before / MB,
        rss / MB
    );
    assert!(
        virtual_size - virtual_before < 4096 * MB,
        "peak address space grew from {} MB to {} MB",
        virtual_before / MB,
        virtual_size / MB
    );
    // Still serving.
    let row = serde_json::json!({ "features": [holdout("digits")[0].0] });
    let ok = teal
        .data
        .post_json("/v1/models/digits/predict", &row)
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.error_message());
}
