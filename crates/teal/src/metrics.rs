//! Prometheus metrics, in a registry the app owns (no globals), served at `/metrics` on the
//! admin listener. Names follow what the operations world already alerts on
//! (`model_server_*`), plus teal's own (`teal_*`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    pub slot: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabels {
    pub model: String,
    pub version: String,
    pub slot: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub model: String,
    pub version: String,
    pub slot: String,
    /// Who is at fault: `client` (4xx) or `backend` (5xx).
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    pub model: String,
    pub gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub model: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub model: String,
    pub slot: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A model and one of its versions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

/// A version's answers of one predicted class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PredictionLabels {
    pub model: String,
    pub version: String,
    pub class: String,
}

/// Each version's histogram of answered values (a regressor's output, a classifier's top
/// score), copied from the slots at each scrape: the slots count them on the request path in
/// finer buckets than a scrape should carry, and this writes them one bucket per doubling.
#[derive(Debug, Default)]
pub struct ValueHistograms {
    rows: std::sync::Mutex<Vec<ValueRow>>,
}

/// One version's value counts by bucket index, and their sum.
#[derive(Debug)]
pub struct ValueRow {
    pub labels: VersionLabels,
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl ValueHistograms {
    /// What the next scrape writes: the versions the slots hold now.
    pub fn set(&self, rows: Vec<ValueRow>) {
        *self.rows.lock().unwrap_or_else(|p| p.into_inner()) = rows;
    }
}

impl prometheus_client::collector::Collector for ValueHistograms {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut family = encoder.encode_descriptor(
            "teal_prediction_value",
            "Answers by their value (a regressor's output, a classifier's top score) and version, one bucket per doubling",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for row in rows.iter() {
            let buckets = teal_core::stats::values::octaves(&row.counts);
            let count = row.counts.iter().sum();
            family
                .encode_family(&row.labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    row.sum, count, &buckets, None,
                )?;
        }
        Ok(())
    }
}

/// One slot's request series, resolved once, so that recording an answer builds no labels.
pub struct SlotHandles {
    /// Requests by endpoint: infer, predict, KServe V1's predict, then gRPC's ModelInfer.
    pub requests: [Counter; 4],
    pub latency: Histogram,
    pub client_errors: Counter,
    pub backend_errors: Counter,
}

/// One in-process version's series of its calls to the model: how many rows each call ran
/// (more than a request's with batching), how long requests waited for a worker, and how
/// long the calls took.
#[derive(Clone)]
pub struct InferenceHandles {
    pub batch_rows: Histogram,
    pub queue: Histogram,
    pub compute: Histogram,
}

/// Every metric teal exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub latency: Family<SlotLabels, Histogram>,
    pub active: Family<ModelLabels, Gauge>,
    pub switches: Family<ModelLabels, Counter>,
    pub route_weight: Family<RouteLabels, FloatGauge>,
    pub shadow_share: Family<ModelLabels, FloatGauge>,
    pub slot_ready: Family<SlotLabels, Gauge>,
    pub shadow_agreement: Family<ModelLabels, FloatGauge>,
    pub rollout_phase: Family<PhaseLabels, Gauge>,
    pub gate_value: Family<GateLabels, FloatGauge>,
    pub gate_passed: Family<GateLabels, Gauge>,
    pub rollbacks: Family<ModelLabels, Counter>,
    /// Requests the candidate failed that the old version answered instead.
    pub failovers: Family<VersionLabels, Counter>,
    /// Answers per predicted class, per version (refreshed from the slots at each scrape).
    pub predictions: Family<PredictionLabels, Counter>,
    /// Answers per value bucket, per version (refreshed from the slots at each scrape).
    pub values: std::sync::Arc<ValueHistograms>,
    pub batch_rows: Family<VersionLabels, Histogram>,
    pub inference_queue: Family<VersionLabels, Histogram>,
    pub inference_compute: Family<VersionLabels, Histogram>,
    pub shadow_dropped: Counter,
    pub request_log_dropped: Counter,
    pub capture_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 100 us to about 3.3 s.
        let latency = Family::<SlotLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        let active = Family::<ModelLabels, Gauge>::default();
        let switches = Family::<ModelLabels, Counter>::default();
        let route_weight = Family::<RouteLabels, FloatGauge>::default();
        let shadow_share = Family::<ModelLabels, FloatGauge>::default();
        let slot_ready = Family::<SlotLabels, Gauge>::default();
        let shadow_agreement = Family::<ModelLabels, FloatGauge>::default();
        let shadow_dropped = Counter::default();
        let rollout_phase = Family::<PhaseLabels, Gauge>::default();
        let rollbacks = Family::<ModelLabels, Counter>::default();
        let failovers = Family::<VersionLabels, Counter>::default();
        let predictions = Family::<PredictionLabels, Counter>::default();
        let values = std::sync::Arc::new(ValueHistograms::default());
        registry.register_collector(Box::new(values.clone()));
        registry.register(
            "teal_failover",
            "Requests the named version failed (a server error or a timeout) that the old version, still warm, answered instead",
            failovers.clone(),
        );
        registry.register(
            "teal_predictions",
            "Answers per predicted class (labels 0 to 31) and version, from answers that name a class",
            predictions.clone(),
        );
        let gate_value = Family::<GateLabels, FloatGauge>::default();
        let gate_passed = Family::<GateLabels, Gauge>::default();
        registry.register(
            "teal_gate_value",
            "The measured value of each gate in the model's last validation",
            gate_value.clone(),
        );
        registry.register(
            "teal_gate_passed",
            "Whether each gate passed (1) or failed (0) in the model's last validation; absent when inconclusive",
            gate_passed.clone(),
        );
        registry.register(
            "teal_rollout_phase",
            "The phase of each model's current or last rollout (1 for the phase it is in)",
            rollout_phase.clone(),
        );
        registry.register(
            "teal_rollbacks",
            "Rollouts that ended with traffic back on the old version, by an operator or a rule",
            rollbacks.clone(),
        );
        // 1 to 4096 rows.
        let batch_rows = Family::<VersionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 13))
        });
        // 10 us to about 5 s.
        let seconds = || Histogram::new(exponential_buckets(0.00001, 2.0, 20));
        let inference_queue = Family::<VersionLabels, Histogram>::new_with_constructor(seconds);
        let inference_compute = Family::<VersionLabels, Histogram>::new_with_constructor(seconds);
        registry.register(
            "teal_batch_rows",
            "Rows each call to an in-process model ran: a request's, or with batching those of every request in the batch",
            batch_rows.clone(),
        );
        registry.register(
            "teal_inference_queue_seconds",
            "Time in-process requests waited for a worker (and for a batch to fill), per version",
            inference_queue.clone(),
        );
        registry.register(
            "teal_inference_compute_seconds",
            "Time each call to an in-process model took on its worker, per version",
            inference_compute.clone(),
        );
        let request_log_dropped = Counter::default();
        let capture_dropped = Counter::default();
        registry.register(
            "model_server_requests",
            "Inference requests answered, by model, version, slot and endpoint",
            requests.clone(),
        );
        registry.register(
            "model_server_errors",
            "Inference requests that failed, by who is at fault",
            errors.clone(),
        );
        registry.register(
            "model_server_latency_seconds",
            "Time from request to answer, as teal saw it",
            latency.clone(),
        );
        registry.register(
            "model_server_active_requests",
            "Inference requests in flight",
            active.clone(),
        );
        registry.register(
            "teal_switches",
            "Switches and rollbacks that changed the live slot",
            switches.clone(),
        );
        registry.register(
            "teal_route_weight",
            "Share of new requests each slot receives (0 to 1)",
            route_weight.clone(),
        );
        registry.register(
            "teal_shadow_share",
            "Share of live requests mirrored to the standby slot (0 to 1)",
            shadow_share.clone(),
        );
        registry.register(
            "teal_slot_ready",
            "Whether a slot can take traffic (1) or not (0)",
            slot_ready.clone(),
        );
        registry.register(
            "teal_shadow_agreement_ratio",
            "Agreement between live and candidate in the last validation",
            shadow_agreement.clone(),
        );
        registry.register(
            "teal_shadow_dropped",
            "Mirrored requests dropped because the candidate could not keep up",
            shadow_dropped.clone(),
        );
        registry.register(
            "teal_request_log_dropped",
            "Request log records dropped because the writer fell behind",
            request_log_dropped.clone(),
        );
        registry.register(
            "teal_capture_dropped",
            "Captured requests dropped because the writer fell behind",
            capture_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            latency,
            active,
            switches,
            route_weight,
            shadow_share,
            slot_ready,
            shadow_agreement,
            rollout_phase,
            gate_value,
            gate_passed,
            rollbacks,
            failovers,
            predictions,
            values,
            batch_rows,
            inference_queue,
            inference_compute,
            shadow_dropped,
            request_log_dropped,
            capture_dropped,
        }
    }

    /// Marks `phase` as the model's rollout phase (and every other phase as not).
    pub fn set_phase(&self, model: &str, phase: &str) {
        for name in teal_core::rollout::Phase::NAMES {
            self.rollout_phase
                .get_or_create(&PhaseLabels {
                    model: model.to_string(),
                    phase: name.to_string(),
                })
                .set(i64::from(name == phase));
        }
    }

    /// Brings the route gauges up to date, then renders every metric in the text format.
    /// The request series of one model version in one slot.
    pub fn slot_handles(&self, model: &str, version: &str, slot: &str) -> SlotHandles {
        let request = |endpoint: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                    endpoint: endpoint.to_string(),
                })
                .clone()
        };
        let error = |error_type: &str| {
            self.errors
                .get_or_create(&ErrorLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                    error_type: error_type.to_string(),
                })
                .clone()
        };
        SlotHandles {
            requests: [
                request("infer"),
                request("predict"),
                request("kserve_v1"),
                request("grpc_infer"),
            ],
            latency: self
                .latency
                .get_or_create(&SlotLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                })
                .clone(),
            client_errors: error("client"),
            backend_errors: error("backend"),
        }
    }

    /// The call series of one in-process version.
    pub fn inference_handles(&self, model: &str, version: &str) -> InferenceHandles {
        let labels = VersionLabels {
            model: model.to_string(),
            version: version.to_string(),
        };
        InferenceHandles {
            batch_rows: self.batch_rows.get_or_create(&labels).clone(),
            queue: self.inference_queue.get_or_create(&labels).clone(),
            compute: self.inference_compute.get_or_create(&labels).clone(),
        }
    }

    /// Counts the state file's failed writes (a full disk, a read-only folder).
    pub fn register_state(&mut self, write_failures: Counter) {
        self.registry.register(
            "teal_state_write_failures",
            "Writes to the state file that failed (disk full, read-only, state_max_bytes reached)",
            write_failures,
        );
    }

    /// Everything registered, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
