//! Statistics for paired judgement: each input went to the live version and to the
//! candidate at the same moment, so every row carries both answers, and what varies from
//! row to row (input size, load, time of day) cancels out of the comparison. Paired tests
//! therefore usually need far fewer rows than the two-sample tests in the parent module
//! to see the same difference.
//!
//! - [`signed_rank`]: Wilcoxon's signed-rank test on per-row differences, matching
//!   scipy's `wilcoxon` (normal approximation, or the exact distribution for small
//!   samples without ties).
//! - [`mcnemar`]: McNemar's exact test on the discordant pairs of a correctness check,
//!   matching scipy's `binomtest(b, b + c, 0.5)`; [`tally_correctness`] counts those
//!   pairs once per distinct input.
//! - [`bootstrap_quantile_ratio`]: a seeded bootstrap percentile interval of the ratio of
//!   two latency quantiles (p95 by default in the gates), resampling pairs together.
//! - [`brier_score`], [`log_loss`] and [`compare_scores`]: proper scoring rules per row
//!   and their paired comparison.
//!
//! Nothing here decides: thresholds and verdicts belong to the gates, which read these
//! values.
//!
//! Longer than most files (about 950 lines, a third of them tests): the four paired methods
//! share the `Paired` row and the signed-rank core that the scoring comparison reuses.

use std::collections::HashSet;
use std::hash::Hash;

use super::{Alternative, normal_sf};

/// One row's value for both versions. Keeping the two in one value makes unequal
/// lengths, and so a pairing lost on the way, impossible to express.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Paired<T> {
    /// The candidate's value for the row.
    pub candidate: T,
    /// The live version's value for the row.
    pub live: T,
}

// ---------------------------------------------------------------------------------------
// Wilcoxon signed-rank test
// ---------------------------------------------------------------------------------------

/// The largest number of non-zero differences for which [`SignedRankMethod::Exact`] uses
/// the exact distribution. Below it the normal approximation is at its roughest and the
/// exact count (2^n sign patterns, by a table of n(n+1)/2 sums) is cheap; above it the
/// two agree closely.
pub const SIGNED_RANK_EXACT_MAX: usize = 25;

/// How [`signed_rank`] computes its p-values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignedRankMethod {
    /// The normal approximation with tie and continuity corrections (scipy's
    /// `method="asymptotic", correction=True`). Valid for any sample; close to the exact
    /// values from about 20 non-zero differences on.
    Normal,
    /// The exact null distribution (scipy's `method="exact"`) when it is exact: at most
    /// [`SIGNED_RANK_EXACT_MAX`] non-zero differences and no ties among their absolute
    /// values. Otherwise the normal approximation is used, and the result says so.
    Exact,
}

/// A Wilcoxon signed-rank result, with the p-value of every alternative so one
/// computation serves whichever question the caller asks.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SignedRank {
    /// The non-zero differences, the sample size the test actually used.
    pub n: usize,
    /// Sum of the ranks of the positive differences (scipy's statistic for a one-sided
    /// test).
    pub r_plus: f64,
    /// Sum of the ranks of the negative differences.
    pub r_minus: f64,
    /// Against the alternative that the differences tend to be positive.
    pub p_greater: f64,
    /// Against the alternative that the differences tend to be negative.
    pub p_less: f64,
    /// Against the alternative that the differences tend away from zero either way.
    pub p_two_sided: f64,
    /// The method that produced the p-values.
    pub method: SignedRankMethod,
}

impl SignedRank {
    /// The p-value for `alternative`.
    pub fn p_value(&self, alternative: Alternative) -> f64 {
        match alternative {
            Alternative::Greater => self.p_greater,
            Alternative::TwoSided => self.p_two_sided,
        }
    }

    /// scipy's two-sided statistic: the smaller of the two rank sums.
    pub fn two_sided_statistic(&self) -> f64 {
        self.r_plus.min(self.r_minus)
    }
}

