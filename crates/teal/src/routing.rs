//! The live routing state: every model's slots and route table, published as one
//! immutable snapshot behind one atomic handle.
//!
//! A request loads the snapshot once and keeps the `Arc` of the slot it picked, so a
//! switch (one store of a new snapshot) never moves a request already in flight, and every
//! request that starts after the store sees the new table.
//!
//! Longer than most files (about 650 lines) because the snapshot, its writers and the
//! status views read the same types; about a third of it is tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use teal_core::protocol::{ModelMetadata, TensorSpec};
use teal_core::routing::{Color, RouteTable};

use crate::backends::cache::{CacheStats, PredictionCache};
use crate::backends::{Backend, ProcessStatus, ReplicaStatus};

/// A running version of a model in one slot.
pub struct Slot {
    pub color: Color,
    pub version: String,
    pub card: BTreeMap<String, String>,
    pub backend: Backend,
    /// The versioned prediction cache, when the model has it on.
    pub cache: Option<PredictionCache>,
    /// The version as a response header value, made once.
    pub version_header: axum::http::HeaderValue,
    /// How the slot was configured, remembered across restarts.
    pub config: teal_core::config::SlotConfig,
    /// Requests, failures and latencies since the slot started, for the rollback rules.
    pub stats: SlotStats,
    /// The slot's Prometheus series, resolved on its first answer.
    pub metrics: std::sync::OnceLock<crate::metrics::SlotHandles>,
    /// Where its model file was fetched from, when it names a source.
    pub provenance: Option<crate::backends::fetch::Provenance>,
    in_flight: AtomicUsize,
}

/// Latency bucket upper bounds grow by this factor from [`FIRST_BUCKET_US`].
const BUCKET_GROWTH: f64 = 1.25;
const FIRST_BUCKET_US: f64 = 50.0;
const BUCKETS: usize = 64;

/// Predicted classes counted per slot: labels `0..CLASSES`; others are not counted.
pub const CLASSES: usize = 32;

/// A slot's running counts: three relaxed atomic adds per request (one more when the answer
/// names a class, one more when it gives a number).
pub struct SlotStats {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    classes: [AtomicU64; CLASSES],
    /// Answers per bucket of their value ([`teal_core::stats::values`]).
    values: Box<[AtomicU64; teal_core::stats::values::BUCKETS]>,
    /// The sum of those values, as `f64` bits, for the exported histogram's `_sum`.
    value_sum: AtomicU64,
    /// The time answered and failed requests took, in nanoseconds (the statistics
    /// extension's `success.ns` and `fail.ns`).
    ok_ns: AtomicU64,
    failed_ns: AtomicU64,
    /// When the latest request finished, in nanoseconds after `epoch`.
    last_ns: AtomicU64,
    /// [`stats_epoch`]'s instant, kept here so a request does not look it up.
    epoch: std::time::Instant,
}

/// The moment the slots' `last_ns` count from, and the wall-clock time it was.
fn stats_epoch() -> (std::time::Instant, std::time::SystemTime) {
    static EPOCH: std::sync::OnceLock<(std::time::Instant, std::time::SystemTime)> =
        std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| (std::time::Instant::now(), std::time::SystemTime::now()))
}

/// A slot's counts since it started, as the statistics extension reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlotTotals {
    pub ok: u64,
    pub ok_ns: u64,
    pub failed: u64,
    pub failed_ns: u64,
    /// Milliseconds since the Unix epoch; 0 when no request finished yet.
    pub last_ms: u64,
}

/// A copy of [`SlotStats`] at one moment; two of them give an interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
    pub classes: Vec<u64>,
    /// Answers per value bucket, by index (`values::BUCKETS` of them, or none when empty).
    pub values: Vec<u64>,
}

impl SlotStats {
    fn new() -> SlotStats {
        SlotStats {
            // Set before the slot's first request can start.
            epoch: stats_epoch().0,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            classes: std::array::from_fn(|_| AtomicU64::new(0)),
            values: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            value_sum: AtomicU64::new(0f64.to_bits()),
            ok_ns: AtomicU64::new(0),
            failed_ns: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
        }
    }

