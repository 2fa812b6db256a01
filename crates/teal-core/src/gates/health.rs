//! The health gate.

use serde_json::json;

use super::result::result;
use super::{Gate, GateResult, Verdict};

/// The candidate answers its readiness check.
pub fn health(ready: bool) -> GateResult {
    let (verdict, reason) = if ready {
        (Verdict::Pass, "the candidate is ready".to_string())
    } else {
        (Verdict::Fail, "the candidate is not ready".to_string())
    };
    result(
        Gate::Health,
        verdict,
        None,
        "ready".into(),
        1,
        reason,
        json!({ "ready": ready }),
    )
}
