//! The operator's own checks, run for the rollout driver: Prometheus analyses (an instant
//! query through the HTTP API, judged by `teal_core::rollout::Analysis`), webhooks (a signed
//! POST with a timeout and retries) and smoke tests (a command against the candidate, on a
//! loopback listener where the candidate alone answers).
//!
//! Everything here comes from the config file (`RolloutSettings::with_checks_of`): no API
//! call can add a query target, a webhook or a command.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use teal_core::gates::Verdict;
use teal_core::rollout::{
    Analysis, HookEvent, HookFormat, Measurement, Placeholders, Rollout, SmokeTest, Webhook,
    promql_string,
};
use teal_core::routing::Color;
use tokio::io::AsyncReadExt;

use crate::backends::fetch::redacted;
use crate::backends::process::PASSED_ENVIRONMENT;

/// The most of a Prometheus answer or a webhook's answer read; more is refused.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// The most of a smoke test's output kept (its end), per stream.
const MAX_OUTPUT_BYTES: usize = 16 << 10;
/// The longest one Prometheus query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener on loopback where only one model's candidate answers, for smoke tests. The
/// gateway opens it (the control layer cannot reach the data plane): see
/// `gateway::CandidateDoors`.
pub trait CandidateDoor: Send + Sync {
    /// Opens a listener for `model` whose every request goes to the slot `color`.
    fn open<'a>(
        &'a self,
        model: &'a str,
        color: Color,
    ) -> Pin<Box<dyn Future<Output = Result<OpenDoor, String>> + Send + 'a>>;
}

/// An open candidate listener: its base URL; dropping it closes the listener.
pub struct OpenDoor {
    /// `http://127.0.0.1:PORT`: the data plane's endpoints, for the candidate alone.
    pub url: String,
    /// Closes the listener when dropped.
    pub close: tokio::sync::oneshot::Sender<()>,
}

/// The HTTP client the checks share.
#[derive(Clone)]
pub struct Checks {
    client: reqwest::Client,
    prometheus: Option<String>,
}

