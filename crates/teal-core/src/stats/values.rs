//! Histograms of a model's numeric answers (a regressor's output, a classifier's top score)
//! on fixed, log-spaced buckets, so that any scale is counted with the same few hundred
//! counters and two histograms taken at different times can be compared bucket by bucket.
//!
//! A bucket is named by a signed key, ordered as the values are, and holds its upper bound:
//! key 0 holds the values in `(-2^MIN_EXP, 2^MIN_EXP]`; key `k > 0` holds values in
//! `(2^(MIN_EXP + (k-1)/STEPS), 2^(MIN_EXP + k/STEPS)]`, and key `-k` those in
//! `(-2^(MIN_EXP + k/STEPS), -2^(MIN_EXP + (k-1)/STEPS)]`. Magnitudes past the outermost
//! bucket's bound fall in it.

use std::collections::BTreeMap;

/// Buckets per doubling of the magnitude: each bucket is about 9% wide.
pub const STEPS: i32 = 8;
/// The smallest magnitude told apart from zero is `2^MIN_EXP` (about 0.00024).
pub const MIN_EXP: i32 = -12;
/// Magnitudes are told apart up to `2^(MAX_EXP - 1/STEPS)` (about 15 million); the outermost
/// bucket of each side holds every larger one.
pub const MAX_EXP: i32 = 24;
/// Buckets on each side of zero.
pub const HALF: usize = ((MAX_EXP - MIN_EXP) * STEPS) as usize;
/// All buckets: both sides and the one around zero.
pub const BUCKETS: usize = 2 * HALF + 1;

/// The bucket index (`0..BUCKETS`, zero at `HALF`) a value falls in; `None` for NaN.
pub fn index(value: f64) -> Option<usize> {
    if value.is_nan() {
        return None;
    }
    let magnitude = value.abs();
    let floor = 2f64.powi(MIN_EXP);
    let steps = (magnitude / floor).log2() * f64::from(STEPS);
    if value > 0.0 {
        if magnitude <= floor {
            return Some(HALF);
        }
        Some(HALF + (steps.ceil() as usize).clamp(1, HALF))
    } else {
        // Below zero a bucket holds its upper bound, the end nearer zero.
        if magnitude < floor {
            return Some(HALF);
        }
        Some(HALF - (steps.floor() as usize).saturating_add(1).clamp(1, HALF))
    }
}

/// The signed key of a bucket index.
pub fn key(index: usize) -> i32 {
    index as i32 - HALF as i32
}

/// The largest value a bucket holds (its upper bound, which it holds; the outermost positive
/// bucket also holds everything above it).
pub fn upper(key: i32) -> f64 {
    let edge = |steps: i32| 2f64.powf(f64::from(MIN_EXP) + f64::from(steps) / f64::from(STEPS));
    match key {
        0 => edge(0),
        k if k > 0 => edge(k),
        k => -edge(-k - 1),
    }
}

/// A sparse histogram: count per key, only the keys that were hit.
pub type Histogram = BTreeMap<i32, u64>;

/// Adds `more` into `into`.
pub fn add(into: &mut Histogram, more: &Histogram) {
    for (k, n) in more {
        *into.entry(*k).or_default() += n;
    }
}

/// Cuts a reference histogram into at most `bins` runs of adjacent keys, each holding about
/// an equal share of its values (a key is never split, so a key holding more than a share
/// makes fewer bins). Returns each run's last key; the last run ends at `i32::MAX`, and the
/// first starts at `i32::MIN`, so every key of any histogram falls in exactly one run.
pub fn quantile_bins(reference: &Histogram, bins: usize) -> Vec<i32> {
    let total: u64 = reference.values().sum();
    let mut ends = Vec::new();
    if total == 0 || bins <= 1 {
        return vec![i32::MAX];
    }
    let mut seen = 0u64;
    let mut next = 1usize;
    for (k, n) in reference {
        seen += n;
        // Close a run when it reaches the next share; the key that takes it past closes it.
        if next < bins && seen * bins as u64 >= total * next as u64 {
            ends.push(*k);
            while next < bins && seen * bins as u64 >= total * next as u64 {
                next += 1;
            }
        }
    }
    match ends.last() {
        Some(last) if *last == *reference.keys().next_back().unwrap_or(last) => {
            ends.pop();
        }
        _ => {}
    }
    ends.push(i32::MAX);
    ends
}

/// The counts of a histogram in the runs [`quantile_bins`] made.
pub fn binned(histogram: &Histogram, ends: &[i32]) -> Vec<u64> {
    let mut counts = vec![0u64; ends.len()];
    for (k, n) in histogram {
        let bin = ends.partition_point(|end| end < k).min(ends.len() - 1);
        counts[bin] += n;
    }
    counts
}

