//! Smooth weighted round robin from a precomputed schedule: O(1) per pick for large pools.
//!
//! Why: the exact [`SmoothWeightedRoundRobin`](crate::SmoothWeightedRoundRobin) touches every
//! member on every pick. With all members eligible, SWRR is periodic: after one period of
//! `Σ weight / gcd` picks every `current` is back to 0. So the build runs SWRR once over a period
//! and stores the sequence of indices; a pick is one relaxed `fetch_add` on a shared cursor plus
//! a table read, whatever the pool size.
//!
//! Eligibility is applied at pick time. An entry whose member is not eligible is skipped, and
//! the skip consumes the cursor position, as if that member had been left out of the table: over
//! a period every eligible member still gets exactly its weight's worth of picks. (Walking to
//! the next entry instead would hand an ineligible member's share to whoever follows it: with
//! equal weights, one neighbour would get double.) A member whose effective weight is below its
//! configured weight (slow start) keeps an entry with probability `effective / configured`,
//! decided by a hash of the cursor position, so its share is right in expectation.
//!
//! Members of equal weight tend to sit together in the schedule (SWRR serves them in index
//! order), so a group of them down makes a run of ineligible entries. After
//! [`MAX_PROBES`](ScheduledRoundRobin::MAX_PROBES) skips in a row the pick samples entries at
//! random positions instead, without moving the cursor: each sample is a draw weighted by the
//! configured weights, so shares stay right in expectation. Only when
//! [`MAX_SAMPLES`](ScheduledRoundRobin::MAX_SAMPLES) samples miss too (most of the pool's weight
//! ineligible) does the pick fall back to an O(n) weighted draw over the eligible members.
//!
//! Trade-offs against the exact version:
//! - memory: one `u32` per entry, up to
//!   [`MAX_TABLE_LEN`](ScheduledRoundRobin::MAX_TABLE_LEN) entries (4 MiB): enough for the
//!   exact schedule of 10,000 members with weights up to 100. A longer period, or one too slow
//!   to build, is shortened by scaling the weights down (each stays at least 1); the shares are
//!   then approximate, and [`ScheduledRoundRobin::is_exact`] says so;
//! - build: `period × distinct weights` steps, because members of equal weight are simulated as
//!   one group (within a group SWRR serves them in index order), capped at
//!   [`BUILD_BUDGET`](ScheduledRoundRobin::BUILD_BUDGET) steps;
//! - smoothness is exact with every member eligible; with some ineligible, skipping keeps the
//!   shares exact but is less smooth than re-running SWRR over the eligible members;
//! - effective weights act by thinning (right in expectation), not through the SWRR arithmetic.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::hash::mix64;
use crate::view::{Candidate, View, weight_now};

/// SWRR walked from a precomputed period; O(1) per pick while most members are eligible.
#[derive(Debug)]
pub struct ScheduledRoundRobin {
    weights: Box<[u32]>,
    table: Box<[u32]>,
    cursor: AtomicUsize,
    exact: bool,
}

impl ScheduledRoundRobin {
    /// Longest schedule, in entries (4 MiB of `u32`).
    pub const MAX_TABLE_LEN: usize = 1 << 20;
    /// Most build steps (entries × distinct weights) before the weights are scaled down.
    pub const BUILD_BUDGET: u64 = 1 << 27;
    /// Skipped entries in a row before a pick samples random entries instead.
    pub const MAX_PROBES: usize = 8;
    /// Random entries sampled before a pick falls back to an O(n) weighted draw.
    pub const MAX_SAMPLES: usize = 32;

    /// `None` when more than [`Self::MAX_TABLE_LEN`] members have a weight above 0: no schedule
    /// that long gives each one an entry.
    pub fn new(candidates: &[Candidate]) -> Option<Self> {
        if candidates.len() > u32::MAX as usize {
            return None;
        }
        let weights: Box<[u32]> = candidates.iter().map(|c| c.weight).collect();
        let (reduced, exact) = plan(&weights)?;
        Some(Self {
            table: schedule(&reduced).into_boxed_slice(),
            weights,
            cursor: AtomicUsize::new(0),
            exact,
        })
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Entries in one period of the schedule.
    pub fn period(&self) -> usize {
        self.table.len()
    }

    /// Whether the schedule follows the configured weights exactly (see the module docs).
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The next member, or `None` when no member is eligible with a weight above 0.
    pub fn select<V: View + ?Sized>(&self, view: &V) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mut pos = 0;
        for _ in 0..Self::MAX_PROBES {
            pos = self.cursor.fetch_add(1, Ordering::Relaxed) as u64;
            if let Some(idx) = self.take(view, pos) {
                return Some(idx);
            }
        }
        // A run of ineligible entries. An entry at a random position is a draw weighted by the
        // configured weights, so sampling a few stays O(1) and keeps the shares.
        let seed = mix64(!pos);
        self.sample(view, seed, Self::MAX_SAMPLES as u64)
            .or_else(|| self.weighted_draw(view, seed))
    }

