//! When a group commit waits for company. A commit costs about the same for one change as
//! for several (a log write and a flush on the committing thread; waking the callers, the
//! view and the data plane once), so when changes stream in, one every `BUSY_GAP` or less on
//! average, a change that finds itself alone waits a few gaps for the next ones and they
//! share the commit. Waiting pays only when company comes from callers that do not wait for
//! this commit: a caller that sends one change at a time and waits for each answer brings
//! none, so a window that gathers nobody turns windows off for the next `REST` commits; and
//! much faster than `CLOSED_GAP`, the stream is most likely a few busy clients each waiting
//! for its answer (which a wait only slows down; they fill commits by themselves), so no
//! window opens. Pure logic: the caller passes the clock.

use std::time::{Duration, Instant};

/// Arrivals closer than this on average (more than 400 a second) make waiting pay.
const BUSY_GAP: Duration = Duration::from_micros(2_500);
/// Arrivals closer than this on average open no window (see above).
const CLOSED_GAP: Duration = Duration::from_micros(500);
/// A window lasts this many mean gaps (about as many changes are expected to join)...
const GAPS_PER_WINDOW: u32 = 4;
/// ...and never longer than this.
const MAX_WINDOW: Duration = Duration::from_millis(10);
/// Commits without a window after one that gathered nobody.
const REST: u32 = 64;
/// The mean gap before any arrival: long, so only a sustained stream opens windows.
const START_GAP: Duration = Duration::from_secs(1);

/// The arrival pace of changes, and whether a lone one should wait.
#[derive(Debug)]
pub(crate) struct Pace {
    last_arrival: Option<Instant>,
    /// Mean gap between arrivals in nanoseconds, weighted 1/8 per arrival.
    mean_gap_ns: u64,
    /// Commits left before a window is tried again.
    resting: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            last_arrival: None,
            mean_gap_ns: START_GAP.as_nanos() as u64,
            resting: 0,
        }
    }
}

impl Pace {
    /// A change arrived at `now`.
    pub fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = u64::try_from(now.saturating_duration_since(last).as_nanos())
                .unwrap_or(u64::MAX)
                .min(START_GAP.as_nanos() as u64);
            self.mean_gap_ns = self.mean_gap_ns - self.mean_gap_ns / 8 + gap / 8;
        }
        self.last_arrival = Some(now);
    }

    /// How long a change about to be committed alone should wait for others, if at all.
    pub fn window(&mut self) -> Option<Duration> {
        if self.resting > 0 {
            self.resting -= 1;
            return None;
        }
        let gap = Duration::from_nanos(self.mean_gap_ns);
        (CLOSED_GAP..=BUSY_GAP)
            .contains(&gap)
            .then(|| (gap * GAPS_PER_WINDOW).min(MAX_WINDOW))
    }

    /// A window ended with `gathered` changes to commit (the lone one included).
    pub fn window_ended(&mut self, gathered: usize) {
        if gathered <= 1 {
            self.resting = REST;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(pace: &mut Pace, start: Instant, gap: Duration, n: u32) -> Instant {
        let mut t = start;
        for _ in 0..n {
            t += gap;
            pace.arrived(t);
        }
        t
    }

    #[test]
    fn no_window_until_a_sustained_stream() {
        let mut pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(pace.window(), None, "nothing arrived yet");
        // A short burst does not convince it.
        stream(&mut pace, t0, Duration::from_micros(100), 5);
        assert_eq!(pace.window(), None);
        // Slow arrivals never do.
        let mut slow = Pace::default();
        stream(&mut slow, t0, Duration::from_millis(20), 500);
        assert_eq!(slow.window(), None);
    }

    #[test]
    fn a_fast_stream_waits_a_few_gaps_and_never_long() {
        let mut pace = Pace::default();
        let t0 = Instant::now();
        stream(&mut pace, t0, Duration::from_millis(2), 200);
        let w = pace.window().expect("500 a second opens windows");
        assert!(
            w >= Duration::from_millis(7) && w <= Duration::from_millis(9),
            "{w:?}"
        );
        let mut faster = Pace::default();
        stream(&mut faster, t0, Duration::from_micros(600), 200);
        let w = faster.window().expect("a window");
        assert!(w < Duration::from_millis(3), "{w:?}");
        // Busy clients that each wait for their answer fill commits by themselves.
        let mut closed = Pace::default();
        stream(&mut closed, t0, Duration::from_micros(120), 400);
        assert_eq!(closed.window(), None);
        let mut edge = Pace::default();
        stream(&mut edge, t0, Duration::from_micros(2_400), 400);
        assert!(edge.window().is_some_and(|w| w <= MAX_WINDOW));
    }

    #[test]
    fn a_window_that_gathers_nobody_rests_windows() {
        let mut pace = Pace::default();
        let t0 = Instant::now();
        stream(&mut pace, t0, Duration::from_micros(900), 200);
        assert!(pace.window().is_some());
        pace.window_ended(1);
        for _ in 0..REST {
            assert_eq!(pace.window(), None);
        }
        assert!(pace.window().is_some(), "tried again after the rest");
        pace.window_ended(3);
        assert!(pace.window().is_some(), "company came: keep waiting");
    }
}
