//! A closed-loop HTTP/1.1 load generator for the benchmarks that need what wrk does not
//! report: latency per status, so the requests a server admitted (2xx) are measured apart
//! from those it shed (503). One thread, like `wrk -t1`; each connection sends a request,
//! reads the whole answer, and sends the next, reconnecting when the server closes.
//!
//!   loadgen HOST:PORT PATH BODY_FILE CONNECTIONS SECONDS
//!
//! Prints one line: `RESULT requests=... ok=... shed=... other=... errors=... seconds=...
//! rps=... ok_rps=... ok_p50_ms=... ok_p99_ms=... shed_p99_ms=...`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one connection saw: (status, latency in microseconds) per answer, and failures.
#[derive(Default)]
struct Seen {
    answers: Vec<(u16, u32)>,
    errors: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, path, body_file, connections, seconds] = args.as_slice() else {
        eprintln!("usage: loadgen HOST:PORT PATH BODY_FILE CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let body = std::fs::read(body_file).expect("the body file is readable");
    let connections: usize = connections.parse().expect("CONNECTIONS is a number");
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let seen: Vec<Seen> = runtime.block_on(async {
        let request: &'static [u8] = Box::leak(request.into_boxed_slice());
        let addr: &'static str = Box::leak(addr.clone().into_boxed_str());
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(addr, request, until)))
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.expect("a connection's task"));
        }
        seen
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut ok = Vec::new();
    let mut shed = Vec::new();
    let (mut other, mut errors) = (0u64, 0u64);
    for s in &seen {
        errors += s.errors;
        for &(status, us) in &s.answers {
            match status {
                200..=299 => ok.push(us),
                503 => shed.push(us),
                _ => other += 1,
            }
        }
    }
    ok.sort_unstable();
    shed.sort_unstable();
    let quantile = |v: &[u32], q: f64| match v.len() {
        0 => 0.0,
        n => f64::from(v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]) / 1000.0,
    };
    let requests = ok.len() + shed.len() + other as usize;
    println!(
        "RESULT requests={requests} ok={} shed={} other={other} errors={errors} seconds={elapsed:.3} rps={:.1} ok_rps={:.1} ok_p50_ms={:.3} ok_p99_ms={:.3} shed_p99_ms={:.3}",
        ok.len(),
        shed.len(),
        requests as f64 / elapsed,
        ok.len() as f64 / elapsed,
        quantile(&ok, 0.50),
        quantile(&ok, 0.99),
        quantile(&shed, 0.99),
    );
}

/// Sends requests on one connection until `until`, reconnecting when the server closes it.
async fn connection(addr: &str, request: &[u8], until: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    while Instant::now() < until {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            seen.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        loop {
            if Instant::now() >= until {
                return seen;
            }
            let sent = Instant::now();
            if stream.write_all(request).await.is_err() {
                seen.errors += 1;
                break;
            }
            match read_answer(&mut stream, &mut buf).await {
                Some((status, close)) => {
                    let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    seen.answers.push((status, us));
                    if close {
                        break;
                    }
                }
                None => {
                    seen.errors += 1;
                    break;
                }
            }
        }
    }
    seen
}

/// Reads one answer with a `content-length` body: its status, and whether the server will
/// close the connection. `None` when the connection failed or closed first.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .ok()?
        .to_ascii_lowercase();
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let mut length = 0usize;
    let mut close = false;
    for line in head.lines().skip(1) {
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        } else if let Some(value) = line.strip_prefix("connection:") {
            close = value.trim() == "close";
        }
    }
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((status, close))
}