    /// The sum of the values counted so far.
    pub fn value_sum(&self) -> f64 {
        f64::from_bits(self.value_sum.load(Ordering::Relaxed))
    }

    /// Counts one answer's value (a regressor's output, a classifier's top score).
    pub fn observe_value(&self, value: f64) {
        if let Some(i) = teal_core::stats::values::index(value) {
            self.values[i].fetch_add(1, Ordering::Relaxed);
            if value.is_finite() {
                let _ = self
                    .value_sum
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                        Some((f64::from_bits(bits) + value).to_bits())
                    });
            }
        }
    }

    /// Counts one answer's predicted class (labels outside `0..CLASSES` are not counted).
    pub fn observe_class(&self, label: i64) {
        if let Some(counter) = usize::try_from(label)
            .ok()
            .and_then(|i| self.classes.get(i))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one answered request, which started at `started` and took `latency`; `failed`
    /// is a failure on the slot's side (5xx).
    pub fn observe(&self, started: std::time::Instant, latency: std::time::Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let ns = latency.as_nanos().min(u128::from(u64::MAX)) as u64;
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.failed_ns.fetch_add(ns, Ordering::Relaxed);
        } else {
            self.ok_ns.fetch_add(ns, Ordering::Relaxed);
        }
        // A plain store: of requests finishing together, any one's time will do.
        let finished = started.saturating_duration_since(self.epoch) + latency;
        self.last_ns
            .store(finished.as_nanos() as u64, Ordering::Relaxed);
        let us = latency.as_secs_f64() * 1e6;
        let index = if us <= FIRST_BUCKET_US {
            0
        } else {
            ((us / FIRST_BUCKET_US).ln() / BUCKET_GROWTH.ln()).ceil() as usize
        };
        self.buckets[index.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The statistics extension's counts: answered and failed requests with the time each
    /// took in all, and when the latest finished (milliseconds since the Unix epoch; 0 for
    /// none yet).
    pub fn totals(&self) -> SlotTotals {
        let requests = self.requests.load(Ordering::Relaxed);
        let failed = self.errors.load(Ordering::Relaxed);
        let last = self.last_ns.load(Ordering::Relaxed);
        let last_ms = match last {
            0 => 0,
            ns => (stats_epoch().1 + std::time::Duration::from_nanos(ns))
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        SlotTotals {
            ok: requests.saturating_sub(failed),
            ok_ns: self.ok_ns.load(Ordering::Relaxed),
            failed,
            failed_ns: self.failed_ns.load(Ordering::Relaxed),
            last_ms,
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            classes: self
                .classes
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            values: self
                .values
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl StatsSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
            classes: self
                .classes
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.classes.get(i).copied().unwrap_or(0)))
                .collect(),
            values: self
                .values
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.values.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The answers' values as a sparse histogram: count per bucket key, hit keys only.
    pub fn value_histogram(&self) -> teal_core::stats::values::Histogram {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (teal_core::stats::values::key(i), *n))
            .collect()
    }

    /// Requests whose latency was certainly over `limit_ms`: those in buckets whose lower
    /// bound is at or above it (so a request near the limit is never counted as over).
    pub fn over_ms(&self, limit_ms: f64) -> u64 {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                *i > 0 && FIRST_BUCKET_US * BUCKET_GROWTH.powi(*i as i32 - 1) / 1000.0 >= limit_ms
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// The `q` quantile of latency in milliseconds (the upper bound of its bucket, so at
    /// most 25% high), or `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(FIRST_BUCKET_US * BUCKET_GROWTH.powi(i as i32) / 1000.0);
            }
        }
        None
    }

    /// The interval as the rollback rules read it; `limit_ms` is the latency over which a
    /// request counts as slower, when the rules have one.
    pub fn window(&self, limit_ms: Option<f64>) -> teal_core::rollout::Window {
        teal_core::rollout::Window {
            requests: self.requests,
            errors: self.errors,
            p95_ms: self.quantile_ms(0.95),
            p50_ms: self.quantile_ms(0.5),
            over_limit: limit_ms.map_or(0, |limit| self.over_ms(limit)),
            classes: self
                .classes
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i as i64, *n))
                .collect(),
            values: self.value_histogram(),
        }
    }
}

