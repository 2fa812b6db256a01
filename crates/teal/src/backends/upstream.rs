//! Replicas of a model server that teal fronts: pooled keep-alive connections, balancing,
//! timeouts, a retry only when a request never reached a server, active readiness checks,
//! and passive ejection of a replica that keeps failing.
//!
//! Longer than most files (about 600 lines) because the replica set, its balancing, its
//! health checks and the request it sends share one state; the HTTP/1 client they use is
//! already apart in `http1.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use teal_core::config::{Balance, RemoteConfig, WireProtocol};
use teal_core::protocol::{self, InferRequest, Signature, Tensor, TensorData};
use tokio::task::JoinHandle;

use super::http1::{Http1Error, Http1Pool};
use super::{BackendError, LoadError};

/// One replica and what teal knows of it.
pub struct Replica {
    pub url: String,
    /// Keep-alive connections to this replica.
    pool: Http1Pool,
    outstanding: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the replica is ejected (0: not ejected).
    ejected_until: AtomicU64,
    /// The last active readiness check passed.
    ready: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// A replica as the admin API reports it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    pub url: String,
    pub ready: bool,
    pub ejected: bool,
    pub outstanding: usize,
    pub requests: u64,
    pub failures: u64,
}

struct Shared {
    replicas: Vec<Replica>,
    settings: RemoteConfig,
    /// The name the server knows the model by.
    server_model: String,
    ready_path: String,
    /// Where inferences go: the V2 infer path or the simple JSON path.
    infer_path: String,
    epoch: Instant,
    next: AtomicUsize,
}

/// A model served by replicas of a model server.
pub struct UpstreamModel {
    shared: Arc<Shared>,
    signature: Option<Signature>,
    health: JoinHandle<()>,
}

impl Drop for UpstreamModel {
    fn drop(&mut self) {
        self.health.abort();
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_ejected(&self, replica: &Replica) -> bool {
        // Most replicas were never ejected: no clock read for them.
        let until = replica.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > self.now_ms()
    }

    /// Picks a replica not in `tried`: ready and not ejected if any are, else any not tried.
    fn choose(&self, tried: &[usize]) -> Option<usize> {
        // Without allocating: this runs for every request.
        let open = |i: &usize| !tried.contains(i);
        let good = |i: &usize| {
            open(i)
                && self.replicas[*i].ready.load(Ordering::Relaxed)
                && !self.is_ejected(&self.replicas[*i])
        };
        let any_good = (0..self.replicas.len()).any(|i| good(&i));
        let pool =
            || (0..self.replicas.len()).filter(move |i| if any_good { good(i) } else { open(i) });
        let count = pool().count();
        if count == 0 {
            return None;
        }
        let offset = self.next.fetch_add(1, Ordering::Relaxed) % count;
        match self.settings.balance {
            Balance::RoundRobin => pool().nth(offset),
            Balance::LeastOutstanding => pool()
                .skip(offset)
                .chain(pool().take(offset))
                .min_by_key(|i| self.replicas[*i].outstanding.load(Ordering::Relaxed)),
        }
    }

    fn succeeded(&self, replica: &Replica) {
        replica.consecutive_failures.store(0, Ordering::Relaxed);
    }

    fn failed(&self, replica: &Replica, why: &str) {
        replica.failures.fetch_add(1, Ordering::Relaxed);
        let streak = replica.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= self.settings.eject_after_failures && !self.is_ejected(replica) {
            replica
                .ejected_until
                .store(self.now_ms() + self.settings.eject_ms, Ordering::Relaxed);
            tracing::warn!(replica = %replica.url, failures = streak, eject_ms = self.settings.eject_ms, reason = why, "replica ejected");
        }
    }

    async fn check_ready(&self, replica: &Replica) -> bool {
        let check = replica
            .pool
            .send("GET", &self.ready_path, &[], b"", Duration::from_secs(2));
        matches!(check.await, Ok(answer) if (200..300).contains(&answer.status))
    }

    /// Runs every readiness check once; re-admits an ejected replica whose time is up and that passes.
    async fn check_all(&self) {
        for replica in &self.replicas {
            let ready = self.check_ready(replica).await;
            let was = replica.ready.swap(ready, Ordering::Relaxed);
            if was != ready {
                tracing::info!(replica = %replica.url, ready, "replica readiness changed");
            }
            let until = replica.ejected_until.load(Ordering::Relaxed);
            if ready && until != 0 && until <= self.now_ms() {
                replica.ejected_until.store(0, Ordering::Relaxed);
                replica.consecutive_failures.store(0, Ordering::Relaxed);
                tracing::info!(replica = %replica.url, "replica re-admitted");
            }
        }
    }
}

/// Counts a request in flight on a replica for as long as it lives.
struct Outstanding<'a>(&'a Replica);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A model server's answer as it came.
pub struct RawAnswer {
    pub status: u16,
    pub json_len: Option<usize>,
    pub body: Bytes,
}

