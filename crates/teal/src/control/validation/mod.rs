//! Validation: gather evidence that the candidate (the standby slot) is safe, run the
//! gates over it, and keep the report.
//!
//! Evidence comes from (a) a labelled holdout file, (b) live traffic mirrored to the
//! candidate (shadow), or (c) requests captured from live traffic earlier and replayed.
//! Holdout and replay requests go to both slots, one row at a time, after a warm-up.
//!
//! Longer than most files (about 650 lines): the job, its evidence sources and the rows they
//! read are one flow; the data-plane taps are apart in `taps.rs`, and the judgement in
//! `teal_core::gates`.

pub mod taps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use teal_core::gates::{self, GateResult, Observation, Verdict};
use teal_core::protocol::{Datatype, InferRequest, Signature, TensorSpec};
use teal_core::routing::{Color, WHOLE};

use crate::routing::{ModelRoutes, Routes, Slot};
use taps::{Captures, ShadowHub, answer};

/// Where the evidence comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A labelled file: JSON lines `{"features": [...], "label": n}`, or CSV with the label last.
    Holdout { path: PathBuf },
    /// Mirror live traffic to the candidate until `samples` comparisons or the window ends.
    Shadow { samples: usize, window_ms: u64 },
    /// Replay the newest `samples` requests captured from live traffic.
    Replay { samples: usize },
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Holdout { path } => format!("holdout {}", path.display()),
            Source::Shadow { samples, window_ms } => format!(
                "shadow: up to {samples} live requests in {} s",
                window_ms / 1000
            ),
            Source::Replay { samples } => format!("replay of up to {samples} captured requests"),
        }
    }
}

/// A slot as the report names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SlotName {
    pub slot: Color,
    pub version: String,
}

/// A validation's outcome.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub model: String,
    pub live: SlotName,
    pub candidate: SlotName,
    pub source: String,
    pub samples: usize,
    pub verdict: Verdict,
    pub gates: Vec<GateResult>,
    pub duration_ms: u64,
}

/// Why a validation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{0}' has no candidate: deploy a version into its standby slot first")]
    NoCandidate(String),
    #[error("{0}")]
    Holdout(String),
    #[error("a validation of model '{0}' is already running")]
    Busy(String),
}

/// A running or finished validation, as the admin API reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: u64,
    pub model: String,
    pub state: String,
    pub done: usize,
    pub total: usize,
    pub report: Option<Report>,
    pub error: Option<String>,
}

struct Job {
    model: String,
    done: AtomicUsize,
    total: AtomicUsize,
    outcome: Mutex<Option<Result<Report, String>>>,
    /// Turns true once `outcome` is set, for those who wait for the end.
    ended: tokio::sync::watch::Sender<bool>,
}

/// How job `id` stands now.
fn status_of(id: u64, job: &Job) -> JobStatus {
    let outcome = job
        .outcome
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (state, report, error) = match outcome {
        None => ("running", None, None),
        Some(Ok(report)) => ("done", Some(report), None),
        Some(Err(e)) => ("failed", None, Some(e)),
    };
    JobStatus {
        id,
        model: job.model.clone(),
        state: state.to_string(),
        done: job.done.load(Ordering::Relaxed),
        total: job.total.load(Ordering::Relaxed),
        report,
        error,
    }
}

/// Runs validations and keeps their reports.
pub struct Validator {
    routes: Arc<Routes>,
    store: Arc<crate::state::store::Store>,
    metrics: Arc<crate::metrics::Metrics>,
    pub shadows: Arc<ShadowHub>,
    /// Where the pairs of a rollout's concurrent baseline go while a candidate is watched.
    pub baselines: Arc<ShadowHub>,
    pub captures: Arc<Captures>,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
    reports: Mutex<BTreeMap<String, Report>>,
}

/// How long a validation whose replay finds too few captured requests mirrors live traffic
/// instead.
pub const REPLAY_FALLBACK_WINDOW_MS: u64 = 60_000;

/// Jobs remembered, newest first; older ones are forgotten.
const JOBS_KEPT: usize = 100;