impl Slot {
    pub fn new(
        color: Color,
        config: teal_core::config::SlotConfig,
        backend: Backend,
        cache: Option<PredictionCache>,
    ) -> Slot {
        let version = config.version.clone();
        let card = config.card.clone();
        // Version names are checked to be letters, digits, '-', '_' and '.', so this holds.
        let version_header = axum::http::HeaderValue::from_str(&version)
            .unwrap_or(axum::http::HeaderValue::from_static("invalid"));
        Slot {
            color,
            version,
            card,
            backend,
            cache,
            version_header,
            config,
            stats: SlotStats::new(),
            metrics: std::sync::OnceLock::new(),
            provenance: None,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Counts a request on this slot until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The slot's Prometheus series, resolved on first use (its first answer or scrape),
    /// and with them an in-process model's call series, which its workers record into.
    pub fn handles(
        &self,
        metrics: &crate::metrics::Metrics,
        model: &str,
    ) -> &crate::metrics::SlotHandles {
        self.metrics.get_or_init(|| {
            if let Backend::Onnx(onnx) = &self.backend {
                onnx.observe(|| metrics.inference_handles(model, &self.version));
            }
            metrics.slot_handles(model, &self.version, &self.color.to_string())
        })
    }
}

/// A request in flight on a slot; teardown waits for these to drop.
pub struct InFlight(Arc<Slot>);

impl InFlight {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One model's routing: its table and its two slots.
#[derive(Clone)]
pub struct ModelRoutes {
    pub name: String,
    pub table: RouteTable,
    pub slots: [Option<Arc<Slot>>; 2],
    /// The slot that was live before the last switch: where a rollback goes.
    pub previous: Option<Color>,
    /// The output the simple JSON endpoint answers with.
    pub prediction_output: Option<String>,
    /// The model's cache settings, for slots deployed later.
    pub cache: teal_core::config::CacheConfig,
    /// The model's batching, for in-process slots deployed later.
    pub batching: Option<teal_core::config::BatchingConfig>,
    /// Gate thresholds for validating a candidate.
    pub gates: teal_core::gates::GateConfig,
    /// Share of live requests kept for replay, and how many are kept.
    pub capture_rate: f64,
    pub capture_limit: usize,
    /// Where a session key comes from, for sticky canaries.
    pub sticky_header: Option<String>,
    pub sticky_cookie: Option<String>,
    /// How much work the model takes at once; one value shared by every snapshot of the
    /// model, so a switch neither resets nor doubles it.
    pub admission: Arc<crate::backends::admission::Admission>,
}

impl ModelRoutes {
    pub fn slot(&self, color: Color) -> Option<&Arc<Slot>> {
        self.slots[color.index()].as_ref()
    }

    pub fn live(&self) -> Option<&Arc<Slot>> {
        self.slot(self.table.active)
    }

    /// The slot holding `version`, if one does.
    pub fn by_version(&self, version: &str) -> Option<&Arc<Slot>> {
        self.slots.iter().flatten().find(|s| s.version == version)
    }

    /// The loaded slots, live first.
    pub fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        let live = self.table.active;
        [live, live.other()]
            .into_iter()
            .filter_map(|c| self.slot(c))
    }

    /// Versions loaded, live first.
    pub fn versions(&self) -> Vec<String> {
        let live = self.table.active;
        [live, live.other()]
            .iter()
            .filter_map(|c| self.slot(*c))
            .map(|s| s.version.clone())
            .collect()
    }

    /// V2 metadata of one slot, under this model's name.
    pub fn metadata(&self, slot: &Slot) -> ModelMetadata {
        let signature = slot.backend.signature();
        ModelMetadata {
            name: self.name.clone(),
            versions: self.versions(),
            platform: slot.backend.platform().to_string(),
            inputs: signature.map(|s| s.inputs.clone()).unwrap_or_default(),
            outputs: signature.map(|s| s.outputs.clone()).unwrap_or_default(),
        }
    }
}

/// Every model's routing at one moment.
#[derive(Clone, Default)]
pub struct RouteSnapshot {
    pub models: BTreeMap<String, Arc<ModelRoutes>>,
}

/// Why a routing change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{model}' has no {color} slot: deploy a version into it first")]
    EmptySlot { model: String, color: Color },
    #[error("nothing to roll back: model '{model}' has been on {live} since start-up")]
    NothingToRollBack { model: String, live: Color },
    #[error(
        "the {color} slot of model '{model}' (version {version}) is not ready: check `teal status {model}`"
    )]
    NotReady {
        model: String,
        color: Color,
        version: String,
    },
    #[error("the {color} slot of model '{model}' is live: switch away from it first")]
    SlotIsLive { model: String, color: Color },
}

