//! Outlier detection's decisions, pure: when a streak of failures ejects a member, for how
//! long, whether the pool may lose one more member, and which members the success-rate
//! test finds far below their pool. The counters live in `state::MemberState`; the request
//! path feeds them (`exchange`), the data plane's bookkeeping thread runs the interval
//! (`Sweeper`).

use fulcrum_model::OutlierDetection;

/// A pool's outlier detection, compiled from its spec (absent when disabled).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failures: u32,
    pub interval_ms: u64,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    pub max_ejection_percent: u32,
    pub success_rate_minimum_requests: u64,
    pub success_rate_minimum_members: usize,
    pub success_rate_stdev_factor: f64,
}

/// Why a member was ejected, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayFailures,
    /// A request timed out while the member began no answer at all.
    Unresponsive,
    SuccessRate,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailures => "consecutive_gateway_failures",
            Reason::Unresponsive => "unresponsive",
            Reason::SuccessRate => "success_rate",
        }
    }
}

impl Policy {
    pub fn of(spec: &OutlierDetection) -> Option<Policy> {
        spec.enabled.then(|| Policy {
            consecutive_5xx: spec.consecutive_5xx,
            consecutive_gateway_failures: spec.consecutive_gateway_failures,
            interval_ms: u64::from(spec.interval_ms),
            base_ejection_ms: u64::from(spec.base_ejection_ms),
            max_ejection_ms: u64::from(spec.max_ejection_ms),
            max_ejection_percent: spec.max_ejection_percent,
            success_rate_minimum_requests: u64::from(spec.success_rate_minimum_requests),
            success_rate_minimum_members: spec.success_rate_minimum_members as usize,
            success_rate_stdev_factor: f64::from(spec.success_rate_stdev_factor) / 1000.0,
        })
    }

    /// Which streak, if any, has reached its threshold.
    pub fn streak_reason(&self, fives: u32, gateway: u32) -> Option<Reason> {
        let reached = |threshold: u32, streak: u32| threshold > 0 && streak >= threshold;
        if reached(self.consecutive_gateway_failures, gateway) {
            Some(Reason::ConsecutiveGatewayFailures)
        } else if reached(self.consecutive_5xx, fives) {
            Some(Reason::Consecutive5xx)
        } else {
            None
        }
    }

    /// How long the `nth` ejection in a row lasts (the first is 1).
    pub fn ejection_ms(&self, nth: u32) -> u64 {
        self.base_ejection_ms
            .saturating_mul(u64::from(nth.max(1)))
            .min(self.max_ejection_ms)
    }

    /// Whether one more member of a pool of `members` may be ejected while `ejected` are
    /// out and `available` (not ejected, not otherwise out) take traffic. The share is
    /// rounded down but at least one member may go, and never the last available one.
    pub fn may_eject(&self, members: usize, ejected: usize, available: usize) -> bool {
        let share = members.saturating_mul(self.max_ejection_percent as usize) / 100;
        let cap = if self.max_ejection_percent > 0 {
            share.max(1)
        } else {
            0
        };
        ejected < cap && available > 1
    }
}

/// One member's traffic over the last interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    pub requests: u64,
    pub failures: u64,
}

