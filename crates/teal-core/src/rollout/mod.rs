//! The rollout state machine: one model's move from the live version (blue, whichever slot
//! holds it) to a candidate (green), as a pure function.
//!
//! [`Rollout::step`] consumes the state and one [`Event`] and returns the next state with
//! the [`Effect`]s a driver must perform. The driver persists the state (and the
//! transition's audit event, in the same transaction) before it acts, so a restart resumes
//! where it stood: [`Rollout::resume`] names the effects a phase still owes, and every
//! effect is idempotent (the route is a desired value, not a delta).
//!
//! Time is an input (`now_ms`), never read here, so tests drive it by hand.
//!
//! The rollout itself is here; [`step`](Rollout::step)'s transitions are in `step.rs`, the
//! phases in `phase.rs`, the strategies in `strategy.rs`, the rollback rules in `rules.rs`,
//! operators' commands in `command.rs` and what a restart re-issues in `resume.rs`.

mod checks;
mod command;
mod duration;
mod effect;
mod end_reason;
mod event;
mod phase;
mod resume;
mod rules;
mod settings;
mod step;
mod strategy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::routing::Color;

pub use checks::{
    Analysis, Condition, HookEvent, HookFormat, Measurement, Op, Placeholders, QUERY_PLACEHOLDERS,
    SMOKE_PLACEHOLDERS, SmokeTest, Stage, Webhook, http_url, promql_string, unknown_placeholder,
};
pub use command::Refused;
pub use duration::parse_duration;
pub use effect::{Effect, Route, Transition};
pub use end_reason::{EndReason, UnknownEndReason};
pub use event::Event;
pub use phase::Phase;
pub use rules::{
    Baseline, Check, Pair, RollbackRules, Rule, RuleOutcome, RuleVerdict, Strikes, Tally, Window,
};
pub use settings::{Evidence, OnInconclusive, RolloutSettings};
pub use strategy::{CanaryStep, Strategy};

/// Whether a value is its type's default: fields added after a state file was written are
/// left out while they hold it, so an older rollout writes back as it was read.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Reads a map keyed by integers (answers per class, per value bucket) whether its keys come
/// as strings, as JSON writes them, or as numbers. serde turns string keys back into integers
/// only when it reads the map directly: inside a `#[serde(flatten)]` struct (the admin API's
/// rollout view) it refuses them, so the CLI could not read a rollout that had answers.
pub(crate) fn int_keys<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Ord + std::str::FromStr + TryFrom<i64> + TryFrom<u64>,
    V: Deserialize<'de>,
{
    struct Key<K>(K);
    impl<'de, K: std::str::FromStr + TryFrom<i64> + TryFrom<u64>> Deserialize<'de> for Key<K> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit<K>(std::marker::PhantomData<K>);
            impl<K: std::str::FromStr + TryFrom<i64> + TryFrom<u64>> serde::de::Visitor<'_> for Visit<K> {
                type Value = Key<K>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an integer, or a string holding one")
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Key<K>, E> {
                    K::try_from(v)
                        .map(Key)
                        .map_err(|_| E::custom(format!("{v} is out of range")))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Key<K>, E> {
                    K::try_from(v)
                        .map(Key)
                        .map_err(|_| E::custom(format!("{v} is out of range")))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<K>, E> {
                    v.parse()
                        .map(Key)
                        .map_err(|_| E::custom(format!("'{v}' is not an integer")))
                }
            }
            d.deserialize_any(Visit(std::marker::PhantomData))
        }
    }
    struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K, V> serde::de::Visitor<'de> for Entries<K, V>
    where
        K: Ord + std::str::FromStr + TryFrom<i64> + TryFrom<u64>,
        V: Deserialize<'de>,
    {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map keyed by integers")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((Key(k), v)) = map.next_entry::<Key<K>, V>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Entries(std::marker::PhantomData))
}