/// What a switch did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwitchOutcome {
    pub model: String,
    pub from: Color,
    pub to: Color,
    pub from_version: String,
    pub to_version: String,
    pub generation: u64,
    /// False when the requested slot was already live (nothing was published).
    pub changed: bool,
}

/// The atomic handle to the current snapshot, and the lock that serialises writers.
#[derive(Default)]
pub struct Routes {
    current: ArcSwap<RouteSnapshot>,
    writer: Mutex<()>,
}

impl Routes {
    pub fn new(snapshot: RouteSnapshot) -> Routes {
        Routes {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot. Cheap; hold it only for the span of one request's routing.
    pub fn load(&self) -> Arc<RouteSnapshot> {
        self.current.load_full()
    }

    /// Publishes a copy of the snapshot with `model` changed by `change`, in one store.
    /// `change` sees the latest table under the writer lock; `None` publishes nothing.
    fn update<T>(
        &self,
        model: &str,
        change: impl FnOnce(&ModelRoutes) -> Result<(Option<ModelRoutes>, T), RouteError>,
    ) -> Result<T, RouteError> {
        self.update_recorded(model, change, |_, _| Ok::<(), std::convert::Infallible>(()))
            .map_err(|e| match e {
                ChangeError::Route(e) => e,
                ChangeError::Record(never) => match never {},
            })
    }

    /// Like [`Routes::update`], but a change that publishes something is first handed to
    /// `record` (the model's routing as it will be published, and the outcome), still under
    /// the writer lock; it is published only when `record` succeeds, so what is recorded and
    /// what is routed never differ. `record` may block (a state-file write): call this off
    /// the async runtime. Readers are never blocked; other writers wait for it.
    fn update_recorded<T, E>(
        &self,
        model: &str,
        change: impl FnOnce(&ModelRoutes) -> Result<(Option<ModelRoutes>, T), RouteError>,
        record: impl FnOnce(&ModelRoutes, &T) -> Result<(), E>,
    ) -> Result<T, ChangeError<E>> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = self.current.load_full();
        let routes = snapshot
            .models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        let (next, outcome) = change(routes)?;
        if let Some(next) = next {
            record(&next, &outcome).map_err(ChangeError::Record)?;
            let mut models = snapshot.models.clone();
            models.insert(model.to_string(), Arc::new(next));
            self.current.store(Arc::new(RouteSnapshot { models }));
        }
        Ok(outcome)
    }

    /// Sends every new request of `model` to the slot `to`.
    pub fn switch(&self, model: &str, to: Color) -> Result<SwitchOutcome, RouteError> {
        self.update(model, switching(model, to))
    }

    /// [`Routes::switch`], published only once `record` has recorded it.
    pub fn switch_recorded<E>(
        &self,
        model: &str,
        to: Color,
        record: impl FnOnce(&ModelRoutes, &SwitchOutcome) -> Result<(), E>,
    ) -> Result<SwitchOutcome, ChangeError<E>> {
        self.update_recorded(model, switching(model, to), record)
    }

    /// Switches `model` back to the slot that was live before its last switch, published
    /// only once `record` has recorded it.
    pub fn rollback_recorded<E>(
        &self,
        model: &str,
        record: impl FnOnce(&ModelRoutes, &SwitchOutcome) -> Result<(), E>,
    ) -> Result<SwitchOutcome, ChangeError<E>> {
        let to = self.rollback_target(model)?;
        self.switch_recorded(model, to, record)
    }

    /// [`Routes::set_weight`], published only once `record` has recorded it.
    pub fn set_weight_recorded<E>(
        &self,
        model: &str,
        weight: u32,
        record: impl FnOnce(&ModelRoutes, &RouteTable) -> Result<(), E>,
    ) -> Result<RouteTable, ChangeError<E>> {
        self.update_recorded(model, weighting(model, weight), record)
    }

    /// [`Routes::set_shadow`], published only once `record` has recorded it.
    pub fn set_shadow_recorded<E>(
        &self,
        model: &str,
        share: u32,
        record: impl FnOnce(&ModelRoutes, &u32) -> Result<(), E>,
    ) -> Result<u32, ChangeError<E>> {
        self.update_recorded(model, shadowing(share), record)
    }

    /// Puts `slot` into its color of `model`, returning what it replaced. The live slot
    /// cannot be replaced: a new version always arrives in the standby slot.
    pub fn place(&self, model: &str, slot: Arc<Slot>) -> Result<Option<Arc<Slot>>, RouteError> {
        self.update(model, placing(model, slot))
    }

    /// [`Routes::place`], published only once `record` has recorded it.
    pub fn place_recorded<E>(
        &self,
        model: &str,
        slot: Arc<Slot>,
        record: impl FnOnce(&ModelRoutes, &Option<Arc<Slot>>) -> Result<(), E>,
    ) -> Result<Option<Arc<Slot>>, ChangeError<E>> {
        self.update_recorded(model, placing(model, slot), record)
    }

    /// Takes the standby slot `color` out of `model`; new requests no longer reach it.
    pub fn remove(&self, model: &str, color: Color) -> Result<Arc<Slot>, RouteError> {
        self.update(model, removing(model, color))
    }

    /// [`Routes::remove`], published only once `record` has recorded it.
    pub fn remove_recorded<E>(
        &self,
        model: &str,
        color: Color,
        record: impl FnOnce(&ModelRoutes, &Arc<Slot>) -> Result<(), E>,
    ) -> Result<Arc<Slot>, ChangeError<E>> {
        self.update_recorded(model, removing(model, color), record)
    }

    /// Sends `weight` basis points of new requests to the candidate (the standby slot).
    pub fn set_weight(&self, model: &str, weight: u32) -> Result<RouteTable, RouteError> {
        self.update(model, weighting(model, weight))
    }

    /// Sets the share of live requests mirrored to the candidate (basis points); returns the
    /// share it replaces.
    pub fn set_shadow(&self, model: &str, share: u32) -> Result<u32, RouteError> {
        self.update(model, shadowing(share))
    }

    /// Publishes a rollout's route: live slot, candidate weight and shadow share in one
    /// table. Returns whether anything changed (applying the same route twice is a no-op).
    /// Unlike [`Routes::switch`], a move back to the old slot is not refused when that slot
    /// reports unready: a rollback must never be stuck behind the version it returns to.
    pub fn apply(&self, model: &str, route: teal_core::rollout::Route) -> Result<bool, RouteError> {
        self.update(model, |routes| {
            let table = &routes.table;
            let weight = route.weight.min(teal_core::routing::WHOLE);
            let shadow = route.shadow.min(teal_core::routing::WHOLE);
            let baseline = route.baseline.min(teal_core::routing::WHOLE);
            if table.active == route.active
                && table.candidate_weight == weight
                && table.shadow == shadow
                && table.fallback == route.fallback
                && table.baseline == baseline
            {
                return Ok((None, false));
            }
            if routes.slot(route.active).is_none() {
                return Err(RouteError::EmptySlot {
                    model: model.to_string(),
                    color: route.active,
                });
            }
            let mut next = routes.clone();
            if table.active != route.active {
                next.table = table.switched(route.active);
                next.previous = Some(table.active);
            } else {
                next.table.generation += 1;
            }
            next.table.candidate_weight = weight;
            next.table.shadow = shadow;
            next.table.fallback = route.fallback;
            next.table.baseline = baseline;
            Ok((Some(next), true))
        })
    }

    /// Publishes `next` as the whole of its model's routing, adding the model if it is new,
    /// in one store. Its table's generation is raised past the one it replaces, so a
    /// publication is always newer than the last.
    pub fn put(&self, mut next: ModelRoutes) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = self.current.load_full();
        if let Some(current) = snapshot.models.get(&next.name) {
            next.table.generation = next.table.generation.max(current.table.generation + 1);
        }
        let mut models = snapshot.models.clone();
        models.insert(next.name.clone(), Arc::new(next));
        self.current.store(Arc::new(RouteSnapshot { models }));
    }

