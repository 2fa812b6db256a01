//! Fault injection: upstreams that hang, reset or answer garbage, a state file that fills
//! up, slow clients, and thousands of idle connections. Each test is bounded in time and
//! checks that teal keeps serving and says what is wrong.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a fake model server misbehaves on inference (readiness and metadata stay healthy, so
/// teal keeps sending it traffic).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and resets the connection.
    Reset,
    /// Answers bytes that are not HTTP.
    NotHttp,
    /// Answers 200 with a body that is not JSON.
    NotJson,
    /// Answers 200 with JSON that is not a V2 response.
    NotV2,
    /// Answers 500 with an error, as a model server whose model crashed does.
    ServerError,
    /// Answers with the framing the request's `id` names (see [`FRAMINGS`]).
    BadFraming,
}

const ANSWER: &str = r#"{"model_name":"digits","outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[7]}]}"#;

/// Answers whose framing is malformed or ambiguous, by name, and what the 502 must say.
const FRAMINGS: &[(&str, &str, &str)] = &[
    (
        "huge-chunk",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
        "upstream answer is larger than",
    ),
    (
        "chunk-overflow",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\nabc",
        "chunk size is not a hex number",
    ),
    (
        "length-and-chunked",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "upstream answer had both Content-Length and Transfer-Encoding",
    ),
    (
        "two-lengths",
        "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\nabc",
        "upstream answer had two different Content-Lengths",
    ),
    (
        "signed-length",
        "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc",
        "Content-Length is not a number",
    ),
    (
        "gzip",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "Transfer-Encoding is \"gzip, chunked\"",
    ),
    (
        "switching",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
        "upstream answered 101 Switching Protocols",
    ),
    (
        "chunk-too-long",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "chunk does not end with CRLF",
    ),
];

const METADATA: &str = r#"{"name":"digits","versions":["broken"],"platform":"fake","inputs":[{"name":"input","datatype":"FP32","shape":[-1,64]}],"outputs":[{"name":"label","datatype":"INT64","shape":[-1]}]}"#;

/// A model server on 127.0.0.1 that is healthy except for `fault` on every inference.
async fn faulty_server(fault: Fault) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_faulty(stream, fault));
        }
    });
    (url, task)
}

