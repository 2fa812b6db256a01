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
    /// Significance level of the paired latency tests (Wilcoxon signed-rank, and the
    /// bootstrap interval of the p95 ratio at confidence `1 - 2 * latency_alpha`).
    pub latency_alpha: f64,
    /// A candidate slower than live by less than this many milliseconds is never a latency
    /// failure: microsecond differences are significant to a test and to nobody else.
    pub min_latency_delta_ms: f64,
    /// Most pairs a validation sends when the latency evidence straddles the threshold;
    /// past it the gate says inconclusive.
    pub max_pairs: usize,
    /// Significance level of the paired tests of who is right (McNemar's test on the rows
    /// where the versions disagree, and the scoring rule on labelled rows).
    pub alpha: f64,
    /// On labelled rows, how much worse the candidate's mean Brier score may be than live's
    /// before the drift gate fails (scores that moved but are no worse pass).
    pub max_score_loss: f64,
    /// Without labels, for classifiers: the largest total variation distance between the
    /// two versions' distributions of predicted classes (what users receive).
    pub max_class_drift: f64,
    /// Without labels, also fail a classifier on score drift over `max_drift` (by default
    /// score drift is reported beside the class distribution, not failed on).
    pub fail_on_score_drift: bool,
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
            max_pairs: 2_000,
            alpha: 0.05,
            max_score_loss: 0.02,
            max_class_drift: 0.1,
            fail_on_score_drift: false,
            max_error_rate: 0.01,
            accuracy_tolerance: 0.02,
            card_fields: Vec::new(),
            max_rss_mb: None,
            max_cpu_cores: None,
        }
    }
}

impl GateConfig {
    /// Checks every threshold is in its range; the error names the field and the range, so
    /// a config file or a command line that gives a wrong one is refused before it is used.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let share = |field: &'static str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err((field, format!("must be between 0.0 and 1.0, not {value}")))
            }
        };
        let level = |field: &'static str, value: f64| {
            if value > 0.0 && value < 0.5 {
                Ok(())
            } else {
                Err((
                    field,
                    format!("must be a significance level above 0.0 and below 0.5, not {value}"),
                ))
            }
        };
        let at_least = |field: &'static str, value: f64, low: f64| {
            if value >= low && value.is_finite() {
                Ok(())
            } else {
                Err((field, format!("must be at least {low}, not {value}")))
            }
        };
        share("agreement", self.agreement)?;
        share("max_error_rate", self.max_error_rate)?;
        share("max_class_drift", self.max_class_drift)?;
        level("latency_alpha", self.latency_alpha)?;
        level("alpha", self.alpha)?;
        at_least("max_latency_ratio", self.max_latency_ratio, 1.0)?;
        at_least("min_latency_delta_ms", self.min_latency_delta_ms, 0.0)?;
        at_least("score_tolerance", self.score_tolerance, 0.0)?;
        at_least("max_drift", self.max_drift, 0.0)?;
        at_least("max_score_loss", self.max_score_loss, 0.0)?;
        at_least("accuracy_tolerance", self.accuracy_tolerance, 0.0)?;
        if self.min_samples == 0 {
            return Err(("min_samples", "must be at least 1".into()));
        }
        if self.max_pairs < self.min_samples {
            return Err((
                "max_pairs",
                format!(
                    "must be at least min_samples ({}), not {}",
                    self.min_samples, self.max_pairs
                ),
            ));
        }
        if let Some(sla) = self.latency_sla_ms {
            at_least("latency_sla_ms", sla, 0.0)?;
        }
        Ok(())
    }
}