    /// Stops routing `model`; returns whether it was routed.
    pub fn forget(&self, model: &str) -> bool {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = self.current.load_full();
        if !snapshot.models.contains_key(model) {
            return false;
        }
        let mut models = snapshot.models.clone();
        models.remove(model);
        self.current.store(Arc::new(RouteSnapshot { models }));
        true
    }

    /// Switches `model` back to the slot that was live before its last switch.
    pub fn rollback(&self, model: &str) -> Result<SwitchOutcome, RouteError> {
        let to = self.rollback_target(model)?;
        self.switch(model, to)
    }

    /// The slot a rollback of `model` goes back to.
    fn rollback_target(&self, model: &str) -> Result<Color, RouteError> {
        let snapshot = self.load();
        let routes = snapshot
            .models
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        routes
            .previous
            .filter(|p| *p != routes.table.active)
            .ok_or_else(|| RouteError::NothingToRollBack {
                model: model.to_string(),
                live: routes.table.active,
            })
    }
}

/// A routing change refused by the routing itself, or one whose record could not be written
/// (then nothing was published).
#[derive(Debug)]
pub enum ChangeError<E> {
    Route(RouteError),
    Record(E),
}

impl<E> From<RouteError> for ChangeError<E> {
    fn from(e: RouteError) -> Self {
        ChangeError::Route(e)
    }
}