/// Wilcoxon's signed-rank test on paired differences, as scipy's
/// `wilcoxon(d, zero_method="wilcox", correction=True)`.
///
/// Use it when each row gives one number per version and the question is whether the
/// candidate's numbers are shifted from the live ones: pass `candidate - live`, or, for
/// latencies, `ln(candidate / live) - ln(allowed ratio)` so that "greater" means "slower
/// than allowed". It assumes only that the differences are symmetric under the null, not
/// that they are normal, so a few slow outliers do not dominate it.
///
/// Zero differences are dropped (they say nothing about the direction); tied absolute
/// differences share their average rank. Too little data: with no non-zero difference
/// every p-value is NaN, as in scipy; with a handful, the normal approximation is rough,
/// so ask for [`SignedRankMethod::Exact`]. A NaN difference makes every p-value NaN.
pub fn signed_rank(differences: &[f64], method: SignedRankMethod) -> SignedRank {
    let mut nonzero: Vec<f64> = differences.iter().copied().filter(|d| *d != 0.0).collect();
    let n = nonzero.len();
    if n == 0 || nonzero.iter().any(|d| d.is_nan()) {
        // With nothing to rank both sums are empty; a NaN leaves them undefined.
        let sum = if n == 0 { 0.0 } else { f64::NAN };
        return SignedRank {
            n,
            r_plus: sum,
            r_minus: sum,
            p_greater: f64::NAN,
            p_less: f64::NAN,
            p_two_sided: f64::NAN,
            method,
        };
    }
    nonzero.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    // Average ranks for ties, the tie term of the variance, and whether ties exist.
    let (mut r_plus, mut r_minus, mut tie_term) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && nonzero[j + 1].abs() == nonzero[i].abs() {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for d in &nonzero[i..=j] {
            if *d > 0.0 {
                r_plus += average_rank;
            } else {
                r_minus += average_rank;
            }
        }
        i = j + 1;
    }
    let has_ties = tie_term > 0.0;
    if method == SignedRankMethod::Exact && n <= SIGNED_RANK_EXACT_MAX && !has_ties {
        let (p_greater, p_less) = exact_signed_rank_tails(n, r_plus as usize);
        return SignedRank {
            n,
            r_plus,
            r_minus,
            p_greater,
            p_less,
            p_two_sided: (2.0 * p_greater.min(p_less)).min(1.0),
            method: SignedRankMethod::Exact,
        };
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_term / 2.0) / 24.0).sqrt();
    let z = (r_plus - mean) / se;
    let continuity = 0.5 / se;
    // scipy moves the two-sided z towards zero by the continuity term, on the side of z;
    // a z of exactly zero is left alone.
    let towards_zero = if z > 0.0 {
        z - continuity
    } else if z < 0.0 {
        z + continuity
    } else {
        0.0
    };
    SignedRank {
        n,
        r_plus,
        r_minus,
        p_greater: normal_sf(z - continuity),
        p_less: normal_sf(-(z + continuity)),
        p_two_sided: 2.0 * normal_sf(towards_zero.abs()),
        method: SignedRankMethod::Normal,
    }
}

/// P(R+ >= r) and P(R+ <= r) under the null for `n` untied non-zero differences: each of
/// the 2^n sign patterns is equally likely, and the number of patterns with each rank sum
/// is counted by adding the ranks 1..=n one at a time.
fn exact_signed_rank_tails(n: usize, r: usize) -> (f64, f64) {
    let top = n * (n + 1) / 2;
    let mut patterns = vec![0u64; top + 1];
    patterns[0] = 1;
    for rank in 1..=n {
        for sum in (rank..=rank * (rank + 1) / 2).rev() {
            patterns[sum] += patterns[sum - rank];
        }
    }
    let total = (1u64 << n) as f64;
    let at_least: u64 = patterns[r.min(top + 1)..].iter().sum();
    let at_most: u64 = patterns[..=r.min(top)].iter().sum();
    (at_least as f64 / total, at_most as f64 / total)
}

// ---------------------------------------------------------------------------------------
// McNemar's test
// ---------------------------------------------------------------------------------------

/// A McNemar result on the discordant pairs of a paired correctness check.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct McNemar {
    /// b: inputs only the candidate got right.
    pub candidate_only: u64,
    /// c: inputs only the live version got right.
    pub live_only: u64,
    /// Against the alternative that either version is more often right.
    pub p_two_sided: f64,
    /// Against the alternative that the candidate is more often right
    /// (`binomtest(b, b + c, 0.5, alternative="greater")`).
    pub p_candidate_better: f64,
    /// Against the alternative that the candidate is more often wrong
    /// (`binomtest(b, b + c, 0.5, alternative="less")`).
    pub p_candidate_worse: f64,
}

