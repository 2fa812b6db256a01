//! The paired statistics agree with scipy on the committed fixtures (made by
//! `tests/fixtures/make_paired.py`). Tolerance: 1e-9 absolute, for statistics, p-values
//! and scores, as `stats_fixtures.rs`. A null in the fixtures is scipy's NaN.

use serde_json::Value;
use teal_core::stats::{self, Alternative, Paired, ScoringRule, SignedRankMethod};

const TOLERANCE: f64 = 1e-9;

fn close(name: &str, what: &str, got: f64, want: &Value) {
    match want.as_f64() {
        Some(want) => assert!(
            (got - want).abs() <= TOLERANCE,
            "{name} {what}: teal {got}, scipy {want}"
        ),
        None => assert!(got.is_nan(), "{name} {what}: teal {got}, scipy NaN"),
    }
}

fn fixtures() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/paired.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn signed_rank_matches_scipy_wilcoxon() {
    let fixtures = fixtures();
    let cases = fixtures["signed_rank"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut exact_cases = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let differences = numbers(&case["differences"]);
        for (key, method) in [
            ("asymptotic", SignedRankMethod::Normal),
            ("exact", SignedRankMethod::Exact),
        ] {
            let want = &case[key];
            if want.is_null() {
                continue;
            }
            let test = stats::signed_rank(&differences, method);
            if test.n > 0 {
                assert_eq!(test.method, method, "{name} {key}");
            }
            exact_cases += usize::from(method == SignedRankMethod::Exact);
            let what = |side: &str, part: &str| format!("{key} {side} {part}");
            close(
                name,
                &what("two-sided", "statistic"),
                test.two_sided_statistic(),
                &want["two_sided"][0],
            );
            close(
                name,
                &what("two-sided", "p"),
                test.p_value(Alternative::TwoSided),
                &want["two_sided"][1],
            );
            close(
                name,
                &what("greater", "statistic"),
                test.r_plus,
                &want["greater"][0],
            );
            close(
                name,
                &what("greater", "p"),
                test.p_value(Alternative::Greater),
                &want["greater"][1],
            );
            close(name, &what("less", "p"), test.p_less, &want["less"][1]);
        }
    }
    assert!(exact_cases >= 4);
}

#[test]
fn mcnemar_matches_scipy_binomtest() {
    let fixtures = fixtures();
    let cases = fixtures["mcnemar"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let (b, c) = (case["b"].as_u64().unwrap(), case["c"].as_u64().unwrap());
        let name = format!("b={b} c={c}");
        let test = stats::mcnemar(b, c);
        close(&name, "two-sided", test.p_two_sided, &case["two_sided"]);
        close(&name, "greater", test.p_candidate_better, &case["greater"]);
        close(&name, "less", test.p_candidate_worse, &case["less"]);
    }
}

#[test]
fn scores_and_their_comparison_match_numpy_and_scipy() {
    let fixtures = fixtures();
    let cases = fixtures["scoring"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let margin = case["margin"].as_f64().unwrap();
        let truth: Vec<usize> = case["true_class"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let probabilities = |key: &str| -> Vec<Vec<f64>> {
            case[key].as_array().unwrap().iter().map(numbers).collect()
        };
        let (live, candidate) = (probabilities("live"), probabilities("candidate"));
        for (key, rule) in [
            ("brier", ScoringRule::Brier),
            ("log_loss", ScoringRule::LogLoss),
        ] {
            let want = &case[key];
            let scores: Vec<Paired<f64>> = (0..truth.len())
                .map(|row| Paired {
                    candidate: rule.score(&candidate[row], truth[row]).unwrap(),
                    live: rule.score(&live[row], truth[row]).unwrap(),
                })
                .collect();
            for (row, (score, (want_candidate, want_live))) in scores
                .iter()
                .zip(
                    numbers(&want["candidate"])
                        .into_iter()
                        .zip(numbers(&want["live"])),
                )
                .enumerate()
            {
                let what = format!("{key} row {row}");
                close(name, &what, score.candidate, &Value::from(want_candidate));
                close(name, &what, score.live, &Value::from(want_live));
            }
            let comparison = stats::compare_scores(&scores, margin);
            assert_eq!(comparison.rows, truth.len());
            close(
                name,
                &format!("{key} mean live"),
                comparison.mean_live,
                &want["mean_live"],
            );
            close(
                name,
                &format!("{key} mean candidate"),
                comparison.mean_candidate,
                &want["mean_candidate"],
            );
            close(
                name,
                &format!("{key} mean difference"),
                comparison.mean_difference,
                &want["mean_difference"],
            );
            close(
                name,
                &format!("{key} p"),
                comparison.p_value,
                &want["p_greater"],
            );
        }
    }
}