/// A change of the routing: the model's next routing (none: nothing to publish) and what to
/// tell the caller.
type Change<T> = Result<(Option<ModelRoutes>, T), RouteError>;

/// The change that makes `to` the live slot of `model`.
fn switching(model: &str, to: Color) -> impl FnOnce(&ModelRoutes) -> Change<SwitchOutcome> {
    move |routes| {
        let from = routes.table.active;
        let target = routes.slot(to).ok_or_else(|| RouteError::EmptySlot {
            model: model.to_string(),
            color: to,
        })?;
        let changed = from != to;
        if changed && !target.backend.ready() {
            return Err(RouteError::NotReady {
                model: model.to_string(),
                color: to,
                version: target.version.clone(),
            });
        }
        let next = changed.then(|| ModelRoutes {
            table: routes.table.switched(to),
            previous: Some(from),
            ..routes.clone()
        });
        let outcome = SwitchOutcome {
            model: model.to_string(),
            from,
            to,
            from_version: routes.live().map(|s| s.version.clone()).unwrap_or_default(),
            to_version: target.version.clone(),
            generation: next
                .as_ref()
                .map_or(routes.table.generation, |n| n.table.generation),
            changed,
        };
        Ok((next, outcome))
    }
}

/// The change that puts `slot` into its colour of `model`; its outcome is the slot it
/// replaced. The live slot cannot be replaced: a new version arrives in the standby slot.
fn placing(model: &str, slot: Arc<Slot>) -> impl FnOnce(&ModelRoutes) -> Change<Option<Arc<Slot>>> {
    move |routes| {
        let color = slot.color;
        if routes.table.active == color && routes.live().is_some() {
            return Err(RouteError::SlotIsLive {
                model: model.to_string(),
                color,
            });
        }
        let mut next = routes.clone();
        let replaced = next.slots[color.index()].replace(slot);
        next.table.generation += 1;
        if next.previous == Some(color) {
            // A rollback would now go to a version that was never live.
            next.previous = None;
        }
        Ok((Some(next), replaced))
    }
}

