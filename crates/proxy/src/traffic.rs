//! Recent traffic for the API (`/v1/stats`, the dashboard): the data plane's bookkeeping
//! thread keeps copies of each listener's, pool's and member's counters, a fresh one every
//! few seconds; a reading compares the live counters with the oldest copy kept, so rates
//! and quantiles cover the last 5 to 10 seconds. Nothing here runs on the request path.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fulcrum_control::{MemberTraffic, ObservedHealth, Traffic, TrafficFigures};

use crate::snapshot::Snapshot;
use crate::state::{Health, MemberState};
use crate::stats::{BUCKETS, Stats};

/// How often the sampler looks for what it has no copy of yet.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How far apart the copies kept are; readings span one to two of these.
const KEEP_EVERY: Duration = Duration::from_secs(5);

/// One copy of a `Stats`: what the window arithmetic needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    /// Responses (any status).
    answered: u64,
    /// 5xx responses.
    failed_answers: u64,
    /// Requests that got no answer from a member (connect, reset, timeout).
    unanswered: u64,
    /// Latency histogram: each bucket's own count, the last for what exceeds them all.
    latency: [u64; BUCKETS.len() + 1],
}

impl Sample {
    fn of(stats: &Stats) -> Sample {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Sample {
            answered: stats.by_class.iter().map(load).sum(),
            failed_answers: load(&stats.by_class[4]),
            unanswered: stats.errors.iter().map(load).sum(),
            latency: stats.bucket_counts(),
        }
    }

    fn requests(&self) -> u64 {
        self.answered + self.unanswered
    }

    fn errors(&self) -> u64 {
        self.failed_answers + self.unanswered
    }

    /// What happened between `earlier` and `self`, over `secs` seconds.
    fn figures_since(&self, earlier: &Sample, secs: f64, with_latency: bool) -> TrafficFigures {
        let requests = self.requests().saturating_sub(earlier.requests());
        let errors = self.errors().saturating_sub(earlier.errors());
        let mut latency = [0; BUCKETS.len() + 1];
        for (i, slot) in latency.iter_mut().enumerate() {
            *slot = self.latency[i].saturating_sub(earlier.latency[i]);
        }
        let quantile = |q| with_latency.then(|| quantile_ms(&latency, q)).flatten();
        TrafficFigures {
            requests_per_second: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            error_rate: if requests > 0 {
                errors as f64 / requests as f64
            } else {
                0.0
            },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            requests_total: self.requests(),
        }
    }
}

/// The `q` quantile of a histogram (each bucket's own count), in milliseconds, by linear
/// interpolation inside the bucket that holds it, as Prometheus' `histogram_quantile` does;
/// what lies beyond the last bound reads as that bound. None for an empty histogram.
fn quantile_ms(buckets: &[u64; BUCKETS.len() + 1], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = BUCKETS.get(i) else {
                return Some(BUCKETS[BUCKETS.len() - 1] * 1e3);
            };
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) * 1e3);
        }
        below += n;
    }
    Some(BUCKETS[BUCKETS.len() - 1] * 1e3)
}

/// The copies kept of one thing's counters, oldest first.
#[derive(Default)]
struct Kept {
    older: Option<(Instant, Sample)>,
    newer: Option<(Instant, Sample)>,
    /// The last look that found it served.
    seen: u64,
}

impl Kept {
    /// Keeps `sample` if the newest copy is old enough (or there is none).
    fn offer(&mut self, at: Instant, sample: impl FnOnce() -> Sample) {
        if self
            .newer
            .is_some_and(|(newest, _)| at.saturating_duration_since(newest) < KEEP_EVERY)
        {
            return;
        }
        self.older = self.newer.take();
        self.newer = Some((at, sample()));
    }

    fn oldest(&self) -> Option<&(Instant, Sample)> {
        self.older.as_ref().or(self.newer.as_ref())
    }
}

/// Counter copies for everything the snapshot serves, by id.
#[derive(Default)]
pub(crate) struct Sampler {
    /// Looks taken so far.
    looks: u64,
    last_look: Option<Instant>,
    listeners: HashMap<fulcrum_model::ListenerId, Kept>,
    pools: HashMap<fulcrum_model::PoolId, Kept>,
    members: HashMap<fulcrum_model::MemberId, Kept>,
}

