//! Percentiles and rounding for the reports (pure).

use std::time::Duration;

/// The `p`-th percentile (0–100) of `sorted` (ascending), nearest rank: the element at index
/// `round(p / 100 · (n − 1))`, ties to even, the same rule as `bench/lib/fulcrum_api.py`'s
/// `percentile` (Python's `round`). `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p / 100.0 * last as f64).round_ties_even();
    // `as` saturates: a negative rank becomes 0, one past the end is clamped below.
    let k = (rank as usize).min(last);
    sorted.get(k).copied()
}

/// Milliseconds, for latencies.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `x` rounded to `digits` decimals (for the JSON report).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Sorts latencies (ms) for `percentile`.
pub fn sorted(mut xs: Vec<f64>) -> Vec<f64> {
    xs.sort_by(f64::total_cmp);
    xs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_percentile() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn single_value_is_every_percentile() {
        for p in [0.0, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&[7.0], p), Some(7.0));
        }
    }

    #[test]
    fn nearest_rank_like_the_python_harness() {
        // 1..=100: index round(0.99 · 99) = round(98.01) = 98 → 99.0; p50: round(49.5) = 50
        // (ties to even) → 51.0; max: the last.
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), Some(51.0));
        assert_eq!(percentile(&xs, 99.0), Some(99.0));
        assert_eq!(percentile(&xs, 100.0), Some(100.0));
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        // Four values: p50 → round(1.5) = 2 (ties to even).
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(3.0));
        // Five values: p50 → index 2, the median.
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 50.0), Some(3.0));
        // Out-of-range p clamps.
        assert_eq!(percentile(&xs, 150.0), Some(100.0));
        assert_eq!(percentile(&xs, -5.0), Some(1.0));
    }

    #[test]
    fn sorting_and_rounding() {
        assert_eq!(sorted(vec![3.0, 1.0, 2.0]), vec![1.0, 2.0, 3.0]);
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(round(1.235001, 2), 1.24);
        assert_eq!(round(499.96, 1), 500.0);
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
