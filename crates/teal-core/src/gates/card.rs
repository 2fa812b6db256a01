//! The model-card gate.

use std::collections::BTreeMap;

use serde_json::json;

use super::result::result;
use super::{Gate, GateConfig, GateResult, Verdict};

/// The candidate carries the model-card fields the model requires.
pub fn card(fields: &BTreeMap<String, String>, config: &GateConfig) -> Option<GateResult> {
    if config.card_fields.is_empty() {
        return None;
    }
    let missing: Vec<&String> = config
        .card_fields
        .iter()
        .filter(|f| fields.get(*f).is_none_or(|v| v.trim().is_empty()))
        .collect();
    let threshold = format!("fields {}", config.card_fields.join(", "));
    Some(if missing.is_empty() {
        result(
            Gate::Card,
            Verdict::Pass,
            None,
            threshold,
            1,
            "every required model-card field is present".into(),
            json!({}),
        )
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        result(
            Gate::Card,
            Verdict::Fail,
            None,
            threshold,
            1,
            format!("missing model-card fields: {}", names.join(", ")),
            json!({ "missing": names }),
        )
    })
}