impl Validator {
    pub fn new(
        routes: Arc<Routes>,
        shadows: Arc<ShadowHub>,
        captures: Arc<Captures>,
        store: Arc<crate::state::store::Store>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Validator {
        Validator {
            routes,
            store,
            baselines: Arc::new(ShadowHub::new(metrics.shadow_dropped.clone())),
            metrics,
            shadows,
            captures,
            jobs: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            reports: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts a validation in the background and returns its id.
    pub fn start(self: &Arc<Self>, model: &str, source: Source) -> Result<u64, ValidationError> {
        self.start_job(model, source, false)
    }

    /// Starts a rollout's validation: like [`Validator::start`], but a replay that finds too
    /// few captured requests mirrors live traffic for a bounded window instead, so a rollout
    /// on a model without captures is judged on evidence rather than stopping, inconclusive,
    /// for want of it.
    pub fn start_for_rollout(
        self: &Arc<Self>,
        model: &str,
        source: Source,
    ) -> Result<u64, ValidationError> {
        self.start_job(model, source, true)
    }

    fn start_job(
        self: &Arc<Self>,
        model: &str,
        source: Source,
        shadow_fallback: bool,
    ) -> Result<u64, ValidationError> {
        let routes = self
            .routes
            .load()
            .models
            .get(model)
            .cloned()
            .ok_or_else(|| ValidationError::UnknownModel(model.to_string()))?;
        routes
            .slot(routes.table.candidate())
            .ok_or_else(|| ValidationError::NoCandidate(model.to_string()))?;
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.values().any(|j| {
            j.model == model
                && j.outcome
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none()
        }) {
            return Err(ValidationError::Busy(model.to_string()));
        }
        // Read a holdout file now, so a bad path is the caller's error at once.
        let rows = match &source {
            Source::Holdout { path } => Some(read_holdout(path)?),
            _ => None,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            model: model.to_string(),
            done: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            outcome: Mutex::new(None),
            ended: tokio::sync::watch::Sender::new(false),
        });
        jobs.insert(id, job.clone());
        while jobs.len() > JOBS_KEPT {
            jobs.pop_first();
        }
        drop(jobs);
        let this = self.clone();
        tokio::spawn(async move {
            let report = this.run(&job, &routes, source, rows, shadow_fallback).await;
            if let Ok(report) = &report {
                tracing::info!(model = %report.model, candidate = %report.candidate.version, verdict = report.verdict.as_str(), samples = report.samples, "validated");
                this.reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(report.model.clone(), report.clone());
                let gates: BTreeMap<&str, &str> = report
                    .gates
                    .iter()
                    .map(|g| (g.gate.as_str(), g.verdict.as_str()))
                    .collect();
                let event = crate::state::store::NewEvent {
                    model: report.model.clone(),
                    kind: "validated".into(),
                    actor: "teal".into(),
                    live_slot: None,
                    live_version: None,
                    detail: serde_json::json!({ "candidate": report.candidate.version, "verdict": report.verdict, "samples": report.samples, "source": report.source, "gates": gates }),
                };
                for gate in &report.gates {
                    let labels = crate::metrics::GateLabels {
                        model: report.model.clone(),
                        gate: gate.gate.to_string(),
                    };
                    if let Some(value) = gate.value {
                        this.metrics.gate_value.get_or_create(&labels).set(value);
                    }
                    match gate.verdict {
                        Verdict::Pass => {
                            this.metrics.gate_passed.get_or_create(&labels).set(1);
                        }
                        Verdict::Fail => {
                            this.metrics.gate_passed.get_or_create(&labels).set(0);
                        }
                        _ => {
                            this.metrics.gate_passed.remove(&labels);
                        }
                    }
                }
                if let Some(agreement) = report
                    .gates
                    .iter()
                    .find(|g| g.gate == gates::Gate::Agreement)
                    .and_then(|g| g.value)
                {
                    this.metrics
                        .shadow_agreement
                        .get_or_create(&crate::metrics::ModelLabels {
                            model: report.model.clone(),
                        })
                        .set(agreement);
                }
                let (store, model, json) = (
                    this.store.clone(),
                    report.model.clone(),
                    serde_json::to_string(report).unwrap_or_default(),
                );
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || store.save_report(&model, &json)).await
                {
                    tracing::error!(error = %e, "could not keep the validation report");
                }
                let store = this.store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.append(event)).await {
                    tracing::error!(error = %e, "could not record the validation in the audit log");
                }
            }
            *job.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
            job.ended.send_replace(true);
        });
        Ok(id)
    }