/// What one attempt on one replica came to.
enum Attempt {
    Answer(u16, Option<usize>, Bytes),
    /// The request never reached the server: another replica may take it.
    NotSent(String),
    Failed(BackendError),
}

impl UpstreamModel {
    /// Connects to the replicas, reads the model's metadata when the server has it, and
    /// starts the readiness checks. Fails when no replica becomes ready within `wait`.
    pub async fn connect(
        model: &str,
        urls: &[String],
        settings: &RemoteConfig,
        wait: Duration,
    ) -> Result<UpstreamModel, LoadError> {
        let shared = Arc::new(Shared {
            replicas: urls
                .iter()
                .map(|url| Replica {
                    url: url.trim_end_matches('/').to_string(),
                    pool: Http1Pool::new(url),
                    outstanding: AtomicUsize::new(0),
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ready: AtomicBool::new(false),
                    requests: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                })
                .collect(),
            server_model: settings.model.clone().unwrap_or_else(|| model.to_string()),
            ready_path: settings.ready_path(settings.model.as_deref().unwrap_or(model)),
            settings: settings.clone(),
            infer_path: match settings.protocol {
                WireProtocol::V2 => format!(
                    "/v2/models/{}/infer",
                    settings.model.as_deref().unwrap_or(model)
                ),
                WireProtocol::Json => settings.predict_path.clone(),
            },
            epoch: Instant::now(),
            next: AtomicUsize::new(0),
        });
        let deadline = Instant::now() + wait;
        loop {
            shared.check_all().await;
            if shared
                .replicas
                .iter()
                .any(|r| r.ready.load(Ordering::Relaxed))
            {
                break;
            }
            if Instant::now() >= deadline {
                let urls: Vec<String> = shared
                    .replicas
                    .iter()
                    .map(|r| format!("{}{}", r.url, shared.ready_path))
                    .collect();
                return Err(LoadError::Runtime(format!(
                    "no replica became ready within {} s: {} did not answer 2xx; check the URLs and that the server is up",
                    wait.as_secs(),
                    urls.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let signature = match (&settings.inputs, &settings.outputs) {
            (Some(inputs), outputs) => Some(Signature {
                inputs: inputs.clone(),
                outputs: outputs.clone().unwrap_or_default(),
            }),
            (None, _) if settings.protocol == WireProtocol::V2 => fetch_signature(&shared).await,
            (None, _) => None,
        };
        let health_shared = shared.clone();
        let health = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(
                health_shared.settings.health_interval_ms,
            ));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // Each round in a task of its own: were one to panic, the next round still
                // runs, rather than every replica's readiness staying as it was for good.
                let round = health_shared.clone();
                if let Err(e) = tokio::spawn(async move { round.check_all().await }).await
                    && e.is_panic()
                {
                    tracing::error!(model = %health_shared.server_model, "a round of readiness checks panicked; the next one runs as usual");
                }
            }
        });
        Ok(UpstreamModel {
            shared,
            signature,
            health,
        })
    }

    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    pub fn protocol(&self) -> WireProtocol {
        self.shared.settings.protocol
    }

    /// Whether any replica passed its last readiness check and is not ejected.
    pub fn ready(&self) -> bool {
        self.shared
            .replicas
            .iter()
            .any(|r| r.ready.load(Ordering::Relaxed) && !self.shared.is_ejected(r))
    }

    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.shared
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                url: r.url.clone(),
                ready: r.ready.load(Ordering::Relaxed),
                ejected: self.shared.is_ejected(r),
                outstanding: r.outstanding.load(Ordering::Relaxed),
                requests: r.requests.load(Ordering::Relaxed),
                failures: r.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    async fn attempt(&self, index: usize, body: &[u8], json_len: Option<usize>) -> Attempt {
        let shared = &self.shared;
        let replica = &shared.replicas[index];
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        let _outstanding = Outstanding(replica);
        replica.requests.fetch_add(1, Ordering::Relaxed);
        let url = || format!("{}{}", replica.url, shared.infer_path);
        let mut length = itoa::Buffer::new();
        let traceparent = crate::trace::current();
        let mut headers = [("", ""); 3];
        let mut count = 0;
        let mut add = |name, value| {
            headers[count] = (name, value);
            count += 1;
        };
        match json_len {
            None => add("content-type", "application/json"),
            Some(n) => {
                add("content-type", "application/octet-stream");
                add(crate::headers::JSON_LENGTH_HEADER, length.format(n));
            }
        }
        if let Some(traceparent) = &traceparent {
            add("traceparent", traceparent);
        }
        let timeout = Duration::from_millis(shared.settings.timeout_ms);
        let headers = &headers[..count];
        match replica
            .pool
            .send("POST", &shared.infer_path, headers, body, timeout)
            .await
        {
            Err(Http1Error::TimedOut) => {
                shared.failed(replica, "timeout");
                Attempt::Failed(BackendError::Timeout {
                    url: url(),
                    ms: shared.settings.timeout_ms,
                })
            }
            Err(Http1Error::NotSent(why)) => {
                shared.failed(replica, "connect");
                Attempt::NotSent(why)
            }
            // Not the replica's fault, and no other replica would take it either.
            Err(Http1Error::Unsendable(why)) => Attempt::Failed(BackendError::Upstream(why)),
            Err(Http1Error::Failed(why)) => {
                shared.failed(replica, "request");
                Attempt::Failed(BackendError::Broken {
                    url: url(),
                    reason: why,
                })
            }
            Ok(answer) => {
                if answer.status >= 500 {
                    shared.failed(replica, "5xx");
                } else {
                    shared.succeeded(replica);
                }
                Attempt::Answer(answer.status, answer.json_len, answer.body)
            }
        }
    }

    /// Sends one body to one replica; to another only if it never reached the first.
    async fn send(&self, body: Bytes, json_len: Option<usize>) -> Result<RawAnswer, BackendError> {
        // Filled only when a request must go to another replica, so most allocate nothing.
        let mut tried = Vec::new();
        let mut refused = Vec::new();
        while let Some(index) = self.shared.choose(&tried) {
            match self.attempt(index, &body, json_len).await {
                Attempt::NotSent(why) => {
                    tried.push(index);
                    refused.push(why);
                }
                Attempt::Failed(e) => return Err(e),
                Attempt::Answer(status, json_len, body) => {
                    return Ok(RawAnswer {
                        status,
                        json_len,
                        body,
                    });
                }
            }
        }
        Err(BackendError::Unreachable(refused.join("; ")))
    }

    /// Sends one inference as tensors and reads the answer back as tensors.
    pub async fn infer(&self, request: &InferRequest) -> Result<Vec<Tensor>, BackendError> {
        self.infer_timed(request).await.0
    }

    /// Sends one inference and says how long the server took: the round trip from sending
    /// the request to reading its whole answer, without encoding and decoding in teal. A
    /// request that never got an answer has no service time.
    pub async fn infer_timed(
        &self,
        request: &InferRequest,
    ) -> (Result<Vec<Tensor>, BackendError>, Option<Duration>) {
        let body = match self.shared.settings.protocol {
            WireProtocol::V2 => match request.encode_json() {
                Ok(body) => Bytes::from(body),
                Err(e) => {
                    let refused = BackendError::Refused {
                        status: 400,
                        message: e.to_string(),
                    };
                    return (Err(refused), None);
                }
            },
            WireProtocol::Json => match features_body(request) {
                Ok(body) => Bytes::from(body),
                Err(e) => return (Err(e), None),
            },
        };
        let started = Instant::now();
        match self.send(body, None).await {
            Ok(answer) => {
                let service = started.elapsed();
                let result = self.answer(answer.status, answer.json_len, &answer.body);
                (result, Some(service))
            }
            Err(e) => (Err(e), None),
        }
    }

    /// Passes a V2 request body to the server as the caller sent it and returns the server's
    /// answer as it came: the gateway's fast path when nothing needs the tensors. A 5xx or a
    /// transport failure is an error; a 2xx or 4xx is the server's answer to pass on.
    pub async fn forward(
        &self,
        body: Bytes,
        json_len: Option<usize>,
    ) -> Result<RawAnswer, BackendError> {
        let answer = self.send(body, json_len).await?;
        if answer.status >= 500 {
            return Err(self
                .answer(answer.status, answer.json_len, &answer.body)
                .err()
                .unwrap_or_else(|| {
                    BackendError::Upstream(format!("the model server answered {}", answer.status))
                }));
        }
        if (200..300).contains(&answer.status) {
            check_envelope(&answer.body, answer.json_len)?;
        }
        Ok(answer)
    }

    fn answer(
        &self,
        status: u16,
        json_len: Option<usize>,
        body: &[u8],
    ) -> Result<Vec<Tensor>, BackendError> {
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("error")
                        .or_else(|| v.get("detail"))
                        .map(|e| e.to_string())
                })
                .unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                });
            return Err(if status < 500 {
                BackendError::Refused { status, message }
            } else {
                BackendError::Upstream(format!("the model server answered {status}: {message}"))
            });
        }
        match self.shared.settings.protocol {
            WireProtocol::V2 => protocol::decode_response(body, json_len).map_err(|e| {
                BackendError::Upstream(format!(
                    "the model server's answer is not a V2 response: {e}"
                ))
            }),
            WireProtocol::Json => prediction_tensor(body),
        }
    }
}