/// Counts by bucket index (as a slot keeps them) merged into one bucket per doubling, as
/// `(upper bound, count)` in value order, the form a Prometheus histogram is written in: the
/// bounds are ..., -2, -1, -0.5, ..., then `2^MIN_EXP` around zero, ..., 0.5, 1, 2, ..., and
/// `+Inf` for the outermost bucket, which also holds every larger value.
pub fn octaves(counts: &[u64]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(2 * (MAX_EXP - MIN_EXP) as usize + 1);
    let mut run = 0u64;
    for (i, n) in counts.iter().enumerate().take(BUCKETS) {
        run += n;
        let k = key(i);
        let closes = if k >= 0 {
            k % STEPS == 0
        } else {
            (-k - 1) % STEPS == 0
        };
        if closes {
            let bound = if i == BUCKETS - 1 {
                f64::INFINITY
            } else {
                upper(k)
            };
            out.push((bound, run));
            run = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_as_the_values_and_hold_what_their_bounds_say() {
        let values = [
            -1e9, -3.5, -1.0, -0.01, 0.0, 1e-6, 0.001, 0.5, 0.51, 1.0, 152.0, 153.0, 1e9,
        ];
        let keys: Vec<i32> = values.iter().map(|v| key(index(*v).unwrap())).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
        for v in values {
            let k = key(index(v).unwrap());
            if v.abs() < 2f64.powi(MAX_EXP) {
                assert!(
                    v <= upper(k) + 1e-12 * upper(k).abs(),
                    "{v} over {}",
                    upper(k)
                );
                let below = upper(k - 1);
                assert!(v > below, "{v} not over {below}");
            }
        }
        assert_eq!(key(index(0.0).unwrap()), 0);
        assert_eq!(key(index(1e-6).unwrap()), 0);
        assert!(index(f64::NAN).is_none());
        // About 9% wide: 150 and 151 share a bucket, 150 and 170 do not.
        assert_eq!(index(150.0), index(151.0));
        assert_ne!(index(150.0), index(170.0));
        // The ends clamp.
        assert_eq!(index(f64::INFINITY), Some(BUCKETS - 1));
        assert_eq!(index(f64::NEG_INFINITY), Some(0));
    }

    #[test]
    fn octaves_give_each_value_to_the_first_bound_at_or_above_it() {
        // Values on the bounds as well as between them, on both sides of zero.
        let values = [
            -3.0,
            -2.0,
            -1.5,
            -1.0,
            -0.5,
            -1.0 / 4096.0,
            0.0,
            0.3,
            0.5,
            0.75,
            1.0,
            1.0,
            5.0,
            1e12,
        ];
        let mut counts = vec![0u64; BUCKETS];
        for v in values {
            counts[index(v).unwrap()] += 1;
        }
        let buckets = octaves(&counts);
        assert_eq!(buckets.len(), 2 * (MAX_EXP - MIN_EXP) as usize + 1);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(buckets.last().unwrap().0, f64::INFINITY);
        assert_eq!(
            buckets.iter().map(|b| b.1).sum::<u64>(),
            values.len() as u64
        );
        // Cumulative counts at each bound match counting the values directly.
        let mut cumulative = 0;
        for (bound, n) in &buckets {
            cumulative += n;
            let direct = values.iter().filter(|v| **v <= *bound).count() as u64;
            assert_eq!(cumulative, direct, "at le {bound}");
        }
    }

    #[test]
    fn quantile_bins_cover_every_key_and_split_the_reference_evenly() {
        let reference: Histogram = (1..=100).map(|k| (k, 1)).collect();
        let ends = quantile_bins(&reference, 5);
        assert_eq!(ends, vec![20, 40, 60, 80, i32::MAX]);
        assert_eq!(binned(&reference, &ends), vec![20; 5]);
        // Keys outside the reference fall in the outer runs.
        let other: Histogram = [(-500, 3), (1000, 4)].into_iter().collect();
        assert_eq!(binned(&other, &ends), vec![3, 0, 0, 0, 4]);
        // One key holding everything is one run.
        let point: Histogram = [(7, 50)].into_iter().collect();
        assert_eq!(quantile_bins(&point, 5), vec![i32::MAX]);
        // A heavy key makes fewer runs, never an empty one.
        let heavy: Histogram = [(1, 10), (2, 70), (3, 10), (4, 10)].into_iter().collect();
        let ends = quantile_bins(&heavy, 5);
        assert!(binned(&heavy, &ends).iter().all(|n| *n > 0), "{ends:?}");
        assert_eq!(binned(&heavy, &ends).iter().sum::<u64>(), 100);
    }
}
