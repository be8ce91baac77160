//! Per-member live state that outlives snapshots: in-flight count, health, idle upstream
//! connections. Keyed by the member's stable id, so a config swap (a weight change, a
//! new member next to it) never resets what the data plane knows about a member.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use fulcrum_model::MemberId;
use parking_lot::Mutex;

use crate::upstream::IdlePool;
use crate::weak_map::WeakMap;

/// What health checks and passive observation say about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// No evidence either way (new, or no monitor): treated as healthy.
    Unknown = 0,
    Healthy = 1,
    Unhealthy = 2,
}

pub struct MemberState {
    /// Requests (HTTP) or connections (TCP) in flight, counted through [`Lease`]s.
    in_flight: AtomicU64,
    health: AtomicU8,
    /// Outlier detection's streaks: answers of 5xx or none at all, and connect failures,
    /// resets and timeouts, in a row (reset by any other answer).
    fives_streak: AtomicU32,
    gateway_streak: AtomicU32,
    /// Ejections in a row (each lasts longer); forgiven one per interval spent serving.
    ejections_in_a_row: AtomicU32,
    /// When the member last began an answer, in [`now_ms`] (kept to within
    /// `ANSWER_CLOCK_MS`: most answers only read it).
    last_answer_ms: AtomicU64,
    /// Whether the current ejection is for connect failures, resets or timeouts: a health
    /// check that passes shows the member reachable again and ends it.
    ejected_unreachable: AtomicBool,
    /// An ejected member is out until this many milliseconds after [`epoch`] (0: not
    /// ejected).
    ejected_until_ms: AtomicU64,
    /// Circuit breaker: the state machine, and when its current trip ends (mirrored in an
    /// atomic so selection reads it without a lock; 0: not tripped).
    breaker: Mutex<crate::breaker::Breaker>,
    breaker_until_ms: AtomicU64,
    /// When the member started warming up (slow start), in [`now_ms`] (0: not warming).
    warm_since_ms: AtomicU64,
    /// Idle HTTP/1.1 connections, per worker.
    pub(crate) idle: IdlePool,
    /// Made on the member's first request: a fleet of idle members costs none.
    stats: std::sync::OnceLock<Box<crate::stats::Stats>>,
    /// Times passive health took it out, and its breaker tripped.
    pub(crate) ejections: AtomicU64,
    pub(crate) breaker_trips: AtomicU64,
    /// Health checks that passed and failed, and the time they took in all.
    pub(crate) checks_passed: AtomicU64,
    pub(crate) checks_failed: AtomicU64,
    pub(crate) check_micros: AtomicU64,
}

/// What a member's live state carries over to the process that takes over from this one
/// (a hitless restart): health, an ejection and a breaker trip with the time they have left.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberCarry {
    pub id: MemberId,
    /// 0 unknown, 1 healthy, 2 unhealthy.
    pub health: u8,
    pub ejected_for_ms: u64,
    pub ejected_unreachable: bool,
    pub ejections_in_a_row: u32,
    pub breaker_open_for_ms: u64,
}

impl MemberState {
    /// The member's request counters, made on first use (one allocation in its life).
    pub(crate) fn stats(&self) -> &crate::stats::Stats {
        self.stats.get_or_init(Box::default)
    }

    /// Its request counters, or zeros while it has had no request: for readers, which
    /// must not make counters for idle members.
    pub(crate) fn stats_or_zero(&self) -> &crate::stats::Stats {
        self.stats.get().map_or(&crate::stats::ZERO, |s| s)
    }

    fn carry(&self, id: &MemberId) -> MemberCarry {
        let now = now_ms();
        let left = |until: u64| {
            if until == 0 {
                0
            } else {
                until.saturating_sub(now)
            }
        };
        MemberCarry {
            id: id.clone(),
            health: self.health.load(Ordering::Relaxed),
            ejected_for_ms: left(self.ejected_until_ms.load(Ordering::Relaxed)),
            ejected_unreachable: self.ejected_unreachable.load(Ordering::Relaxed),
            ejections_in_a_row: self.ejections_in_a_row.load(Ordering::Relaxed),
            breaker_open_for_ms: left(self.breaker_until_ms.load(Ordering::Relaxed)),
        }
    }

