//! Which gate a result comes from.

use super::names::wire_names;

/// A gate's name, as reports, the audit log, metrics labels and the operator's status name
/// it. Typed so that a misspelt gate cannot pass unnoticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gate {
    /// The candidate answers its readiness check.
    Health,
    /// The candidate takes and gives what the live slot does.
    Schema,
    /// Both slots answer alike.
    Agreement,
    /// The candidate's score distributions stay near the live slot's.
    Drift,
    /// The candidate is not slower than the live slot (or its SLA).
    Latency,
    /// The candidate fails few requests.
    Errors,
    /// The candidate's holdout accuracy is not below the live slot's.
    Accuracy,
    /// The candidate carries the model-card fields the model requires.
    Card,
    /// The candidate's server stays under its memory and CPU limits.
    Resources,
    /// Not a check of the candidate: the operator reports a holdout it could not read as a
    /// failed gate of this name, so the rollout stops with the reason.
    Holdout,
    /// Not a check of the candidate: the operator reports a live colour that does not answer
    /// as a failed gate of this name.
    Live,
}

wire_names!("gate", Gate {
    Health => "health",
    Schema => "schema",
    Agreement => "agreement",
    Drift => "drift",
    Latency => "latency",
    Errors => "errors",
    Accuracy => "accuracy",
    Card => "card",
    Resources => "resources",
    Holdout => "holdout",
    Live => "live",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_names_read_back_as_written() {
        for gate in Gate::ALL {
            let json = serde_json::to_string(gate).unwrap();
            assert_eq!(json, format!("\"{}\"", gate.as_str()));
            assert_eq!(serde_json::from_str::<Gate>(&json).unwrap(), *gate);
        }
        assert!("Agreement".parse::<Gate>().is_err());
    }
}