/// One rollout of one model: everything the state machine needs to take its next step, kept
/// as JSON in the state file (or a resource's status) so a restart continues where it stood.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rollout {
    /// The rollout's number in the state file, which the API and the audit log name it by.
    pub id: i64,
    /// The model being rolled out.
    pub model: String,
    /// The candidate's version.
    pub version: String,
    /// The version live when the rollout began, and its slot.
    pub old_version: Option<String>,
    /// The slot live when the rollout began; the candidate takes the other one.
    pub old: Color,
    /// The settings, fixed when the rollout starts so a config change cannot alter it midway.
    pub settings: RolloutSettings,
    /// Where the rollout stands.
    pub phase: Phase,
    /// When the phase began.
    pub since_ms: i64,
    /// When the rollout began.
    pub started_ms: i64,
    /// The traffic the rollout wants now; a restart publishes it again before anything else.
    pub route: Route,
    /// Failing checks in a row, per rule.
    pub strikes: Strikes,
    /// Blue's p95 before the switch (request-weighted mean of its per-check p95s).
    pub baseline_p95_ms: Option<f64>,
    /// The requests the baseline rests on, to weigh the next check's p95 against it.
    pub baseline_requests: u64,
    /// The old version's traffic before the switch (and beside a canary), for the rules.
    #[serde(default, skip_serializing_if = "is_default")]
    pub baseline: Baseline,
    /// The evidence since the watched phase (the bake, or the canary step) began.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tally: Tally,
    /// How many times the watched phase's window was lengthened for want of evidence.
    #[serde(default, skip_serializing_if = "is_default")]
    pub extended: u32,
    /// The last check's rule outcomes, for status displays.
    pub last_check: Vec<RuleOutcome>,
    /// Why the rollout ended, when it has.
    pub outcome: Option<EndReason>,
    /// While it waits for an operator (approval, or a held canary step): why, and what to
    /// do, so every place that shows the rollout can say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl Rollout {
    /// A new rollout of `version` onto the standby slot of a model whose live slot is `old`.
    /// Its first effects deploy the candidate.
    // Each argument is a field the rollout is born with; a builder would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: i64,
        model: &str,
        version: &str,
        old: Color,
        old_version: Option<String>,
        settings: RolloutSettings,
        actor: &str,
        now_ms: i64,
    ) -> (Rollout, Vec<Effect>) {
        let rollout = Rollout {
            id,
            model: model.to_string(),
            version: version.to_string(),
            old_version,
            old,
            settings,
            phase: Phase::Deploying,
            since_ms: now_ms,
            started_ms: now_ms,
            route: Route::all_on(old),
            strikes: Strikes::default(),
            baseline_p95_ms: None,
            baseline_requests: 0,
            baseline: Baseline::default(),
            tally: Tally::default(),
            extended: 0,
            last_check: Vec::new(),
            outcome: None,
            waiting: None,
        };
        let record = Effect::Record(Transition {
            from: "none".into(),
            to: Phase::Deploying.name().into(),
            cause: format!(
                "rollout of {version} started ({})",
                rollout.settings.strategy.name()
            ),
            actor: actor.to_string(),
        });
        (rollout, vec![record, Effect::Deploy])
    }

    /// The candidate's slot.
    pub fn new_slot(&self) -> Color {
        self.old.other()
    }

    /// When the phase's timer fires, if it has one. A phase held for an operator has none.
    pub fn deadline_ms(&self) -> Option<i64> {
        let s = &self.settings;
        if self.waiting.is_some() && matches!(self.phase, Phase::Canary { .. } | Phase::Observing) {
            return None;
        }
        match &self.phase {
            Phase::SwitchDelay { at_ms } => Some(*at_ms),
            Phase::Canary { step } => self
                .steps()
                .get(*step)
                .and_then(|st| st.pause_ms)
                .map(|p| self.since_ms + p as i64),
            Phase::Observing => Some(self.since_ms + s.observe_ms as i64),
            Phase::Promoted => Some(self.since_ms + s.keep_warm_ms as i64),
            _ => None,
        }
    }

    fn steps(&self) -> &[CanaryStep] {
        match &self.settings.strategy {
            Strategy::Canary { steps } => steps,
            _ => &[],
        }
    }
}
