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
//! member the first scan found there. Cost is O(n) per pick (a few ns per member): for large
//! pools, power-of-two-choices would be the O(1) alternative, at the price of nginx's
//! semantics.

use std::cmp::Ordering;
use std::sync::atomic::AtomicI64;

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
}
