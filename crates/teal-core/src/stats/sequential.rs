//! Anytime-valid sequential tests: evidence that may be read after every request and acted
//! on the moment it is strong enough, without the false alarms that repeating a fixed-sample
//! test brings (peeking).
//!
//! Each test is an e-process: a number that starts at 1 and, while the null hypothesis
//! holds, stays a nonnegative supermartingale, so by Ville's inequality the chance that it
//! *ever* reaches `1 / alpha` is at most `alpha`, however often it is looked at and whenever
//! the looking stops. This is the approach of Lindon, Sanden and Shirikian, "Rapid
//! Regression Detection in Software Deployments through Sequential Testing" (KDD 2022),
//! applied to counts:
//!
//! - [`exceedance`]: H0 "at most a share `p0` of trials succeed" against "more do", for
//!   Bernoulli trials (a request failed; a request was slower than a limit; a pair of
//!   answers disagreed). The alternative is a mixture over a fixed grid of shares above
//!   `p0`, each a likelihood ratio against `p0`; each is a supermartingale under any share
//!   at most `p0`, so their average is too. Only the counts are needed, so the evidence can be
//!   kept in a state file and resumed after a restart.
//! - A test of stochastic order on paired latencies is [`exceedance`] with `p0 = 1/2` on
//!   the indicator "the new version's time exceeds the old one's (times a ratio, plus a
//!   slack)": if the new version is not slower, that indicator holds in at most half the
//!   pairs.

/// Log-odds steps above the null share at which the mixture places its alternatives: dense
/// near the null (a 1% error rate against a limit of 1% is a step of 0.7) and reaching far
/// (a version that fails every request), so both small and gross regressions are found.
const LOG_ODDS_STEPS: [f64; 14] = [
    0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.5, 7.5, 10.0, 14.0,
];

/// The evidence against H0 "at most a share `p0` of the trials succeed" after `successes`
/// of `trials`: a mixture likelihood ratio, as its natural logarithm. Under H0 the chance it
/// ever exceeds `ln(1 / alpha)` is at most `alpha`.
///
/// `p0` is clamped into `[1e-9, 1 - 1e-9]`; with `p0` at 1 nothing is evidence.
pub fn exceedance(trials: u64, successes: u64, p0: f64) -> f64 {
    if trials == 0 || p0.is_nan() || p0 >= 1.0 {
        return 0.0;
    }
    let successes = successes.min(trials) as f64;
    let failures = trials as f64 - successes;
    let p0 = p0.clamp(1e-9, 1.0 - 1e-9);
    let logit0 = (p0 / (1.0 - p0)).ln();
    let terms: Vec<f64> = LOG_ODDS_STEPS
        .iter()
        .map(|step| {
            let p = 1.0 / (1.0 + (-(logit0 + step)).exp());
            successes * (p / p0).ln() + failures * ((1.0 - p) / (1.0 - p0)).ln()
        })
        .collect();
    log_mean_exp(&terms)
}

/// An upper confidence bound on a share, valid at every look at once: with chance at least
/// `1 - alpha`, the true share of successes is at most this after every trial. It is the
/// largest share `q` that [`exceedance`], applied to the failures (H0 "at most `1 - q` of
/// the trials fail"), does not reject; with no trials it is 1.
pub fn upper_bound(trials: u64, successes: u64, alpha: f64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    let successes = successes.min(trials);
    let failures = trials - successes;
    let bound = threshold(alpha);
    let (mut low, mut high) = (successes as f64 / trials as f64, 1.0);
    for _ in 0..40 {
        let q = (low + high) / 2.0;
        if exceedance(trials, failures, 1.0 - q) >= bound {
            high = q;
        } else {
            low = q;
        }
    }
    high
}

/// `ln(mean(exp(x)))`, without overflow.
fn log_mean_exp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = x.iter().map(|v| (v - max).exp()).sum();
    max + (sum / x.len() as f64).ln()
}

