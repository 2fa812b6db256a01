//! Keeps repeated log lines from flooding the log. A version that fails every request fails
//! thousands a second; one line per failure would bury everything else (and cost the disk
//! and the log shipper as much as the serving). Lines are grouped by a key (for failed
//! requests: model, version and kind of failure): the first of a group is logged at once,
//! the rest within `interval` are counted, and the next one after it is logged with how many
//! were held back and the first of them as an example. When no next one comes, [`due`]
//! hands the count over once the interval is past, for a summary line of its own. So a group
//! writes at most one line per interval, every line held back is counted in one, and no kind
//! of failure hides another.
//!
//! [`due`]: LogThrottle::due

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
    /// Write it, saying what was held back since the group's last line.
    LogWithHeld(Held),
    /// Count it, write nothing.
    Quiet,
}

/// Lines held back: how many, over how long (since the group's last line), and the first.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub count: u64,
    pub over: Duration,
    pub example: String,
}

impl<K: Hash + Eq + Clone> LogThrottle<K> {
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
            return match group.take(now) {
                Some(held) => Verdict::LogWithHeld(held),
                None => Verdict::Log,
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

    /// The groups that have held lines back for a whole interval since their last line, with
    /// what they held, for a summary line each (as if a line of theirs was written now).
    /// Groups quiet for an interval are forgotten: their next line is written at once.
    pub fn due(&self) -> Vec<(K, Held)> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Vec<(K, Held)> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        groups.retain(|key, group| {
            if now.saturating_duration_since(group.logged_at) < self.interval {
                return true;
            }
            match group.take(now) {
                Some(held) => {
                    due.push((key.clone(), held));
                    true
                }
                None => false,
            }
        });
        due
    }
}

impl Group {
    /// What was held back, if anything; the group starts over from `now`.
    fn take(&mut self, now: Instant) -> Option<Held> {
        let count = std::mem::take(&mut self.held);
        let example = self.example.take();
        let over = now.saturating_duration_since(self.logged_at);
        self.logged_at = now;
        match example {
            Some(example) if count > 0 => Some(Held {
                count,
                over,
                example,
            }),
            _ => None,
        }
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
            Verdict::LogWithHeld(Held {
                count: 3,
                over: 12 * SECOND,
                example: "a1".into()
            })
        );
        assert_eq!(
            throttle.check_at("a", at(13), || "a5".into()),
            Verdict::Quiet
        );
        // Nothing held since the last line: a plain line.
        assert_eq!(throttle.check_at("b", at(20), || "b".into()), Verdict::Log);
    }

    #[test]
    fn lines_held_when_none_follow_are_handed_over_once_their_interval_is_past() {
        let throttle = LogThrottle::new(10 * SECOND);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        throttle.check_at("a", at(0), || "a0".into());
        throttle.check_at("a", at(1), || "a1".into());
        throttle.check_at("a", at(2), || "a2".into());
        throttle.check_at("b", at(5), || "b0".into());
        assert_eq!(throttle.due_at(at(9)), vec![]);
        assert_eq!(
            throttle.due_at(at(11)),
            vec![(
                "a",
                Held {
                    count: 2,
                    over: 11 * SECOND,
                    example: "a1".into()
                }
            )]
        );
        // Handed over once: the next interval starts at the summary.
        assert_eq!(throttle.due_at(at(16)), vec![]);
        assert_eq!(
            throttle.check_at("a", at(17), || "a3".into()),
            Verdict::Quiet
        );
        assert_eq!(throttle.due_at(at(21)).len(), 1);
        // Quiet groups are forgotten, and their next line is written at once.
        assert_eq!(throttle.due_at(at(40)), vec![]);
        assert_eq!(throttle.groups.lock().unwrap().len(), 0);
        assert_eq!(throttle.check_at("a", at(41), || "a4".into()), Verdict::Log);
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
