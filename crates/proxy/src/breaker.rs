//! Circuit breaking (seed 003): rules count failures (statuses in ranges, transport errors)
//! in a sliding interval and trip a member for a while; after the trip a single probe
//! request decides (success closes, failure trips again). A 429/503 with `Retry-After`
//! trips for that long when a rule accepts it, bounded by [`MAX_RETRY_AFTER_MS`].
//!
//! Pure: the caller passes the time in milliseconds; no clock, no I/O.

use fulcrum_model::CircuitBreakerRule;

/// The longest a `Retry-After` may trip a member: the default of the data plane's setting,
/// and a hard cap whatever it says.
pub const MAX_RETRY_AFTER_MS: u64 = 300_000;
/// A percentage rule needs at least this many requests in its interval.
pub const MIN_REQUESTS_FOR_PERCENTAGE: u64 = 10;
/// Each rule's interval is split into this many buckets.
const BUCKETS: u64 = 10;

/// What happened to one request to the member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status {
        status: u16,
        /// `Retry-After`, in milliseconds, when the response carried one.
        retry_after_ms: Option<u64>,
    },
    ConnectionFailure,
    Timeout,
}

impl Outcome {
    fn fails(&self, rule: &CircuitBreakerRule) -> bool {
        let fc = &rule.failure_condition;
        match self {
            Outcome::Status { status, .. } => {
                fc.status_code_ranges.iter().any(|r| r.contains(*status))
            }
            Outcome::ConnectionFailure => fc.error_reasons.iter().any(|r| {
                r.eq_ignore_ascii_case("ConnectionFailure")
                    || r.eq_ignore_ascii_case("BackendConnectionFailure")
            }),
            Outcome::Timeout => fc
                .error_reasons
                .iter()
                .any(|r| r.eq_ignore_ascii_case("Timeout")),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Index of the bucket-sized slot of time this bucket counts.
    slot: u64,
    total: u64,
    failed: u64,
}

#[derive(Clone, Debug, Default)]
struct Window {
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    fn record(&mut self, now_ms: u64, interval_ms: u64, failed: bool) {
        let width = (interval_ms / BUCKETS).max(1);
        let slot = now_ms / width;
        let b = &mut self.buckets[(slot % BUCKETS) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                total: 0,
                failed: 0,
            };
        }
        b.total += 1;
        b.failed += u64::from(failed);
    }

    fn counts(&self, now_ms: u64, interval_ms: u64) -> (u64, u64) {
        let width = (interval_ms / BUCKETS).max(1);
        let current = now_ms / width;
        self.buckets
            .iter()
            .filter(|b| current.saturating_sub(b.slot) < BUCKETS)
            .fold((0, 0), |(t, f), b| (t + b.total, f + b.failed))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Tripped until the given time.
    Open {
        until_ms: u64,
    },
    /// The trip ended: one probe request decides.
    HalfOpen,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    state: State,
    windows: Vec<Window>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            windows: Vec::new(),
        }
    }
}

impl Breaker {
    /// Open until `until_ms`: a trip carried over from the process this one took over from.
    pub fn resume_open(&mut self, until_ms: u64) {
        self.state = State::Open { until_ms };
    }

    pub fn state(&self, now_ms: u64) -> State {
        match self.state {
            State::Open { until_ms } if now_ms >= until_ms => State::HalfOpen,
            s => s,
        }
    }

    /// Whether a new request may go to the member now (the data plane reads an atomic
    /// mirror of this instead).
    #[cfg(test)]
    pub fn allows(&self, now_ms: u64) -> bool {
        !matches!(self.state(now_ms), State::Open { .. })
    }