/// The evidence level at which a test with false-alarm bound `alpha` rejects, as a logarithm.
pub fn threshold(alpha: f64) -> f64 {
    (1.0 / alpha.clamp(1e-12, 1.0)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (SplitMix64), so the simulations are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Runs `runs` streams of `looks` batches of `batch` trials with success share `p`,
    /// looking after every batch; returns the share of streams that ever rejected, and the
    /// median trials to rejection among those that did.
    fn simulate(p: f64, p0: f64, alpha: f64, runs: usize, looks: usize, batch: u64) -> (f64, u64) {
        let mut rng = Rng(42);
        let mut rejected = Vec::new();
        for _ in 0..runs {
            let (mut n, mut k) = (0u64, 0u64);
            for _ in 0..looks {
                for _ in 0..batch {
                    n += 1;
                    if rng.next() < p {
                        k += 1;
                    }
                }
                if exceedance(n, k, p0) >= threshold(alpha) {
                    rejected.push(n);
                    break;
                }
            }
        }
        rejected.sort_unstable();
        let rate = rejected.len() as f64 / runs as f64;
        (rate, rejected.get(rejected.len() / 2).copied().unwrap_or(0))
    }

    #[test]
    fn looking_after_every_batch_keeps_false_alarms_under_alpha() {
        // At the null's edge (the worst case), with 400 looks per stream: a fixed-sample
        // test repeated this often would alarm far more often than alpha.
        for (p0, batch) in [(0.01, 50), (0.5, 5), (0.1, 20)] {
            let (rate, _) = simulate(p0, p0, 0.05, 400, 400, batch);
            assert!(rate <= 0.05, "p0 {p0}: false alarms in {rate} of streams");
        }
        // Well inside the null, almost never.
        let (rate, _) = simulate(0.0, 0.01, 0.01, 200, 200, 100);
        assert_eq!(rate, 0.0);
    }

    #[test]
    fn a_real_regression_is_found_and_a_gross_one_at_once() {
        // 2% errors against a 1% limit.
        let (rate, median) = simulate(0.02, 0.01, 0.01, 100, 400, 100);
        assert!(rate >= 0.95, "found in {rate}");
        assert!(median <= 10_000, "median {median} requests");
        // Every request failing: a couple of dozen requests are enough.
        let (rate, median) = simulate(1.0, 0.01, 0.01, 10, 100, 1);
        assert_eq!(rate, 1.0);
        assert!(median <= 10, "median {median}");
        // Every pair slower, against a share of one half.
        let (rate, median) = simulate(1.0, 0.5, 0.01, 10, 100, 1);
        assert_eq!(rate, 1.0);
        assert!(median <= 12, "median {median}");
    }

    #[test]
    fn the_upper_bound_holds_at_every_look_and_narrows_with_evidence() {
        // A share of 0.5%: the bound, read after every 50 trials, stays above it in at least
        // 1 - alpha of the streams.
        let mut rng = Rng(7);
        let (p, alpha, runs) = (0.005, 0.05, 300);
        let mut broken = 0;
        for _ in 0..runs {
            let (mut n, mut k) = (0u64, 0u64);
            for _ in 0..100 {
                for _ in 0..50 {
                    n += 1;
                    k += u64::from(rng.next() < p);
                }
                if upper_bound(n, k, alpha) < p {
                    broken += 1;
                    break;
                }
            }
        }
        assert!(broken as f64 / runs as f64 <= alpha, "{broken} of {runs}");
        assert_eq!(upper_bound(0, 0, 0.01), 1.0);
        let few = upper_bound(20, 0, 0.01);
        let many = upper_bound(5_000, 0, 0.01);
        assert!(few > 0.1 && few < 0.5, "{few}");
        assert!(many < 0.002, "{many}");
    }

    #[test]
    fn no_trials_or_an_impossible_null_give_no_evidence() {
        assert_eq!(exceedance(0, 0, 0.01), 0.0);
        assert_eq!(exceedance(100, 100, 1.0), 0.0);
        assert!(exceedance(100, 0, 0.01) < 0.0);
        assert!(exceedance(1_000_000, 1_000_000, 0.01).is_finite());
    }
}