    pub fn status(&self, id: u64) -> Option<JobStatus> {
        let job = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()?;
        Some(status_of(id, &job))
    }

    /// Waits for validation `id` to end and says how it ended; `None` for an unknown id.
    /// Holding the job, it gets the outcome even if newer jobs push it out of the list.
    pub async fn finished(&self, id: u64) -> Option<JobStatus> {
        let job = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()?;
        let mut ended = job.ended.subscribe();
        // The sender lives in the job, which is held here, so this cannot fail.
        let _ = ended.wait_for(|ended| *ended).await;
        Some(status_of(id, &job))
    }

    /// Waits until the validations of `model` running now have ended.
    pub async fn idle(&self, model: &str) {
        let running: Vec<_> = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|j| j.model == model)
            .map(|j| j.ended.subscribe())
            .collect();
        for mut ended in running {
            let _ = ended.wait_for(|ended| *ended).await;
        }
    }

    /// The last report of `model`: this run's, else the newest in the state file.
    pub async fn report(&self, model: &str) -> Option<Report> {
        if let Some(report) = self
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .cloned()
        {
            return Some(report);
        }
        let (store, model) = (self.store.clone(), model.to_string());
        let text = tokio::task::spawn_blocking(move || store.last_report(&model))
            .await
            .ok()?
            .ok()??;
        serde_json::from_str(&text).ok()
    }

    async fn run(
        &self,
        job: &Job,
        routes: &ModelRoutes,
        source: Source,
        rows: Option<Vec<Row>>,
        shadow_fallback: bool,
    ) -> Result<Report, String> {
        let started = Instant::now();
        let live = routes.live().cloned().ok_or("the model has no live slot")?;
        let candidate = routes
            .slot(routes.table.candidate())
            .cloned()
            .ok_or("the model has no candidate")?;
        let config = routes.gates.clone();
        let output = routes.prediction_output.as_deref();
        let mut described = source.describe();
        let cpu_before = candidate.backend.usage().map(|(_, cpu)| cpu);
        let mut first_round = usize::MAX;
        let observations = match source {
            Source::Holdout { .. } => {
                let rows = rows.unwrap_or_default();
                first_round = rows.len();
                job.total.store(rows.len(), Ordering::Relaxed);
                let progress = |n| job.done.store(n, Ordering::Relaxed);
                compare(&live, &candidate, &rows, &config, output, &progress).await
            }
            Source::Replay { samples } => {
                let captured = self.captures.newest(&routes.name, samples).await;
                if shadow_fallback && captured.len() < config.min_samples {
                    // Too few captured requests to judge on: mirror live traffic instead, for
                    // a bounded window, rather than end at an inconclusive dead end.
                    let why = if routes.capture_rate > 0.0 {
                        format!(
                            "replay found {} captured requests, fewer than the {} the gates need",
                            captured.len(),
                            config.min_samples
                        )
                    } else {
                        format!(
                            "replay found {} captured requests (capture is off: set capture_rate to keep some)",
                            captured.len()
                        )
                    };
                    let window = Duration::from_millis(REPLAY_FALLBACK_WINDOW_MS);
                    described = format!(
                        "{why}, so {}",
                        Source::Shadow {
                            samples,
                            window_ms: REPLAY_FALLBACK_WINDOW_MS
                        }
                        .describe()
                    );
                    self.shadow(job, routes, samples, window).await
                } else {
                    let rows = captured.into_iter().map(Row::captured).collect::<Vec<_>>();
                    job.total.store(rows.len(), Ordering::Relaxed);
                    let progress = |n| job.done.store(n, Ordering::Relaxed);
                    compare(&live, &candidate, &rows, &config, output, &progress).await
                }
            }
            Source::Shadow { samples, window_ms } => {
                self.shadow(job, routes, samples, Duration::from_millis(window_ms))
                    .await
            }
        };
        let mut results = vec![
            gates::health(candidate.backend.ready()),
            gates::schema(live.backend.signature(), candidate.backend.signature()),
        ];
        results.extend(gates::card(&candidate.card, &config));
        let used = match (cpu_before, candidate.backend.usage()) {
            (Some(before), Some((rss_mb, after))) => Some(gates::ResourceUse {
                rss_mb,
                cpu_cores: (after - before) / started.elapsed().as_secs_f64().max(1e-3),
            }),
            _ => None,
        };
        results.extend(gates::resources(used, &config));
        results.extend(gates::judge_rounds(&observations, first_round, &config));
        Ok(Report {
            model: routes.name.clone(),
            live: SlotName {
                slot: live.color,
                version: live.version.clone(),
            },
            candidate: SlotName {
                slot: candidate.color,
                version: candidate.version.clone(),
            },
            source: described,
            samples: observations.len(),
            verdict: Verdict::combine(results.iter().map(|g| g.verdict)),
            gates: results,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Mirrors live traffic to the candidate until enough comparisons arrive or the window ends.
    async fn shadow(
        &self,
        job: &Job,
        routes: &ModelRoutes,
        samples: usize,
        window: Duration,
    ) -> Vec<Observation> {
        job.total.store(samples, Ordering::Relaxed);
        let mut receiver = self.shadows.open(&routes.name, samples.min(4096));
        // A share set beforehand (a shadow-then-switch rollout's) is kept; otherwise all.
        let share = if routes.table.shadow > 0 {
            routes.table.shadow
        } else {
            WHOLE
        };
        let previous = self.routes.set_shadow(&routes.name, share).ok();
        let deadline = tokio::time::Instant::now() + window;
        let mut observations = Vec::with_capacity(samples.min(10_000));
        while observations.len() < samples {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(observation)) => {
                    observations.push(observation);
                    job.done.store(observations.len(), Ordering::Relaxed);
                }
                _ => break,
            }
        }
        self.shadows.close(&routes.name);
        let _ = self.routes.set_shadow(&routes.name, previous.unwrap_or(0));
        observations
    }
}