    fn restore(&self, c: &MemberCarry) {
        let now = now_ms();
        self.health.store(c.health.min(2), Ordering::Relaxed);
        if c.ejected_for_ms > 0 {
            self.ejected_until_ms
                .store(now + c.ejected_for_ms, Ordering::Relaxed);
            self.ejected_unreachable
                .store(c.ejected_unreachable, Ordering::Relaxed);
        }
        self.ejections_in_a_row
            .store(c.ejections_in_a_row, Ordering::Relaxed);
        if c.breaker_open_for_ms > 0 {
            let until = now + c.breaker_open_for_ms;
            self.breaker.lock().resume_open(until);
            self.breaker_until_ms.store(until, Ordering::Relaxed);
        }
    }

    fn new(workers: usize) -> MemberState {
        MemberState {
            in_flight: AtomicU64::new(0),
            health: AtomicU8::new(Health::Unknown as u8),
            fives_streak: AtomicU32::new(0),
            gateway_streak: AtomicU32::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            ejected_unreachable: AtomicBool::new(false),
            last_answer_ms: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            breaker: Mutex::default(),
            breaker_until_ms: AtomicU64::new(0),
            warm_since_ms: AtomicU64::new(0),
            idle: IdlePool::new(workers),
            stats: std::sync::OnceLock::new(),
            ejections: AtomicU64::new(0),
            breaker_trips: AtomicU64::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            check_micros: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn set_health(&self, h: Health) {
        let was = self.health.swap(h as u8, Ordering::Relaxed);
        if h == Health::Healthy && was == Health::Unhealthy as u8 {
            // Back from failing: take load gradually (slow start, where the pool has it),
            // and whatever ejected it is over.
            self.start_warming();
            self.end_ejection();
        }
    }

    /// A health check passed: the member is reachable, so an ejection for being
    /// unreachable ends; not one for bad answers (a member can pass its checks and fail
    /// its requests).
    pub fn check_passed(&self) {
        if self.ejected_unreachable.load(Ordering::Relaxed) {
            self.end_ejection();
        }
    }

    fn end_ejection(&self) {
        self.ejected_until_ms.store(0, Ordering::Relaxed);
        self.ejected_unreachable.store(false, Ordering::Relaxed);
        self.reset_streaks();
    }

    pub fn is_available(&self) -> bool {
        if self.health() == Health::Unhealthy {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Outlier detection takes the member out: for longer each time in a row. Returns how
    /// long, in milliseconds, or None when it is out already (another worker ejected it
    /// first: one ejection is counted once).
    pub fn eject(
        &self,
        policy: &crate::outlier::Policy,
        reason: crate::outlier::Reason,
    ) -> Option<u64> {
        let now = now_ms();
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 && now < until {
            return None;
        }
        let nth = self.ejections_in_a_row.load(Ordering::Relaxed) + 1;
        let ms = policy.ejection_ms(nth);
        self.ejected_until_ms
            .compare_exchange(until, now + ms, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        self.ejections_in_a_row.fetch_add(1, Ordering::Relaxed);
        self.ejected_unreachable.store(
            reason == crate::outlier::Reason::ConsecutiveGatewayFailures,
            Ordering::Relaxed,
        );
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.reset_streaks();
        Some(ms)
    }

    /// Ends an ejection that is over: true once, for the log.
    pub fn ejection_over(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0
            && now_ms() >= until
            && self
                .ejected_until_ms
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// At the end of an outlier-detection interval: a member not ejected has one ejection
    /// in a row forgiven.
    pub fn forgive(&self) {
        if self.ejected_until_ms.load(Ordering::Relaxed) == 0 {
            let _ =
                self.ejections_in_a_row
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Notes that an answer began at `at` (an instant the caller already has: no clock
    /// read here).
    pub fn answer_began(&self, at: std::time::Instant) {
        let ms = ms_at(at);
        if ms > self.last_answer_ms.load(Ordering::Relaxed) + ANSWER_CLOCK_MS {
            self.last_answer_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Whether the member began any answer after `since`.
    pub fn answered_since(&self, since: std::time::Instant) -> bool {
        let last = self.last_answer_ms.load(Ordering::Relaxed);
        last != 0 && last + ANSWER_CLOCK_MS >= ms_at(since)
    }

    /// Counts an answer: 5xx extend one streak, anything else ends both. Returns the
    /// streaks (5xx, gateway failures) after it.
    pub fn answered(&self, status: u16) -> (u32, u32) {
        if status >= 500 {
            let fives = self.fives_streak.fetch_add(1, Ordering::Relaxed) + 1;
            return (fives, self.gateway_streak.load(Ordering::Relaxed));
        }
        // Most answers find both streaks at zero: read before writing, so a busy member's
        // state is not written by every request on every worker.
        if self.fives_streak.load(Ordering::Relaxed) != 0
            || self.gateway_streak.load(Ordering::Relaxed) != 0
        {
            self.reset_streaks();
        }
        (0, 0)
    }

    /// Counts a connect failure, reset or timeout: both streaks grow. Returns them.
    pub fn gateway_failed(&self) -> (u32, u32) {
        let fives = self.fives_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let gateway = self.gateway_streak.fetch_add(1, Ordering::Relaxed) + 1;
        (fives, gateway)
    }

    fn reset_streaks(&self) {
        self.fives_streak.store(0, Ordering::Relaxed);
        self.gateway_streak.store(0, Ordering::Relaxed);
    }

    /// Whether the breaker lets new requests through now (closed, or its trip is over).
    pub fn breaker_allows(&self) -> bool {
        let until = self.breaker_until_ms.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    pub fn breaker_open(&self) -> bool {
        !self.breaker_allows()
    }

    /// Counts one health check.
    pub fn checked(&self, passed: bool, took: std::time::Duration) {
        let counter = if passed {
            &self.checks_passed
        } else {
            &self.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.check_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The breaker's state, for reports (takes its lock: not for the request path).
    pub fn breaker_state(&self) -> fulcrum_control::BreakerState {
        match self.breaker.lock().state(now_ms()) {
            crate::breaker::State::Closed => fulcrum_control::BreakerState::Closed,
            crate::breaker::State::Open { .. } => fulcrum_control::BreakerState::Open,
            crate::breaker::State::HalfOpen => fulcrum_control::BreakerState::HalfOpen,
        }
    }

    /// Feeds one request's outcome to the breaker.
    pub fn breaker_record(
        &self,
        rules: &[fulcrum_model::CircuitBreakerRule],
        outcome: crate::breaker::Outcome,
    ) {
        if rules.is_empty() {
            return;
        }
        let now = now_ms();
        let mut b = self.breaker.lock();
        if b.record(rules, outcome, now) {
            self.breaker_trips.fetch_add(1, Ordering::Relaxed);
        }
        let until = match b.state(now) {
            crate::breaker::State::Open { until_ms } => until_ms,
            _ => 0,
        };
        self.breaker_until_ms.store(until, Ordering::Relaxed);
    }

    /// Starts (or restarts) the slow-start ramp.
    pub fn start_warming(&self) {
        self.warm_since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The share of its weight a member gets `window` into slow start: from a 10 % floor
    /// up to 100 % linearly, then 1 for good.
    pub fn warm_factor(&self, window: std::time::Duration) -> f64 {
        let since = self.warm_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now_ms().saturating_sub(since) as f64;
        let window = window.as_millis() as f64;
        if window <= 0.0 || elapsed >= window {
            self.warm_since_ms.store(0, Ordering::Relaxed);
            return 1.0;
        }
        slow_start_factor(elapsed / window)
    }

    /// Whether outlier detection keeps the member out now.
    pub fn passively_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }
}

/// The smallest share of its weight a warming member gets (Envoy's min_weight_percent).
const SLOW_START_FLOOR: f64 = 0.1;

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// The share of its weight a warming member takes, `t` (0..1) into its slow-start window:
/// `max(t, 10 %)`, as Envoy's slow start with aggression 1: a tenth from the start, then
/// rising in proportion to the time spent, all of it at the window's end.
pub(crate) fn slow_start_factor(t: f64) -> f64 {
    t.clamp(0.0, 1.0).max(SLOW_START_FLOOR)
}

/// Milliseconds since the process's first look at the clock (never 0).
fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// `at` in [`now_ms`]'s terms.
fn ms_at(at: std::time::Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX) + 1
}

/// How stale a member's last-answer time may be.
const ANSWER_CLOCK_MS: u64 = 20;

/// Holds one unit of a member's in-flight count until dropped, whatever happens to the
/// configuration meanwhile.
pub struct Lease(Arc<MemberState>);

impl Lease {
    pub fn new(state: &Arc<MemberState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease(state.clone())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands out the one live state of each member. Entries die with the last snapshot or
/// lease that holds them; a member that comes back later starts fresh.
pub struct Registry {
    /// Workers serving traffic: each member keeps an idle-connection list per worker.
    workers: usize,
    members: WeakMap<MemberId, MemberState>,
    /// Listener counters, which outlive snapshots the same way.
    pub(crate) listener_stats: crate::stats::StatsRegistry,
    pub(crate) listener_counters: crate::stats::StatsRegistry<crate::stats::ListenerCounters>,
    /// Pool counters: kept per pool, so deleting a member never makes them go down.
    pub(crate) pool_stats: crate::stats::StatsRegistry,
    pub(crate) pool_counters: crate::stats::StatsRegistry<crate::stats::PoolCounters>,
    /// Session persistence bindings per pool.
    sticky: WeakMap<fulcrum_model::PoolId, crate::sticky::StickyTable>,
    /// Member states carried over from the process this one took over from, applied to
    /// each member when its state is first made.
    carried: Mutex<HashMap<MemberId, MemberCarry>>,
}

impl Registry {
    pub fn new(workers: usize) -> Registry {
        // The clock's origin comes before any instant the data plane will convert.
        epoch();
        Registry {
            workers,
            members: WeakMap::default(),
            listener_stats: crate::stats::StatsRegistry::default(),
            listener_counters: crate::stats::StatsRegistry::default(),
            pool_stats: crate::stats::StatsRegistry::default(),
            pool_counters: crate::stats::StatsRegistry::default(),
            sticky: WeakMap::default(),
            carried: Mutex::default(),
        }
    }

    /// The member's state, and whether it was created just now.
    pub fn member_new(&self, id: &MemberId) -> (Arc<MemberState>, bool) {
        let workers = self.workers;
        self.members.get_or_insert_with(id, || {
            let state = MemberState::new(workers);
            let carried = self.carried.lock();
            if let Some(c) = (!carried.is_empty()).then(|| carried.get(id)).flatten() {
                state.restore(c);
            }
            state
        })
    }

    /// Takes member states from the process this one takes over from; a member made after
    /// this starts from its carried state.
    pub fn carry_in(&self, carried: Vec<MemberCarry>) {
        *self.carried.lock() = carried.into_iter().map(|c| (c.id.clone(), c)).collect();
    }

    /// Every live member's state, for the process that takes over from this one.
    pub fn carry_out(&self) -> Vec<MemberCarry> {
        self.members.map_live(|id, s| s.carry(id))
    }

    /// The pool's persistence bindings.
    pub fn sticky(&self, pool: &fulcrum_model::PoolId) -> Arc<crate::sticky::StickyTable> {
        self.sticky
            .get_or_insert_with(pool, crate::sticky::StickyTable::default)
            .0
    }

    pub fn get(&self, id: &MemberId) -> Option<Arc<MemberState>> {
        self.members.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::slow_start_factor;

    #[test]
    fn slow_start_holds_a_tenth_then_rises_in_proportion() {
        // Not 0.1 + 0.9·t: at a tenth of the window that would be 0.19.
        for (t, want) in [
            (0.0, 0.1),
            (0.05, 0.1),
            (0.1, 0.1),
            (0.3, 0.3),
            (0.5, 0.5),
            (0.9, 0.9),
            (1.0, 1.0),
            (2.0, 1.0),
        ] {
            let got = slow_start_factor(t);
            assert!((got - want).abs() < 1e-12, "t = {t}: {got} (want {want})");
        }
    }
}
