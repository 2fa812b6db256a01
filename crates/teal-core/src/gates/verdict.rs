//! The verdict every gate and every rollback rule ends with, and how several combine into one.

use super::names::wire_names;

/// A gate's (or a rollback rule's) verdict. Too little data is inconclusive, never a pass and
/// never a fail, so a quiet candidate is neither promoted nor rolled back on no evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The candidate met the threshold.
    Pass,
    /// The candidate missed the threshold: a rollout stops or rolls back.
    Fail,
    /// The evidence cannot tell: a rollout waits for an operator or for more data.
    Inconclusive,
}

wire_names!("verdict", Verdict {
    Pass => "pass",
    Fail => "fail",
    Inconclusive => "inconclusive",
});

impl Verdict {
    /// The verdict of several gates: any fail fails, else any inconclusive is inconclusive.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut overall = Verdict::Pass;
        for v in verdicts {
            match v {
                Verdict::Fail => return Verdict::Fail,
                Verdict::Inconclusive => overall = Verdict::Inconclusive,
                Verdict::Pass => {}
            }
        }
        overall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_combine_worst_first() {
        assert_eq!(
            Verdict::combine([Verdict::Pass, Verdict::Inconclusive]),
            Verdict::Inconclusive
        );
        assert_eq!(
            Verdict::combine([Verdict::Inconclusive, Verdict::Fail]),
            Verdict::Fail
        );
        assert_eq!(Verdict::combine([]), Verdict::Pass);
    }

    #[test]
    fn verdicts_are_written_in_lowercase_and_read_back() {
        let written: Vec<String> = Verdict::ALL
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        assert_eq!(written, [r#""pass""#, r#""fail""#, r#""inconclusive""#]);
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(*v));
            assert_eq!(v.to_string(), v.as_str());
        }
        let err = serde_json::from_str::<Verdict>(r#""passed""#).unwrap_err();
        assert!(
            err.to_string().contains("unknown verdict 'passed'"),
            "{err}"
        );
        assert_eq!(format!("{:<6}|", Verdict::Fail), "fail  |");
    }
}