/// Sends each row to both slots as a pair, at the same moment, after a warm-up: both sides of
/// a pair meet the same machine, so load that comes and goes slows both alike, and each
/// answer carries its slot's service time (the backend's own time, apart from queueing).
pub async fn compare(
    live: &Arc<Slot>,
    candidate: &Arc<Slot>,
    rows: &[Row],
    config: &gates::GateConfig,
    output: Option<&str>,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<Observation> {
    for row in rows.iter().cycle().take(config.warmup.min(rows.len() * 4)) {
        let _ = pair(live, candidate, row, output).await;
    }
    let mut observations = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        observations.push(pair(live, candidate, row, output).await);
        progress(i + 1);
    }
    // When the latency evidence straddles the threshold, more pairs may decide it: send the
    // rows again, a round at a time, up to `max_pairs`. Only latency gains from repeats;
    // the gates of who is right count each distinct input once.
    while !rows.is_empty()
        && observations.len() + rows.len() <= config.max_pairs.max(rows.len())
        && gates::latency_undecided(&observations, config)
    {
        for row in rows {
            observations.push(pair(live, candidate, row, output).await);
        }
        progress(observations.len());
    }
    observations
}

/// One row answered by both slots at the same moment.
async fn pair(live: &Slot, candidate: &Slot, row: &Row, output: Option<&str>) -> Observation {
    let (live_answer, candidate_answer) =
        tokio::join!(side(live, row, output), side(candidate, row, output));
    Observation {
        live: live_answer,
        candidate: candidate_answer,
        truth: row.truth,
        input: Some(row.input.clone()),
    }
}

/// One slot's timed answer to a row; a row the slot cannot take is a failed answer.
async fn side(slot: &Slot, row: &Row, output: Option<&str>) -> gates::Answer {
    match row.request(slot.backend.signature()) {
        Ok(request) => taps::timed_answer(slot, request, output).await,
        Err(_) => answer(None, 0.0, output),
    }
}

