//! The thresholds the gates apply, per model.

use serde::{Deserialize, Serialize};

/// Thresholds, per model (`[model.gates]`); the defaults follow common practice.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Fewer observations than this make a gate inconclusive.
    pub min_samples: usize,
    /// Requests sent to each slot before anything is measured.
    pub warmup: usize,
    /// Share of requests on which both slots must agree.
    pub agreement: f64,
    /// For scores and regression outputs: how close counts as agreeing.
    pub score_tolerance: f64,
    /// Largest normed Wasserstein distance between the slots' score distributions.
    pub max_drift: f64,
    /// The candidate's p95 latency must be under this, when set.
    pub latency_sla_ms: Option<f64>,
    /// The candidate's p95 latency must be at most this many times the live slot's.
    pub max_latency_ratio: f64,
    /// Significance level of the latency test (Mann-Whitney U).
    pub latency_alpha: f64,
    /// A candidate p95 within this many milliseconds of live's is never a latency failure:
    /// microsecond differences are significant to a test and to nobody else.
    pub min_latency_delta_ms: f64,
    /// Largest share of failed requests on the candidate.
    pub max_error_rate: f64,
    /// How much holdout accuracy the candidate may lose against the live slot.
    pub accuracy_tolerance: f64,
    /// Model-card fields the candidate must carry.
    pub card_fields: Vec<String>,
    /// Most resident memory the candidate's server may use (process slots), in MiB.
    pub max_rss_mb: Option<f64>,
    /// Most CPU the candidate's server may use during the validation, in cores.
    pub max_cpu_cores: Option<f64>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_samples: 30,
            warmup: 20,
            agreement: 0.95,
            score_tolerance: 0.05,
            max_drift: 0.15,
            latency_sla_ms: None,
            max_latency_ratio: 1.2,
            latency_alpha: 0.05,
            min_latency_delta_ms: 1.0,
            max_error_rate: 0.01,
            accuracy_tolerance: 0.02,
            card_fields: Vec::new(),
            max_rss_mb: None,
            max_cpu_cores: None,
        }
    }
}