/// The change that takes the standby slot `color` out of `model`; its outcome is the slot.
fn removing(model: &str, color: Color) -> impl FnOnce(&ModelRoutes) -> Change<Arc<Slot>> {
    move |routes| {
        if routes.table.active == color {
            return Err(RouteError::SlotIsLive {
                model: model.to_string(),
                color,
            });
        }
        let mut next = routes.clone();
        let removed = next.slots[color.index()]
            .take()
            .ok_or_else(|| RouteError::EmptySlot {
                model: model.to_string(),
                color,
            })?;
        next.table.generation += 1;
        next.table.candidate_weight = 0;
        if next.previous == Some(color) {
            next.previous = None;
        }
        Ok((Some(next), removed))
    }
}

/// The change that sends `weight` basis points of new requests to the candidate.
fn weighting(model: &str, weight: u32) -> impl FnOnce(&ModelRoutes) -> Change<RouteTable> {
    move |routes| {
        let candidate = routes.table.candidate();
        if weight > 0 {
            let slot = routes
                .slot(candidate)
                .ok_or_else(|| RouteError::EmptySlot {
                    model: model.to_string(),
                    color: candidate,
                })?;
            if !slot.backend.ready() {
                return Err(RouteError::NotReady {
                    model: model.to_string(),
                    color: candidate,
                    version: slot.version.clone(),
                });
            }
        }
        let mut next = routes.clone();
        next.table.candidate_weight = weight.min(teal_core::routing::WHOLE);
        next.table.generation += 1;
        let table = next.table.clone();
        Ok((Some(next), table))
    }
}

/// The change that mirrors `share` basis points of live requests to the candidate; its
/// outcome is the share it replaces.
fn shadowing(share: u32) -> impl FnOnce(&ModelRoutes) -> Change<u32> {
    move |routes| {
        let previous = routes.table.shadow;
        let mut next = routes.clone();
        next.table.shadow = share.min(teal_core::routing::WHOLE);
        next.table.generation += 1;
        Ok((Some(next), previous))
    }
}

/// One slot as the admin API reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotStatus {
    pub color: Color,
    pub version: String,
    pub kind: String,
    pub live: bool,
    pub ready: bool,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub card: BTreeMap<String, String>,
    pub in_flight: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStats>,
    /// How an in-process slot runs: its sessions and ONNX Runtime's settings for each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<ExecutionStatus>,
    /// Where its model file was fetched from, when the slot names a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::backends::fetch::Provenance>,
    /// Counts since the slot started, for rates and percentiles over any interval.
    #[serde(default)]
    pub stats: SlotCounts,
}

/// An in-process slot's execution settings, as `teal status` shows them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExecutionStatus {
    pub workers: usize,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    pub optimization: teal_core::config::Optimization,
    /// How requests are batched, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<teal_core::config::BatchingConfig>,
    /// Why requests are not batched although the model asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching_off: Option<String>,
}

/// A slot's counts as the admin API reports them: requests, failures (5xx), and latencies in
/// buckets whose upper bounds start at `first_bucket_us` and grow by `bucket_growth`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SlotCounts {
    pub requests: u64,
    pub errors: u64,
    pub first_bucket_us: f64,
    pub bucket_growth: f64,
    pub buckets: Vec<u64>,
}