    /// The configured weight of member `idx`.
    pub(crate) fn configured_weight(&self, idx: usize) -> u32 {
        self.weights[idx]
    }

    /// A member that may be chosen now, from entries at up to `tries` positions derived from
    /// `seed`, without moving the cursor: each entry is a draw in proportion to weight.
    pub(crate) fn sample<V: View + ?Sized>(
        &self,
        view: &V,
        seed: u64,
        tries: u64,
    ) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        (0..tries).find_map(|n| self.take(view, mix64(seed.wrapping_add(n))))
    }

    /// The member at entry `pos` (modulo the period), if it may take this pick. A member below
    /// its configured weight keeps the entry with probability `effective / configured`.
    #[inline]
    fn take<V: View + ?Sized>(&self, view: &V, pos: u64) -> Option<usize> {
        let idx = self.table[(pos % self.table.len() as u64) as usize] as usize;
        let configured = self.weights[idx];
        let weight = weight_now(view, idx, configured);
        let keep = weight == configured
            || (weight > 0 && mix64(pos) % u64::from(configured) < u64::from(weight));
        keep.then_some(idx)
    }

    /// A member drawn with probability proportional to its current weight; two O(n) scans.
    fn weighted_draw<V: View + ?Sized>(&self, view: &V, seed: u64) -> Option<usize> {
        let weights = || {
            self.weights
                .iter()
                .enumerate()
                .map(|(idx, &configured)| (idx, u64::from(weight_now(view, idx, configured))))
                .filter(|&(_, weight)| weight > 0)
        };
        let total: u64 = weights().map(|(_, weight)| weight).sum();
        if total == 0 {
            return None;
        }
        let mut target = seed % total;
        let mut last = None;
        for (idx, weight) in weights() {
            if target < weight {
                return Some(idx);
            }
            target -= weight;
            last = Some(idx);
        }
        // The live view changed between the scans; any member eligible now will do.
        last
    }
}

/// The weights the schedule is built from, and whether they are exactly the configured ones
/// (up to a common factor).
fn plan(weights: &[u32]) -> Option<(Vec<u32>, bool)> {
    let members = weights.iter().filter(|&&w| w > 0).count();
    if members > ScheduledRoundRobin::MAX_TABLE_LEN {
        return None;
    }
    let exact = reduce(weights.to_vec());
    if fits(&exact) {
        return Some((exact, true));
    }
    let sum: u128 = exact.iter().map(|&w| u128::from(w)).sum();
    // `sum >= 2` here (a sum of 0 or 1 fits), so `target` starts between 1 and `sum - 1`.
    let mut target = (ScheduledRoundRobin::MAX_TABLE_LEN as u128).min(sum / 2);
    loop {
        let scaled = exact
            .iter()
            .map(|&w| match w {
                0 => 0,
                // Below `w` since `target < sum`, so it fits in u32.
                w => (u128::from(w) * target / sum).max(1) as u32,
            })
            .collect();
        let scaled = reduce(scaled);
        // With `target` at 1 every weight is 1: one group of at most MAX_TABLE_LEN, which fits.
        if target <= 1 || fits(&scaled) {
            return Some((scaled, false));
        }
        target /= 2;
    }
}

