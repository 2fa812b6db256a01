//! One `[[model]]` table: the name clients call, its slots, and the per-model settings
//! (cache, capture, gates, rollout).

use serde::Deserialize;

use super::{SlotConfig, yes};
use crate::routing::Color;

/// One model: the name clients call, and its slots.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients call, as in `/v2/models/{name}/infer`.
    pub name: String,
    /// The slot serving traffic at start-up.
    #[serde(default = "default_live")]
    pub live: Color,
    /// The output the simple JSON endpoint answers with; the model's first output when unset.
    #[serde(default)]
    pub prediction_output: Option<String>,
    /// Whether callers may pick a slot with the `x-teal-slot` header.
    #[serde(default = "yes")]
    pub header_override: bool,
    /// A request header (like `x-user-id`) whose value keeps a session on one slot during a
    /// canary: the session moves only when the weight passes its bucket.
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// A cookie that does the same, for browsers.
    #[serde(default)]
    pub sticky_cookie: Option<String>,
    /// The prediction cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Gate thresholds for validating a candidate.
    #[serde(default)]
    pub gates: crate::gates::GateConfig,
    /// Share of live requests kept in memory (up to `capture_limit`) to replay against the
    /// next candidate, from 0.0 (none) to 1.0 (all).
    #[serde(default)]
    pub capture_rate: f64,
    /// How many captured requests are kept, newest first.
    #[serde(default = "default_capture_limit")]
    pub capture_limit: usize,
    /// How new versions are rolled out: strategy, approval, bake, keep-warm window and
    /// the automatic rollback rules.
    #[serde(default)]
    pub rollout: crate::rollout::RolloutSettings,
    /// The blue slot.
    pub blue: Option<SlotConfig>,
    /// The green slot.
    pub green: Option<SlotConfig>,
}

fn default_capture_limit() -> usize {
    10_000
}

fn default_live() -> Color {
    Color::Blue
}

impl ModelConfig {
    /// The slot of one color, if the file configures it: code that handles both slots
    /// names the color instead of the field.
    pub fn slot(&self, color: Color) -> Option<&SlotConfig> {
        match color {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }
}

/// A versioned prediction cache, off by default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether identical inputs are answered from memory.
    #[serde(default)]
    pub enabled: bool,
    /// Entries kept per slot; the oldest go first.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// How long an answer may be reused.
    #[serde(default = "default_cache_ttl_ms")]
    pub ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_entries: default_cache_entries(),
            ttl_ms: default_cache_ttl_ms(),
        }
    }
}

fn default_cache_entries() -> usize {
    10_000
}
fn default_cache_ttl_ms() -> u64 {
    60_000
}
