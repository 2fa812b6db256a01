//! One gate's outcome as reports, the audit log and the CLI show it, and the two ways a
//! gate builds one.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Gate, GateConfig, Verdict};

/// One gate's outcome and why: what a validation report keeps per gate, so an operator can
/// see which check stopped a rollout and with what numbers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GateResult {
    /// Which gate this is.
    pub gate: Gate,
    /// What the gate decided.
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

/// A result with every field given; each gate builds its results through it.
pub(super) fn result(
    gate: Gate,
    verdict: Verdict,
    value: Option<f64>,
    threshold: String,
    samples: usize,
    reason: String,
    evidence: serde_json::Value,
) -> GateResult {
    GateResult {
        gate,
        verdict,
        value,
        threshold,
        samples,
        reason,
        evidence,
    }
}

/// The inconclusive result of a gate that had fewer observations than `min_samples`.
pub(super) fn too_few(
    gate: Gate,
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
