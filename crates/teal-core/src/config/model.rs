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
    /// How much work the model takes at once: requests running, requests waiting, and how
    /// long a request may take; past them, 503 with `Retry-After` (or 504).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Dynamic batching of the model's in-process slots: off unless the table is there.
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
    /// A registry alias teal follows: when it moves, the version it names is rolled out.
    #[serde(default)]
    pub source: Option<WatchConfig>,
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

/// A registry alias to follow (`[model.source]`): when `watch` points at another version
/// than the live one, teal rolls that version out with the model's rollout settings (named
/// `NAME-VERSION`, fetched as `models:/NAME/VERSION`, run as the live slot runs); when the
/// alias moves back to the version being replaced during the rollout, the rollout is aborted
/// (before the switch) or rolled back (after it). A version whose rollout failed is not tried
/// again until the alias moves.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The alias, as `models:/NAME@ALIAS`.
    pub watch: String,
    /// How often the registry is asked, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    10_000
}

impl WatchConfig {
    /// Checks the alias and the interval; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match crate::source::Source::parse(&self.watch) {
            Ok(crate::source::Source::Registry {
                at: crate::source::RegistryRef::Alias(_),
                ..
            }) => {}
            Ok(_) => {
                return Err((
                    "watch".into(),
                    format!(
                        "'{}' is not an alias: watch follows models:/NAME@ALIAS",
                        self.watch
                    ),
                ));
            }
            Err(reason) => return Err(("watch".into(), reason)),
        }
        if !(100..=86_400_000).contains(&self.poll_ms) {
            return Err((
                "poll_ms".into(),
                "must be between 100 and 86400000 (a day)".into(),
            ));
        }
        Ok(())
    }
}

/// Dynamic batching, as Triton's dynamic batcher does it: requests for the same slot that
/// arrive while a worker is busy (or within `max_queue_delay_us` of the first) and whose
/// inputs agree on every dimension but the first are run as one call, and each caller gets
/// its own rows back. It applies to every in-process slot of the model, those deployed later
/// included; a slot whose model has a fixed first dimension runs unbatched, as start-up says.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// The most rows one call holds. A request with more rows than this runs alone.
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for others to join it, in
    /// microseconds, when the batch has not reached `max_batch_size` or a preferred size
    /// and other requests of the model are outstanding (a lone request never waits).
    /// 0 (the default): no waiting; only requests already queued are batched.
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Batch sizes to stop at: a batch that reaches one of them with nothing more queued
    /// runs at once instead of waiting out the delay.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// Batch only a model that gives every row the same bits in a batch as alone, which
    /// teal checks when it loads the model (some ONNX Runtime kernels compute one row by
    /// another path than several). On (the default), turning batching on never changes an
    /// answer; off, answers may differ in their last bits, as other servers' batchers allow.
    #[serde(default = "yes")]
    pub exact: bool,
}

/// The largest batch accepted: far past what helps on one machine, small enough that a typing
/// mistake is caught.
const MAX_BATCH_SIZE: usize = 4096;

impl BatchingConfig {
    /// Checks the ranges; the error names the field (relative to the table) and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_batch_size == 0 || self.max_batch_size > MAX_BATCH_SIZE {
            return Err((
                "max_batch_size".into(),
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        if self.max_queue_delay_us > 1_000_000 {
            return Err((
                "max_queue_delay_us".into(),
                "must be between 0 and 1000000 (a second)".into(),
            ));
        }
        if let Some(size) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&n| n == 0 || n > self.max_batch_size)
        {
            return Err((
                "preferred_batch_sizes".into(),
                format!(
                    "{size} is not between 1 and max_batch_size ({})",
                    self.max_batch_size
                ),
            ));
        }
        Ok(())
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

/// Admission control for one model: a bounded number of requests running on its slots, a
/// bounded queue in front of them, and a deadline, so that load past what the model can
/// serve is refused at once (503 with `Retry-After`) instead of making every answer late.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Places for the requests of this model running at once (both slots together): a
    /// request takes one, and one more for every 12 KiB of its body (at most a quarter of
    /// them), so dozens of small requests run at once and only a few large ones, whose decoding would otherwise hold up
    /// every connection's reads. Unset: 32, or twice the `workers` of the model's in-process
    /// slots where that is more, or with batching (workers + 1) x `max_batch_size` where that
    /// is more (raise it for a model server with many replicas). See
    /// [`LimitsConfig::for_model`].
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Requests waiting for places among those running; one more is answered 503 with
    /// `Retry-After`. 0: no queue. Unset: 16.
    #[serde(default)]
    pub max_queued: Option<usize>,
    /// How long requests may wait for a place before the queue counts as standing, in
    /// milliseconds: when every request that waits waits longer than this for 100 ms, the
    /// model is past what it serves, and its queue is cut to a quarter of `max_queued`
    /// until 100 ms pass without a refusal, so the answers it admits stay fast. 0: only `max_queued` bounds the
    /// queue. Unset: 10.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// How long a request may wait for a place and, on an in-process model, run: past it,
    /// a request still waiting gets 503 and one running gets 504.
    #[serde(default = "default_limit_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_in_flight: None,
            max_queued: None,
            max_wait_ms: None,
            timeout_ms: default_limit_timeout_ms(),
        }
    }
}

