//! Cost of one `select()` per algorithm for pools of 10, 1,000 and 10,000 members.
//!
//! `cargo bench -p fulcrum-balance --bench select` (bench/run's `select` scenario runs it and
//! reports the medians). The view mimics the data plane's: eligibility and in-flight counts read
//! from slices. That `select()` never allocates is proved separately, with a counting allocator,
//! by `tests/no_alloc.rs`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum_balance::{Algorithm, Candidate, Selector, View, hash_ip};

struct Members {
    up: Vec<bool>,
    in_flight: Vec<u64>,
}

impl View for Members {
    fn eligible(&self, idx: usize) -> bool {
        self.up[idx]
    }
    fn in_flight(&self, idx: usize) -> u64 {
        self.in_flight[idx]
    }
}

/// Weights 1..=5 and spread keys, as a real pool's member ids would give.
fn pool(n: usize) -> Vec<Candidate> {
    (0..n as u64)
        .map(|i| Candidate::new(1 + (i % 5) as u32, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect()
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for (name, algorithm) in [
        ("round_robin", Algorithm::RoundRobin),
        ("least_connections", Algorithm::LeastConnections),
        ("consistent_hash", Algorithm::ConsistentHash),
    ] {
        for n in [10usize, 1_000, 10_000] {
            let candidates = pool(n);
            let selector = Selector::build(algorithm, &candidates);
            let view = Members {
                up: vec![true; n],
                in_flight: (0..n as u64).map(|i| i % 7).collect(),
            };
            let mut client = 0u32;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    client = client.wrapping_add(1);
                    let hash = hash_ip(Ipv4Addr::from(client).into());
                    black_box(selector.select(black_box(hash), &view))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
