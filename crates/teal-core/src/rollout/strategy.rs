//! How a candidate reaches traffic: at once, in canary steps, or after a shadow window.

use serde::{Deserialize, Serialize};

use super::duration::{duration_ms, pause};
use crate::routing::WHOLE;

/// How the candidate reaches traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// Validate, then move all traffic at once (after the approval or the switch delay).
    #[default]
    BlueGreen,
    /// Validate, then raise the candidate's share step by step, watching it at each step.
    Canary {
        /// The steps, in order; after the last, the candidate takes all traffic.
        steps: Vec<CanaryStep>,
    },
    /// Mirror live traffic to the candidate for a window, judge the gates on it, then switch.
    ShadowThenSwitch {
        /// How long the candidate sees mirrored traffic.
        #[serde(default = "default_shadow_window", deserialize_with = "duration_ms")]
        window_ms: u64,
        /// Share of live requests mirrored, 0 to 100.
        #[serde(default = "hundred")]
        percent: f64,
    },
}

impl Strategy {
    /// The name people write and read (`blue-green`), for audit causes and status lines.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary { .. } => "canary",
            Strategy::ShadowThenSwitch { .. } => "shadow-then-switch",
        }
    }
}

/// One canary step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Share of new requests for the candidate, 0 to 100 (to two decimals).
    pub percent: f64,
    /// How long the step holds before the next one; absent (or `"manual"`) waits for
    /// `teal promote`.
    #[serde(default, deserialize_with = "pause")]
    pub pause_ms: Option<u64>,
    /// Run the validation again at the end of the step, before the next one.
    #[serde(default)]
    pub gates: bool,
}

impl CanaryStep {
    pub(super) fn weight(&self) -> u32 {
        ((self.percent * 100.0).round().clamp(0.0, f64::from(WHOLE))) as u32
    }
}

fn default_shadow_window() -> u64 {
    60_000
}
fn hundred() -> f64 {
    100.0
}