/// Updated in place: an id is cloned only when it is new. Nothing is kept for what has
/// had no traffic yet (its figures are zeros, read as such): a fleet of idle members costs
/// no copies. Once something has traffic, its first copy is zeros as of `previous_look`,
/// when it still had none, so its first window counts every request.
fn keep<'a, K: Eq + Hash + Clone + 'a>(
    kept: &mut HashMap<K, Kept>,
    live: impl Iterator<Item = (&'a K, &'a Stats)>,
    at: Instant,
    previous_look: Instant,
    look: u64,
) {
    for (id, stats) in live {
        let k = match kept.get_mut(id) {
            Some(k) => k,
            None if stats.is_idle() => continue,
            None => kept.entry(id.clone()).or_insert(Kept {
                older: None,
                newer: Some((previous_look, Sample::default())),
                seen: look,
            }),
        };
        k.seen = look;
        k.offer(at, || Sample::of(stats));
    }
    kept.retain(|_, k| k.seen == look);
}

impl Sampler {
    /// Copies the counters of what `snap` serves that has no copy, or none recent enough;
    /// forgets what it no longer serves.
    pub(crate) fn sample(&mut self, snap: &Snapshot, at: Instant) {
        self.looks += 1;
        let look = self.looks;
        let previous = self
            .last_look
            .replace(at)
            .unwrap_or_else(|| at.checked_sub(LOOK_EVERY).unwrap_or(at));
        keep(
            &mut self.listeners,
            snap.listeners.values().map(|l| (&l.id, l.stats.as_ref())),
            at,
            previous,
            look,
        );
        keep(
            &mut self.pools,
            snap.pools.values().map(|p| (&p.id, p.stats.as_ref())),
            at,
            previous,
            look,
        );
        keep(
            &mut self.members,
            snap.pools
                .values()
                .flat_map(|p| p.members.iter().map(|m| (&m.id, m.state.stats_or_zero()))),
            at,
            previous,
            look,
        );
    }

    /// Live counters against the oldest copies: the figures of the last window.
    pub(crate) fn read(&self, snap: &Snapshot, now: Instant) -> Traffic {
        let mut window = Duration::ZERO;
        let mut figures = |kept: Option<&Kept>, live: Sample, with_latency: bool| {
            let (secs, base) = match kept.and_then(Kept::oldest) {
                Some((at, base)) => {
                    let span = now.saturating_duration_since(*at);
                    window = window.max(span);
                    (span.as_secs_f64(), *base)
                }
                // No traffic at the last look (or new since; at most `LOOK_EVERY`
                // ago): counters that were zero then.
                None => (LOOK_EVERY.as_secs_f64(), Sample::default()),
            };
            live.figures_since(&base, secs, with_latency)
        };
        let mut listeners: Vec<_> = snap
            .listeners
            .values()
            .map(|l| {
                let f = figures(self.listeners.get(&l.id), Sample::of(&l.stats), true);
                (l.id.clone(), f)
            })
            .collect();
        let mut pools = Vec::new();
        let mut members = Vec::new();
        for p in snap.pools.values() {
            // Pools count statuses only; their latency is their members'.
            pools.push((
                p.id.clone(),
                figures(self.pools.get(&p.id), Sample::of(&p.stats), false),
            ));
            for m in &p.members {
                let live = Sample::of(m.state.stats_or_zero());
                let f = figures(self.members.get(&m.id), live, true);
                members.push(member(m.id.clone(), p.id.clone(), f, &live, &m.state));
            }
        }
        // In id order, whatever order the snapshot's maps keep.
        listeners.sort_by(|a, b| a.0.cmp(&b.0));
        pools.sort_by(|a, b| a.0.cmp(&b.0));
        members.sort_by(|a, b| (&a.pool_id, &a.id).cmp(&(&b.pool_id, &b.id)));
        Traffic {
            window_seconds: window.as_secs_f64(),
            revision: snap.revision,
            listeners,
            pools,
            members,
        }
    }
}