/// The bounds of a model behind a model server when none are set.
const SERVER_MAX_IN_FLIGHT: usize = 32;
const SERVER_MAX_QUEUED: usize = 16;

/// The wait past which a model's queue counts as standing when `max_wait_ms` is unset.
const DEFAULT_MAX_WAIT_MS: u64 = 10;

/// The largest bound accepted for requests running or queued: far past what one process
/// serves, small enough that a typing mistake is caught.
const MAX_BOUND: usize = 1_000_000;

impl LimitsConfig {
    /// Requests running at once: the bound set, else a model server's default.
    pub fn running(&self) -> usize {
        self.max_in_flight.unwrap_or(SERVER_MAX_IN_FLIGHT)
    }

    /// Requests waiting: the bound set, else a model server's default.
    pub fn queued(&self) -> usize {
        self.max_queued.unwrap_or(SERVER_MAX_QUEUED)
    }

    /// The wait past which the queue counts as standing, in milliseconds (0: never).
    pub fn max_wait_ms(&self) -> u64 {
        self.max_wait_ms.unwrap_or(DEFAULT_MAX_WAIT_MS)
    }

    /// The bounds a model runs with: those set, and for those unset the defaults its slots
    /// call for: 32 places (twice the workers of its in-process slots where that is more, so
    /// every worker has a request decoded and waiting; with batching, room for a full batch on
    /// every worker and one gathering) and 16 queued.
    pub fn for_model(&self, model: &ModelConfig) -> LimitsConfig {
        let slots: Vec<&super::SlotConfig> =
            [&model.blue, &model.green].into_iter().flatten().collect();
        let workers = slots
            .iter()
            .map(|slot| match slot.backend {
                super::BackendConfig::Onnx { workers, .. } => Some(workers),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()
            .and_then(|w| w.into_iter().max());
        // With batching, every worker can run a full batch while the next one gathers.
        let batch = model.batching.as_ref().map_or(1, |b| b.max_batch_size);
        let running = workers.map_or(SERVER_MAX_IN_FLIGHT, |w| {
            (2 * w).max((w + 1) * batch).max(SERVER_MAX_IN_FLIGHT)
        });
        let queued = SERVER_MAX_QUEUED;
        LimitsConfig {
            max_in_flight: Some(self.max_in_flight.unwrap_or(running)),
            max_queued: Some(self.max_queued.unwrap_or(queued)),
            max_wait_ms: self.max_wait_ms,
            timeout_ms: self.timeout_ms,
        }
    }

    /// Checks the bounds; the error names the field (relative to the table) and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_in_flight.is_some_and(|n| n == 0 || n > MAX_BOUND) {
            return Err((
                "max_in_flight".into(),
                format!("must be between 1 and {MAX_BOUND}"),
            ));
        }
        if self.max_queued.is_some_and(|n| n > MAX_BOUND) {
            return Err((
                "max_queued".into(),
                format!("must be between 0 and {MAX_BOUND}"),
            ));
        }
        if self.max_wait_ms.is_some_and(|ms| ms > 3_600_000) {
            return Err((
                "max_wait_ms".into(),
                "must be between 0 and 3600000 (an hour)".into(),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 3_600_000 {
            return Err((
                "timeout_ms".into(),
                "must be between 1 and 3600000 (an hour)".into(),
            ));
        }
        Ok(())
    }
}

fn default_limit_timeout_ms() -> u64 {
    10_000
}
