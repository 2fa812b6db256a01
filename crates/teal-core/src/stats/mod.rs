//! Statistics the gates use to compare blue and green, checked against scipy's values on
//! committed fixtures (`tests/fixtures/stats.json`, made by `tests/fixtures/make_stats.py`).
//!
//! - Wasserstein-1 distance between two samples, and its normed form (divided by the
//!   reference sample's standard deviation, so one threshold fits any score scale).
//! - Population stability index over the reference's deciles.
//! - Two-sample Kolmogorov-Smirnov statistic with the asymptotic p-value.
//! - Jensen-Shannon distance (base 2) between the two samples' histograms.
//! - Mann-Whitney U with the normal approximation (tie and continuity corrected).
//!
//! [`paired`] holds the statistics for paired evidence, where each input went to both
//! versions at once: Wilcoxon's signed-rank test, McNemar's test, a bootstrap interval of
//! a latency quantile ratio, and proper scoring rules (checked against
//! `tests/fixtures/paired.json`, made by `tests/fixtures/make_paired.py`).
//!
//! [`sequential`] holds the anytime-valid tests the rollback rules read after the switch,
//! which may be looked at after every check without raising their false-alarm rate.

pub mod paired;
pub mod sequential;
pub mod values;

pub use paired::{
    BootstrapError, BootstrapOptions, CorrectnessTally, LOG_LOSS_EPSILON, McNemar, Paired,
    RatioInterval, SIGNED_RANK_EXACT_MAX, ScoreComparison, ScoreError, ScoringRule, SignedRank,
    SignedRankMethod, bootstrap_quantile_ratio, brier_score, compare_scores, log_loss, mcnemar,
    signed_rank, tally_correctness,
};

/// Arithmetic mean; 0 for an empty sample.
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// Population standard deviation (numpy's default, ddof = 0).
pub fn std_dev(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

fn sorted(x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile (0..=1) with linear interpolation, as numpy's default.
pub fn quantile(x: &[f64], q: f64) -> f64 {
    let s = sorted(x);
    quantile_sorted(&s, q)
}

fn quantile_sorted(s: &[f64], q: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    let position = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    s[low] + (s[high] - s[low]) * (position - low as f64)
}

/// Fraction of `sorted` that is `<= value`.
fn cdf(sorted: &[f64], value: f64) -> f64 {
    sorted.partition_point(|v| *v <= value) as f64 / sorted.len() as f64
}

/// The first Wasserstein distance between two samples (scipy's `wasserstein_distance`).
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (sa, sb) = (sorted(a), sorted(b));
    let mut all: Vec<f64> = sa.iter().chain(&sb).copied().collect();
    all.sort_by(f64::total_cmp);
    all.windows(2)
        .map(|w| (cdf(&sa, w[0]) - cdf(&sb, w[0])).abs() * (w[1] - w[0]))
        .sum()
}

/// Wasserstein distance divided by the reference's standard deviation; 0 when both are
/// constant and equal, infinite when only the reference is constant.
pub fn normed_wasserstein(reference: &[f64], current: &[f64]) -> f64 {
    let distance = wasserstein(reference, current);
    let spread = std_dev(reference);
    if spread > 0.0 {
        distance / spread
    } else if distance == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Population stability index over `bins` quantile bins of the reference (empty bins count
/// as 0.0001 so the logarithm stays finite).
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> f64 {
    if reference.is_empty() || current.is_empty() {
        return f64::NAN;
    }
    let s = sorted(reference);
    let mut edges: Vec<f64> = (1..bins)
        .map(|i| quantile_sorted(&s, i as f64 / bins as f64))
        .collect();
    edges.dedup();
    let share = |sample: &[f64]| -> Vec<f64> {
        let mut counts = vec![0usize; edges.len() + 1];
        for v in sample {
            counts[edges.partition_point(|e| e < v)] += 1;
        }
        counts
            .iter()
            .map(|c| (*c as f64 / sample.len() as f64).max(1e-4))
            .collect()
    };
    let (r, c) = (share(reference), share(current));
    r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum()
}

/// A two-sample Kolmogorov-Smirnov result.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KolmogorovSmirnov {
    /// The largest distance between the two empirical distribution functions.
    pub statistic: f64,
    /// The asymptotic p-value of the statistic.
    pub p_value: f64,
}

/// Two-sample KS: the largest gap between the empirical CDFs, with the p-value of the
/// asymptotic Kolmogorov distribution at `sqrt(n*m/(n+m)) * D` (scipy's `kstwobign`).
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> KolmogorovSmirnov {
    if a.is_empty() || b.is_empty() {
        return KolmogorovSmirnov {
            statistic: f64::NAN,
            p_value: f64::NAN,
        };
    }
    let (sa, sb) = (sorted(a), sorted(b));
    let statistic = sa
        .iter()
        .chain(&sb)
        .map(|v| (cdf(&sa, *v) - cdf(&sb, *v)).abs())
        .fold(0.0, f64::max);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let z = (n * m / (n + m)).sqrt() * statistic;
    KolmogorovSmirnov {
        statistic,
        p_value: kolmogorov_sf(z),
    }
}

/// Survival function of the Kolmogorov distribution.
fn kolmogorov_sf(z: f64) -> f64 {
    if z <= 0.0 {
        return 1.0;
    }
    if z < 1.18 {
        // 1 - CDF, with the CDF's series that converges fast for small z.
        let pi = std::f64::consts::PI;
        let sum: f64 = (1..=20)
            .map(|k| (-((2 * k - 1) as f64).powi(2) * pi * pi / (8.0 * z * z)).exp())
            .sum();
        return (1.0 - (2.0 * pi).sqrt() / z * sum).clamp(0.0, 1.0);
    }
    let sum: f64 = (1..=100)
        .map(|k| {
            let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
            sign * (-2.0 * (k * k) as f64 * z * z).exp()
        })
        .sum();
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Jensen-Shannon distance (base 2, the square root of the divergence) between the
/// histograms of the two samples over `bins` equal bins spanning both.
pub fn jensen_shannon(a: &[f64], b: &[f64], bins: usize) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let low = a.iter().chain(b).copied().fold(f64::INFINITY, f64::min);
    let high = a.iter().chain(b).copied().fold(f64::NEG_INFINITY, f64::max);
    let histogram = |x: &[f64]| -> Vec<f64> {
        let mut counts = vec![0.0; bins];
        for v in x {
            // numpy.histogram's arithmetic: (v - low) * (bins / (high - low)), floored.
            let i = if high > low {
                ((v - low) * (bins as f64 / (high - low))) as usize
            } else {
                0
            };
            counts[i.min(bins - 1)] += 1.0;
        }
        counts.iter().map(|c| c / x.len() as f64).collect()
    };
    let (p, q) = (histogram(a), histogram(b));
    let kl = |p: &[f64], m: &[f64]| -> f64 {
        p.iter()
            .zip(m)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, m)| p * (p / m).log2())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(p, q)| (p + q) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// A Mann-Whitney U result: U of the first sample and the p-value.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MannWhitney {
    /// The U statistic of the first sample.
    pub u: f64,
    /// The p-value for the alternative asked for.
    pub p_value: f64,
}

/// Which way a test looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alternative {
    /// The samples differ either way.
    TwoSided,
    /// The first sample tends to be larger than the second.
    Greater,
}