async fn serve_faulty(mut stream: TcpStream, fault: Fault) {
    let mut buf = Vec::new();
    loop {
        // One request: the head, then the body its content-length declares.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
        buf.drain(..head_end + length);
        let first = head.lines().next().unwrap_or("").to_string();
        let answer = |status: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let reply = if first.starts_with("get /v2/models/digits/ready") {
            answer("200 OK", "")
        } else if first.starts_with("get /v2/models/digits ") {
            answer("200 OK", METADATA)
        } else if first.starts_with("post /v2/models/digits/infer") {
            match fault {
                Fault::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                Fault::Reset => {
                    let _ = stream.set_zero_linger();
                    return;
                }
                Fault::NotHttp => "\u{0}\u{1}garbage, not HTTP\r\n\r\n".to_string(),
                Fault::NotJson => answer("200 OK", "{\"outputs\": [{\"name\": "),
                Fault::NotV2 => answer("200 OK", "{\"outputs\": \"seven\"}"),
                Fault::ServerError => answer(
                    "500 Internal Server Error",
                    "{\"error\": \"the model crashed\"}",
                ),
                Fault::BadFraming if body.contains("\"id\":\"continue\"") => {
                    format!("HTTP/1.1 100 Continue\r\n\r\n{}", answer("200 OK", ANSWER))
                }
                Fault::BadFraming => match FRAMINGS
                    .iter()
                    .find(|(name, _, _)| body.contains(&format!("\"id\":\"{name}\"")))
                {
                    Some((_, framing, _)) => framing.to_string(),
                    None => answer("200 OK", ANSWER),
                },
            }
        } else {
            answer("404 Not Found", "{\"error\": \"no such endpoint\"}")
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if matches!(fault, Fault::NotHttp) && first.starts_with("post") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_resets_or_answers_garbage_costs_only_its_own_requests() {
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    for (fault, status, says) in [
        (Fault::Hang, 504, "within 500 ms"),
        (Fault::Reset, 502, ""),
        (Fault::NotHttp, 502, ""),
        (Fault::NotJson, 502, ""),
        (Fault::NotV2, 502, ""),
        (Fault::ServerError, 502, "the model crashed"),
    ] {
        let (url, server) = faulty_server(fault).await;
        let address = url.trim_start_matches("http://").to_string();
        // The faulty server is blue for `digits`; `cancer` (in-process) shares the gateway.
        let mut config = config_with(
            &upstream(
                "broken",
                &[url],
                "timeout_ms = 500\neject_after_failures = 1000",
            ),
            None,
        );
        let cancer = example_config()
            .models
            .into_iter()
            .find(|m| m.name == "cancer")
            .unwrap();
        config.models.push(cancer);
        let running = start(&config).await;
        let client = data(&running);
        // Eight requests at once on the faulty model, while the healthy model is called.
        let faulty: Vec<_> = (0..8)
            .map(|_| {
                let client = client.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let answer = client
                        .send("POST", "/v2/models/digits/infer", &[], body)
                        .await
                        .unwrap();
                    (answer, started.elapsed())
                })
            })
            .collect();
        let cancer_body = infer_body(&[holdout("cancer")[0].0.clone()]);
        for _ in 0..20 {
            let healthy = client
                .post_json("/v2/models/cancer/infer", &cancer_body)
                .await
                .unwrap();
            assert_eq!(healthy.status, 200, "{fault:?}: the healthy model answers");
        }
        for task in faulty {
            let (answer, took) = task.await.unwrap();
            assert_eq!(
                answer.status,
                status,
                "{fault:?}: {}",
                answer.error_message()
            );
            let error = answer.json()["error"].as_str().unwrap_or("").to_string();
            assert!(
                error.contains("digits") && error.contains(says),
                "{fault:?}: the error names the model and the fault: {error:?}"
            );
            assert!(
                !error.contains(&address),
                "{fault:?}: the caller is not told the model server's address: {error:?}"
            );
            assert!(
                took < Duration::from_secs(10),
                "{fault:?}: a failing upstream is given up on, not waited for: {took:?}"
            );
            // The failure names the version that failed, and counts against it: the
            // rollback rules read the slot's error count.
            assert_eq!(answer.header("x-teal-version"), Some("broken"), "{fault:?}");
            assert_eq!(answer.header("x-teal-slot"), Some("blue"), "{fault:?}");
            assert!(answer.header("x-request-id").is_some(), "{fault:?}");
        }
        let ready = client.get("/v2/health/live").await.unwrap();
        assert_eq!(ready.status, 200, "{fault:?}: teal is alive");
        let status = admin(&running).get("/api/v1/status").await.unwrap();
        assert_eq!(status.status, 200, "{fault:?}: the admin API answers");
        let models = status.json()["models"].clone();
        let digits = models
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "digits")
            .unwrap()
            .clone();
        let stats = &digits["slots"][0]["stats"];
        assert_eq!(
            (stats["requests"].as_u64(), stats["errors"].as_u64()),
            (Some(8), Some(8)),
            "{fault:?}: {digits:#}"
        );
        stop(running).await;
        server.abort();
    }
}