impl Checks {
    /// Checks that query `prometheus` (the config's `server.prometheus_url`), when set.
    pub fn new(prometheus: Option<&str>) -> Checks {
        // reqwest is built without a default TLS provider: ring, as the fetcher installs it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("teal/", env!("CARGO_PKG_VERSION")))
            // A webhook or Prometheus is the address the operator wrote: never another.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Checks {
            client,
            prometheus: prometheus.map(|u| u.trim_end_matches('/').to_string()),
        }
    }

    /// The same client, querying `prometheus` (a resource's own `prometheusUrl`).
    pub fn with_prometheus(&self, prometheus: Option<&str>) -> Checks {
        Checks {
            client: self.client.clone(),
            prometheus: prometheus.map(|u| u.trim_end_matches('/').to_string()),
        }
    }

    /// Measures an analysis once: the query with its placeholders filled, sent as an instant
    /// query. No data, a NaN, an error from Prometheus or on the way is inconclusive, with the
    /// reason.
    pub async fn measure(&self, analysis: &Analysis, vars: &Placeholders<'_>) -> Measurement {
        let Some(base) = &self.prometheus else {
            return analysis.unmeasured("server.prometheus_url is not set");
        };
        let query = vars.render(&analysis.query, promql_string);
        let Ok(url) =
            reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), [("query", &query)])
        else {
            return analysis.unmeasured(&format!(
                "server.prometheus_url {} is not a URL",
                redacted(base)
            ));
        };
        let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
            let response = self.client.get(url).send().await.map_err(|e| {
                format!(
                    "Prometheus at {} did not answer: {}",
                    redacted(base),
                    e.without_url()
                )
            })?;
            let status = response.status();
            let body = read_capped(response).await?;
            Ok::<_, String>((status, body))
        })
        .await;
        let (status, body) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => return analysis.unmeasured(&reason),
            Err(_) => {
                return analysis.unmeasured(&format!(
                    "Prometheus did not answer within {} s",
                    QUERY_TIMEOUT.as_secs()
                ));
            }
        };
        match values_of(status.as_u16(), &body) {
            Ok(values) => analysis.judge(values),
            Err(reason) => analysis.unmeasured(&reason),
        }
    }

    /// An analysis at the gates: measured every `interval_ms` until it passes, or fails
    /// `consecutive` times in a row, or has been measured `consecutive` times without either
    /// (inconclusive). Returns the verdict's measurement and every measurement taken.
    pub async fn gate_analysis(
        &self,
        analysis: &Analysis,
        vars: &Placeholders<'_>,
    ) -> (Measurement, Vec<Measurement>) {
        let mut fails = 0;
        let mut all = Vec::new();
        let mut last = analysis.unmeasured("not measured");
        for attempt in 0..analysis.consecutive {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(analysis.interval_ms)).await;
            }
            last = self.measure(analysis, vars).await;
            all.push(last.clone());
            match last.verdict {
                Verdict::Pass => return (last, all),
                Verdict::Fail => fails += 1,
                Verdict::Inconclusive => fails = 0,
            }
            if fails >= analysis.consecutive {
                break;
            }
        }
        if last.verdict == Verdict::Fail && fails < analysis.consecutive {
            last.verdict = Verdict::Inconclusive;
            last.detail = format!(
                "{} (failed {fails} of {} in a row needed)",
                last.detail, analysis.consecutive
            );
        } else if last.verdict == Verdict::Fail {
            last.detail = format!("{} (failed {fails} in a row)", last.detail);
        }
        (last, all)
    }

    /// Sends `payload` to a webhook (as Slack's text when its format says so), signed when it
    /// has a secret; retries with backoff while there is no answer, or a 5xx or 429. Returns
    /// the status of a 2xx answer; anything else (another answer, or none) is the reason.
    pub async fn deliver(
        &self,
        hook: &Webhook,
        event: HookEvent,
        payload: &serde_json::Value,
    ) -> Result<u16, String> {
        let body = match hook.format {
            HookFormat::Json => serde_json::to_vec(payload).unwrap_or_default(),
            HookFormat::Slack => {
                serde_json::to_vec(&serde_json::json!({ "text": slack_text(event, payload) }))
                    .unwrap_or_default()
            }
        };
        let signature = match &hook.secret_env {
            None => None,
            Some(var) => {
                let Some(secret) = std::env::var_os(var).filter(|s| !s.is_empty()) else {
                    return Err(format!(
                        "its secret_env {var} is not set: not sent unsigned"
                    ));
                };
                let mac = crate::state::store::hmac_sha256(secret.as_encoded_bytes(), &body);
                Some(format!(
                    "sha256={}",
                    mac.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ))
            }
        };
        let delivery = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut last = String::new();
        for attempt in 0..=hook.retries {
            if attempt > 0 {
                // 250 ms, 500 ms, 1 s, ... at most 8 s, with jitter.
                let base = 250u64 << (attempt - 1).min(5);
                tokio::time::sleep(Duration::from_millis(base + fastrand::u64(..base / 2 + 1)))
                    .await;
            }
            let mut request = self
                .client
                .post(&hook.url)
                .timeout(Duration::from_millis(hook.timeout_ms))
                .header("content-type", "application/json")
                .header("x-teal-event", event.as_str())
                .header("x-teal-delivery", &delivery)
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header("x-teal-signature-256", signature);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = read_capped(response).await.unwrap_or_default();
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    if status.is_success() {
                        return Ok(status.as_u16());
                    }
                    if !retry || attempt == hook.retries {
                        return Err(format!("answered {}", status.as_u16()));
                    }
                    last = format!(
                        "answered {status}: {}",
                        short(&String::from_utf8_lossy(&text))
                    );
                }
                Err(e) if e.is_timeout() => {
                    last = format!("no answer within {} ms", hook.timeout_ms);
                }
                Err(e) => last = format!("could not be reached: {}", e.without_url()),
            }
        }
        Err(format!("{last} ({} tries)", hook.retries + 1))
    }

    /// Asks a `pre_switch` hook until it answers 200, every `confirm_interval_ms`, for at most
    /// `confirm_timeout_ms`, while `wanted` says the rollout still waits on it.
    pub async fn confirm(
        &self,
        hook: &Webhook,
        payload: &serde_json::Value,
        wanted: impl Fn() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(hook.confirm_timeout_ms);
        let mut last = None;
        loop {
            let asked = tokio::time::timeout_at(
                deadline.into(),
                self.deliver(hook, HookEvent::PreSwitch, payload),
            )
            .await;
            match asked {
                Ok(Ok(200)) => return Ok(()),
                Ok(Ok(status)) => last = Some(format!("answered {status}")),
                Ok(Err(reason)) => last = Some(reason),
                // An ask the deadline cut short says less than the one before it.
                Err(_) => {
                    last.get_or_insert_with(|| "no answer yet".to_string());
                }
            }
            let now = Instant::now();
            if now >= deadline || !wanted() {
                break;
            }
            let pause = Duration::from_millis(hook.confirm_interval_ms).min(deadline - now);
            tokio::time::sleep(pause).await;
            if !wanted() {
                break;
            }
        }
        Err(format!(
            "did not answer 200 within {} ({})",
            show_ms(hook.confirm_timeout_ms),
            last.unwrap_or_default()
        ))
    }
}