/// Divides the weights by their greatest common divisor.
fn reduce(mut weights: Vec<u32>) -> Vec<u32> {
    let gcd = weights.iter().fold(0, |g, &w| gcd(g, w));
    if gcd > 1 {
        weights.iter_mut().for_each(|w| *w /= gcd);
    }
    weights
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn fits(weights: &[u32]) -> bool {
    let period: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if period > ScheduledRoundRobin::MAX_TABLE_LEN as u64 {
        return false;
    }
    let mut distinct: Vec<u32> = weights.iter().copied().filter(|&w| w > 0).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.len() as u64 * period <= ScheduledRoundRobin::BUILD_BUDGET
}

/// Members of one weight. SWRR serves them in index order: their `current`s differ only by
/// how many times each was picked, and ties go to the lowest index.
struct Group {
    weight: i64,
    /// Range of this group's members in the sorted member list.
    start: usize,
    len: usize,
    /// Next member to serve, as an offset in the range.
    next: usize,
    /// `-period × rounds`: what the group's next member has paid back so far.
    paid: i64,
}

/// One period of SWRR over all members with the given (already reduced) weights. Member `i`'s
/// `current` before pick `t` (1-based) is `t × weight_i − period × picks_i`, so a group's best
/// member is its next one in index order and each step compares groups, not members.
fn schedule(weights: &[u32]) -> Vec<u32> {
    let mut members: Vec<(u32, u32)> = weights
        .iter()
        .enumerate()
        .filter(|&(_, &w)| w > 0)
        .map(|(idx, &w)| (w, idx as u32))
        .collect();
    members.sort_unstable();
    let mut groups: Vec<Group> = Vec::new();
    for (at, &(weight, _)) in members.iter().enumerate() {
        match groups.last_mut() {
            Some(group) if group.weight == i64::from(weight) => group.len += 1,
            _ => groups.push(Group {
                weight: i64::from(weight),
                start: at,
                len: 1,
                next: 0,
                paid: 0,
            }),
        }
    }

    let period: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut table = Vec::with_capacity(period as usize);
    for t in 1..=period {
        let mut best = 0;
        let mut best_current = i64::MIN;
        let mut best_idx = u32::MAX;
        for (g, group) in groups.iter().enumerate() {
            let current = t * group.weight + group.paid;
            let idx = members[group.start + group.next].1;
            if current > best_current || (current == best_current && idx < best_idx) {
                (best, best_current, best_idx) = (g, current, idx);
            }
        }
        table.push(best_idx);
        let group = &mut groups[best];
        group.next += 1;
        if group.next == group.len {
            group.next = 0;
            group.paid -= period;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SmoothWeightedRoundRobin;

    fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights.iter().map(|&w| Candidate::new(w, 0)).collect()
    }

    fn pool(weights: &[u32]) -> ScheduledRoundRobin {
        ScheduledRoundRobin::new(&candidates(weights)).unwrap()
    }

    #[test]
    fn nginx_sequence_5_1_1() {
        let rr = pool(&[5, 1, 1]);
        assert_eq!(rr.period(), 7);
        let picks: String = (0..21)
            .map(|_| (b'a' + rr.select(&|_| true).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "aabacaa".repeat(3));
    }

    #[test]
    fn table_is_the_exact_swrr_sequence() {
        let sets: &[&[u32]] = &[
            &[1],
            &[3, 1],
            &[1, 2, 3, 4, 5],
            &[7, 0, 7, 3, 3, 3, 1, 10, 2],
            &[100, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 50, 50, 99],
            &[4, 6, 10],
        ];
        for &weights in sets {
            let rr = pool(weights);
            let swrr = SmoothWeightedRoundRobin::new(&candidates(weights));
            assert!(rr.is_exact());
            for _ in 0..2 * rr.period() {
                assert_eq!(rr.select(&|_| true), swrr.select(&|_| true), "{weights:?}");
            }
        }
    }

    #[test]
    fn gcd_shortens_the_period() {
        assert_eq!(pool(&[10, 20, 0, 30]).period(), 6);
        assert_eq!(pool(&[0, 0]).period(), 0);
        assert_eq!(pool(&[0, 0]).select(&|_| true), None);
        assert_eq!(pool(&[]).select(&|_| true), None);
        let rr = pool(&[10, 20, 0, 30]);
        assert_eq!((rr.len(), rr.is_empty()), (4, false));
        assert_eq!((pool(&[]).len(), pool(&[]).is_empty()), (0, true));
    }

    #[test]
    fn ineligible_entries_are_skipped_without_bias() {
        // Equal weights: walking to the next entry would give member 4 double; skipping does not.
        let rr = pool(&[1; 10]);
        let mut counts = [0usize; 10];
        for _ in 0..9000 {
            counts[rr.select(&|i| i != 3).unwrap()] += 1;
        }
        assert_eq!(
            counts,
            [1000, 1000, 1000, 0, 1000, 1000, 1000, 1000, 1000, 1000]
        );
    }

    #[test]
    fn mostly_ineligible_falls_back_and_stays_correct() {
        // A run of 90 ineligible members in a row: picks exhaust the probes and sample instead.
        let mut weights = vec![1; 100];
        weights[95] = 3;
        let rr = pool(&weights);
        let mut counts = vec![0usize; 100];
        for _ in 0..40_000 {
            counts[rr.select(&|i| i >= 90).unwrap()] += 1;
        }
        assert!(counts[..90].iter().all(|&c| c == 0));
        // Member 95 has 3 of the 12 eligible weight units: 10,000 expected.
        assert!((9000..=11_000).contains(&counts[95]), "{counts:?}");
        for (idx, &c) in counts.iter().enumerate().skip(90) {
            if idx != 95 {
                assert!((2800..=3900).contains(&c), "{idx}: {counts:?}");
            }
        }
    }

    #[test]
    fn nearly_nothing_eligible_draws_over_the_pool() {
        // 1 member of 1,000 up: most picks miss every probe and sample and scan the pool.
        let rr = pool(&[1; 1000]);
        for _ in 0..1000 {
            assert_eq!(rr.select(&|i| i == 617), Some(617));
        }
        assert_eq!(rr.select(&|_| false), None);
    }

    #[test]
    fn the_pool_scan_draws_in_proportion_to_weight() {
        // Members 100, 500 (weight 1) and 900 (weight 2) of 1,000 up: most picks miss every
        // probe and sample, and the O(n) draw must split them 1:1:2, not settle on one.
        let mut weights = vec![1; 1000];
        weights[900] = 2;
        let rr = pool(&weights);
        let up = [100, 500, 900];
        let mut counts = [0usize; 3];
        for _ in 0..8000 {
            let idx = rr.select(&|i| up.contains(&i)).unwrap();
            counts[up.iter().position(|&u| u == idx).unwrap()] += 1;
        }
        // 2,000, 2,000 and 4,000 expected.
        assert!((1700..=2300).contains(&counts[0]), "{counts:?}");
        assert!((1700..=2300).contains(&counts[1]), "{counts:?}");
    }

    /// The schedule's limit is on members with a weight: more than `MAX_TABLE_LEN` of them
    /// get no schedule, any number with weight 0 do not count.
    #[test]
    fn member_limit_counts_weighted_members_only() {
        let max = ScheduledRoundRobin::MAX_TABLE_LEN;
        assert!(plan(&vec![1; max + 1]).is_none());
        let (at_max, exact) = plan(&vec![1; max]).unwrap();
        assert_eq!((at_max.len(), exact), (max, true));
        let mut idle = vec![0; max + 1];
        idle[7] = 5;
        assert_eq!(plan(&idle).map(|(w, _)| w[7]), Some(1));
    }

    struct HalfWeight(usize);
    impl View for HalfWeight {
        fn eligible(&self, _: usize) -> bool {
            true
        }
        fn effective_weight(&self, idx: usize, configured: u32) -> u32 {
            if idx == self.0 {
                configured / 2
            } else {
                configured
            }
        }
    }

    #[test]
    fn effective_weight_thins_entries() {
        let rr = pool(&[4, 4, 4]);
        let mut counts = [0usize; 3];
        for _ in 0..50_000 {
            counts[rr.select(&HalfWeight(1)).unwrap()] += 1;
        }
        // Shares 2:1:2 of 50,000.
        assert!((19_000..=21_000).contains(&counts[0]), "{counts:?}");
        assert!((9_000..=11_000).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn huge_periods_are_scaled() {
        let rr = pool(&[u32::MAX, u32::MAX - 1, 1]);
        assert!(!rr.is_exact());
        assert!(rr.period() <= ScheduledRoundRobin::MAX_TABLE_LEN);
        let mut counts = [0usize; 3];
        for _ in 0..rr.period() {
            counts[rr.select(&|_| true).unwrap()] += 1;
        }
        assert!(counts[2] >= 1, "every member keeps an entry");
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((0.999..1.001).contains(&ratio), "{counts:?}");
        // Scaled down, weights keep their proportions (here 3:1), not just their order.
        let (scaled, exact) = plan(&[3_000_000, 1_000_000, 1]).unwrap();
        assert!(!exact);
        assert!(fits(&scaled));
        let ratio = f64::from(scaled[0]) / f64::from(scaled[1]);
        assert!((2.999..3.001).contains(&ratio), "{scaled:?}");
        assert_eq!(scaled[2], 1);
    }

    #[test]
    fn many_distinct_weights_respect_the_budget() {
        // 2,000 distinct weights: period ≈ 2M entries, exceeds MAX_TABLE_LEN; scaled to fit.
        let weights: Vec<u32> = (1..=2000).collect();
        let (scaled, exact) = plan(&weights).unwrap();
        assert!(!exact);
        assert!(fits(&scaled));
        assert!(scaled.iter().all(|&w| w >= 1));
        assert!(scaled.is_sorted(), "order kept");
        // The budget, counted here rather than by `fits`.
        let period: u64 = scaled.iter().map(|&w| u64::from(w)).sum();
        let mut distinct = scaled.clone();
        distinct.dedup();
        assert!(distinct.len() as u64 * period <= ScheduledRoundRobin::BUILD_BUDGET);
        // Halved only as far as the budget needs: the heavy members still weigh in proportion.
        let ratio = f64::from(scaled[1999]) / f64::from(scaled[999]);
        assert!((1.9..2.1).contains(&ratio), "{:?}", &scaled[1990..]);
    }
}