/// McNemar's exact test: of the inputs where exactly one version was right, is the
/// candidate the right one less (or more) often than half the time?
///
/// Use it for accuracy on paired, labelled traffic. Inputs both versions got right, or
/// both wrong, say nothing about which is better and do not enter the test, which is why
/// it sees a small change in accuracy that an unpaired comparison of two accuracy rates
/// would miss. The p-values are the exact binomial tails with success probability 1/2
/// (scipy's `binomtest`), so they hold for small counts too.
///
/// Too little data: with no discordant pair (`b + c = 0`) every p-value is 1, since
/// nothing shows a difference (scipy refuses `n = 0`).
pub fn mcnemar(candidate_only: u64, live_only: u64) -> McNemar {
    let (b, c) = (candidate_only, live_only);
    let n = b + c;
    McNemar {
        candidate_only,
        live_only,
        p_two_sided: (2.0 * binomial_half_cdf(b.min(c), n)).min(1.0),
        // P(X >= b) = P(n - X <= n - b), and n - X has the same law as X.
        p_candidate_better: binomial_half_cdf(c, n),
        p_candidate_worse: binomial_half_cdf(b, n),
    }
}

/// P(X <= k) for X ~ Binomial(n, 1/2), to about 1e-13 for any n.
fn binomial_half_cdf(k: u64, n: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if 2 * k >= n {
        // The upper part: one minus the lower tail, which is then below a half.
        return 1.0 - binomial_half_cdf(n - k - 1, n);
    }
    // Below the mode the probabilities fall as x falls, so sum from k downwards.
    let mut term = binomial_half_pmf(k, n);
    let mut sum = term;
    for x in (1..=k).rev() {
        // P(X = x - 1) = P(X = x) * x / (n - x + 1).
        term *= x as f64 / (n - x + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum.min(1.0)
}

/// P(X = x) for X ~ Binomial(n, 1/2), by Loader's saddle-point form (Loader, 2000; R's
/// `dbinom` uses it): every term stays small, so no large logarithms cancel, and the
/// result keeps its relative accuracy where 2^-n underflows or `ln C(n, x) - n ln 2`
/// would lose ten digits.
fn binomial_half_pmf(x: u64, n: u64) -> f64 {
    if x == 0 || x == n {
        return (-(n as f64) * std::f64::consts::LN_2).exp();
    }
    let half = n as f64 / 2.0;
    let (xf, nf) = (x as f64, n as f64);
    let exponent = stirling_error(n)
        - stirling_error(x)
        - stirling_error(n - x)
        - deviance_term(xf, half)
        - deviance_term(nf - xf, half);
    let log_scale = (2.0 * std::f64::consts::PI).ln() + xf.ln() + (-xf / nf).ln_1p();
    (exponent - 0.5 * log_scale).exp()
}

/// `ln(n!) - ln(sqrt(2 pi n) (n/e)^n)`: directly for small n, where n! is exact in an
/// f64, and by the Stirling series beyond, where five terms reach full precision.
fn stirling_error(n: u64) -> f64 {
    let nf = n as f64;
    if n <= 15 {
        let factorial: f64 = (1..=n).map(|i| i as f64).product();
        return factorial.ln() - (nf + 0.5) * nf.ln() + nf
            - 0.5 * (2.0 * std::f64::consts::PI).ln();
    }
    let inverse_square = 1.0 / (nf * nf);
    (1.0 / 12.0
        - inverse_square
            * (1.0 / 360.0
                - inverse_square
                    * (1.0 / 1260.0 - inverse_square * (1.0 / 1680.0 - inverse_square / 1188.0))))
        / nf
}

/// `x ln(x / m) + m - x`, by a series when x is near m, where the direct form cancels.
fn deviance_term(x: f64, m: f64) -> f64 {
    if (x - m).abs() < 0.1 * (x + m) {
        let v = (x - m) / (x + m);
        let mut sum = (x - m) * v;
        let mut power = 2.0 * x * v;
        for j in 1..1000 {
            power *= v * v;
            let next = sum + power / (2 * j + 1) as f64;
            if next == sum {
                break;
            }
            sum = next;
        }
        return sum;
    }
    x * (x / m).ln() + m - x
}

/// The four cells of a paired correctness table, over distinct inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorrectnessTally {
    /// Distinct inputs both versions got right.
    pub both_right: u64,
    /// b in McNemar's notation.
    pub candidate_only: u64,
    /// c in McNemar's notation.
    pub live_only: u64,
    /// Distinct inputs both versions got wrong.
    pub both_wrong: u64,
    /// Rows whose input had been seen before, and were therefore not counted.
    pub repeated_rows: u64,
}

impl CorrectnessTally {
    /// The number of distinct inputs counted.
    pub fn inputs(&self) -> u64 {
        self.both_right + self.candidate_only + self.live_only + self.both_wrong
    }

    /// McNemar's test on this table's discordant cells.
    pub fn mcnemar(&self) -> McNemar {
        mcnemar(self.candidate_only, self.live_only)
    }
}

/// Counts paired correctness rows into a [`CorrectnessTally`], each distinct input once.
///
/// A client that repeats an identical request does not give new evidence: both versions
/// see the same input again, and a deterministic model answers as before. Counting every
/// repeat would let one popular input outweigh the rest and make McNemar's p-value far too
/// small. So the first row for each key is counted and later rows with the same key only
/// add to `repeated_rows`. The first occurrence is chosen because the choice must not
/// depend on the outcome (keeping, say, any wrong answer would bias the table), and the
/// first is the one both versions answered earliest, in the order the rows were logged.
/// The key is whatever identifies an input, typically a hash of the request body.
pub fn tally_correctness<K, I>(rows: I) -> CorrectnessTally
where
    K: Eq + Hash,
    I: IntoIterator<Item = (K, Paired<bool>)>,
{
    let mut seen = HashSet::new();
    let mut tally = CorrectnessTally::default();
    for (key, correct) in rows {
        if !seen.insert(key) {
            tally.repeated_rows += 1;
            continue;
        }
        let cell = match (correct.candidate, correct.live) {
            (true, true) => &mut tally.both_right,
            (true, false) => &mut tally.candidate_only,
            (false, true) => &mut tally.live_only,
            (false, false) => &mut tally.both_wrong,
        };
        *cell += 1;
    }
    tally
}

// ---------------------------------------------------------------------------------------
// Bootstrap interval of a quantile ratio
// ---------------------------------------------------------------------------------------

/// How [`bootstrap_quantile_ratio`] resamples.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapOptions {
    /// Number of resamples; the interval's ends settle from about 1000 on.
    pub resamples: usize,
    /// Coverage of the interval, strictly between 0 and 1.
    pub confidence: f64,
    /// Seed of the generator, so the same evidence always gives the same interval.
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: 2000,
            confidence: 0.95,
            seed: 0x7ea1_5eed,
        }
    }
}

