//! Test support shared by fulcrum's crates.
//!
//! [`CountingAllocator`] forwards to the system allocator and counts every allocation and
//! reallocation, per thread and in all. A test binary installs it with
//! `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;` and reads
//! [`thread_allocations`] around code it runs itself, or [`total_allocations`] around work
//! done on other threads (a data plane's workers).

// A global allocator is an `unsafe impl GlobalAlloc`; the workspace denies unsafe code, and this
// crate is the one place that needs it. It only forwards to `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct CountingAllocator;

thread_local! {
    // `const` and without a destructor, so touching it from the allocator never allocates.
    static THREAD: Cell<usize> = const { Cell::new(0) };
}

static TOTAL: AtomicU64 = AtomicU64::new(0);

fn count() {
    TOTAL.fetch_add(1, Ordering::Relaxed);
    // `try_with`: the slot may already be gone while the thread shuts down.
    let _ = THREAD.try_with(|n| n.set(n.get() + 1));
}

/// Allocations this thread made so far (with [`CountingAllocator`] installed).
pub fn thread_allocations() -> usize {
    THREAD.with(Cell::get)
}

/// Allocations every thread made so far (with [`CountingAllocator`] installed).
pub fn total_allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `System` unchanged; counting touches only an atomic and a
// const thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
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
