//! Randomized checks over many generated pools (std only: a seeded xorshift, so a failure
//! reproduces): no algorithm ever returns a member it may not choose, and `None` comes only when
//! there is no such member.

use fulcrum_balance::{
    Algorithm, Candidate, Maglev, SampledLeastConnections, ScheduledRoundRobin, Selector,
    SmoothWeightedRoundRobin, View, WeightedLeastConnections,
};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Random {
    up: Vec<bool>,
    effective: Vec<u32>,
    in_flight: Vec<u64>,
}

impl View for Random {
    fn eligible(&self, idx: usize) -> bool {
        self.up[idx]
    }
    fn effective_weight(&self, idx: usize, configured: u32) -> u32 {
        self.effective[idx].min(configured)
    }
    fn in_flight(&self, idx: usize) -> u64 {
        self.in_flight[idx]
    }
}

impl Random {
    fn generate(rng: &mut XorShift, n: usize) -> Self {
        // Vary how much of the pool is up, including none and all of it.
        let up_per_8 = rng.below(9);
        Self {
            up: (0..n).map(|_| rng.below(8) < up_per_8).collect(),
            effective: (0..n)
                .map(|_| match rng.below(4) {
                    0 => 0,
                    1 => rng.below(4) as u32,
                    _ => u32::MAX,
                })
                .collect(),
            in_flight: (0..n).map(|_| rng.below(4)).collect(),
        }
    }

    /// May a weighted algorithm choose `idx`?
    fn weighted_ok(&self, candidates: &[Candidate], idx: usize) -> bool {
        let w = candidates[idx].weight;
        self.up[idx] && w > 0 && self.effective[idx].min(w) > 0
    }
}

#[test]
fn never_ineligible_and_none_only_when_nothing_is_eligible() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..400 {
        let n = rng.below(100) as usize;
        let candidates: Vec<Candidate> = (0..n)
            .map(|_| {
                let weight = match rng.below(5) {
                    0 => 0,
                    1 => rng.below(1000) as u32,
                    _ => 1 + rng.below(5) as u32,
                };
                Candidate::new(weight, rng.next())
            })
            .collect();
        let swrr = SmoothWeightedRoundRobin::new(&candidates);
        let scheduled = ScheduledRoundRobin::new(&candidates).unwrap();
        let least = WeightedLeastConnections::new(&candidates);
        let sampled = SampledLeastConnections::new(&candidates).unwrap();
        let maglev = Maglev::with_table_size(&candidates, 1 + rng.below(3000) as usize);
        let built: Vec<(Algorithm, Selector)> = [
            Algorithm::RoundRobin,
            Algorithm::LeastConnections,
            Algorithm::ConsistentHash,
        ]
        .into_iter()
        .map(|a| (a, Selector::build(a, &candidates)))
        .collect();

        for _ in 0..20 {
            let view = Random::generate(&mut rng, n);
            let any_weighted = (0..n).any(|i| view.weighted_ok(&candidates, i));
            let any_up = view.up.iter().any(|&u| u);
            let client = rng.next();
            for _ in 0..10 {
                let weighted = [
                    ("swrr", swrr.select(&view)),
                    ("scheduled", scheduled.select(&view)),
                    ("least", least.select(&view)),
                    ("sampled", sampled.select(&view)),
                ];
                for (name, pick) in weighted {
                    match pick {
                        Some(i) => assert!(view.weighted_ok(&candidates, i), "{name} {round}"),
                        None => assert!(!any_weighted, "{name} {round}"),
                    }
                }
                match maglev.select(client, &view) {
                    Some(i) => assert!(view.up[i], "maglev {round}"),
                    None => assert!(!any_up, "maglev {round}"),
                }
                for (algorithm, selector) in &built {
                    let pick = selector.select(client, &view);
                    let (ok, any) = match algorithm {
                        Algorithm::ConsistentHash => (pick.is_some_and(|i| view.up[i]), any_up),
                        _ => (
                            pick.is_some_and(|i| view.weighted_ok(&candidates, i)),
                            any_weighted,
                        ),
                    };
                    assert_eq!(ok, any, "{algorithm:?} {round}: {pick:?}");
                }
            }
        }
    }
}

/// The schedule gives the same shares as the exact algorithm, also with members down.
#[test]
fn schedule_matches_exact_swrr_shares() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..30 {
        let n = 2 + rng.below(150) as usize;
        let candidates: Vec<Candidate> = (0..n)
            .map(|_| Candidate::new(rng.below(8) as u32, 0))
            .collect();
        let up: Vec<bool> = (0..n).map(|_| rng.below(4) != 0).collect();
        let eligible = |i: usize| up[i];
        let swrr = SmoothWeightedRoundRobin::new(&candidates);
        let scheduled = ScheduledRoundRobin::new(&candidates).unwrap();
        let total: u64 = (0..n)
            .filter(|&i| up[i])
            .map(|i| u64::from(candidates[i].weight))
            .sum();
        if total == 0 {
            assert_eq!(scheduled.select(&eligible), None);
            continue;
        }
        // Whole periods of the schedule, so both sides are exact.
        let picks = scheduled.period() * 10;
        let mut exact = vec![0u64; n];
        let mut table = vec![0u64; n];
        for _ in 0..picks {
            exact[swrr.select(&eligible).unwrap()] += 1;
            table[scheduled.select(&eligible).unwrap()] += 1;
        }
        for i in 0..n {
            let expected =
                picks as f64 * f64::from(candidates[i].weight) * f64::from(up[i]) / total as f64;
            assert!(
                (exact[i] as f64 - expected).abs() <= 1.0,
                "exact {round} {i}"
            );
            // The schedule also falls back to weighted draws after runs of skipped entries.
            let slack = 1.0 + 0.1 * expected;
            assert!(
                (table[i] as f64 - expected).abs() <= slack,
                "scheduled {round} {i}: {} vs {expected}",
                table[i]
            );
        }
    }
}