    /// Records one request's outcome; returns true when this trips the breaker.
    pub fn record(&mut self, rules: &[CircuitBreakerRule], outcome: Outcome, now_ms: u64) -> bool {
        if rules.is_empty() {
            self.state = State::Closed;
            return false;
        }
        self.windows.resize(rules.len(), Window::default());
        let probing = self.state(now_ms) == State::HalfOpen;
        let mut trip_for: Option<u64> = None;
        for (rule, window) in rules.iter().zip(&mut self.windows) {
            let failed = outcome.fails(rule);
            let interval = rule.failure_condition.interval_ms.max(1);
            window.record(now_ms, interval, failed);
            if !failed {
                continue;
            }
            let mut duration = None;
            if let Outcome::Status {
                status: 429 | 503,
                retry_after_ms: Some(ms),
            } = outcome
                && rule.accept_retry_after
            {
                duration = Some(ms.min(MAX_RETRY_AFTER_MS));
            }
            let (total, failures) = window.counts(now_ms, interval);
            let fc = &rule.failure_condition;
            let by_count = fc.count.is_some_and(|n| failures >= u64::from(n));
            let by_percentage = fc.percentage.is_some_and(|p| {
                total >= MIN_REQUESTS_FOR_PERCENTAGE && failures * 100 >= u64::from(p) * total
            });
            if probing || by_count || by_percentage {
                duration = duration.or(Some(rule.trip_duration_ms));
            }
            if let Some(d) = duration {
                trip_for = Some(trip_for.map_or(d, |t| t.max(d)));
            }
        }
        match trip_for {
            Some(d) => {
                self.state = State::Open {
                    until_ms: now_ms + d,
                };
                // A fresh start for the next closed period.
                self.windows.iter_mut().for_each(|w| *w = Window::default());
                true
            }
            None => {
                if probing {
                    self.state = State::Closed;
                }
                false
            }
        }
    }
}

/// `Retry-After` as seconds or an HTTP date, in milliseconds from `now_unix_ms`.
pub fn parse_retry_after(value: &str, now_unix_ms: u64) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate_to_unix_secs(v)?;
    Some((at.saturating_mul(1000)).saturating_sub(now_unix_ms))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders to use.