/// The success-rate test over one interval: the indexes of members whose success rate is
/// below the pool's mean by more than the policy's number of standard deviations, among
/// members with enough requests, when enough of them have (Envoy's success-rate
/// ejection). Pushed into `out` worst first.
pub fn success_rate_outliers(policy: &Policy, intervals: &[Interval], out: &mut Vec<usize>) {
    out.clear();
    if policy.success_rate_minimum_requests == 0 {
        return;
    }
    let judged = || {
        intervals
            .iter()
            .enumerate()
            .filter(|(_, i)| i.requests > 0 && i.requests >= policy.success_rate_minimum_requests)
    };
    let rate = |i: &Interval| 1.0 - i.failures.min(i.requests) as f64 / i.requests as f64;
    let n = judged().count();
    if n == 0 || n < policy.success_rate_minimum_members {
        return;
    }
    let mean = judged().map(|(_, i)| rate(i)).sum::<f64>() / n as f64;
    let variance = judged().map(|(_, i)| (rate(i) - mean).powi(2)).sum::<f64>() / n as f64;
    let threshold = mean - policy.success_rate_stdev_factor * variance.sqrt();
    out.extend(
        judged()
            .filter(|(_, i)| rate(i) < threshold)
            .map(|(k, _)| k),
    );
    out.sort_by(|&a, &b| rate(&intervals[a]).total_cmp(&rate(&intervals[b])));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::of(&OutlierDetection::default()).expect("enabled by default")
    }

    #[test]
    fn streaks_eject_at_their_thresholds_and_zero_turns_one_off() {
        let p = policy();
        assert_eq!(p.streak_reason(4, 2), None);
        assert_eq!(p.streak_reason(5, 0), Some(Reason::Consecutive5xx));
        assert_eq!(
            p.streak_reason(3, 3),
            Some(Reason::ConsecutiveGatewayFailures)
        );
        let off = Policy {
            consecutive_5xx: 0,
            ..p
        };
        assert_eq!(off.streak_reason(1_000, 0), None);
    }

    #[test]
    fn ejections_in_a_row_last_longer_up_to_the_maximum() {
        let p = Policy {
            base_ejection_ms: 10_000,
            max_ejection_ms: 35_000,
            ..policy()
        };
        assert_eq!(p.ejection_ms(0), 10_000);
        assert_eq!(p.ejection_ms(1), 10_000);
        assert_eq!(p.ejection_ms(3), 30_000);
        assert_eq!(p.ejection_ms(4), 35_000);
        assert_eq!(p.ejection_ms(u32::MAX), 35_000);
    }

    #[test]
    fn a_pool_never_ejects_beyond_its_share_nor_its_last_member() {
        let p = Policy {
            max_ejection_percent: 50,
            ..policy()
        };
        // Three members: 50 % rounds down to one.
        assert!(p.may_eject(3, 0, 3));
        assert!(!p.may_eject(3, 1, 2));
        // Ten members: five may go.
        assert!(p.may_eject(10, 4, 6));
        assert!(!p.may_eject(10, 5, 5));
        // A small share still lets one go; none when it is zero.
        let tenth = Policy {
            max_ejection_percent: 10,
            ..p
        };
        assert!(tenth.may_eject(3, 0, 3));
        assert!(!tenth.may_eject(3, 1, 2));
        let none = Policy {
            max_ejection_percent: 0,
            ..p
        };
        assert!(!none.may_eject(3, 0, 3));
        // Never the last one that serves, whatever the share.
        let all = Policy {
            max_ejection_percent: 100,
            ..p
        };
        assert!(all.may_eject(2, 0, 2));
        assert!(!all.may_eject(2, 1, 1));
        assert!(!all.may_eject(1, 0, 1));
    }

    #[test]
    fn success_rate_finds_the_member_far_below_the_others() {
        let p = policy();
        let mut out = Vec::new();
        let ok = Interval {
            requests: 1_000,
            failures: 2,
        };
        let bad = Interval {
            requests: 1_000,
            failures: 400,
        };
        let few = Interval {
            requests: 50,
            failures: 50,
        };
        success_rate_outliers(&p, &[ok, ok, bad, ok, ok, few], &mut out);
        assert_eq!(out, [2], "the member with too few requests is not judged");
        // Too few members with enough requests: no test (with four, one outlier can never
        // be 1.9 standard deviations out: at most √3).
        success_rate_outliers(&p, &[ok, ok, bad, ok, few], &mut out);
        assert!(out.is_empty());
        // All alike: nobody is an outlier (no spread).
        success_rate_outliers(&p, &[bad, bad, bad], &mut out);
        assert!(out.is_empty());
        // Off.
        let off = Policy {
            success_rate_minimum_requests: 0,
            ..p
        };
        success_rate_outliers(&off, &[ok, ok, bad, ok], &mut out);
        assert!(out.is_empty());
    }
}
