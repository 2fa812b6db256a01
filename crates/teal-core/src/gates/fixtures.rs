//! Observations for the gates' tests.

use super::{Answer, Observation};

pub(super) fn answer(label: i64, latency_ms: f64) -> Answer {
    let mut scores = vec![0.1; 3];
    scores[label as usize] = 0.8;
    Answer {
        ok: true,
        latency_ms,
        label: Some(label),
        scores,
    }
}

pub(super) fn observations(n: usize, candidate: impl Fn(usize) -> Answer) -> Vec<Observation> {
    (0..n)
        .map(|i| Observation {
            live: answer((i % 3) as i64, 1.0 + (i % 7) as f64 * 0.1),
            candidate: candidate(i),
            truth: Some((i % 3) as i64),
            input: Some(format!("[{i}]").into()),
        })
        .collect()
}
