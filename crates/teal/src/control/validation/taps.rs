//! Taps on live traffic: mirroring requests to the candidate (shadow) and keeping a sample
//! of requests to replay later. Both work off the response path: the live answer never
//! waits on them, and when they cannot keep up they drop and count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use teal_core::gates::{Answer, Observation};
use teal_core::protocol::{InferRequest, Tensor};
use tokio::sync::{Semaphore, mpsc};

use crate::routing::Slot;

/// Mirrored requests allowed in flight at once per model; more are dropped, not queued.
const SHADOW_CONCURRENCY: usize = 64;

/// An open shadow session: where mirrored comparisons go.
struct Session {
    observations: mpsc::Sender<Observation>,
    permits: Arc<Semaphore>,
    /// Copies sent since the listener last took its pairs ([`ShadowHub::took`]).
    recent: AtomicUsize,
    /// Below this many recent copies, every request the share would skip is copied too, so
    /// light traffic still gives the listener enough pairs.
    floor: usize,
}

/// Shadow sessions by model, and how many mirrored requests were dropped.
#[derive(Default)]
pub struct ShadowHub {
    sessions: Mutex<HashMap<String, Session>>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

impl ShadowHub {
    /// A hub that counts dropped mirrored requests on `dropped`.
    pub fn new(dropped: prometheus_client::metrics::counter::Counter) -> ShadowHub {
        ShadowHub {
            sessions: Mutex::new(HashMap::new()),
            dropped,
        }
    }

    /// Opens a session for `model`; observations arrive on the returned receiver until it
    /// is closed with [`ShadowHub::close`].
    pub fn open(&self, model: &str, capacity: usize) -> mpsc::Receiver<Observation> {
        self.open_with_floor(model, capacity, 0)
    }

    /// [`open`](ShadowHub::open), asking for at least `floor` copies between two
    /// [`took`](ShadowHub::took)s whatever the share, while the model has headroom.
    pub fn open_with_floor(
        &self,
        model: &str,
        capacity: usize,
        floor: usize,
    ) -> mpsc::Receiver<Observation> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let session = Session {
            observations: tx,
            permits: Arc::new(Semaphore::new(SHADOW_CONCURRENCY)),
            recent: AtomicUsize::new(0),
            floor,
        };
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_string(), session);
        rx
    }

    pub fn close(&self, model: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(model);
    }

    pub fn is_open(&self, model: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(model)
    }

    /// Whether a session listens for `model` and has had fewer copies than its floor since
    /// the listener last took its pairs.
    pub fn below_floor(&self, model: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .is_some_and(|s| s.recent.load(Ordering::Relaxed) < s.floor)
    }

    /// The listener took its pairs: the floor counts afresh.
    pub fn took(&self, model: &str) {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
        {
            s.recent.store(0, Ordering::Relaxed);
        }
    }

    /// Sends a copy of a request the live slot answered to both slots at the same moment, in
    /// its own task: a pair measured on the same machine state, so a burst of load reads as
    /// the same on both sides rather than as a slower candidate.
    pub fn mirror(
        &self,
        model: &str,
        pair: MirrorPair,
        request: InferRequest,
        prediction_output: Option<String>,
    ) {
        let (tx, permit) = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let Some(session) = sessions.get(model) else {
                return;
            };
            let Ok(permit) = session.permits.clone().try_acquire_owned() else {
                self.dropped.inc();
                return;
            };
            session.recent.fetch_add(1, Ordering::Relaxed);
            (session.observations.clone(), permit)
        };
        tokio::spawn(async move {
            let _permit = permit;
            let observation = pair.observe(request, prediction_output.as_deref()).await;
            // A full channel means the session has what it needs: drop quietly.
            let _ = tx.try_send(observation);
        });
    }
}

/// The live slot and the candidate, to which one input goes as a pair.
pub struct MirrorPair {
    pub live: Arc<Slot>,
    pub candidate: Arc<Slot>,
}

impl MirrorPair {
    /// Sends `request` to both slots at the same moment and records each one's answer with
    /// its service time (the backend's own time, apart from queueing inside teal).
    pub async fn observe(
        &self,
        request: InferRequest,
        prediction_output: Option<&str>,
    ) -> Observation {
        let (live, candidate) = tokio::join!(
            timed_answer(&self.live, request.clone(), prediction_output),
            timed_answer(&self.candidate, request.clone(), prediction_output),
        );
        // Without labels the input serves only to show where the versions disagreed, so it
        // is written out only then, not for every mirrored pair.
        let differ = live.label != candidate.label || live.scores != candidate.scores;
        let input = differ
            .then(|| request.encode_json().ok())
            .flatten()
            .map(|body| input_text(&String::from_utf8_lossy(&body)));
        Observation {
            live,
            candidate,
            truth: None,
            input,
        }
    }
}

/// Inputs up to this many bytes are kept whole as their own key; longer ones by a hash and
/// their start, so a validation of large requests holds little memory.
const INPUT_KEPT_WHOLE: usize = 2_048;

