//! Times as the store and the API show them: milliseconds since the epoch, written as
//! RFC 3339 UTC with milliseconds (`2026-12-04T03:53:28.348Z`). Existing state files, audit
//! output and scripts read this exact shape, so it must not drift.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::SignedDuration;
use jiff::civil::DateTime;
use jiff::fmt::temporal::{DateTimeParser, DateTimePrinter};

/// Always three fraction digits, even `.000`, so every time has the same width.
const PRINTER: DateTimePrinter = DateTimePrinter::new().precision(Some(3));
const PARSER: DateTimeParser = DateTimeParser::new();

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the epoch as an RFC 3339 UTC time. The civil (UTC) time spans years
/// 0000 to 9999 whole; a time beyond that range is shown as its nearest end.
pub fn format_time(ms: i64) -> String {
    const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    let mut text =
        PRINTER.datetime_to_string(&EPOCH.saturating_add(SignedDuration::from_millis(ms)));
    text.push('Z');
    text
}

/// Parses an RFC 3339 time (`2026-11-22T01:02:03Z`, fractions and offsets allowed) or epoch
/// milliseconds. A time without an offset is refused: it names no instant.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    PARSER
        .parse_timestamp(text)
        .ok()
        .map(|at| at.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text the store wrote before it used a time library, for instants across the
    /// range: the format is part of the state file and the audit output, byte for byte.
    #[test]
    fn times_format_exactly_as_before() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (999, "1970-01-01T00:00:00.999Z"),
            (1_796_356_408_348, "2026-12-04T03:53:28.348Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (1_763_773_323_456, "2025-11-22T01:02:03.456Z"),
            (1_700_000_000_050, "2023-11-14T22:13:20.050Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-86_400_001, "1969-12-30T23:59:59.999Z"),
        ] {
            assert_eq!(format_time(ms), text, "{ms}");
        }
    }

    #[test]
    fn times_parse_as_rfc_3339_says_and_nothing_else() {
        let utc = parse_time("2026-11-22T01:02:03Z").unwrap();
        assert_eq!(utc, 1_795_309_323_000);
        assert_eq!(parse_time("2026-11-22T01:02:03.000Z"), Some(utc));
        assert_eq!(parse_time("2026-11-22t01:02:03z"), Some(utc));
        assert_eq!(parse_time("2026-11-22 01:02:03Z"), Some(utc));
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
        for ms in [0, 1_763_773_323_456, 951_782_400_000, -1] {
            assert_eq!(
                parse_time(&format_time(ms)),
                Some(ms),
                "{}",
                format_time(ms)
            );
        }
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
