//! What the gates judge: one request answered by the live slot and by the candidate.

/// What one slot answered to one request.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Answer {
    /// Whether the slot answered at all; only requests both slots answered are compared.
    pub ok: bool,
    /// How long the slot took, for the latency gate.
    pub latency_ms: f64,
    /// The predicted label (classifiers).
    pub label: Option<i64>,
    /// Class scores (classifiers) or output values (regressors).
    pub scores: Vec<f64>,
}

/// One request answered by both slots, with the true label when it is known.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Observation {
    /// The live slot's answer, the baseline the candidate is held to.
    pub live: Answer,
    /// The candidate's answer.
    pub candidate: Answer,
    /// The true label (holdout rows, feedback), for the accuracy gate.
    pub truth: Option<i64>,
    /// The input as text, when the runner kept it: repeated identical inputs are one piece of
    /// evidence to the paired tests, and a report shows a few inputs the versions disagreed on.
    pub input: Option<std::sync::Arc<str>>,
}

impl Observation {
    /// A short form of the input for a report: at most 200 characters.
    pub(super) fn input_preview(&self) -> Option<String> {
        let input = self.input.as_deref()?;
        Some(match input.char_indices().nth(200) {
            Some((end, _)) => format!("{}...", &input[..end]),
            None => input.to_string(),
        })
    }
}

/// The observations both slots answered, the only ones that can be compared.
pub(super) fn both_ok(observations: &[Observation]) -> Vec<&Observation> {
    observations
        .iter()
        .filter(|o| o.live.ok && o.candidate.ok)
        .collect()
}
