//! Which slot answers a request.
//!
//! A [`RouteTable`] is an immutable value: the gateway publishes a new one with a single
//! atomic store, so every request sees one whole table, never half of an update.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Basis points in one whole: weights are fine-grained (0.01 %) so a canary can start small.
pub const WHOLE: u32 = 10_000;

/// One of the two slots a model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// One slot; live at start-up unless the config sets `live`.
    Blue,
    /// The other slot; the two take turns holding the live version and the candidate.
    Green,
}

impl Color {
    /// The other slot: the standby when this one is live.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The name the config, the admin API and the `x-teal-slot` header use.
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    /// Index into a two-element array of per-slot values.
    pub fn index(self) -> usize {
        match self {
            Color::Blue => 0,
            Color::Green => 1,
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a slot name that is neither `blue` nor `green`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown slot '{0}': use blue or green")]
pub struct UnknownColor(pub String);

impl FromStr for Color {
    type Err = UnknownColor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            _ => Err(UnknownColor(s.to_string())),
        }
    }
}

/// The traffic policy of one model at one moment. It is an immutable value, replaced whole,
/// so no request ever sees one field of an update without the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// The slot that serves traffic.
    pub active: Color,
    /// Share of requests sent to the standby slot (the candidate), in basis points.
    pub candidate_weight: u32,
    /// Share of live requests copied to the standby slot as shadows, in basis points.
    pub shadow: u32,
    /// Whether a caller may pick a slot with the `x-teal-slot` header (A/B testing, probes).
    pub header_override: bool,
    /// Counts publications: each new table of a model has a higher generation than the last.
    pub generation: u64,
    /// The slot that answers a request the table sent to the other slot when that one fails
    /// with a server error or a timeout (the old version, while a rollout watches the new).
    #[serde(default)]
    pub fallback: Option<Color>,
    /// Share of requests copied as a pair to both slots for a rollout's concurrent baseline,
    /// in basis points.
    #[serde(default)]
    pub baseline: u32,
}

impl RouteTable {
    /// All traffic on `active`, nothing to the candidate.
    pub fn all_on(active: Color) -> Self {
        RouteTable {
            active,
            candidate_weight: 0,
            shadow: 0,
            header_override: true,
            generation: 1,
            fallback: None,
            baseline: 0,
        }
    }

    /// The table after a switch: everything on `to`, the canary weight reset.
    pub fn switched(&self, to: Color) -> Self {
        RouteTable {
            active: to,
            candidate_weight: 0,
            generation: self.generation + 1,
            fallback: None,
            baseline: 0,
            ..self.clone()
        }
    }

    /// The candidate slot: the one that is not active.
    pub fn candidate(&self) -> Color {
        self.active.other()
    }

    /// Picks the slot for one request.
    ///
    /// `bucket` places the request in `0..WHOLE`: a hash of its session key for sticky
    /// sessions (so a session stays on one slot while the weight holds, and moves only
    /// when the weight passes its bucket), or a random number otherwise.
    pub fn choose(&self, requested: Option<Color>, bucket: u32) -> Color {
        if let Some(color) = requested.filter(|_| self.header_override) {
            return color;
        }
        if bucket % WHOLE < self.candidate_weight.min(WHOLE) {
            self.candidate()
        } else {
            self.active
        }
    }
}

/// Maps a session key to a bucket in `0..WHOLE` (FNV-1a: stable across processes and
/// releases, unlike the standard library's randomly seeded hasher).
pub fn session_bucket(key: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(WHOLE)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_zero_sends_nothing_to_the_candidate() {
        let table = RouteTable::all_on(Color::Blue);
        assert!((0..WHOLE).all(|b| table.choose(None, b) == Color::Blue));
    }

    #[test]
    fn full_weight_sends_everything_to_the_candidate() {
        let table = RouteTable {
            candidate_weight: WHOLE,
            ..RouteTable::all_on(Color::Blue)
        };
        assert!((0..WHOLE).all(|b| table.choose(None, b) == Color::Green));
    }

    #[test]
    fn weight_is_honoured_exactly_over_all_buckets() {
        let table = RouteTable {
            candidate_weight: 250,
            ..RouteTable::all_on(Color::Green)
        };
        let to_blue = (0..WHOLE)
            .filter(|b| table.choose(None, *b) == Color::Blue)
            .count();
        assert_eq!(to_blue, 250);
    }

    #[test]
    fn a_sticky_session_moves_only_when_the_weight_passes_its_bucket() {
        let bucket = session_bucket(b"user-42");
        let mut previous = Color::Blue;
        let mut moves = 0;
        for weight in (0..=WHOLE).step_by(100) {
            let table = RouteTable {
                candidate_weight: weight,
                ..RouteTable::all_on(Color::Blue)
            };
            let chosen = table.choose(None, bucket);
            if chosen != previous {
                moves += 1;
                assert!(
                    weight > bucket,
                    "moved at weight {weight} below bucket {bucket}"
                );
            }
            previous = chosen;
        }
        assert_eq!(moves, 1);
    }

    #[test]
    fn header_override_wins_only_when_allowed() {
        let mut table = RouteTable::all_on(Color::Blue);
        assert_eq!(table.choose(Some(Color::Green), 0), Color::Green);
        table.header_override = false;
        assert_eq!(table.choose(Some(Color::Green), 0), Color::Blue);
    }

    #[test]
    fn switching_bumps_the_generation_and_clears_the_canary() {
        let table = RouteTable {
            candidate_weight: 500,
            ..RouteTable::all_on(Color::Blue)
        };
        let next = table.switched(Color::Green);
        assert_eq!(next.active, Color::Green);
        assert_eq!(next.candidate_weight, 0);
        assert_eq!(next.generation, table.generation + 1);
    }

    #[test]
    fn session_bucket_is_stable_and_in_range() {
        assert_eq!(session_bucket(b"abc"), session_bucket(b"abc"));
        assert!(session_bucket(b"") < WHOLE);
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; the bucket is that modulo 10 000.
        assert_eq!(
            session_bucket(b"a"),
            (0xaf63_dc4c_8601_ec8c_u64 % 10_000) as u32
        );
    }

    #[test]
    fn colors_parse_leniently_and_reject_others() {
        assert_eq!(" Green ".parse::<Color>(), Ok(Color::Green));
        assert!("red".parse::<Color>().is_err());
    }
}
