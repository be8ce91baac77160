//! Weighted least connections, as nginx does it (`ngx_http_upstream_get_least_conn_peer`).
//!
//! The eligible member with the lowest `in_flight / weight` wins, compared exactly as
//! `a.in_flight * b.weight < b.in_flight * a.weight` in `u128`. Members tied for the lowest load
//! are split by smooth weighted round robin, so an idle pool is served like round robin (weights
//! {5,1,1} give `a a b a c a a`) instead of always by its first member.
//!
//! In-flight counts come from the [`View`]: the data plane owns the live counters, so they
//! survive selector rebuilds. A pick scans the members once, remembering up to 8 tied members
//! on the stack; only with more ties (an idle pool) does it scan a second time to find them. The
//! tie-break's `current` values are relaxed atomics as in
//! [`SmoothWeightedRoundRobin`](crate::SmoothWeightedRoundRobin). The counters are live, so the
//! second scan may no longer find any member at the lowest load; the pick then goes to the first
//! member the first scan found there. Cost is O(n) per pick (a few ns per member).
//!
//! [`SampledLeastConnections`] is the O(1) version for large pools (the [`Selector`] uses it
//! from [`Selector::SCHEDULE_MIN_MEMBERS`] members): power of two choices, as Envoy's
//! `LEAST_REQUEST` does, with both choices drawn in proportion to weight.
//!
//! [`Selector`]: crate::Selector
//! [`Selector::SCHEDULE_MIN_MEMBERS`]: crate::Selector::SCHEDULE_MIN_MEMBERS

use std::cmp::Ordering;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering as AtomicOrdering};

use crate::hash::mix64;
use crate::schedule::ScheduledRoundRobin;
use crate::swrr::smooth_pick;
use crate::view::{Candidate, View, weight_now};

/// nginx least connections with weights; O(n) per pick.
#[derive(Debug)]
pub struct WeightedLeastConnections {
    weights: Box<[u32]>,
    current: Box<[AtomicI64]>,
}

/// Ties remembered during the first scan; more than that and a second scan finds them again.
const TIES_KEPT: usize = 8;

/// The load of one member: `in_flight / weight`, kept as a fraction.
#[derive(Clone, Copy)]
struct Load {
    in_flight: u64,
    weight: u32,
}

impl Load {
    /// Compares the fractions by cross-multiplying: `u64 × u32` cannot overflow `u128`.
    fn cmp(self, other: Load) -> Ordering {
        let lhs = u128::from(self.in_flight) * u128::from(other.weight);
        let rhs = u128::from(other.in_flight) * u128::from(self.weight);
        lhs.cmp(&rhs)
    }
}

impl WeightedLeastConnections {
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

    /// The least loaded member, or `None` when no member is eligible with a weight above 0.
    pub fn select<V: View + ?Sized>(&self, view: &V) -> Option<usize> {
        let loads = || {
            self.weights
                .iter()
                .enumerate()
                .filter_map(
                    |(idx, &configured)| match weight_now(view, idx, configured) {
                        0 => None,
                        weight => Some((
                            idx,
                            Load {
                                in_flight: view.in_flight(idx),
                                weight,
                            },
                        )),
                    },
                )
        };

        // The members tied for the lowest load so far: the first TIES_KEPT on the stack, the
        // rest only counted.
        let mut best: Option<Load> = None;
        let mut kept = [(0usize, 0u32); TIES_KEPT];
        let mut tied = 0usize;
        for (idx, load) in loads() {
            match best.map(|top| load.cmp(top)) {
                Some(Ordering::Greater) => continue,
                Some(Ordering::Equal) => {}
                Some(Ordering::Less) | None => {
                    best = Some(load);
                    tied = 0;
                }
            }
            if let Some(slot) = kept.get_mut(tied) {
                *slot = (idx, load.weight);
            }
            tied += 1;
        }
        let top = best?;
        if tied == 1 {
            return Some(kept[0].0);
        }
        if tied <= TIES_KEPT {
            return smooth_pick(&self.current, kept[..tied].iter().copied());
        }
        let ties = loads()
            .filter(|(_, load)| load.cmp(top) == Ordering::Equal)
            .map(|(idx, load)| (idx, load.weight));
        smooth_pick(&self.current, ties).or(Some(kept[0].0))
    }
}