fn member(
    id: fulcrum_model::MemberId,
    pool_id: fulcrum_model::PoolId,
    figures: TrafficFigures,
    live: &Sample,
    state: &MemberState,
) -> MemberTraffic {
    MemberTraffic {
        id,
        pool_id,
        figures,
        errors_total: live.errors(),
        in_flight: state.in_flight(),
        health: match state.health() {
            Health::Unknown => ObservedHealth::Unknown,
            Health::Healthy => ObservedHealth::Healthy,
            Health::Unhealthy => ObservedHealth::Unhealthy,
        },
        ejected: state.passively_ejected(),
        breaker: state.breaker_state(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> [u64; BUCKETS.len() + 1] {
        let mut h = [0; BUCKETS.len() + 1];
        for (i, n) in pairs {
            h[*i] = *n;
        }
        h
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 100 requests between 0.5 and 1 ms (bucket 1): the median is half way in it.
        let h = hist(&[(1, 100)]);
        let p50 = quantile_ms(&h, 0.5).unwrap_or_default();
        assert!((p50 - 0.75).abs() < 1e-9, "{p50}");
        // 98 fast, 2 in (1 ms, 2.5 ms]: p99 lies in the slow bucket, half way.
        let h = hist(&[(0, 98), (2, 2)]);
        let p99 = quantile_ms(&h, 0.99).unwrap_or_default();
        assert!((p99 - 1.75).abs() < 1e-9, "{p99}");
        assert_eq!(quantile_ms(&hist(&[]), 0.5), None);
        // Beyond every bound: the last bound.
        let h = hist(&[(BUCKETS.len(), 3)]);
        assert_eq!(quantile_ms(&h, 0.5), Some(2_500.0));
    }

    #[test]
    fn figures_cover_only_the_window() {
        let stats = Stats::default();
        for _ in 0..10 {
            stats.record(200, Duration::from_micros(700));
        }
        let before = Sample::of(&stats);
        for _ in 0..18 {
            stats.record(200, Duration::from_micros(700));
        }
        stats.record(503, Duration::from_micros(700));
        stats.error(crate::stats::ErrorKind::Connect);
        let f = Sample::of(&stats).figures_since(&before, 2.0, true);
        assert_eq!(f.requests_total, 30);
        assert!((f.requests_per_second - 10.0).abs() < 1e-9, "{f:?}");
        assert!((f.error_rate - 0.1).abs() < 1e-9, "{f:?}");
        let p50 = f.p50_ms.unwrap_or_default();
        assert!(p50 > 0.5 && p50 <= 1.0, "{f:?}");
    }

    #[test]
    fn idle_things_keep_no_copies_and_busy_ones_count_from_zero() {
        let idle = Stats::default();
        let busy = Stats::default();
        let mut kept = HashMap::new();
        let t0 = Instant::now();
        let ids = ["idle".to_owned(), "busy".to_owned()];
        let live = |kept: &mut HashMap<String, Kept>, at, previous, look| {
            keep(kept, ids.iter().zip([&idle, &busy]), at, previous, look);
        };
        live(&mut kept, t0, t0, 1);
        assert!(kept.is_empty(), "nothing kept for what had no traffic");

        for _ in 0..30 {
            busy.record(200, Duration::from_millis(1));
        }
        let t1 = t0 + LOOK_EVERY;
        live(&mut kept, t1, t0, 2);
        assert!(!kept.contains_key("idle"));
        // Its base is zeros as of the look before: all 30 requests fall in the window.
        let (at, base) = *kept["busy"].oldest().unwrap();
        assert_eq!((at, base), (t0, Sample::default()));
        let f = Sample::of(&busy).figures_since(&base, 1.0, false);
        assert_eq!(f.requests_total, 30);
        assert!((f.requests_per_second - 30.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn a_window_without_requests_has_no_quantiles() {
        let stats = Stats::default();
        stats.record(200, Duration::from_millis(1));
        let s = Sample::of(&stats);
        let f = s.figures_since(&s, 5.0, true);
        assert_eq!(
            (f.requests_per_second, f.p50_ms, f.p99_ms),
            (0.0, None, None)
        );
        assert_eq!(f.requests_total, 1);
    }
}
