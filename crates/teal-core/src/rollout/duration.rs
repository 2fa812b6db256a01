//! Durations as people write them in settings (`"30s"`, `"5m"`, `"manual"`).

use serde::{Deserialize, Deserializer};

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"` (or a bare number of milliseconds).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write like 500ms, 30s, 5m, 2h or 7d"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}': use ms, s, m, h or d"
            ));
        }
    };
    Ok((n * scale).round() as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Ms(u64),
    Text(String),
}

pub(super) fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match DurationText::deserialize(d)? {
        DurationText::Ms(ms) => Ok(ms),
        DurationText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub(super) fn pause<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<DurationText>::deserialize(d)? {
        None => Ok(None),
        Some(DurationText::Ms(ms)) => Ok(Some(ms)),
        Some(DurationText::Text(t)) if t.trim() == "manual" => Ok(None),
        Some(DurationText::Text(t)) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}