/// One model as the admin API reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    pub live: Color,
    pub live_version: Option<String>,
    pub generation: u64,
    pub candidate_weight: u32,
    pub shadow: u32,
    pub header_override: bool,
    pub rollback_to: Option<Color>,
    pub slots: Vec<SlotStatus>,
    /// The rollout in progress (filled in by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

impl ModelStatus {
    pub fn of(routes: &ModelRoutes) -> ModelStatus {
        let slots = routes
            .slots
            .iter()
            .flatten()
            .map(|slot| SlotStatus {
                color: slot.color,
                version: slot.version.clone(),
                kind: slot.backend.kind().to_string(),
                live: slot.color == routes.table.active,
                ready: slot.backend.ready(),
                inputs: slot
                    .backend
                    .signature()
                    .map(|s| s.inputs.clone())
                    .unwrap_or_default(),
                outputs: slot
                    .backend
                    .signature()
                    .map(|s| s.outputs.clone())
                    .unwrap_or_default(),
                card: slot.card.clone(),
                in_flight: slot.in_flight(),
                replicas: slot.backend.replicas(),
                process: slot.backend.process(),
                cache: slot.cache.as_ref().map(PredictionCache::stats),
                provenance: slot.provenance.clone(),
                execution: match &slot.config.backend {
                    teal_core::config::BackendConfig::Onnx {
                        workers,
                        intra_op_threads,
                        inter_op_threads,
                        optimization,
                        ..
                    } => {
                        let batching = match &slot.backend {
                            Backend::Onnx(onnx) => onnx.batching().clone(),
                            _ => Ok(None),
                        };
                        Some(ExecutionStatus {
                            workers: *workers,
                            intra_op_threads: *intra_op_threads,
                            inter_op_threads: *inter_op_threads,
                            optimization: *optimization,
                            batching: batching.as_ref().ok().and_then(|plan| {
                                plan.as_ref().map(|plan| teal_core::config::BatchingConfig {
                                    max_batch_size: plan.max_batch_size,
                                    max_queue_delay_us: plan.max_queue_delay.as_micros() as u64,
                                    preferred_batch_sizes: plan.preferred_batch_sizes.clone(),
                                    exact: plan.exact,
                                })
                            }),
                            batching_off: batching.err(),
                        })
                    }
                    _ => None,
                },
                stats: {
                    let snapshot = slot.stats.snapshot();
                    SlotCounts {
                        requests: snapshot.requests,
                        errors: snapshot.errors,
                        first_bucket_us: FIRST_BUCKET_US,
                        bucket_growth: BUCKET_GROWTH,
                        buckets: snapshot.buckets,
                    }
                },
            })
            .collect();
        ModelStatus {
            name: routes.name.clone(),
            live: routes.table.active,
            live_version: routes.live().map(|s| s.version.clone()),
            generation: routes.table.generation,
            candidate_weight: routes.table.candidate_weight,
            shadow: routes.table.shadow,
            header_override: routes.table.header_override,
            rollback_to: routes.previous.filter(|p| *p != routes.table.active),
            slots,
            rollout: None,
        }
    }
}

/// A rollout as the admin API and a model's status show it. It lives beside the routes
/// because [`ModelStatus`] carries it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RolloutView {
    #[serde(flatten)]
    pub rollout: teal_core::rollout::Rollout,
    pub phase_name: String,
    pub strategy: String,
    /// When the phase's timer fires (for status displays).
    pub next_at_ms: Option<i64>,
    pub terminal: bool,
}

impl RolloutView {
    pub fn of(rollout: teal_core::rollout::Rollout) -> RolloutView {
        RolloutView {
            phase_name: rollout.phase.name().to_string(),
            strategy: rollout.settings.strategy.name().to_string(),
            next_at_ms: rollout.deadline_ms(),
            terminal: rollout.phase.is_terminal(),
            rollout,
        }
    }
}