/// Why a bootstrap could not run.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap resamples is 0; use at least 1000")]
    /// Zero resamples were asked for: there is no interval to draw.
    NoResamples,
    #[error("bootstrap confidence {0} is not strictly between 0 and 1; use e.g. 0.95")]
    /// The confidence is not strictly between 0 and 1.
    ConfidenceOutOfRange(f64),
}

/// A percentile bootstrap interval of candidate quantile / live quantile.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RatioInterval {
    /// The ratio on all pairs.
    pub estimate: f64,
    /// The lower end of the interval.
    pub low: f64,
    /// The upper end of the interval.
    pub high: f64,
    /// The pairs resampled.
    pub pairs: usize,
}

/// A percentile bootstrap confidence interval of `quantile(candidate) / quantile(live)`
/// (with `q = 0.95`, the ratio of p95 latencies).
///
/// Use it to say how much slower the candidate's tail is, with its uncertainty: a tail
/// quantile has no simple standard error, and the ratio of two is worse, but resampling
/// gives its spread directly. Whole pairs are resampled, never the two columns apart, so
/// the interval keeps the pairing's advantage: a slow moment that hit both versions moves
/// both quantiles together. Quantiles interpolate linearly (numpy's default), as
/// [`quantile`](super::quantile).
///
/// The generator is SplitMix64 (Steele, Lea and Flood, 2014), seeded with
/// `options.seed`, with unbiased index draws by multiply-and-reject (Lemire, 2019): the
/// interval depends only on the pairs, their order and the options, on every platform.
///
/// Latencies should be positive and finite. Too little data: with fewer than two pairs
/// the estimate and both ends are NaN. Options out of range are an error.
pub fn bootstrap_quantile_ratio(
    pairs: &[Paired<f64>],
    q: f64,
    options: &BootstrapOptions,
) -> Result<RatioInterval, BootstrapError> {
    if options.resamples == 0 {
        return Err(BootstrapError::NoResamples);
    }
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(BootstrapError::ConfidenceOutOfRange(options.confidence));
    }
    let n = pairs.len();
    if n < 2 {
        return Ok(RatioInterval {
            estimate: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
            pairs: n,
        });
    }
    let mut candidate: Vec<f64> = pairs.iter().map(|p| p.candidate).collect();
    let mut live: Vec<f64> = pairs.iter().map(|p| p.live).collect();
    let estimate = quantile_in_place(&mut candidate, q) / quantile_in_place(&mut live, q);
    let mut generator = SplitMix64::new(options.seed);
    let mut ratios = Vec::with_capacity(options.resamples);
    for _ in 0..options.resamples {
        for slot in 0..n {
            let pair = pairs[generator.below(n)];
            candidate[slot] = pair.candidate;
            live[slot] = pair.live;
        }
        ratios.push(quantile_in_place(&mut candidate, q) / quantile_in_place(&mut live, q));
    }
    let tail = (1.0 - options.confidence) / 2.0;
    Ok(RatioInterval {
        estimate,
        low: quantile_in_place(&mut ratios, tail),
        high: quantile_in_place(&mut ratios, 1.0 - tail),
        pairs: n,
    })
}