/// What the operator's checks said at the gates, and the worst verdict so far.
pub struct Said {
    pub worst: Verdict,
    pub lines: Vec<String>,
}

impl Said {
    pub fn add(&mut self, verdict: Verdict, line: String) {
        self.worst = combine(self.worst, verdict);
        self.lines.push(line);
    }
}

/// The worse of two verdicts: a failure over anything, then inconclusive over a pass.
pub fn combine(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
        (Verdict::Inconclusive, _) | (_, Verdict::Inconclusive) => Verdict::Inconclusive,
        _ => Verdict::Pass,
    }
}

/// What a query's or a command's placeholders stand for in this rollout.
pub fn placeholders(state: &Rollout) -> Placeholders<'static> {
    Placeholders {
        values: vec![
            ("model", state.model.clone()),
            ("version", state.version.clone()),
            ("slot", state.new_slot().to_string()),
            ("old_version", state.old_version.clone().unwrap_or_default()),
        ],
    }
}

/// A webhook's JSON body: the event, the rollout, and its report so far.
pub fn payload(state: &Rollout, event: HookEvent, cause: &str) -> serde_json::Value {
    serde_json::json!({
        "event": event.as_str(),
        "model": state.model,
        "version": state.version,
        "old_version": state.old_version,
        "rollout": state.id,
        "phase": state.phase.name(),
        "cause": cause,
        "outcome": state.outcome.as_ref().map(ToString::to_string),
        "report": {
            "checks": state.last_check,
            "strategy": state.settings.strategy.name(),
        },
        "time": crate::state::store::format_time(crate::state::store::now_ms()),
    })
}

/// A smoke test's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SmokeOutcome {
    pub name: String,
    pub passed: bool,
    /// `exit 0`, `exit 3`, `killed by signal 9`, `killed after the 60 s timeout`, or why it
    /// could not start.
    pub status: String,
    /// The end of its standard output and standard error.
    pub output: String,
    pub duration_ms: u64,
}

/// Runs a smoke test: its command with the placeholders filled, no shell, a clean
/// environment (as a model server's: [`PASSED_ENVIRONMENT`] and the test's `env`), in its
/// own process group, killed whole at the timeout.
pub async fn run_smoke(test: &SmokeTest, vars: &Placeholders<'_>) -> SmokeOutcome {
    let started = Instant::now();
    let args: Vec<String> = test
        .command
        .iter()
        .map(|a| vars.render(a, str::to_string))
        .collect();
    let outcome = |passed: bool, status: String, output: String| SmokeOutcome {
        name: test.name.clone(),
        passed,
        status,
        output,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let mut command = tokio::process::Command::new(&args[0]);
    command
        .args(&args[1..])
        .env_clear()
        .envs(
            PASSED_ENVIRONMENT
                .iter()
                .filter_map(|name| std::env::var_os(name).map(|value| (name, value))),
        )
        .envs(
            test.env
                .iter()
                .map(|(k, v)| (k, vars.render(v, str::to_string))),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return outcome(
                false,
                format!("could not start `{}`: {e}", args[0]),
                String::new(),
            );
        }
    };
    let pid = child.id().unwrap_or_default();
    let out = tokio::spawn(tail(child.stdout.take()));
    let err = tokio::spawn(tail(child.stderr.take()));
    let waited = tokio::time::timeout(Duration::from_millis(test.timeout_ms), child.wait()).await;
    // The whole group goes: a test's own children must not outlive it.
    if pid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = match &waited {
        Ok(Ok(status)) => match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(status),
        ) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "ended".to_string(),
        },
        Ok(Err(e)) => format!("could not be waited for: {e}"),
        Err(_) => {
            let _ = child.wait().await;
            format!("killed after the {} timeout", show_ms(test.timeout_ms))
        }
    };
    let collect = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (stdout, stderr) = (collect(out).await, collect(err).await);
    let mut output = String::from_utf8_lossy(&stdout).into_owned();
    if !stderr.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(&String::from_utf8_lossy(&stderr));
    }
    let passed = matches!(&waited, Ok(Ok(s)) if s.success());
    outcome(passed, status, output)
}

