//! An HTTP/1.1 load generator for the benchmarks that need what wrk does not report:
//! latency per status, so the requests a server admitted (2xx) are measured apart from
//! those it shed (503), and an offered rate kept whatever the server answers. One thread,
//! like `wrk -t1`.
//!
//!   loadgen HOST:PORT PATH BODY_FILE CONNECTIONS SECONDS [RATE]
//!
//! Without RATE the load is closed-loop: each connection sends a request, reads the whole
//! answer, and sends the next, reconnecting when the server closes; this finds a server's
//! capacity. With RATE (requests per second) the load is open-loop: request `i` is due at
//! `i / RATE` seconds after the start, whatever the answers so far, and goes out on an idle
//! connection of the CONNECTIONS opened beforehand. A request that finds every connection
//! busy waits in the generator until one is free, and one still waiting at the end is
//! counted as unsent; a request sent more than `LATE` after its time is counted as late.
//! Latency is measured from the time a request was due, not from when it went out, so a
//! server that makes requests wait in the generator is charged for it (no coordinated
//! omission). A 503 is an answer like any other: the request is not sent again. Answers
//! still outstanding at the end are awaited for up to `DRAIN`, then counted as errors.
//!
//! Prints one line: `RESULT requests=... ok=... shed=... other=... errors=... seconds=...
//! rps=... ok_rps=... ok_p50_ms=... ok_p99_ms=... shed_p99_ms=...`, and in open-loop mode
//! also `offered_rps=... scheduled=... unsent=... late=... lag_p99_ms=...`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A request sent this long after its time is late. The timer the schedule is kept with
/// ticks every millisecond, so every send may be up to a millisecond behind.
const LATE: Duration = Duration::from_millis(2);
/// How long answers outstanding at the end of an open-loop run are awaited.
const DRAIN: Duration = Duration::from_secs(15);

/// What was seen: (status, latency in microseconds) per answer, and failures.
#[derive(Default)]
struct Seen {
    answers: Vec<(u16, u32)>,
    errors: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, path, body_file, connections, seconds, rate) = match args.as_slice() {
        [_, addr, path, body, conns, secs] => (addr, path, body, conns, secs, None),
        [_, addr, path, body, conns, secs, rate] => (addr, path, body, conns, secs, Some(rate)),
        _ => {
            eprintln!("usage: loadgen HOST:PORT PATH BODY_FILE CONNECTIONS SECONDS [RATE]");
            std::process::exit(2);
        }
    };
    let body = std::fs::read(body_file).expect("the body file is readable");
    let connections: usize = connections.parse().expect("CONNECTIONS is a number");
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let rate: Option<f64> = rate.map(|r| r.parse().expect("RATE is a number of requests/s"));
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let request: &'static [u8] = Box::leak(request.into_boxed_slice());
    let addr: &'static str = Box::leak(addr.clone().into_boxed_str());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let window = Duration::from_secs_f64(seconds);
    let (seen, elapsed, open) = runtime.block_on(async {
        match rate {
            None => {
                let started = Instant::now();
                let until = started + window;
                let tasks: Vec<_> = (0..connections)
                    .map(|_| tokio::spawn(connection(addr, request, until)))
                    .collect();
                let mut seen = Seen::default();
                for task in tasks {
                    let s = task.await.expect("a connection's task");
                    seen.errors += s.errors;
                    seen.answers.extend(s.answers);
                }
                (seen, started.elapsed(), None)
            }
            Some(rate) => {
                let (seen, elapsed, open) =
                    open_loop(addr, request, connections, window, rate).await;
                (seen, elapsed, Some(open))
            }
        }
    });
    let elapsed = elapsed.as_secs_f64();
    let mut ok = Vec::new();
    let mut shed = Vec::new();
    let mut other = 0u64;
    for &(status, us) in &seen.answers {
        match status {
            200..=299 => ok.push(us),
            503 => shed.push(us),
            _ => other += 1,
        }
    }
    ok.sort_unstable();
    shed.sort_unstable();
    let requests = ok.len() + shed.len() + other as usize;
    let mut line = format!(
        "RESULT requests={requests} ok={} shed={} other={other} errors={} seconds={elapsed:.3} rps={:.1} ok_rps={:.1} ok_p50_ms={:.3} ok_p99_ms={:.3} shed_p99_ms={:.3}",
        ok.len(),
        shed.len(),
        seen.errors,
        requests as f64 / elapsed,
        ok.len() as f64 / elapsed,
        quantile(&ok, 0.50),
        quantile(&ok, 0.99),
        quantile(&shed, 0.99),
    );
    if let Some(open) = open {
        let mut lags = open.lags;
        lags.sort_unstable();
        let late = lags.iter().filter(|&&us| us > micros(LATE)).count();
        line.push_str(&format!(
            " offered_rps={:.1} scheduled={} unsent={} late={late} lag_p99_ms={:.3}",
            rate.unwrap_or(0.0),
            open.scheduled,
            open.unsent,
            quantile(&lags, 0.99),
        ));
    }
    println!("{line}");
}

