//! The data plane's HTTP/1.1 connections, as a raw socket sees them: kept alive, pipelined,
//! cut into single bytes, handed to the router mid-connection, closed when asked, and timed
//! out when idle. Every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

/// One answer read off the socket: status, headers (names lowercase), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A client socket that reads answers by their `content-length`.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(running: &teal::server::Running) -> Raw {
        let stream = TcpStream::connect(running.data_addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.read.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no answer within {LIMIT:?}"),
        }
    }

    async fn answer(&mut self) -> Answer {
        let end = loop {
            if let Some(at) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.more().await, "the connection closed before an answer");
        };
        let head = String::from_utf8(self.read[..end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("every answer says its length");
        while self.read.len() < end + length {
            assert!(self.more().await, "the connection closed inside an answer");
        }
        let body = self.read[end..end + length].to_vec();
        self.read.drain(..end + length);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Whether the server closes the connection (within the limit).
    async fn closed(&mut self) -> bool {
        !self.more().await && self.read.is_empty()
    }
}

fn infer_request(id: &str, extra: &str) -> Vec<u8> {
    let body = infer_body(&[holdout("digits")[0].0.clone()]).to_string();
    format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: teal\r\ncontent-type: application/json\r\nx-request-id: {id}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn label(answer: &Answer) -> i64 {
    answer.json()["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["datatype"] == "INT64")
        .unwrap()["data"][0]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_pipelined_and_handed_to_the_router_requests_are_answered_in_order() {
    let running = start(&example_config()).await;
    let expected = holdout("digits")[0].1;
    let mut raw = Raw::connect(&running).await;
    // Two infer requests in one write, then a readiness check and an infer request after it
    // (which the router serves: the connection is handed over at the GET).
    let mut pipelined = infer_request("first", "");
    pipelined.extend(infer_request("second", ""));
    raw.send(&pipelined).await;
    for id in ["first", "second"] {
        let answer = raw.answer().await;
        assert_eq!(answer.status, 200, "{id}");
        assert_eq!(answer.header("x-request-id"), Some(id));
        assert_eq!(answer.header("x-teal-version"), Some("v1"));
        assert_eq!(answer.header("x-teal-slot"), Some("blue"));
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(answer.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert!(answer.header("x-teal-route-generation").is_some());
        assert_eq!(label(&answer), expected);
    }
    raw.send(b"GET /v2/health/ready HTTP/1.1\r\nhost: teal\r\n\r\n")
        .await;
    let ready = raw.answer().await;
    assert_eq!(
        (ready.status, ready.json()["ready"].clone()),
        (200, true.into())
    );
    raw.send(&infer_request("third", "")).await;
    let third = raw.answer().await;
    assert_eq!(third.status, 200);
    assert_eq!(third.header("x-request-id"), Some("third"));
    assert_eq!(label(&third), expected);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_a_byte_at_a_time_is_answered() {
    let running = start(&example_config()).await;
    let mut raw = Raw::connect(&running).await;
    for byte in infer_request("slow", "") {
        raw.send(&[byte]).await;
    }
    let answer = raw.answer().await;
    assert_eq!(answer.status, 200);
    assert_eq!(label(&answer), holdout("digits")[0].1);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_to_close_gets_its_answer_then_the_close() {
    let running = start(&example_config()).await;
    let mut raw = Raw::connect(&running).await;
    raw.send(&infer_request("bye", "connection: close\r\n"))
        .await;
    let answer = raw.answer().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        raw.closed().await,
        "teal closes the connection after the answer"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_the_direct_path_are_the_routers_answers() {
    let running = start(&example_config()).await;
    let mut raw = Raw::connect(&running).await;
    // An unknown model, a body that is not JSON, and a wrong content type, each also sent
    // with a percent-encoded name, which the router serves.
    let cases = [
        ("nosuch", "application/json", "{}", 404),
        ("digits", "application/json", "{", 400),
        ("digits", "text/plain", "{}", 415),
    ];
    for (model, content_type, body, status) in cases {
        let mut answers = Vec::new();
        for path in [
            model.to_string(),
            format!("%{:02X}{}", model.as_bytes()[0], &model[1..]),
        ] {
            let request = format!(
                "POST /v2/models/{path}/infer HTTP/1.1\r\nhost: teal\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut raw = Raw::connect(&running).await;
            raw.send(request.as_bytes()).await;
            let answer = raw.answer().await;
            assert_eq!(answer.status, status, "{path}: {:?}", answer.json());
            answers.push((
                answer.json(),
                answer.header("connection").map(str::to_string),
            ));
        }
        assert_eq!(answers[0], answers[1], "{model} {content_type} {body}");
    }
    // The connection that was refused nothing still serves.
    raw.send(&infer_request("after", "")).await;
    assert_eq!(raw.answer().await.status, 200);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_a_header_timeout_after_its_last_answer() {
    let mut config = example_config();
    config.server.header_timeout_ms = 1000;
    let running = start(&config).await;
    let mut raw = Raw::connect(&running).await;
    raw.send(&infer_request("one", "")).await;
    assert_eq!(raw.answer().await.status, 200);
    // A second request well inside the first wait's timeout: the timer must move to the
    // second wait, not cut it short at the first one's deadline (which would close the
    // connection about 400 ms after the second answer).
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The clock starts before the second request is sent: teal's wait for the next head
    // begins after it has answered it, so it cannot be earlier.
    let last = Instant::now();
    raw.send(&infer_request("two", "")).await;
    assert_eq!(raw.answer().await.status, 200);
    assert!(raw.closed().await, "an idle connection is closed");
    let held = last.elapsed();
    assert!(
        held >= Duration::from_millis(1000),
        "closed {held:?} after the last request, before the header timeout of 1 s"
    );
    assert!(held < LIMIT, "held for {held:?}");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_sent_in_pieces_is_read_whole() {
    let running = start(&example_config()).await;
    let rows = holdout("digits");
    let body = infer_body(&rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()).to_string();
    assert!(body.len() > 100_000, "the body spans several reads");
    let request = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: teal\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut raw = Raw::connect(&running).await;
    for piece in request.as_bytes().chunks(4096) {
        raw.send(piece).await;
    }
    let answer = raw.answer().await;
    assert_eq!(answer.status, 200);
    let labels: Vec<i64> = answer.json()["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["datatype"] == "INT64")
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(labels, reference_labels("digits", "v1"));
    stop(running).await;
}
