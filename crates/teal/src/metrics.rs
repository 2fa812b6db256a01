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

use crate::routing::RouteSnapshot;

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
    pub rollbacks: Family<ModelLabels, Counter>,
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
            rollbacks,
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
    pub fn render(&self, routes: &RouteSnapshot) -> String {
        for model in routes.models.values() {
            let table = &model.table;
            let candidate_share =
                f64::from(table.candidate_weight) / f64::from(teal_core::routing::WHOLE);
            for color in [table.active, table.candidate()] {
                let share = if color == table.active {
                    1.0 - candidate_share
                } else {
                    candidate_share
                };
                let share = if model.slot(color).is_some() {
                    share
                } else {
                    0.0
                };
                self.route_weight
                    .get_or_create(&RouteLabels {
                        model: model.name.clone(),
                        slot: color.to_string(),
                    })
                    .set(share);
            }
            self.shadow_share
                .get_or_create(&ModelLabels {
                    model: model.name.clone(),
                })
                .set(f64::from(table.shadow) / f64::from(teal_core::routing::WHOLE));
            for slot in model.slots.iter().flatten() {
                let labels = SlotLabels {
                    model: model.name.clone(),
                    version: slot.version.clone(),
                    slot: slot.color.to_string(),
                };
                self.slot_ready
                    .get_or_create(&labels)
                    .set(i64::from(slot.backend.ready()));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
