//! Rough cost of building and of one `select()` per algorithm and pool size, single-threaded.
//! Not a benchmark harness, just numbers to look at:
//! `cargo test --release -p fulcrum-balance --test timing -- --ignored --nocapture`

use std::hint::black_box;
use std::time::Instant;

use fulcrum_balance::{
    Candidate, Maglev, ScheduledRoundRobin, SmoothWeightedRoundRobin, View,
    WeightedLeastConnections,
};

struct Members<'a> {
    up: &'a [bool],
    in_flight: &'a [u64],
}

impl View for Members<'_> {
    fn eligible(&self, idx: usize) -> bool {
        self.up[idx]
    }
    fn in_flight(&self, idx: usize) -> u64 {
        self.in_flight[idx]
    }
}

fn per_pick(picks: usize, mut pick: impl FnMut(u64) -> Option<usize>) -> f64 {
    let start = Instant::now();
    for i in 0..picks as u64 {
        black_box(pick(black_box(i)));
    }
    start.elapsed().as_nanos() as f64 / picks as f64
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn select_cost_by_pool_size() {
    println!("members  algorithm              build(ms)  all-up(ns)  5%-down(ns)");
    for n in [10usize, 1_000, 10_000] {
        let candidates: Vec<Candidate> = (0..n as u64)
            .map(|i| Candidate::new(1 + (i % 100) as u32, i))
            .collect();
        let all_up = vec![true; n];
        let some_down: Vec<bool> = (0..n).map(|i| i % 20 != 0).collect();
        let in_flight: Vec<u64> = (0..n as u64).map(|i| 1 + i % 7).collect();
        let views = [&all_up, &some_down].map(|up| Members {
            up,
            in_flight: &in_flight,
        });
        let picks = (20_000_000 / n).clamp(10_000, 2_000_000);

        let report = |name: &str, build: f64, pick: &dyn Fn(&Members, u64) -> Option<usize>| {
            let [a, b] = [&views[0], &views[1]].map(|v| per_pick(picks, |i| pick(v, i)));
            println!("{n:>7}  {name:<21}  {build:>9.2}  {a:>10.1}  {b:>11.1}");
        };

        let t = Instant::now();
        let swrr = SmoothWeightedRoundRobin::new(&candidates);
        report("exact swrr", ms(t), &|v, _| swrr.select(v));

        let t = Instant::now();
        let scheduled = ScheduledRoundRobin::new(&candidates).expect("fits");
        report("scheduled swrr", ms(t), &|v, _| scheduled.select(v));

        let t = Instant::now();
        let least = WeightedLeastConnections::new(&candidates);
        report("least connections", ms(t), &|v, _| least.select(v));

        let t = Instant::now();
        let maglev = Maglev::new(&candidates);
        report("maglev", ms(t), &|v, i| {
            maglev.select(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), v)
        });
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