/// The last [`MAX_OUTPUT_BYTES`] of a stream.
async fn tail(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > 2 * MAX_OUTPUT_BYTES {
            kept.drain(..kept.len() - MAX_OUTPUT_BYTES);
        }
    }
    if kept.len() > MAX_OUTPUT_BYTES {
        kept.drain(..kept.len() - MAX_OUTPUT_BYTES);
    }
    kept
}

/// Reads an answer's body, refusing one over [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the answer broke off: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("the answer is over {} MiB", MAX_ANSWER_BYTES >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The values of an instant query's answer (Prometheus's `/api/v1/query`): one per series of
/// a vector, or a scalar's; an error names what Prometheus said.
fn values_of(status: u16, body: &[u8]) -> Result<Vec<f64>, String> {
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "Prometheus answered {status} with a body that is not its API's JSON: {}",
            short(&String::from_utf8_lossy(body))
        )
    })?;
    if answer["status"] != "success" {
        return Err(format!(
            "Prometheus refused the query ({status}, {}): {}",
            answer["errorType"].as_str().unwrap_or("no errorType"),
            answer["error"].as_str().unwrap_or("no error given")
        ));
    }
    let data = &answer["data"];
    let number = |pair: &serde_json::Value| -> Result<f64, String> {
        pair.get(1)
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| format!("a sample that is not [time, \"number\"]: {pair}"))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or("a vector without a result list")?
            .iter()
            .map(|series| number(&series["value"]))
            .collect(),
        Some("scalar") => Ok(vec![number(&data["result"])?]),
        Some("matrix") => Err(
            "the query returned a range (matrix): write an instant query, like rate(x[5m]) rather than x[5m]"
                .into(),
        ),
        other => Err(format!(
            "the query returned a {}, not a number: write one that returns a vector or a scalar",
            other.unwrap_or("result of no type")
        )),
    }
}

/// The message of a `slack` webhook.
fn slack_text(event: HookEvent, payload: &serde_json::Value) -> String {
    let s = |k: &str| payload[k].as_str().unwrap_or("").to_string();
    let what = match event {
        HookEvent::PreRollout => "rollout starting",
        HookEvent::PreSwitch => "waiting to switch",
        HookEvent::CanaryStep => "canary step",
        HookEvent::PostRollout => "released",
        HookEvent::Rollback => "rolled back",
        HookEvent::Abort => "aborted",
        HookEvent::Failure => "rollout failed",
    };
    let from = payload["old_version"]
        .as_str()
        .map(|v| format!(" (from {v})"))
        .unwrap_or_default();
    format!(
        "teal: {} {}{from}: {what}: {}",
        s("model"),
        s("version"),
        s("cause")
    )
}

fn short(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// A duration as settings write it: `500 ms`, `30 s`, `5 min`.
pub fn show_ms(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_are_read_as_prometheus_writes_them() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1.5,"0.25"]},{"metric":{},"value":[1.5,"NaN"]}]}}"#;
        let values = values_of(200, vector).unwrap();
        assert_eq!(values[0], 0.25);
        assert!(values[1].is_nan());
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#;
        assert_eq!(values_of(200, scalar).unwrap(), vec![f64::INFINITY]);
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(values_of(200, empty).unwrap().is_empty());
        let error = br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#;
        let e = values_of(400, error).unwrap_err();
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            values_of(200, matrix)
                .unwrap_err()
                .contains("instant query")
        );
        assert!(
            values_of(502, b"<html>bad gateway</html>")
                .unwrap_err()
                .contains("502")
        );
    }
}