/// One row of validation traffic.
#[derive(Clone)]
pub struct Row {
    request: RowRequest,
    truth: Option<i64>,
    /// The input as text, for the gates (distinct inputs, disagreement samples).
    input: Arc<str>,
}

#[derive(Clone)]
enum RowRequest {
    Features(Vec<serde_json::Value>),
    Captured(taps::Captured),
}

impl Row {
    /// The row's features, when it came from a holdout file.
    pub fn sample_features(&self) -> Option<&[serde_json::Value]> {
        match &self.request {
            RowRequest::Features(features) => Some(features),
            RowRequest::Captured(_) => None,
        }
    }

    /// The row's label, when it has one.
    pub fn label(&self) -> Option<i64> {
        self.truth
    }

    fn features(features: Vec<serde_json::Value>, truth: Option<i64>) -> Row {
        let input = taps::input_text(&serde_json::Value::Array(features.clone()).to_string());
        Row {
            request: RowRequest::Features(features),
            truth,
            input,
        }
    }

    fn captured(captured: taps::Captured) -> Row {
        let input = taps::input_text(&String::from_utf8_lossy(&captured.body));
        Row {
            request: RowRequest::Captured(captured),
            truth: None,
            input,
        }
    }

    /// The request for a slot with `signature` (a server without metadata gets the form the
    /// simple endpoint assumes).
    fn request(&self, signature: Option<&Signature>) -> Result<InferRequest, String> {
        let assumed;
        let signature = match signature {
            Some(s) => s,
            None => {
                assumed = Signature {
                    inputs: vec![TensorSpec {
                        name: "input".into(),
                        datatype: Datatype::Fp64,
                        shape: vec![-1, -1],
                    }],
                    outputs: Vec::new(),
                };
                &assumed
            }
        };
        match &self.request {
            RowRequest::Features(features) => {
                let body = serde_json::json!({ "features": [features] });
                InferRequest::from_features(body.to_string().as_bytes(), signature)
                    .map_err(|e| e.to_string())
            }
            RowRequest::Captured(c) => InferRequest::decode(&c.body, c.json_len, Some(signature))
                .map_err(|e| e.to_string()),
        }
    }
}

/// Reads a holdout file: JSON lines with `features` and `label`, or CSV with the label in the
/// last column (a first line that is not numbers is a header).
pub fn read_holdout(path: &Path) -> Result<Vec<Row>, ValidationError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ValidationError::Holdout(format!("holdout {name}: {e}")))?;
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    parse_holdout(&text, csv, &name)
}

/// Parses holdout rows from `text` (CSV when `csv`, else JSON lines); `name` says where they
/// came from in errors.
pub fn parse_holdout(text: &str, csv: bool, name: &str) -> Result<Vec<Row>, ValidationError> {
    let bad = |why: String| ValidationError::Holdout(format!("holdout {name}: {why}"));
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = i + 1;
        if csv {
            let cells: Result<Vec<f64>, _> =
                line.split(',').map(|c| c.trim().parse::<f64>()).collect();
            match cells {
                Ok(cells) if cells.len() >= 2 => {
                    let (label, features) = cells.split_last().unwrap_or((&0.0, &[]));
                    rows.push(Row::features(
                        features.iter().map(|v| serde_json::json!(v)).collect(),
                        Some(*label as i64),
                    ));
                }
                Err(_) if rows.is_empty() && i == 0 => continue,
                _ => {
                    return Err(bad(format!(
                        "line {line_no} is not numbers with the label last"
                    )));
                }
            }
        } else {
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(format!("line {line_no}: {e}")))?;
            let features = value["features"]
                .as_array()
                .cloned()
                .ok_or_else(|| bad(format!("line {line_no} has no \"features\" list")))?;
            rows.push(Row::features(
                features,
                value.get("label").and_then(serde_json::Value::as_i64),
            ));
        }
    }
    if rows.is_empty() {
        return Err(bad("no rows".into()));
    }
    Ok(rows)
}