/// The `q` quantile with numpy's linear interpolation, reordering `x` (a partial sort,
/// linear time, instead of a full sort per resample).
fn quantile_in_place(x: &mut [f64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (x.len() - 1) as f64;
    let low = position.floor() as usize;
    let (_, below, above) = x.select_nth_unstable_by(low, f64::total_cmp);
    let below = *below;
    if position == low as f64 || above.is_empty() {
        return below;
    }
    let next = above.iter().copied().fold(f64::INFINITY, f64::min);
    below + (next - below) * (position - low as f64)
}

/// SplitMix64: a 64-bit state advanced by a Weyl sequence and mixed by two
/// multiply-xorshift rounds. Small, fast, passes BigCrush, and fully determined by its
/// seed, which is all a reproducible bootstrap needs (it is not for secrets).
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (`n > 0`): the high word of a 128-bit product, with the
    /// few draws that would favour some indices rejected.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            if product as u64 >= threshold {
                return (product >> 64) as usize;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Proper scoring rules
// ---------------------------------------------------------------------------------------

/// The clip applied to the true class's probability before the logarithm in
/// [`log_loss`]: probabilities are kept in `[1e-15, 1 - 1e-15]`, so one confident
/// mistake costs at most about 34.5 instead of infinity (the value scikit-learn long
/// used).
pub const LOG_LOSS_EPSILON: f64 = 1e-15;

/// Why a row could not be scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    #[error(
        "true class {class} is outside the {classes} class probabilities of the answer; \
         check that the label and the model use the same class order"
    )]
    /// The true class is not one of the probability vector's classes.
    ClassOutOfRange {
        /// The true class's index.
        class: usize,
        /// How many class probabilities the answer has.
        classes: usize,
    },
}

fn check_class(probabilities: &[f64], true_class: usize) -> Result<(), ScoreError> {
    if true_class < probabilities.len() {
        Ok(())
    } else {
        Err(ScoreError::ClassOutOfRange {
            class: true_class,
            classes: probabilities.len(),
        })
    }
}

/// The Brier score of one answer: the squared distance between the probability vector
/// and the one-hot vector of the true class, summed over classes (Brier's 1950
/// definition; 0 is perfect, 2 is confidently wrong).
///
/// Use it to judge the probabilities themselves, not only the top class: a candidate
/// that keeps the accuracy but grows over- or under-confident scores worse. It is
/// bounded, so a single bad row cannot dominate a mean. Probabilities are used as given,
/// not renormalised: a version is judged on what it said.
pub fn brier_score(probabilities: &[f64], true_class: usize) -> Result<f64, ScoreError> {
    check_class(probabilities, true_class)?;
    Ok(probabilities
        .iter()
        .enumerate()
        .map(|(class, p)| {
            let outcome = if class == true_class { 1.0 } else { 0.0 };
            (p - outcome).powi(2)
        })
        .sum())
}

/// The log loss of one answer: `-ln p(true class)`, with the probability clipped to
/// [`LOG_LOSS_EPSILON`] from 0 and 1.
///
/// Use it when confident mistakes should cost much more than hesitant ones; it is the
/// rule most sensitive to a candidate that assigns near-zero probability to what
/// happens. Unlike [`brier_score`] it is unbounded above (up to the clip), so compare it
/// with a rank test such as [`compare_scores`], not by means alone.
pub fn log_loss(probabilities: &[f64], true_class: usize) -> Result<f64, ScoreError> {
    check_class(probabilities, true_class)?;
    Ok(-probabilities[true_class]
        .clamp(LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
        .ln())
}

/// A proper scoring rule, lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScoringRule {
    /// The Brier score: the squared distance to the true class's indicator, summed over classes.
    Brier,
    /// The log loss: minus the log of the probability given to the true class.
    LogLoss,
}