async fn state_status(running: &teal::server::Running) -> serde_json::Value {
    admin(running).get("/api/v1/status").await.unwrap().json()["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_file_stops_the_records_not_the_serving() {
    // A state file capped small fills up exactly as a full disk does: SQLite answers
    // "database or disk is full".
    let mut config = config_with(&onnx("v1"), Some(&onnx("v2")));
    config.server.state_max_bytes = Some(192 * 1024);
    let running = start(&config).await;
    let client = data(&running);
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    assert_eq!(state_status(&running).await["writable"], true);
    let mut served = 0;
    let full = eventually(Duration::from_secs(60), async || {
        for _ in 0..200 {
            let answer = client
                .send("POST", "/v2/models/digits/infer", &[], body.clone())
                .await
                .unwrap();
            assert_eq!(
                answer.status,
                200,
                "request {served}: {}",
                answer.error_message()
            );
            served += 1;
        }
        state_status(&running).await["writable"] == false
    })
    .await;
    assert!(full, "the state file never filled after {served} requests");
    let state = state_status(&running).await;
    assert!(
        state["error"].as_str().unwrap().contains("full"),
        "status says why: {state}"
    );
    // Serving goes on.
    for _ in 0..50 {
        let answer = client
            .send("POST", "/v2/models/digits/infer", &[], body.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    // A manual change cannot be recorded, so it is refused whole: routing stays as it was,
    // and the audit log misses nothing.
    let admin = admin(&running);
    let events_before = admin
        .get("/api/v1/models/digits/history")
        .await
        .unwrap()
        .json()["events"]
        .as_array()
        .unwrap()
        .len();
    let switched = switch_digits(&admin, "green").await;
    assert_eq!(switched.status, 507, "{}", switched.error_message());
    assert!(
        switched.error_message().contains("free space"),
        "{}",
        switched.error_message()
    );
    let weighted = admin
        .post_json(
            "/api/v1/models/digits/canary",
            &serde_json::json!({"percent": 50}),
        )
        .await
        .unwrap();
    assert_eq!(weighted.status, 507, "{}", weighted.error_message());
    for _ in 0..20 {
        assert_eq!(live_version(&client).await, "v1", "routing is unchanged");
    }
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(
        (status["live"].as_str(), status["candidate_weight"].as_u64()),
        (Some("blue"), Some(0)),
        "{status}"
    );
    let events_after = admin
        .get("/api/v1/models/digits/history")
        .await
        .unwrap()
        .json()["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(events_before, events_after);
    // A rollout must be recorded before it acts, so it is refused with the reason.
    let refused = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({"candidate": {"version": "v3", "kind": "onnx", "path": repo_root().join("models/digits/v1/model.onnx")}}),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 507, "{}", refused.error_message());
    assert!(
        refused.error_message().contains("free space"),
        "{}",
        refused.error_message()
    );
    let metrics = String::from_utf8(admin.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value("teal_state_write_failures_total") > 0.0, "{metrics}");
    assert!(value("teal_request_log_dropped_total") > 0.0, "{metrics}");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_others_and_are_cut_off() {
    let mut config = config_with(&onnx("v1"), None);
    config.server.header_timeout_ms = 2_000;
    let running = start(&config).await;
    let addr = running.data_addr;
    // 200 clients that send a request head one byte every 100 ms, as slowloris does.
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let started = Instant::now();
                let head = b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: teal\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for byte in head {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return started.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Still open after the whole head: wait for teal to close it.
                let mut sink = [0u8; 1024];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = data(&running);
    let body = infer_body(&[holdout("digits")[0].0.clone()]);
    for i in 0..200 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.post_json("/v2/models/digits/infer", &body),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} was starved"))
        .unwrap();
        assert_eq!(answer.status, 200);
    }
    for task in slow {
        let held = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("teal closes a slow client's connection")
            .unwrap();
        assert!(
            held < Duration::from_secs(10),
            "a slow client held its connection for {held:?}"
        );
    }
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_serving() {
    const IDLE: usize = 10_000;
    // teal in its own process, as users run it, so the two sides do not share one
    // process's file-descriptor limit.
    let port = free_port();
    let _teal = teal_replica(port, "v1");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match TcpStream::connect(addr).await {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("idle connection {i}: {e}"),
        }
    }
    // Every idle connection was accepted: a request on the last one is answered.
    let last = idle.last_mut().unwrap();
    last.write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: teal\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), last.read_exact(&mut answer))
        .await
        .expect("the last idle connection is served")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let client = teal::cli::client::HttpClient::new(&format!("http://{addr}"));
    let body = infer_body(&[holdout("digits")[0].0.clone()]);
    for i in 0..100 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.post_json("/v2/models/digits/infer", &body),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} with {IDLE} idle connections timed out"))
        .unwrap();
        assert_eq!(answer.status, 200);
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_slot_process_killed_under_load_is_reported_and_rolled_back() {
    use common::rollouts::*;
    let mut config = config_with(&onnx("v1"), None);
    // The candidate is a process slot sent through the API: the operator allows that.
    config.server.allow_commands = true;
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    let candidate = serde_json::json!({
        "version": "v2",
        "kind": "process",
        "command": format!("{} tests/python/onnx_model_server.py --port {{port}} --model models/digits/v2/model.onnx --version v2", python_word()),
        "workdir": repo_root(),
        "ready_timeout_ms": 30000,
        "stop_grace_ms": 2000,
    });
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    // A Python server is slower than in-process ONNX, which the latency gate and rule would
    // rightly flag; this test is about the process dying, so only health is checked.
    settings["evidence"] = serde_json::Value::Null;
    settings["observe_ms"] = 3_600_000.into();
    settings["rules"] = serde_json::json!({ "check_interval_ms": 200, "min_requests": 5 });
    start_rollout(&admin, candidate, settings).await;
    let load = Load::start(&client, 2);
    wait_phase(&admin, "observing", Duration::from_secs(90)).await;
    assert_eq!(live_version(&client).await, "v2");
    let slot = |status: &serde_json::Value| {
        status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["version"] == "v2")
            .cloned()
            .unwrap()
    };
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let pid = slot(&status)["process"]["pid"]
        .as_i64()
        .expect("the slot's pid") as i32;
    // The model server crashes: its whole process group is killed.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let back = wait_phase(&admin, "rolled_back", Duration::from_secs(30)).await;
    assert!(
        back["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("process exited"),
        "the rollback says why: {back}"
    );
    let (_, failed_during, _) = load.finish().await;
    // After the rollback everything is served by v1, and the dead process is reported.
    let load = Load::start(&client, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok > 0);
    assert_eq!(live_version(&client).await, "v1");
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let dead = slot(&status);
    assert_eq!(dead["ready"], false, "{dead}");
    assert_eq!(dead["process"]["running"], false, "{dead}");
    assert!(dead["process"]["exit"].as_str().is_some(), "{dead}");
    eprintln!("{failed_during} requests failed between the crash and the rollback");
    stop(running).await;
}

/// A version that is ready and publishes its metadata but answers every inference with a
/// 500, deployed with the rules armed: only the error rule can see this (the readiness rule
/// passes), so it must be what rolls back. Returns the requests that failed for a client and
/// the failovers teal counted.
async fn roll_back_a_version_answering_server_errors(failover: bool) -> (u64, f64) {
    use common::rollouts::*;
    let (url, server) = faulty_server(Fault::ServerError).await;
    let running = start(&config_with(&onnx("v1"), None)).await;
    let (client, admin) = (data(&running), admin(&running));
    let candidate = serde_json::json!({
        "version": "crashing", "kind": "upstream", "urls": [url],
        "eject_after_failures": 1_000_000,
    });
    let mut settings = quick(serde_json::json!({ "kind": "blue_green" }));
    settings["evidence"] = serde_json::Value::Null;
    settings["observe_ms"] = 60_000.into();
    settings["failover"] = failover.into();
    settings["rules"] = serde_json::json!({ "check_interval_ms": 200, "min_requests": 5 });
    start_rollout(&admin, candidate, settings).await;
    wait_phase(&admin, "observing", Duration::from_secs(60)).await;
    let load = Load::start(&client, 3);
    let back = wait_phase(&admin, "rolled_back", Duration::from_secs(30)).await;
    let (_, failed, _) = load.finish().await;
    let outcome = back["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("errors"), "{back:#}");
    assert_eq!(live_version(&client).await, "v1");
    let text = String::from_utf8_lossy(&admin.get("/metrics").await.unwrap().body).to_string();
    let failovers = metric_value(
        &text,
        "teal_failover_total{model=\"digits\",version=\"crashing\"}",
    );
    // Failed over or not, every failure counts against the version that failed.
    let errors = metric_value(
        &text,
        "model_server_errors_total{model=\"digits\",version=\"crashing\",slot=\"green\",error_type=\"backend\"}",
    );
    assert!(
        errors >= 5.0,
        "the rule acted on evidence: {errors} errors\n{text}"
    );
    stop(running).await;
    server.abort();
    (failed, failovers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_answering_server_errors_is_rolled_back_and_no_client_sees_its_errors() {
    let (failed, failovers) = roll_back_a_version_answering_server_errors(true).await;
    assert_eq!(
        failed, 0,
        "the old version, warm, answers what the new one fails"
    );
    assert!(failovers >= 5.0, "{failovers} failovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_failover_a_failing_versions_errors_reach_the_client_until_the_rollback() {
    let (failed, failovers) = roll_back_a_version_answering_server_errors(false).await;
    assert!(failed >= 5, "{failed} failed");
    assert_eq!(failovers, 0.0);
}

/// Answers whose framing is malformed or ambiguous (a chunk size near 2^64, both
/// Content-Length and Transfer-Encoding, two lengths, a 101) each become a 502 that names
/// what was wrong; an interim 100 Continue is skipped; and teal, its readiness checks of the
/// same server included, stays healthy throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_with_malformed_framing_is_a_502_naming_it() {
    let (url, server) = faulty_server(Fault::BadFraming).await;
    let config = config_file(&format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\n{}",
        upstream(
            "framed",
            &[url],
            "timeout_ms = 2000\nhealth_interval_ms = 50\neject_after_failures = 1000"
        )
    ));
    let teal = serve_binary(&config, None);
    let row = holdout("digits")[0].0.clone();
    let request = |id: &str| {
        let mut body = infer_body(std::slice::from_ref(&row));
        body["id"] = id.into();
        Bytes::from(body.to_string())
    };
    for round in 0..2 {
        for (name, _, says) in FRAMINGS {
            let answer = teal
                .data
                .send("POST", "/v2/models/digits/infer", &[], request(name))
                .await
                .expect("an answer");
            assert_eq!(answer.status, 502, "{name}: {}", answer.error_message());
            let error = answer.error_message();
            assert!(
                error.contains("digits") && error.contains(says),
                "{name} (round {round}): {error}"
            );
        }
        for id in ["continue", "plain"] {
            let answer = teal
                .data
                .send("POST", "/v2/models/digits/infer", &[], request(id))
                .await
                .unwrap();
            assert_eq!(answer.status, 200, "{id}: {}", answer.error_message());
            assert_eq!(answer.json()["outputs"][0]["data"][0], 7, "{id}");
        }
    }
    // Alive, ready, and the replica still judged ready by its checks.
    let mut teal = teal;
    assert!(!teal.proc.has_exited(), "teal is running");
    let ready = teal.data.get("/v2/health/ready").await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.error_message());
    let status = teal
        .admin
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    assert_eq!(status["slots"][0]["ready"], true, "{status:#}");
    server.abort();
}

/// A version that fails every request does not flood the log: its failures are one line per
/// interval (`FAILURE_LOG_INTERVAL`, 10 s), not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_failing_every_request_logs_a_line_per_interval_not_per_request() {
    let (url, server) = faulty_server(Fault::ServerError).await;
    let config = config_file(&format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\n{}",
        upstream("crashing", &[url], "eject_after_failures = 1000000")
    ));
    let dir = config.parent().unwrap().to_path_buf();
    let log = dir.join("stderr.log");
    let teal = serve_binary(&config, Some(&log));
    let body = Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, body) = (teal.data.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..400 {
                    let answer = client
                        .send("POST", "/v2/models/digits/infer", &[], body.clone())
                        .await
                        .unwrap();
                    assert_eq!(answer.status, 502, "{}", answer.error_message());
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let intervals = started.elapsed().as_secs() / 10 + 1;
    drop(teal);
    server.abort();
    let text = std::fs::read_to_string(&log).unwrap();
    let failed = text
        .lines()
        .filter(|l| l.contains("request failed"))
        .count() as u64;
    assert!(failed >= 1, "the failures are logged:\n{text}");
    assert!(
        failed <= intervals + 1,
        "3200 failed requests over {intervals} intervals wrote {failed} lines:\n{text}"
    );
    assert!(text.lines().count() < 20, "the log stays short:\n{text}");
}
