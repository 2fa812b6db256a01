//! What the gates judge: one request answered by the live slot and by the candidate.

/// What one slot answered to one request.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Answer {
    pub ok: bool,
    pub latency_ms: f64,
    /// The predicted label (classifiers).
    pub label: Option<i64>,
    /// Class scores (classifiers) or output values (regressors).
    pub scores: Vec<f64>,
}

/// One request answered by both slots, with the true label when it is known.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Observation {
    pub live: Answer,
    pub candidate: Answer,
    pub truth: Option<i64>,
}

/// The observations both slots answered, the only ones that can be compared.
pub(super) fn both_ok(observations: &[Observation]) -> Vec<&Observation> {
    observations
        .iter()
        .filter(|o| o.live.ok && o.candidate.ok)
        .collect()
}