impl ScoringRule {
    /// This rule's score for one answer.
    pub fn score(self, probabilities: &[f64], true_class: usize) -> Result<f64, ScoreError> {
        match self {
            ScoringRule::Brier => brier_score(probabilities, true_class),
            ScoringRule::LogLoss => log_loss(probabilities, true_class),
        }
    }
}

/// The paired comparison of the two versions' per-row scores.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreComparison {
    /// Rows compared.
    pub rows: usize,
    /// The candidate's mean score.
    pub mean_candidate: f64,
    /// The live version's mean score.
    pub mean_live: f64,
    /// Mean of `candidate - live`; positive means the candidate scores worse.
    pub mean_difference: f64,
    /// One-sided signed-rank p-value against the alternative that the candidate's score
    /// exceeds the live one's by more than the margin.
    pub p_value: f64,
}

/// Compares per-row scores (lower is better, as [`brier_score`] and [`log_loss`]) of the
/// two versions on the same rows: is the candidate worse by more than `margin`?
///
/// The test is [`signed_rank`] with the alternative "greater" on
/// `candidate - live - margin`, exact for small untied samples and the normal
/// approximation otherwise. A rank test rather than a t-test, because score differences
/// are heavy-tailed (one confident mistake under log loss outweighs hundreds of small
/// gains). `margin` is in score units; 0 asks whether the candidate is worse at all.
///
/// Too little data: with no rows every field but `rows` is NaN; when every difference
/// equals the margin exactly the p-value is 1, since no row shows the candidate worse.
pub fn compare_scores(scores: &[Paired<f64>], margin: f64) -> ScoreComparison {
    let rows = scores.len();
    if rows == 0 {
        return ScoreComparison {
            rows,
            mean_candidate: f64::NAN,
            mean_live: f64::NAN,
            mean_difference: f64::NAN,
            p_value: f64::NAN,
        };
    }
    let candidate: Vec<f64> = scores.iter().map(|s| s.candidate).collect();
    let live: Vec<f64> = scores.iter().map(|s| s.live).collect();
    let differences: Vec<f64> = scores.iter().map(|s| s.candidate - s.live).collect();
    let shifted: Vec<f64> = differences.iter().map(|d| d - margin).collect();
    let test = signed_rank(&shifted, SignedRankMethod::Exact);
    ScoreComparison {
        rows,
        mean_candidate: super::mean(&candidate),
        mean_live: super::mean(&live),
        mean_difference: super::mean(&differences),
        p_value: if test.n == 0 { 1.0 } else { test.p_greater },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(candidate: &[f64], live: &[f64]) -> Vec<Paired<f64>> {
        candidate
            .iter()
            .zip(live)
            .map(|(c, l)| Paired {
                candidate: *c,
                live: *l,
            })
            .collect()
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // The first outputs for seed 1234567 of the reference C implementation.
        let mut generator = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..5).map(|_| generator.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821,
            ]
        );
    }

    #[test]
    fn index_draws_cover_the_range_evenly() {
        let mut generator = SplitMix64::new(3);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[generator.below(7)] += 1;
        }
        for count in counts {
            assert!((9_500..10_500).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn partial_sort_quantile_matches_the_sorting_one() {
        let x: Vec<f64> = (0..101).map(|i| ((i * 37) % 101) as f64 * 0.5).collect();
        for q in [0.0, 0.05, 0.5, 0.95, 0.999, 1.0] {
            assert_eq!(
                quantile_in_place(&mut x.clone(), q),
                super::super::quantile(&x, q)
            );
        }
        assert_eq!(quantile_in_place(&mut [2.0, 1.0], 0.5), 1.5);
    }

    #[test]
    fn exact_distribution_sums_to_one_and_is_symmetric() {
        for n in [1, 2, 5, 12, SIGNED_RANK_EXACT_MAX] {
            let top = n * (n + 1) / 2;
            let (all, _) = exact_signed_rank_tails(n, 0);
            assert_eq!(all, 1.0);
            for r in 0..=top {
                let (greater, _) = exact_signed_rank_tails(n, r);
                let (_, less) = exact_signed_rank_tails(n, top - r);
                assert_eq!(greater, less, "n {n} r {r}");
            }
        }
    }

    #[test]
    fn exact_request_with_ties_falls_back_to_the_normal_approximation() {
        let test = signed_rank(&[1.0, 1.0, -2.0, 3.0, 4.0], SignedRankMethod::Exact);
        assert_eq!(test.method, SignedRankMethod::Normal);
        let large: Vec<f64> = (1..=30).map(f64::from).collect();
        let test = signed_rank(&large, SignedRankMethod::Exact);
        assert_eq!(test.method, SignedRankMethod::Normal);
    }

    #[test]
    fn zero_differences_leave_nothing_to_test() {
        let test = signed_rank(&[0.0, 0.0], SignedRankMethod::Normal);
        assert_eq!((test.n, test.r_plus, test.r_minus), (0, 0.0, 0.0));
        assert!(test.p_greater.is_nan() && test.p_two_sided.is_nan());
        let test = signed_rank(&[1.0, f64::NAN], SignedRankMethod::Normal);
        assert!(test.r_plus.is_nan() && test.p_less.is_nan());
        assert!(signed_rank(&[], SignedRankMethod::Exact).p_less.is_nan());
    }

    #[test]
    fn binomial_tails_hold_for_large_counts() {
        // Symmetry and the complement, where 2^-n underflows.
        let n = 20_001;
        let half = binomial_half_cdf(10_000, n);
        assert!((half - 0.5).abs() < 1e-13, "{half}");
        // Small n against exact fractions: P(X <= 3) for n = 10 is 176/1024.
        assert!((binomial_half_cdf(3, 10) - 176.0 / 1024.0).abs() < 1e-15);
        let total: f64 = (0..=40).map(|x| binomial_half_pmf(x, 40)).sum();
        assert!((total - 1.0).abs() < 1e-14, "{total}");
        let lower = binomial_half_cdf(9_800, n);
        let upper_complement = 1.0 - binomial_half_cdf(n - 9_801, n);
        assert!((lower - upper_complement).abs() < 1e-12);
        assert!(lower > 0.0 && lower < 0.01);
    }

    #[test]
    fn mcnemar_without_discordant_pairs_shows_nothing() {
        let test = mcnemar(0, 0);
        assert_eq!(
            (
                test.p_two_sided,
                test.p_candidate_better,
                test.p_candidate_worse
            ),
            (1.0, 1.0, 1.0)
        );
    }

    #[test]
    fn repeated_inputs_are_counted_once_by_their_first_row() {
        let row =
            |key: &'static str, candidate: bool, live: bool| (key, Paired { candidate, live });
        let tally = tally_correctness([
            row("a", true, false),
            row("b", false, true),
            row("a", false, true),
            row("a", false, true),
            row("c", true, true),
            row("d", false, false),
            row("b", false, true),
        ]);
        assert_eq!(
            tally,
            CorrectnessTally {
                both_right: 1,
                candidate_only: 1,
                live_only: 1,
                both_wrong: 1,
                repeated_rows: 3,
            }
        );
        assert_eq!(tally.inputs(), 4);
        assert_eq!(tally.mcnemar(), mcnemar(1, 1));
    }

    /// Synthetic latencies: the live version's are lognormal-ish by a deterministic
    /// transform of the generator, the candidate's are the same moment's times `ratio`
    /// with their own noise.
    fn synthetic_latencies(n: usize, ratio: f64, seed: u64) -> Vec<Paired<f64>> {
        let mut generator = SplitMix64::new(seed);
        let mut uniform = || (generator.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (0..n)
            .map(|_| {
                let moment = 20.0 * (1.0 + 3.0 * uniform().powi(4));
                Paired {
                    live: moment * (1.0 + 0.2 * uniform()),
                    candidate: ratio * moment * (1.0 + 0.2 * uniform()),
                }
            })
            .collect()
    }

    #[test]
    fn bootstrap_is_deterministic_for_a_seed() {
        let data = synthetic_latencies(300, 1.2, 1);
        let options = BootstrapOptions::default();
        let first = bootstrap_quantile_ratio(&data, 0.95, &options).unwrap();
        let second = bootstrap_quantile_ratio(&data, 0.95, &options).unwrap();
        assert_eq!(first, second);
        let other_seed = BootstrapOptions {
            seed: 99,
            ..options
        };
        let third = bootstrap_quantile_ratio(&data, 0.95, &other_seed).unwrap();
        assert_ne!(first.low, third.low);
        assert_eq!(first.estimate, third.estimate);
    }

    #[test]
    fn bootstrap_interval_covers_the_true_ratio() {
        // The candidate is 1.3 times slower at every moment, so the true p95 ratio is 1.3.
        let options = BootstrapOptions {
            resamples: 1000,
            ..Default::default()
        };
        let mut covered = 0;
        for seed in 0..20 {
            let data = synthetic_latencies(400, 1.3, 100 + seed);
            let interval = bootstrap_quantile_ratio(&data, 0.95, &options).unwrap();
            assert!(interval.low <= interval.estimate && interval.estimate <= interval.high);
            if interval.low <= 1.3 && 1.3 <= interval.high {
                covered += 1;
            }
        }
        assert!(covered >= 17, "covered {covered} of 20");
    }

    #[test]
    fn bootstrap_interval_narrows_with_more_pairs() {
        let options = BootstrapOptions {
            resamples: 500,
            ..Default::default()
        };
        let width = |n| {
            let interval =
                bootstrap_quantile_ratio(&synthetic_latencies(n, 1.1, 5), 0.95, &options).unwrap();
            interval.high - interval.low
        };
        let (small, large) = (width(100), width(1600));
        assert!(
            large < small / 2.0,
            "width {small} at 100 pairs, {large} at 1600"
        );
    }

    #[test]
    fn bootstrap_refuses_bad_options_and_reports_too_few_pairs() {
        let data = synthetic_latencies(10, 1.0, 1);
        let no_resamples = BootstrapOptions {
            resamples: 0,
            ..Default::default()
        };
        assert_eq!(
            bootstrap_quantile_ratio(&data, 0.95, &no_resamples),
            Err(BootstrapError::NoResamples)
        );
        let certain = BootstrapOptions {
            confidence: 1.0,
            ..Default::default()
        };
        assert_eq!(
            bootstrap_quantile_ratio(&data, 0.95, &certain),
            Err(BootstrapError::ConfidenceOutOfRange(1.0))
        );
        let one = bootstrap_quantile_ratio(&data[..1], 0.95, &BootstrapOptions::default());
        let one = one.unwrap();
        assert!(one.estimate.is_nan() && one.low.is_nan() && one.high.is_nan());
    }

    #[test]
    fn scoring_rules_match_hand_computed_values() {
        let answer = [0.7, 0.2, 0.1];
        assert!((brier_score(&answer, 0).unwrap() - (0.09 + 0.04 + 0.01)).abs() < 1e-12);
        assert!((brier_score(&answer, 2).unwrap() - (0.49 + 0.04 + 0.81)).abs() < 1e-12);
        assert!((log_loss(&answer, 1).unwrap() - 0.2f64.ln().abs()).abs() < 1e-12);
        assert_eq!(brier_score(&[1.0, 0.0], 0).unwrap(), 0.0);
        assert!((log_loss(&[1.0, 0.0], 1).unwrap() - 34.538776394910684).abs() < 1e-9);
        assert!(log_loss(&[1.0, 0.0], 0).unwrap() > 0.0);
        assert_eq!(
            ScoringRule::LogLoss.score(&answer, 3),
            Err(ScoreError::ClassOutOfRange {
                class: 3,
                classes: 3
            })
        );
    }

    #[test]
    fn a_consistently_worse_candidate_is_flagged_and_an_equal_one_is_not() {
        let live: Vec<f64> = (0..60).map(|i| 0.2 + 0.01 * (i % 7) as f64).collect();
        let worse: Vec<f64> = live
            .iter()
            .enumerate()
            .map(|(i, s)| s + 0.02 + 0.001 * i as f64)
            .collect();
        let comparison = compare_scores(&pairs(&worse, &live), 0.0);
        assert!(comparison.p_value < 1e-6, "{comparison:?}");
        assert!(comparison.mean_difference > 0.02);
        assert!(
            (comparison.mean_difference - (comparison.mean_candidate - comparison.mean_live)).abs()
                < 1e-12
        );
        // Within a margin larger than every difference, nothing is flagged.
        assert!(compare_scores(&pairs(&worse, &live), 0.2).p_value > 0.5);
        let same = compare_scores(&pairs(&live, &live), 0.0);
        assert_eq!(same.p_value, 1.0);
        assert_eq!(same.mean_difference, 0.0);
        assert!(compare_scores(&[], 0.0).p_value.is_nan());
    }
}
