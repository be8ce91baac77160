//! Smooth weighted round robin, exactly as nginx does it (`ngx_http_upstream_get_peer`).
//!
//! Per pick, over the eligible members: `current += weight`, `total += weight`; the member with
//! the largest `current` wins (lowest index on ties) and loses `total`. Weights {5,1,1} give
//! `a a b a c a a`, and every member stays within one pick of its exact share at all times: no
//! bursts, and no first-pick bias after a rebuild (unlike EDF). Ineligible members are skipped
//! and keep their `current`, as in nginx.
//!
//! Concurrency: the `current` values are relaxed `AtomicI64`s updated with `fetch_add`, no lock.
//! Single-threaded, the sequence is exactly nginx's. Under contention two threads can both see
//! the same member as the largest and pick it together; every pick still adds exactly `total`
//! and subtracts exactly `total`, so the sum of `current`s is conserved and the member that got
//! the extra pick falls behind until it has paid it back: shares stay exact over time, only the
//! smoothness is approximate. A lock would make it exact but serialise all picks of a pool, and
//! `parking_lot` may allocate when a thread first parks. Cost: n atomic adds per pick, so this is
//! for small pools; large pools use [`ScheduledRoundRobin`](crate::ScheduledRoundRobin).

use std::sync::atomic::{AtomicI64, Ordering};

use crate::view::{Candidate, View, weight_now};

/// Exact nginx smooth weighted round robin over all members; O(n) per pick.
#[derive(Debug)]
pub struct SmoothWeightedRoundRobin {
    weights: Box<[u32]>,
    current: Box<[AtomicI64]>,
}

impl SmoothWeightedRoundRobin {
    pub fn new(candidates: &[Candidate]) -> Self {
        Self {
            weights: candidates.iter().map(|c| c.weight).collect(),
            current: candidates.iter().map(|_| AtomicI64::new(0)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The next member, or `None` when no member is eligible with a weight above 0.
    pub fn select<V: View + ?Sized>(&self, view: &V) -> Option<usize> {
        let eligible = self
            .weights
            .iter()
            .enumerate()
            .map(|(idx, &configured)| (idx, weight_now(view, idx, configured)))
            .filter(|&(_, weight)| weight > 0);
        smooth_pick(&self.current, eligible)
    }
}

/// One SWRR round over `eligible` (index, weight > 0) pairs, in ascending index order.
/// Shared with least connections, which runs it over the members tied for the lowest load.
pub(crate) fn smooth_pick(
    current: &[AtomicI64],
    eligible: impl Iterator<Item = (usize, u32)>,
) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<(usize, i64)> = None;
    for (idx, weight) in eligible {
        let weight = i64::from(weight);
        let now = current[idx]
            .fetch_add(weight, Ordering::Relaxed)
            .wrapping_add(weight);
        total = total.wrapping_add(weight);
        if best.is_none_or(|(_, top)| now > top) {
            best = Some((idx, now));
        }
    }
    let (idx, _) = best?;
    current[idx].fetch_sub(total, Ordering::Relaxed);
    Some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32]) -> SmoothWeightedRoundRobin {
        let candidates: Vec<Candidate> = weights.iter().map(|&w| Candidate::new(w, 0)).collect();
        SmoothWeightedRoundRobin::new(&candidates)
    }

    fn counts<V: View>(swrr: &SmoothWeightedRoundRobin, view: &V, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; swrr.len()];
        for _ in 0..picks {
            counts[swrr.select(view).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn nginx_sequence_5_1_1() {
        let swrr = pool(&[5, 1, 1]);
        let picks: String = (0..21)
            .map(|_| (b'a' + swrr.select(&|_| true).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "aabacaa".repeat(3));
    }

    #[test]
    fn three_to_one_within_one_percent() {
        let swrr = pool(&[3, 1]);
        let c = counts(&swrr, &|_| true, 4000);
        assert!((2970..=3030).contains(&c[0]), "{c:?}");
        assert_eq!(c[0] + c[1], 4000);
    }

    #[test]
    fn ineligible_share_goes_to_the_others_by_weight() {
        let swrr = pool(&[3, 2, 1, 4]);
        let c = counts(&swrr, &|i| i != 3, 6000);
        assert_eq!(c, vec![3000, 2000, 1000, 0]);
    }

    #[test]
    fn weight_zero_never_picked() {
        let swrr = pool(&[0, 2, 0, 1]);
        let c = counts(&swrr, &|_| true, 300);
        assert_eq!(c, vec![0, 200, 0, 100]);
    }

    #[test]
    fn none_when_nothing_eligible() {
        assert_eq!(pool(&[]).select(&|_| true), None);
        assert_eq!(pool(&[1, 2]).select(&|_| false), None);
        assert_eq!(pool(&[0, 0]).select(&|_| true), None);
        assert_eq!((pool(&[]).len(), pool(&[]).is_empty()), (0, true));
        assert_eq!((pool(&[0, 0]).len(), pool(&[0, 0]).is_empty()), (2, false));
    }

    struct SlowStart;
    impl View for SlowStart {
        fn eligible(&self, _: usize) -> bool {
            true
        }
        /// Member 1 ramps at half weight; member 2 asks for more than configured (clamped).
        fn effective_weight(&self, idx: usize, configured: u32) -> u32 {
            match idx {
                1 => configured / 2,
                2 => configured * 10,
                _ => configured,
            }
        }
    }

    #[test]
    fn effective_weight_lowers_but_never_raises() {
        let swrr = pool(&[4, 4, 4]);
        let c = counts(&swrr, &SlowStart, 5000);
        assert_eq!(c, vec![2000, 1000, 2000]);
    }
}
