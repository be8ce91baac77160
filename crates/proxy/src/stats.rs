//! Request counters: plain atomics held by the listener's and the member's live state
//! (no label lookup, no lock, no allocation on the request path). `metrics.rs` encodes
//! them when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a request to a member failed before it answered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
}
pub(crate) const ERROR_KINDS: [&str; 3] = ["connect", "timeout", "reset"];

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) by_class: [AtomicU64; 5],
    pub(crate) errors: [AtomicU64; 3],
    buckets: [AtomicU64; BUCKETS.len()],
    pub(crate) count: AtomicU64,
    pub(crate) sum_micros: AtomicU64,
}

impl Stats {
    /// Counts a response by status class only.
    pub fn count_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record(&self, status: u16, elapsed: Duration) {
        self.count_status(status);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency histogram as the Prometheus encoder takes it: each bucket's own count
    /// (the encoder makes them cumulative), the last one `+Inf` for what exceeds them all.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        let count = self.count.load(Ordering::Relaxed);
        let mut in_finite = 0;
        let mut out: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                let n = n.load(Ordering::Relaxed);
                in_finite += n;
                (*b, n)
            })
            .collect();
        out.push((f64::INFINITY, count.saturating_sub(in_finite)));
        out
    }
}

/// Hands out one `Stats` per listener id, alive as long as a snapshot holds it.
#[derive(Default)]
pub struct StatsRegistry(crate::weak_map::WeakMap<String, Stats>);

impl StatsRegistry {
    pub fn get(&self, id: &str) -> Arc<Stats> {
        self.0.get_or_insert_with(id, Stats::default).0
    }
}
