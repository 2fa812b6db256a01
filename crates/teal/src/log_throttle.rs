//! Keeps repeated log lines from flooding the log. A version that fails every request fails
//! thousands a second; one line per failure would bury everything else (and cost the disk
//! and the log shipper as much as the serving). Lines are grouped by a key (for failed
//! requests: model, version and kind of failure): the first of a group is logged at once,
//! the rest within `interval` are counted, and the next one after it is logged with how many
//! were held back and the first of them as an example. So a group writes at most one line
//! per interval, and no kind of failure hides another. (Failures that stop within an
//! interval are counted in the metrics, not in a later line.)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// More groups than this are not tracked: past it, groups quiet for an interval are
/// forgotten, and if none are, a new group's lines are all logged.
const MAX_GROUPS: usize = 4096;

/// Repeated lines, grouped by `K`, at most one per `interval` each.
pub struct LogThrottle<K> {
    interval: Duration,
    groups: Mutex<HashMap<K, Group>>,
}

struct Group {
    /// When the group's last line was written.
    logged_at: Instant,
    /// Lines held back since.
    held: u64,
    /// The first of them.
    example: Option<String>,
}

/// Whether to write a line now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Log,
    /// Write it, saying that `held` more like it were held back over `over`, the first of
    /// them `example`.
    LogWithHeld {
        held: u64,
        over: Duration,
        example: String,
    },
    /// Count it, write nothing.
    Quiet,
}

impl<K: Hash + Eq> LogThrottle<K> {
    pub fn new(interval: Duration) -> LogThrottle<K> {
        LogThrottle {
            interval,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line of group `key` is written now. `example` describes this occurrence;
    /// it is called only when the occurrence is the first one held back.
    pub fn check(&self, key: K, example: impl FnOnce() -> String) -> Verdict {
        self.check_at(key, Instant::now(), example)
    }

    fn check_at(&self, key: K, now: Instant, example: impl FnOnce() -> String) -> Verdict {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = groups.get_mut(&key) {
            let since = now.saturating_duration_since(group.logged_at);
            if since < self.interval {
                group.held += 1;
                if group.example.is_none() {
                    group.example = Some(example());
                }
                return Verdict::Quiet;
            }
            let held = std::mem::take(&mut group.held);
            let first = group.example.take();
            group.logged_at = now;
            return match first {
                Some(example) if held > 0 => Verdict::LogWithHeld {
                    held,
                    over: since,
                    example,
                },
                _ => Verdict::Log,
            };
        }
        if groups.len() >= MAX_GROUPS {
            let interval = self.interval;
            groups.retain(|_, g| now.saturating_duration_since(g.logged_at) < interval);
            if groups.len() >= MAX_GROUPS {
                return Verdict::Log;
            }
        }
        groups.insert(
            key,
            Group {
                logged_at: now,
                held: 0,
                example: None,
            },
        );
        Verdict::Log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_group_and_interval_then_a_summary_with_the_first_held() {
        let throttle = LogThrottle::new(10 * SECOND);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(throttle.check_at("a", at(0), || "a0".into()), Verdict::Log);
        for (i, s) in [1, 2, 9].into_iter().enumerate() {
            let check = throttle.check_at("a", at(s), || format!("a{}", i + 1));
            assert_eq!(check, Verdict::Quiet);
        }
        // Another group is not held back by the first.
        assert_eq!(throttle.check_at("b", at(3), || "b".into()), Verdict::Log);
        assert_eq!(
            throttle.check_at("a", at(12), || "a4".into()),
            Verdict::LogWithHeld {
                held: 3,
                over: 12 * SECOND,
                example: "a1".into()
            }
        );
        assert_eq!(
            throttle.check_at("a", at(13), || "a5".into()),
            Verdict::Quiet
        );
        // Nothing held since the last line: a plain line.
        assert_eq!(throttle.check_at("b", at(20), || "b".into()), Verdict::Log);
    }

    #[test]
    fn groups_are_bounded() {
        let throttle = LogThrottle::new(SECOND);
        let start = Instant::now();
        for key in 0..MAX_GROUPS {
            assert_eq!(throttle.check_at(key, start, String::new), Verdict::Log);
        }
        // All recent: a new group is logged, not tracked.
        assert_eq!(
            throttle.check_at(MAX_GROUPS, start, String::new),
            Verdict::Log
        );
        assert_eq!(
            throttle.check_at(MAX_GROUPS, start, String::new),
            Verdict::Log
        );
        // Once they are quiet, they are forgotten and the new one is tracked.
        let later = start + 2 * SECOND;
        assert_eq!(
            throttle.check_at(MAX_GROUPS, later, String::new),
            Verdict::Log
        );
        assert_eq!(
            throttle.check_at(MAX_GROUPS, later, String::new),
            Verdict::Quiet
        );
    }
}
