//! Times as the store and the API show them: milliseconds since the epoch, written as
//! RFC 3339 UTC with milliseconds (`2026-12-04T03:53:28.348Z`).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
pub fn format_time(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// Parses an RFC 3339 UTC time (`2026-11-22T01:02:03Z`, fractions allowed) or epoch milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if !text.is_ascii() || text.len() < 20 {
        return None;
    }
    // RFC 3339: a date, `T`, a clock with optional fraction, then `Z` or an offset.
    let (date, rest) = (&text[..10], &text[10..]);
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, offset_ms) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let split = rest.len().checked_sub(6)?;
        let (clock, offset) = rest.split_at(split);
        let sign = match offset.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (oh, om) = offset[1..].split_once(':')?;
        let (oh, om) = (number(oh, 2)?, number(om, 2)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (clock, sign * (oh * 3_600_000 + om * 60_000))
    };
    let mut d = date.split('-');
    let (year, month, day) = (
        number(d.next()?, 4)?,
        number(d.next()?, 2)?,
        number(d.next()?, 2)?,
    );
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = clock.split(':');
    let (h, m, s) = (
        number(t.next()?, 2)?,
        number(t.next()?, 2)?,
        number(t.next()?, 2)?,
    );
    if t.next().is_some() || d.next().is_some() || fraction.is_empty() {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400_000 + h * 3_600_000 + m * 60_000 + s * 1000 + millis - offset_ms)
}

/// A field of exactly `digits` ASCII digits.
fn number(text: &str, digits: usize) -> Option<i64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc_3339_says_and_nothing_else() {
        let utc = parse_time("2026-11-22T01:02:03Z").unwrap();
        assert_eq!(parse_time("2026-11-22T01:02:03.000Z"), Some(utc));
        assert_eq!(parse_time("2026-11-22t01:02:03z"), Some(utc));
        assert_eq!(parse_time("2026-11-22T02:02:03+01:00"), Some(utc));
        assert_eq!(parse_time("2026-11-21T23:02:03-02:00"), Some(utc));
        assert_eq!(parse_time("2026-11-22T01:02:03.5Z"), Some(utc + 500));
        assert_eq!(
            parse_time("2026-11-22T01:02:03.123456789Z"),
            Some(utc + 123)
        );
        assert_eq!(parse_time(&utc.to_string()), Some(utc));
        for bad in [
            "",
            "yesterday",
            "2026-11-22",
            "2026-11-22T01:02:03",
            "2026-13-22T01:02:03Z",
            "2026-11-22T24:02:03Z",
            "2026-11-22T01:02:03.Z",
            "2026-11-22T01:02:03.a\u{20ac}Z",
            "2026-11-22T01:02:03.\u{20ac}\u{20ac}Z",
            "\u{20ac}026-11-22T01:02:03Z",
            "2026-11-22T01:02:03+1:000",
            "+026-11-22T01:02:03Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip() {
        for ms in [0, 1_763_773_323_456, 951_782_400_000] {
            assert_eq!(
                parse_time(&format_time(ms)),
                Some(ms),
                "{}",
                format_time(ms)
            );
        }
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(
            parse_time("2026-11-22T01:02:03.5Z"),
            Some(parse_time("2026-11-22T01:02:03Z").unwrap() + 500)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