/// Checks, without decoding the tensors, that a passed-on answer is a V2 response (JSON with
/// an `outputs` list), so a server answering garbage is a 502 naming it rather than a 200
/// the caller cannot read.
fn check_envelope(body: &[u8], json_len: Option<usize>) -> Result<(), BackendError> {
    let json = &body[..json_len.unwrap_or(body.len()).min(body.len())];
    teal_core::envelope::check(json).map_err(|e| {
        BackendError::Upstream(format!(
            "the model server's answer is not a V2 response: {e}"
        ))
    })
}

async fn fetch_signature(shared: &Shared) -> Option<Signature> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        inputs: Vec<teal_core::protocol::TensorSpec>,
        #[serde(default)]
        outputs: Vec<teal_core::protocol::TensorSpec>,
    }
    let path = format!("/v2/models/{}", shared.server_model);
    for replica in &shared.replicas {
        let metadata = replica
            .pool
            .send("GET", &path, &[], b"", Duration::from_secs(5));
        let Ok(answer) = metadata.await else {
            continue;
        };
        if !(200..300).contains(&answer.status) {
            continue;
        }
        match serde_json::from_slice::<Metadata>(&answer.body) {
            // A server that publishes no inputs (MLServer's scikit-learn runtime) gets no validation.
            Ok(meta) if !meta.inputs.is_empty() => {
                return Some(Signature {
                    inputs: meta.inputs,
                    outputs: meta.outputs,
                });
            }
            _ => return None,
        }
    }
    None
}

