//! One gate's outcome as reports, the audit log and the CLI show it, and the two ways a
//! gate builds one.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{GateConfig, Verdict};

/// One gate's outcome and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GateResult {
    pub gate: String,
    pub verdict: Verdict,
    /// The measured value the threshold applies to, when there is one.
    pub value: Option<f64>,
    /// The threshold, as a reader would write it (`>= 0.95`).
    pub threshold: String,
    /// How many observations the gate used.
    pub samples: usize,
    /// Why, in a sentence.
    pub reason: String,
    /// The numbers behind the verdict.
    pub evidence: serde_json::Value,
}

pub(super) fn result(
    gate: &str,
    verdict: Verdict,
    value: Option<f64>,
    threshold: String,
    samples: usize,
    reason: String,
    evidence: serde_json::Value,
) -> GateResult {
    GateResult {
        gate: gate.to_string(),
        verdict,
        value,
        threshold,
        samples,
        reason,
        evidence,
    }
}

pub(super) fn too_few(
    gate: &str,
    threshold: String,
    samples: usize,
    config: &GateConfig,
) -> GateResult {
    result(
        gate,
        Verdict::Inconclusive,
        None,
        threshold,
        samples,
        format!(
            "{samples} observations, fewer than the {} needed",
            config.min_samples
        ),
        json!({}),
    )
}
