//! Every statistic agrees with scipy on the committed fixtures (made by
//! `tests/fixtures/make_stats.py`). Tolerance: 1e-9 absolute, for statistics and p-values.

use teal_core::stats::{self, Alternative};

const TOLERANCE: f64 = 1e-9;

fn close(name: &str, what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOLERANCE,
        "{name} {what}: teal {got}, scipy {want}"
    );
}

#[test]
fn statistics_match_scipy_on_the_fixtures() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stats.json"
    ))
    .unwrap();
    let fixtures: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = fixtures["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let sample = |key: &str| -> Vec<f64> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        let (a, b) = (sample("a"), sample("b"));
        let want = |key: &str| case[key].as_f64().unwrap();
        close(
            name,
            "wasserstein",
            stats::wasserstein(&a, &b),
            want("wasserstein"),
        );
        close(
            name,
            "normed wasserstein",
            stats::normed_wasserstein(&a, &b),
            want("normed_wasserstein"),
        );
        close(name, "psi", stats::psi(&a, &b, 10), want("psi"));
        let ks = stats::ks_two_sample(&a, &b);
        close(name, "ks statistic", ks.statistic, want("ks_statistic"));
        close(name, "ks p-value", ks.p_value, want("ks_p_asymptotic"));
        close(
            name,
            "jensen-shannon",
            stats::jensen_shannon(&a, &b, 10),
            want("jensen_shannon"),
        );
        for (key, alternative) in [
            ("mwu_two_sided", Alternative::TwoSided),
            ("mwu_greater", Alternative::Greater),
        ] {
            let mw = stats::mann_whitney(&a, &b, alternative);
            close(
                name,
                &format!("{key} U"),
                mw.u,
                case[key][0].as_f64().unwrap(),
            );
            close(
                name,
                &format!("{key} p"),
                mw.p_value,
                case[key][1].as_f64().unwrap(),
            );
        }
        close(
            name,
            "quantile 95",
            stats::quantile(&a, 0.95),
            want("quantile_95"),
        );
    }
}