/// The `q` quantile of sorted microseconds, in milliseconds.
fn quantile(v: &[u32], q: f64) -> f64 {
    match v.len() {
        0 => 0.0,
        n => f64::from(v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]) / 1000.0,
    }
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
                    seen.answers.push((status, micros(sent.elapsed())));
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

/// What an open-loop run adds: how many requests were due, how many never went out, and
/// how late (microseconds) each that went out was sent.
struct OpenLoop {
    scheduled: u64,
    unsent: u64,
    lags: Vec<u32>,
}

/// One connection's answer to one request: its index, and the status with the latency from
/// the request's due time (`None`: the connection failed).
type Done = (usize, Option<(u16, u32)>);

/// Offers `rate` requests per second for `window` over `connections` connections.
async fn open_loop(
    addr: &'static str,
    request: &'static [u8],
    connections: usize,
    window: Duration,
    rate: f64,
) -> (Seen, Duration, OpenLoop) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut jobs = Vec::with_capacity(connections);
    let mut ready = Vec::with_capacity(connections);
    for id in 0..connections {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let stream = TcpStream::connect(addr).await.ok();
        tokio::spawn(sender(addr, request, stream, rx, id, done_tx.clone()));
        jobs.push(tx);
        ready.push(id);
    }
    let mut seen = Seen::default();
    let mut open = OpenLoop {
        scheduled: 0,
        unsent: 0,
        lags: Vec::new(),
    };
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    let mut busy = 0usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let until = started + window;
    let mut next = 0u64;
    let due = |i: u64| started + interval.mul_f64(i as f64);
    loop {
        let now = Instant::now();
        while due(next) <= now && due(next) < until {
            waiting.push_back(due(next));
            next += 1;
        }
        while !waiting.is_empty()
            && let Some(id) = ready.pop()
        {
            let at = waiting.pop_front().expect("a request waits");
            open.lags.push(micros(now.saturating_duration_since(at)));
            let _ = jobs[id].send(at);
            busy += 1;
        }
        if due(next) >= until {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due(next).into()) => {}
            Some((id, outcome)) = done_rx.recv() => {
                record(&mut seen, outcome);
                ready.push(id);
                busy -= 1;
            }
        }
    }
    open.scheduled = next;
    // Requests still waiting for a connection never went out; those sent are awaited.
    open.unsent = waiting.len() as u64;
    waiting.clear();
    let drain = tokio::time::sleep(DRAIN);
    tokio::pin!(drain);
    while busy > 0 {
        tokio::select! {
            _ = &mut drain => break,
            Some((_, outcome)) = done_rx.recv() => {
                record(&mut seen, outcome);
                busy -= 1;
            }
        }
    }
    seen.errors += busy as u64;
    (seen, started.elapsed(), open)
}

fn record(seen: &mut Seen, outcome: Option<(u16, u32)>) {
    match outcome {
        Some(answer) => seen.answers.push(answer),
        None => seen.errors += 1,
    }
}

/// One connection of an open-loop run: sends a request for each due time it is handed,
/// reconnecting when needed, and reports each outcome.
async fn sender(
    addr: &str,
    request: &[u8],
    mut stream: Option<TcpStream>,
    mut due: mpsc::UnboundedReceiver<Instant>,
    id: usize,
    done: mpsc::UnboundedSender<Done>,
) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while let Some(at) = due.recv().await {
        if stream.is_none() {
            stream = TcpStream::connect(addr).await.ok();
        }
        let Some(s) = stream.as_mut() else {
            let _ = done.send((id, None));
            continue;
        };
        let _ = s.set_nodelay(true);
        let outcome = match s.write_all(request).await {
            Ok(()) => read_answer(s, &mut buf).await,
            Err(_) => None,
        };
        let close = outcome.is_none_or(|(_, close)| close);
        if close {
            stream = None;
        }
        let answer = outcome.map(|(status, _)| (status, micros(at.elapsed())));
        let _ = done.send((id, answer));
    }
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