/// An input as the gates see it: its text, which identifies it (repeated identical inputs
/// are one piece of evidence) and shows it in a report.
pub fn input_text(text: &str) -> Arc<str> {
    if text.len() <= INPUT_KEPT_WHOLE {
        return text.into();
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("#{:016x} {}...", hasher.finish(), &text[..end]).into()
}

/// One slot's answer to `request`, timed by its service time; a backend that does not say
/// falls back to the time the call took.
pub async fn timed_answer(
    slot: &Slot,
    mut request: InferRequest,
    prediction_output: Option<&str>,
) -> Answer {
    let started = Instant::now();
    let (outputs, service) = slot.backend.infer_timed(&mut request).await;
    let elapsed = service.unwrap_or_else(|| started.elapsed());
    answer(
        outputs.as_deref().ok(),
        elapsed.as_secs_f64() * 1000.0,
        prediction_output,
    )
}

/// Reads the label and scores of the first row of a model's outputs: the integer output (or
/// `prediction_output`) is the label; a two-dimensional float output holds class scores; a
/// model with no integer output is a regressor, whose float outputs are the scores.
pub fn answer(
    outputs: Option<&[Tensor]>,
    latency_ms: f64,
    prediction_output: Option<&str>,
) -> Answer {
    let Some(outputs) = outputs else {
        return Answer {
            ok: false,
            latency_ms,
            label: None,
            scores: Vec::new(),
        };
    };
    let first_row = |t: &Tensor| -> Vec<f64> {
        let rows = t.shape.first().copied().unwrap_or(1).max(1);
        let width = t.data.len() / rows;
        (0..width)
            .filter_map(|i| t.data.json_value(i).as_f64())
            .collect()
    };
    let is_int = |t: &Tensor| {
        matches!(
            t.data,
            teal_core::protocol::TensorData::Int64(_) | teal_core::protocol::TensorData::Int32(_)
        )
    };
    let label_tensor = match prediction_output {
        Some(name) => outputs.iter().find(|t| t.name == name && is_int(t)),
        None => outputs.iter().find(|t| is_int(t)),
    };
    let label = label_tensor.and_then(|t| t.data.json_value(0).as_i64());
    let scores = match label_tensor {
        Some(_) => outputs
            .iter()
            .find(|t| !is_int(t) && t.shape.len() == 2)
            .map(first_row)
            .unwrap_or_default(),
        None => outputs
            .iter()
            .filter(|t| !is_int(t))
            .flat_map(first_row)
            .collect(),
    };
    Answer {
        ok: true,
        latency_ms,
        label,
        scores,
    }
}

/// Requests kept from live traffic to replay against the next candidate, in the state file.
/// The data plane hands them over on a bounded queue and never waits; a writer task stores
/// them in batches and trims each model to its limit.
pub struct Captures {
    queue: mpsc::Sender<(String, usize, Vec<u8>, Option<usize>)>,
    /// Bytes of bodies queued and not yet written, and the most there may be.
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
    max_bytes: usize,
    store: Arc<crate::state::store::Store>,
    pub dropped: prometheus_client::metrics::counter::Counter,
}

/// One kept request, as the caller sent it.
#[derive(Clone)]
pub struct Captured {
    pub body: Bytes,
    pub json_len: Option<usize>,
}

impl Captures {
    /// Starts the writer. At most 4,096 captures, and `max_bytes` of their bodies, wait
    /// to be written; more are dropped and counted.
    pub fn start(
        store: Arc<crate::state::store::Store>,
        dropped: prometheus_client::metrics::counter::Counter,
        max_bytes: usize,
    ) -> Captures {
        let (queue, mut kept) = mpsc::channel::<(String, usize, Vec<u8>, Option<usize>)>(4096);
        let writer = store.clone();
        let queued_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let written = queued_bytes.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            // Rows kept per model since its last trim: trimming costs a scan of `limit` rows,
            // so it runs once a tenth of the limit has come in, not on every batch.
            let mut since_trim: HashMap<String, usize> = HashMap::new();
            while kept.recv_many(&mut batch, 256).await > 0 {
                // Let a batch gather, as the request log does.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                while batch.len() < 256 {
                    match kept.try_recv() {
                        Ok(row) => batch.push(row),
                        Err(_) => break,
                    }
                }
                let rows = std::mem::take(&mut batch);
                let bytes: usize = rows.iter().map(|(_, _, body, _)| body.len()).sum();
                let mut trims = Vec::new();
                for (model, limit, _, _) in &rows {
                    let count = since_trim.entry(model.clone()).or_insert(0);
                    *count += 1;
                    if *count >= (*limit / 10).max(1) {
                        *count = 0;
                        trims.push((model.clone(), *limit));
                    }
                }
                let store = writer.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    store.keep_captures(&rows)?;
                    trims
                        .iter()
                        .try_for_each(|(model, limit)| store.trim_captures(model, *limit))
                })
                .await;
                written.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
                if let Ok(Err(e)) = outcome {
                    tracing::error!(error = %e, "could not keep captured requests");
                }
            }
        });
        Captures {
            queue,
            queued_bytes,
            max_bytes,
            store,
            dropped,
        }
    }

    /// Queues a request for keeping; never waits. Dropped (and counted) when the queue holds
    /// 4,096 captures or `capture_queue_bytes` of bodies.
    pub fn keep(&self, model: &str, limit: usize, captured: Captured) {
        use std::sync::atomic::Ordering;
        let size = captured.body.len();
        let before = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before + size > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        if self
            .queue
            .try_send((
                model.to_string(),
                limit.max(1),
                captured.body.to_vec(),
                captured.json_len,
            ))
            .is_err()
        {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.dropped.inc();
        }
    }

    /// The newest `n` kept requests of `model`, oldest first.
    pub async fn newest(&self, model: &str, n: usize) -> Vec<Captured> {
        let (store, model) = (self.store.clone(), model.to_string());
        match tokio::task::spawn_blocking(move || store.newest_captures(&model, n)).await {
            Ok(Ok(rows)) => rows
                .into_iter()
                .map(|(body, json_len)| Captured {
                    body: Bytes::from(body),
                    json_len,
                })
                .collect(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not read captured requests");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }
}