/// Least connections by sampling: O(1) per pick whatever the pool size.
///
/// The first choice is the next pick of a [`ScheduledRoundRobin`] over the pool; the second is a
/// schedule entry at a random position, which is a draw in proportion to weight. The one with
/// the lower `in_flight / weight` wins and the first choice wins ties, so an idle pool is served
/// exactly as smooth weighted round robin, as the exact version serves it.
///
/// What is given up against [`WeightedLeastConnections`]: the winner is the less loaded of two
/// members, not the least loaded of all. Two choices are enough to keep the load spread within a
/// small factor of the best (Mitzenmacher's "power of two choices"), and a member far busier than
/// the rest is picked only when both draws land on it, with probability `(weight share)²`.
#[derive(Debug)]
pub struct SampledLeastConnections {
    schedule: ScheduledRoundRobin,
    /// Seeds the second choice's position; relaxed, only its spread matters.
    draws: AtomicU64,
}

impl SampledLeastConnections {
    /// Random entries tried for the second choice before the first one is taken alone.
    const SECOND_CHOICE_TRIES: u64 = 4;

    /// `None` when the pool is too large for a schedule (see [`ScheduledRoundRobin::new`]).
    pub fn new(candidates: &[Candidate]) -> Option<Self> {
        Some(Self {
            schedule: ScheduledRoundRobin::new(candidates)?,
            draws: AtomicU64::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.schedule.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schedule.is_empty()
    }

    /// The less loaded of two weighted draws, or `None` when no member is eligible with a
    /// weight above 0.
    pub fn select<V: View + ?Sized>(&self, view: &V) -> Option<usize> {
        let first = self.schedule.select(view)?;
        let load = |idx: usize| -> Option<Load> {
            match weight_now(view, idx, self.schedule.configured_weight(idx)) {
                0 => None,
                weight => Some(Load {
                    in_flight: view.in_flight(idx),
                    weight,
                }),
            }
        };
        // The live view may have changed since the schedule's pick; it is still the best guess.
        let Some(first_load) = load(first) else {
            return Some(first);
        };
        let seed = mix64(self.draws.fetch_add(1, AtomicOrdering::Relaxed));
        let second = self.schedule.sample(view, seed, Self::SECOND_CHOICE_TRIES);
        match second.and_then(|idx| Some((idx, load(idx)?))) {
            Some((idx, second_load)) if second_load.cmp(first_load) == Ordering::Less => Some(idx),
            _ => Some(first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Every member eligible, with the given in-flight counts.
    struct InFlight<'a>(&'a RefCell<Vec<u64>>);
    impl View for InFlight<'_> {
        fn eligible(&self, _: usize) -> bool {
            true
        }
        fn in_flight(&self, idx: usize) -> u64 {
            self.0.borrow()[idx]
        }
    }

    fn pool(weights: &[u32]) -> WeightedLeastConnections {
        let candidates: Vec<Candidate> = weights.iter().map(|&w| Candidate::new(w, 0)).collect();
        WeightedLeastConnections::new(&candidates)
    }

    #[test]
    fn idle_pool_is_smooth_round_robin() {
        let lc = pool(&[5, 1, 1]);
        let picks: String = (0..14)
            .map(|_| (b'a' + lc.select(&|_| true).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "aabacaa".repeat(2));
    }

    /// More than `TIES_KEPT` members tied (an idle pool of ten): the second scan finds them
    /// all, and they take turns.
    #[test]
    fn many_ties_are_all_found_again() {
        let lc = pool(&[1; 10]);
        let picks: Vec<usize> = (0..20).map(|_| lc.select(&|_| true).unwrap()).collect();
        let expected: Vec<usize> = (0..10).chain(0..10).collect();
        assert_eq!(picks, expected);
        // Ten tied at one in flight, one busier: the ten still take turns.
        let in_flight = RefCell::new([vec![1; 10], vec![2]].concat());
        let lc = pool(&[1; 11]);
        let picks: Vec<usize> = (0..10)
            .map(|_| lc.select(&InFlight(&in_flight)).unwrap())
            .collect();
        assert_eq!(picks, (0..10).collect::<Vec<_>>());
    }

    /// Loads are `in_flight / weight`, compared exactly; the least loaded wins whichever
    /// side of the comparison it is on.
    #[test]
    fn weighted_loads_compare_exactly() {
        for (weights, in_flight, expect) in [
            (&[1, 2][..], &[1, 1][..], 1),
            (&[2, 1][..], &[1, 1][..], 0),
            (&[3, 2][..], &[4, 3][..], 0),
            (&[2, 3][..], &[3, 4][..], 1),
            (&[10, 1][..], &[19, 2][..], 0),
            (&[1, 10][..], &[2, 19][..], 1),
        ] {
            let in_flight = RefCell::new(in_flight.to_vec());
            assert_eq!(
                pool(weights).select(&InFlight(&in_flight)),
                Some(expect),
                "weights {weights:?}, in flight {:?}",
                in_flight.borrow()
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(
            (pool(&[5, 0, 1]).len(), pool(&[5, 0, 1]).is_empty()),
            (3, false)
        );
        assert_eq!((pool(&[]).len(), pool(&[]).is_empty()), (0, true));
        assert_eq!(
            (sampled(&[1; 70]).len(), sampled(&[1; 70]).is_empty()),
            (70, false)
        );
        assert_eq!((sampled(&[]).len(), sampled(&[]).is_empty()), (0, true));
    }

    #[test]
    fn avoids_the_busy_member() {
        let lc = pool(&[1, 1, 1]);
        let in_flight = RefCell::new(vec![50, 3, 4]);
        assert_eq!(lc.select(&InFlight(&in_flight)), Some(1));
        in_flight.borrow_mut()[1] = 9;
        assert_eq!(lc.select(&InFlight(&in_flight)), Some(2));
    }

    #[test]
    fn in_flight_follows_weights() {
        // Requests that never finish: the weight-2 member ends up with twice the in-flight.
        let lc = pool(&[2, 1, 1]);
        let in_flight = RefCell::new(vec![0u64; 3]);
        for _ in 0..4000 {
            let idx = lc.select(&InFlight(&in_flight)).unwrap();
            in_flight.borrow_mut()[idx] += 1;
        }
        assert_eq!(*in_flight.borrow(), vec![2000, 1000, 1000]);
    }

    #[test]
    fn weight_zero_and_ineligible_never_picked() {
        let lc = pool(&[0, 1, 1]);
        for _ in 0..100 {
            assert_eq!(lc.select(&|i| i != 2), Some(1));
        }
        assert_eq!(lc.select(&|i| i == 0), None);
        assert_eq!(pool(&[]).select(&|_| true), None);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let lc = pool(&[u32::MAX, 1]);
        let in_flight = RefCell::new(vec![u64::MAX, u64::MAX / 2]);
        // u64::MAX / u32::MAX is far below (u64::MAX / 2) / 1.
        assert_eq!(lc.select(&InFlight(&in_flight)), Some(0));
    }

    fn sampled(weights: &[u32]) -> SampledLeastConnections {
        let candidates: Vec<Candidate> = weights.iter().map(|&w| Candidate::new(w, 0)).collect();
        SampledLeastConnections::new(&candidates).unwrap()
    }

    #[test]
    fn sampled_idle_pool_is_smooth_round_robin() {
        let lc = sampled(&[5, 1, 1]);
        let picks: String = (0..14)
            .map(|_| (b'a' + lc.select(&|_| true).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks, "aabacaa".repeat(2));
    }

    #[test]
    fn sampled_avoids_a_busy_member() {
        // 100 equal members, one with 50 in flight: it wins only when both draws land on it.
        let lc = sampled(&[1; 100]);
        let mut in_flight = vec![0u64; 100];
        in_flight[7] = 50;
        let in_flight = RefCell::new(in_flight);
        let picks = (0..100_000)
            .filter(|_| lc.select(&InFlight(&in_flight)) == Some(7))
            .count();
        // Round robin would give it 1,000; (1/100)² of the picks is 10.
        assert!(picks < 60, "{picks}");
    }

    #[test]
    fn sampled_in_flight_follows_weights() {
        // Requests that never finish, 64 members with weights 1 and 3: in-flight per unit of
        // weight stays close across members.
        let weights: Vec<u32> = (0..64).map(|i| if i % 2 == 0 { 1 } else { 3 }).collect();
        let lc = sampled(&weights);
        let in_flight = RefCell::new(vec![0u64; 64]);
        for _ in 0..64_000 {
            let idx = lc.select(&InFlight(&in_flight)).unwrap();
            in_flight.borrow_mut()[idx] += 1;
        }
        let per_weight: Vec<f64> = in_flight
            .borrow()
            .iter()
            .zip(&weights)
            .map(|(&n, &w)| n as f64 / f64::from(w))
            .collect();
        let (lo, hi) = per_weight
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        // The mean is 500 per unit of weight.
        assert!(lo > 400.0 && hi < 600.0, "{lo} .. {hi}");
    }

    #[test]
    fn sampled_never_picks_weight_zero_or_ineligible() {
        let mut weights = vec![1u32; 80];
        weights[0] = 0;
        let lc = sampled(&weights);
        for _ in 0..1_000 {
            let idx = lc.select(&|i: usize| i.is_multiple_of(2)).unwrap();
            assert!(idx != 0 && idx.is_multiple_of(2), "{idx}");
        }
        assert_eq!(lc.select(&|i| i == 0), None);
    }
}
