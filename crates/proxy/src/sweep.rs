//! Outlier detection's bookkeeping, run every second by the data plane's bookkeeping
//! thread (never on the request path): ends ejections that are over (and says so); once
//! per pool interval, forgives members that served it one ejection in a row and runs the
//! success-rate test on the pool's traffic since the last interval.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use fulcrum_model::{MemberId, PoolId};

use crate::outlier::{Interval, Reason, success_rate_outliers};
use crate::snapshot::Snapshot;
use crate::stats::Stats;

/// What one pass keeps for the next.
#[derive(Default)]
pub(crate) struct Sweeper {
    /// When each pool's interval last ran.
    pools: HashMap<PoolId, Instant>,
    /// Each member's counters (requests, failures) when its pool's interval last ran.
    members: HashMap<MemberId, (u64, u64)>,
    /// Scratch space, reused.
    intervals: Vec<Interval>,
    outliers: Vec<usize>,
}

/// A member's requests and failures (5xx answers, and requests it did not answer) so far.
fn totals(stats: &Stats) -> (u64, u64) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let unanswered: u64 = stats.errors.iter().map(load).sum();
    let answered: u64 = stats.by_class.iter().map(load).sum();
    (answered + unanswered, load(&stats.by_class[4]) + unanswered)
}

impl Sweeper {
    /// Runs the interval of every pool whose interval is due.
    pub(crate) fn sweep(&mut self, snap: &Snapshot, now: Instant) {
        self.pools.retain(|id, _| snap.pools.contains_key(id));
        let mut seen = 0usize;
        for pool in snap.pools.values() {
            seen += pool.members.len();
            let Some(policy) = pool.outlier else {
                continue;
            };
            for member in &pool.members {
                if member.state.ejection_over() {
                    tracing::info!(pool = %pool.id, member = %member.authority, "member back in the pool after its ejection");
                }
            }
            let due = self.pools.get(&pool.id).is_none_or(|last| {
                now.saturating_duration_since(*last).as_millis() >= u128::from(policy.interval_ms)
            });
            if !due {
                continue;
            }
            let first = self.pools.insert(pool.id.clone(), now).is_none();
            self.intervals.clear();
            for member in &pool.members {
                member.state.forgive();
                let (requests, failures) = totals(member.state.stats_or_zero());
                let (was_requests, was_failures) = self
                    .members
                    .insert(member.id.clone(), (requests, failures))
                    .unwrap_or((requests, failures));
                // A member its circuit breaker judges is not judged here.
                let judged = crate::exchange::outlier_policy(pool, member).is_some();
                self.intervals.push(if judged {
                    Interval {
                        requests: requests.saturating_sub(was_requests),
                        failures: failures.saturating_sub(was_failures),
                    }
                } else {
                    Interval::default()
                });
            }
            if first {
                continue;
            }
            success_rate_outliers(&policy, &self.intervals, &mut self.outliers);
            for &idx in &self.outliers {
                crate::exchange::eject(pool, idx, &policy, Reason::SuccessRate);
            }
        }
        // Forget members no pool has any more (bounded by what the snapshot holds).
        if self.members.len() > seen {
            let live: std::collections::HashSet<&MemberId> = snap
                .pools
                .values()
                .flat_map(|p| p.members.iter().map(|m| &m.id))
                .collect();
            self.members.retain(|id, _| live.contains(id));
        }
    }
}