/// Mann-Whitney U (scipy's `mannwhitneyu`, method "asymptotic", with continuity correction).
pub fn mann_whitney(x: &[f64], y: &[f64], alternative: Alternative) -> MannWhitney {
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    if x.is_empty() || y.is_empty() {
        return MannWhitney {
            u: f64::NAN,
            p_value: f64::NAN,
        };
    }
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks for ties, and the tie term of the variance.
    let (mut rank_sum_x, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_x += all[i..=j].iter().filter(|(_, from_x)| *from_x).count() as f64 * average_rank;
        i = j + 1;
    }
    let u1 = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let u2 = n1 * n2 - u1;
    let n = n1 + n2;
    let mu = n1 * n2 / 2.0;
    let sigma = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let p_value = if sigma == 0.0 {
        1.0
    } else {
        match alternative {
            Alternative::Greater => normal_sf((u1 - mu - 0.5) / sigma),
            Alternative::TwoSided => (2.0 * normal_sf((u1.max(u2) - mu - 0.5) / sigma)).min(1.0),
        }
    };
    MannWhitney { u: u1, p_value }
}

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, to about 1e-14: a series for small |x|, a continued
/// fraction (Lentz) for large x.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        // erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    let tiny = 1e-300;
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for k in 1..500 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        // Values from the standard tables (Abramowitz and Stegun 7.1), to 1e-12.
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (2.0, 0.004677734981047266),
            (3.0, 2.209049699858544e-05),
            (-1.0, 1.8427007929497148),
        ] {
            assert!(
                (erfc(x) - want).abs() < 1e-12 * want.max(1e-3),
                "erfc({x}) = {} not {want}",
                erfc(x)
            );
        }
    }

    #[test]
    fn identical_samples_show_no_difference() {
        let x: Vec<f64> = (0..100).map(|i| (i as f64 * 0.37).sin()).collect();
        assert_eq!(wasserstein(&x, &x), 0.0);
        assert!(psi(&x, &x, 10).abs() < 1e-12);
        assert_eq!(ks_two_sample(&x, &x).statistic, 0.0);
        assert!(jensen_shannon(&x, &x, 10) < 1e-12);
        assert!((mann_whitney(&x, &x, Alternative::TwoSided).p_value - 1.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 0.95), 4.8);
    }
}
