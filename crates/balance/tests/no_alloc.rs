//! `select()` never allocates: a counting global allocator watches every algorithm pick from
//! pools of 10, 1,000 and 10,000 members, with all members eligible and with most of them not
//! (which drives the fallback paths).

// A global allocator is an `unsafe impl GlobalAlloc`; the workspace denies unsafe code, and this
// test file is the one place that needs it. It only forwards to `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fulcrum_balance::{
    Algorithm, Candidate, Maglev, SampledLeastConnections, ScheduledRoundRobin, Selector,
    SmoothWeightedRoundRobin, View, WeightedLeastConnections, hash_ip,
};

struct Counting;

thread_local! {
    // `const` and without a destructor, so touching it from the allocator never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may already be gone while the thread shuts down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above; `ptr` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
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

#[test]
fn the_counter_works() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
}