/// The simple JSON protocol's request: the one input's rows as `features`.
fn features_body(request: &InferRequest) -> Result<Vec<u8>, BackendError> {
    let [input] = request.inputs.as_slice() else {
        return Err(BackendError::Refused {
            status: 400,
            message: "this model server speaks simple JSON, which carries one input".into(),
        });
    };
    let rows = input.shape.first().copied().unwrap_or(0);
    let width = input.data.len().checked_div(rows).unwrap_or(0);
    let features: Vec<Vec<serde_json::Value>> = (0..rows)
        .map(|r| {
            (0..width)
                .map(|i| input.data.json_value(r * width + i))
                .collect()
        })
        .collect();
    Ok(serde_json::to_vec(&serde_json::json!({ "features": features })).unwrap_or_default())
}

/// The simple JSON protocol's answer, `prediction` or `predictions`, as a tensor named `prediction`.
fn prediction_tensor(body: &[u8]) -> Result<Vec<Tensor>, BackendError> {
    let bad = |why: &str| {
        BackendError::Upstream(format!(
            "the model server's answer {why}: expected {{\"prediction\": ...}} or {{\"predictions\": [...]}}"
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad("is not JSON"))?;
    let found = value
        .get("predictions")
        .or_else(|| value.get("prediction"))
        .ok_or_else(|| bad("has neither field"))?;
    let rows: Vec<&serde_json::Value> = match found {
        serde_json::Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let width = rows.first().and_then(|r| r.as_array()).map(Vec::len);
    let mut flat = Vec::new();
    for row in &rows {
        match (row, width) {
            (serde_json::Value::Array(items), Some(w)) if items.len() == w => {
                flat.extend(items.iter())
            }
            (other, None) if !other.is_array() => flat.push(*other),
            _ => return Err(bad("has rows of different lengths")),
        }
    }
    let shape = match width {
        Some(w) => vec![rows.len(), w],
        None => vec![rows.len()],
    };
    let data = if flat.iter().all(|v| v.is_i64()) {
        TensorData::Int64(flat.iter().filter_map(|v| v.as_i64()).collect())
    } else if flat.iter().all(|v| v.is_number()) {
        TensorData::Fp64(flat.iter().filter_map(|v| v.as_f64()).collect())
    } else if flat.iter().all(|v| v.is_boolean()) {
        TensorData::Bool(flat.iter().filter_map(|v| v.as_bool()).collect())
    } else {
        return Err(bad("holds values that are not numbers"));
    };
    Ok(vec![Tensor {
        name: "prediction".into(),
        shape,
        data,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_json_answers_become_tensors() {
        let labels = prediction_tensor(br#"{"prediction": [3, 1]}"#).unwrap();
        assert_eq!(labels[0].shape, vec![2]);
        assert_eq!(labels[0].data, TensorData::Int64(vec![3, 1]));
        let scores = prediction_tensor(br#"{"predictions": [[0.5, 0.5], [1, 0]]}"#).unwrap();
        assert_eq!(scores[0].shape, vec![2, 2]);
        assert_eq!(scores[0].data, TensorData::Fp64(vec![0.5, 0.5, 1.0, 0.0]));
        let one = prediction_tensor(br#"{"prediction": 7}"#).unwrap();
        assert_eq!(one[0].shape, vec![1]);
        for bad in [
            &br#"{"label": 1}"#[..],
            b"not json",
            br#"{"prediction": [[1], [1, 2]]}"#,
            br#"{"prediction": ["a"]}"#,
        ] {
            assert!(
                prediction_tensor(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
