//! `select()` never allocates: a counting global allocator watches every algorithm pick from
//! pools of 10, 1,000 and 10,000 members, with all members eligible and with most of them not
//! (which drives the fallback paths).

use fulcrum_balance::{
    Algorithm, Candidate, Maglev, SampledLeastConnections, ScheduledRoundRobin, Selector,
    SmoothWeightedRoundRobin, View, WeightedLeastConnections, hash_ip,
};

use fulcrum_testkit::{CountingAllocator, thread_allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = thread_allocations();
    f();
    thread_allocations() - before
}

/// A data-plane-like view: flags and counters in slices, one member in slow start.
struct Members<'a> {
    up: &'a [bool],
    in_flight: &'a [u64],
}

impl View for Members<'_> {
    fn eligible(&self, idx: usize) -> bool {
        self.up[idx]
    }
    fn effective_weight(&self, idx: usize, configured: u32) -> u32 {
        if idx == 1 { configured / 2 } else { configured }
    }
    fn in_flight(&self, idx: usize) -> u64 {
        self.in_flight[idx]
    }
}

fn pool(n: usize) -> Vec<Candidate> {
    (0..n as u64)
        .map(|i| Candidate::new(1 + (i % 5) as u32, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect()
}

fn check(n: usize) {
    let candidates = pool(n);
    let swrr = SmoothWeightedRoundRobin::new(&candidates);
    let scheduled = ScheduledRoundRobin::new(&candidates).expect("pool fits a schedule");
    let least = WeightedLeastConnections::new(&candidates);
    let sampled = SampledLeastConnections::new(&candidates).expect("pool fits a schedule");
    let maglev = Maglev::new(&candidates);
    let selectors: Vec<Selector> = [
        Algorithm::RoundRobin,
        Algorithm::LeastConnections,
        Algorithm::ConsistentHash,
    ]
    .into_iter()
    .map(|a| Selector::build(a, &candidates))
    .collect();

    let all_up = vec![true; n];
    // One member in 20 up: the schedule exhausts its probes and Maglev walks far.
    let few_up: Vec<bool> = (0..n).map(|i| i % 20 == 19).collect();
    let none_up = vec![false; n];
    // Ties among most members, so least connections runs its second scan.
    let in_flight: Vec<u64> = (0..n as u64).map(|i| i % 3).collect();

    // Fewer picks for larger pools: half the algorithms scan every member (debug builds).
    let picks = (200_000 / n).clamp(50, 2_000);
    for up in [&all_up, &few_up, &none_up] {
        let view = Members {
            up,
            in_flight: &in_flight,
        };
        let expect_some = up.iter().any(|&u| u);
        let mut picked = 0;
        let made = allocations(|| {
            for i in 0..picks {
                let client = hash_ip(std::net::Ipv4Addr::from(i as u32).into());
                picked += usize::from(swrr.select(&view).is_some());
                picked += usize::from(scheduled.select(&view).is_some());
                picked += usize::from(least.select(&view).is_some());
                picked += usize::from(sampled.select(&view).is_some());
                picked += usize::from(maglev.select(client, &view).is_some());
                for selector in &selectors {
                    picked += usize::from(selector.select(client, &view).is_some());
                }
            }
        });
        assert_eq!(made, 0, "{n} members: {made} allocations");
        let expected = if expect_some { 8 * picks } else { 0 };
        assert_eq!(picked, expected, "{n} members");
    }
}

#[test]
fn select_does_not_allocate_10() {
    check(10);
}

#[test]
fn select_does_not_allocate_1_000() {
    check(1_000);
}

#[test]
fn select_does_not_allocate_10_000() {
    check(10_000);
}

/// Reading a QUIC header and a QUIC-LB server ID, then hashing the DCID, as a QUIC pool does
/// for every datagram.
#[test]
fn quic_routing_does_not_allocate() {
    use fulcrum_balance::quic::{self, PlaintextConfig};
    let cfg = PlaintextConfig {
        config_id: 0,
        server_id_len: 3,
        nonce_len: 4,
    };
    let mut initial = vec![0xc0, 0, 0, 0, 1, 20];
    // A client-chosen DCID whose first octet marks it unroutable (config ID 7).
    initial.push(0xe0);
    initial.extend_from_slice(&[7; 19]);
    initial.extend_from_slice(&[0; 1200]);
    let short = [0x41, 0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f, 0xaa];
    let mut found = 0;
    let made = allocations(|| {
        for datagram in [&initial[..], &short[..], &initial[..9], &[][..]] {
            if let Ok(h) = quic::parse(datagram, cfg.cid_len()) {
                found += usize::from(cfg.server_id(h.dcid()).is_some());
                std::hint::black_box(fulcrum_balance::hash_bytes(h.dcid()));
            }
        }
    });
    assert_eq!(made, 0);
    assert_eq!(found, 1, "the short header's server ID");
}

#[test]
fn the_counter_works() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
}