fn httpdate_to_unix_secs(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from civil date (proleptic Gregorian).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_model::{FailureCondition, StatusCodeRange};

    fn rule(count: Option<u32>, percentage: Option<u32>, retry_after: bool) -> CircuitBreakerRule {
        CircuitBreakerRule {
            name: "r".into(),
            failure_condition: FailureCondition {
                count,
                percentage,
                interval_ms: 10_000,
                status_code_ranges: vec![StatusCodeRange { min: 500, max: 599 }],
                error_reasons: vec!["ConnectionFailure".into(), "Timeout".into()],
            },
            trip_duration_ms: 1_000,
            accept_retry_after: retry_after,
        }
    }

    fn status(s: u16) -> Outcome {
        Outcome::Status {
            status: s,
            retry_after_ms: None,
        }
    }

    #[test]
    fn trips_on_count_within_interval_then_half_opens() {
        let rules = [rule(Some(5), None, false)];
        let mut b = Breaker::default();
        for i in 0..4 {
            assert!(!b.record(&rules, status(503), i * 10));
            assert!(!b.record(&rules, status(200), i * 10 + 5));
        }
        assert!(
            b.record(&rules, Outcome::ConnectionFailure, 100),
            "5th failure trips"
        );
        assert!(!b.allows(500));
        assert_eq!(b.state(1_100), State::HalfOpen);
        assert!(b.allows(1_100));
        // The probe fails: tripped again.
        assert!(b.record(&rules, Outcome::Timeout, 1_100));
        assert!(!b.allows(1_500));
        // The next probe succeeds: closed.
        assert!(!b.record(&rules, status(200), 2_200));
        assert_eq!(b.state(2_200), State::Closed);
    }

    #[test]
    fn failures_outside_the_interval_do_not_count() {
        let rules = [rule(Some(3), None, false)];
        let mut b = Breaker::default();
        b.record(&rules, status(500), 0);
        b.record(&rules, status(500), 1_000);
        assert!(
            !b.record(&rules, status(500), 12_000),
            "the first two aged out"
        );
        assert!(
            !b.record(&rules, status(500), 12_500),
            "two inside the interval"
        );
        assert!(
            b.record(&rules, status(500), 13_000),
            "three inside the interval"
        );
    }

    #[test]
    fn percentage_needs_a_minimum_volume() {
        let rules = [rule(None, Some(50), false)];
        let mut b = Breaker::default();
        for i in 0..4 {
            assert!(!b.record(&rules, status(500), i), "too few requests yet");
        }
        for i in 4..9 {
            assert!(!b.record(&rules, status(200), i));
        }
        assert!(b.record(&rules, status(500), 9), "5 of 10 failed");

        // Past the minimum volume, the share decides: up to 6 of 13 is under half.
        let mut b = Breaker::default();
        for i in 0..7 {
            assert!(!b.record(&rules, status(200), i));
        }
        for i in 7..13 {
            assert!(
                !b.record(&rules, status(500), i),
                "{} of {} failed",
                i - 6,
                i + 1
            );
        }
        assert!(b.record(&rules, status(500), 13), "7 of 14 failed");
    }

    /// The window holds exactly the last interval: a bucket one interval old is out, even
    /// before a new request reuses its place.
    #[test]
    fn the_window_covers_one_interval() {
        let mut w = Window::default();
        w.record(0, 10_000, true);
        w.record(5_000, 10_000, false);
        assert_eq!(w.counts(9_999, 10_000), (2, 1));
        assert_eq!(
            w.counts(10_000, 10_000),
            (1, 0),
            "the first bucket aged out"
        );
        assert_eq!(w.counts(15_000, 10_000), (0, 0));
    }

    /// A trip taken over from the previous process holds until its end, then half-opens.
    #[test]
    fn a_resumed_trip_holds_until_its_end() {
        let mut b = Breaker::default();
        b.resume_open(5_000);
        assert_eq!(b.state(4_999), State::Open { until_ms: 5_000 });
        assert!(!b.allows(4_999));
        assert_eq!(b.state(5_000), State::HalfOpen);
        let rules = [rule(Some(5), None, false)];
        assert!(
            b.record(&rules, status(500), 5_000),
            "the failed probe trips again"
        );
    }

    #[test]
    fn retry_after_trips_for_that_long_only_when_accepted() {
        let outcome = Outcome::Status {
            status: 429,
            retry_after_ms: Some(7_000),
        };
        let mut plain = Breaker::default();
        let not_a_failure = [CircuitBreakerRule {
            failure_condition: FailureCondition {
                status_code_ranges: vec![StatusCodeRange { min: 429, max: 429 }],
                ..rule(Some(100), None, false).failure_condition
            },
            ..rule(Some(100), None, false)
        }];
        assert!(
            !plain.record(&not_a_failure, outcome, 0),
            "not accepted: counted only"
        );
        let accepting = [CircuitBreakerRule {
            accept_retry_after: true,
            ..not_a_failure[0].clone()
        }];
        let mut b = Breaker::default();
        assert!(b.record(&accepting, outcome, 0));
        assert!(!b.allows(6_999));
        assert!(b.allows(7_000));
        let huge = Outcome::Status {
            status: 503,
            retry_after_ms: Some(10_000_000),
        };
        let accepting_503 = [CircuitBreakerRule {
            failure_condition: FailureCondition {
                status_code_ranges: vec![StatusCodeRange { min: 503, max: 503 }],
                ..accepting[0].failure_condition.clone()
            },
            ..accepting[0].clone()
        }];
        let mut b = Breaker::default();
        assert!(b.record(&accepting_503, huge, 0));
        assert!(b.allows(MAX_RETRY_AFTER_MS), "bounded by the maximum");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120", 0), Some(120_000));
        // 1994-11-06T08:49:37Z is 784111777.
        let now = 784_111_777_000 - 30_000;
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(30_000)
        );
        // January and February count from the year before (the civil-date formula's
        // March-based year): 2000-01-01 and the leap day 2020-02-29.
        assert_eq!(
            parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", 946_684_000_000),
            Some(800_000)
        );
        assert_eq!(
            parse_retry_after("Sat, 29 Feb 2020 12:00:00 GMT", 1_582_977_590_000),
            Some(10_000)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
