//! What every HTTP request path shares: the client connection's facts, formatted once, and
//! the accounting of one attempt at a member (counters, circuit breaker, passive health).
//! Only failures on the member's side are charged to the member: a client that aborts or
//! sends a malformed body never reaches this module's `failed`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use fulcrum_model::ListenerId;
use http::HeaderValue;

use crate::breaker::Outcome;
use std::time::Duration;

use crate::connect::acquire;
use crate::context::Shared;
use crate::outlier::{Policy, Reason};
use crate::select::{Tried, pick};
use crate::snapshot::{MemberRt, PoolRt};
use crate::state::Lease;
use crate::stats::ErrorKind;
use crate::upstream::UpConn;

/// Attempts per request: the first member plus one retry elsewhere.
const MAX_ATTEMPTS: usize = 2;

/// The retry budget: retries of requests a member already received may be in flight up to
/// this share of the pool's requests in flight, or this many, whichever is more (Envoy's
/// defaults), so retries cannot multiply the load on a pool in trouble. Retries after a
/// failed connect are free: the first member never got the request.
const RETRY_BUDGET_PERCENT: u64 = 20;
const RETRY_BUDGET_MIN: u64 = 3;

/// The member failed before its response began.
pub(crate) struct MemberFailure {
    pub kind: ErrorKind,
    /// What the client is told if no other member answers.
    pub status: u16,
    pub reason: &'static str,
    /// The request may be sent elsewhere if it is safe to send again: the member closed
    /// the connection or timed out without answering anything (the caller checks the
    /// request may be resent, and the pool's retry budget).
    pub retry: bool,
}

/// One retry in flight, counted against its pool's budget until dropped.
struct RetryTicket(std::sync::Arc<crate::stats::PoolCounters>);

impl RetryTicket {
    fn take(pool: &PoolRt) -> Option<RetryTicket> {
        let active = &pool.counters.active_retries;
        let in_flight: u64 = pool.members.iter().map(|m| m.state.in_flight()).sum();
        let budget = (in_flight * RETRY_BUDGET_PERCENT / 100).max(RETRY_BUDGET_MIN);
        if active.fetch_add(1, Ordering::Relaxed) >= budget {
            active.fetch_sub(1, Ordering::Relaxed);
            pool.counters
                .retries_refused
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(RetryTicket(pool.counters.clone()))
    }
}

impl Drop for RetryTicket {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The members one request tries: the one persistence binds it to, then picks, each at
/// most once, `MAX_ATTEMPTS` in all; with what to tell the client if none answers.
pub(crate) struct Attempts {
    tried: Tried,
    bound: Option<usize>,
    left: usize,
    failure: (u16, &'static str),
    last_error: Option<ErrorKind>,
    /// Time when a member connection is ready, from this instant (for the access log).
    pub timed_from: Option<std::time::Instant>,
    /// When the last one was ready, when timed.
    pub connect_time: Option<Duration>,
    retry: Option<RetryTicket>,
}

impl Attempts {
    pub fn new(pool: &PoolRt, bound: Option<usize>) -> Attempts {
        Attempts {
            tried: Tried::default(),
            bound,
            left: MAX_ATTEMPTS,
            failure: (503, unavailable_reason(pool)),
            last_error: None,
            timed_from: None,
            connect_time: None,
            retry: None,
        }
    }

    /// Members tried so far.
    pub fn made(&self) -> u8 {
        u8::try_from(MAX_ATTEMPTS - self.left).unwrap_or(u8::MAX)
    }

    /// How the last member that failed did (None: none failed).
    pub fn last_error(&self) -> Option<ErrorKind> {
        self.last_error
    }

    /// The next member, its lease and a connection to it. A failed connect is charged to
    /// its member and the next one is tried, before any of the request is sent.
    pub async fn next(
        &mut self,
        pool: &PoolRt,
        client_hash: u64,
        connect_timeout: Duration,
    ) -> Option<(usize, Lease, UpConn)> {
        while self.left > 0 {
            self.left -= 1;
            let idx = self
                .bound
                .take()
                .or_else(|| pick(pool, client_hash, &self.tried))?;
            if self.last_error.is_some() {
                pool.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.tried.add(idx);
            let member = &pool.members[idx];
            let lease = Lease::new(&member.state);
            let acquired = acquire(member, connect_timeout).await;
            self.connect_time = self.timed_from.map(|t| t.elapsed());
            match acquired {
                Ok(up) => return Some((idx, lease, up)),
                Err(e) => {
                    tracing::debug!(member = %member.authority, error = %e, "connect failed");
                    failed(pool, idx, ErrorKind::Connect);
                    self.failure = (502, "could not connect to a member");
                    self.last_error = Some(ErrorKind::Connect);
                }
            }
        }
        None
    }

    /// The member failed before answering: charges it. Returns whether another member may
    /// be tried (`may_resend`: the request has no body and is idempotent).
    pub fn member_failed(
        &mut self,
        pool: &PoolRt,
        idx: usize,
        failure: MemberFailure,
        reused: bool,
        may_resend: bool,
    ) -> bool {
        let member = &pool.members[idx];
        tracing::debug!(member = %member.authority, reused, reason = failure.reason, "request to the member failed");
        failed(pool, idx, failure.kind);
        self.failure = (failure.status, failure.reason);
        self.last_error = Some(failure.kind);
        if !(failure.retry && may_resend && self.left > 0) {
            return false;
        }
        if self.retry.is_none() {
            self.retry = RetryTicket::take(pool);
        }
        self.retry.is_some()
    }

    /// The status and reason to answer when no member did.
    pub fn failure(&self) -> (u16, &'static str) {
        self.failure
    }
}

pub(crate) struct ConnInfo {
    pub listener: ListenerId,
    pub peer: SocketAddr,
    pub tls: bool,
    /// The client's address hashed for consistent hashing.
    pub client_hash: u64,
    /// The client's address as `X-Forwarded-For` carries it, and `for=…;proto=…` for
    /// `Forwarded`: formatted once per connection, not per request.
    pub client_ip: HeaderValue,
    pub forwarded: HeaderValue,
}

impl ConnInfo {
    pub(crate) fn new(listener: ListenerId, peer: SocketAddr, tls: bool) -> ConnInfo {
        let ip = peer.ip();
        let proto: &[u8] = if tls { b"https" } else { b"http" };
        // `for=<ip>;proto=<proto>` (`for="[<ip>]"` for IPv6) in one allocation; the
        // address alone is a slice of it. IPv4 without the formatting machinery.
        let mut text = Vec::with_capacity(64);
        let (ip_start, ip_end) = match ip {
            std::net::IpAddr::V4(v4) => {
                text.extend_from_slice(b"for=");
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    fulcrum_h1::write_decimal(&mut text, u64::from(octet));
                }
                let end = text.len();
                (4, end)
            }
            std::net::IpAddr::V6(v6) => {
                text.extend_from_slice(b"for=\"[");
                text.extend_from_slice(v6.to_string().as_bytes());
                let end = text.len();
                text.extend_from_slice(b"]\"");
                (6, end)
            }
        };
        text.extend_from_slice(b";proto=");
        text.extend_from_slice(proto);
        let text = Bytes::from(text);
        ConnInfo {
            listener,
            peer,
            tls,
            client_hash: fulcrum_balance::hash_ip(ip),
            // An IP address and these fixed words are always valid header text.
            client_ip: HeaderValue::from_maybe_shared(text.slice(ip_start..ip_end))
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_maybe_shared(text)
                .unwrap_or(HeaderValue::from_static("for=unknown")),
        }
    }

    pub(crate) fn proto(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// A request to the member failed on the member's side (a connect failure, a reset, a
/// timeout): count it, tell the breaker and outlier detection.
pub(crate) fn failed(pool: &PoolRt, idx: usize, kind: ErrorKind) {
    let member = &pool.members[idx];
    member.state.stats().error(kind);
    let outcome = match kind {
        ErrorKind::Connect | ErrorKind::Reset => Outcome::ConnectionFailure,
        ErrorKind::Timeout => Outcome::Timeout,
    };
    member
        .state
        .breaker_record(&member.upstream.breaker_rules, outcome);
    if let Some(policy) = outlier_policy(pool, member) {
        let (fives, gateway) = member.state.gateway_failed();
        if let Some(reason) = policy.streak_reason(fives, gateway) {
            eject(pool, idx, policy, reason);
        }
    }
}

/// A request sent at `sent_at` got no answer in time. A member that began no answer at all
/// meanwhile, to any request, is not slow on one request but hung: it leaves at once (the
/// streak of gateway failures would let every connection wait for it a few more times).
pub(crate) fn timed_out(pool: &PoolRt, idx: usize, sent_at: std::time::Instant) {
    let member = &pool.members[idx];
    if let Some(policy) = outlier_policy(pool, member)
        && policy.consecutive_gateway_failures > 0
        && !member.state.answered_since(sent_at)
    {
        eject(pool, idx, policy, Reason::Unresponsive);
    }
}

/// A TCP member took a connection: its streaks of failures end.
pub(crate) fn connected(member: &MemberRt) {
    member.state.answered(200);
}

/// The member answered with `status`: count it, and feed the breaker (with the response's
/// `Retry-After`, read only when a breaker rule may use it).
pub(crate) fn answered<'a>(
    dp: &Shared,
    pool: &PoolRt,
    idx: usize,
    status: u16,
    sent_at: std::time::Instant,
    elapsed: std::time::Duration,
    retry_after: impl FnOnce() -> Option<&'a [u8]>,
) {
    let member = &pool.members[idx];
    member.state.answer_began(sent_at + elapsed);
    member.state.stats().record(status, elapsed);
    pool.stats.count_status(status);
    if let Some(policy) = outlier_policy(pool, member) {
        let (fives, gateway) = member.state.answered(status);
        if let Some(reason) = policy.streak_reason(fives, gateway) {
            eject(pool, idx, policy, reason);
        }
    }
    if member.upstream.breaker_rules.is_empty() {
        return;
    }
    let retry_after_ms = retry_after()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| crate::breaker::parse_retry_after(v, unix_ms()))
        .map(|ms| {
            let max = dp.options.max_retry_after.as_millis();
            ms.min(u64::try_from(max).unwrap_or(u64::MAX))
        });
    member.state.breaker_record(
        &member.upstream.breaker_rules,
        Outcome::Status {
            status,
            retry_after_ms,
        },
    );
}

/// Why no member answered, for the client.
pub(crate) fn unavailable_reason(pool: &PoolRt) -> &'static str {
    if pool.members.iter().any(|m| m.state.breaker_open()) {
        "the circuit breaker of every available member is open"
    } else {
        "no member is available"
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The pool's outlier detection for this member: none for a member with circuit-breaker
/// rules, which its breaker alone judges (the seeds' trip durations stay what they say).
pub(crate) fn outlier_policy<'a>(pool: &'a PoolRt, member: &MemberRt) -> Option<&'a Policy> {
    pool.outlier
        .as_ref()
        .filter(|_| member.upstream.breaker_rules.is_empty())
}

/// Ejects the member if its pool may lose one more (`Policy::may_eject`); otherwise it
/// stays in, and its streak goes on, until another member is back.
pub(crate) fn eject(pool: &PoolRt, idx: usize, policy: &Policy, reason: Reason) {
    let member = &pool.members[idx];
    if member.state.passively_ejected() {
        return;
    }
    let ejected = pool
        .members
        .iter()
        .filter(|m| m.state.passively_ejected())
        .count();
    let available = pool
        .members
        .iter()
        .filter(|m| m.accepts_new && m.state.is_available())
        .count();
    if !policy.may_eject(pool.members.len(), ejected, available) {
        tracing::debug!(pool = %pool.id, member = %member.authority, reason = reason.as_str(), ejected, "not ejected: the pool is at its most ejected members");
        return;
    }
    let Some(ms) = member.state.eject(policy, reason) else {
        return;
    };
    tracing::warn!(pool = %pool.id, member = %member.authority, reason = reason.as_str(), ejected_for_ms = ms, "member ejected by outlier detection");
}

#[cfg(test)]
mod tests {
    use super::ConnInfo;

    #[test]
    fn forwarding_values_for_both_families() {
        let v4 = ConnInfo::new(
            "l".to_owned().into(),
            "10.0.0.25:4000".parse().unwrap_or_else(|_| unreachable!()),
            false,
        );
        assert_eq!(v4.client_ip.as_bytes(), b"10.0.0.25");
        assert_eq!(v4.forwarded.as_bytes(), b"for=10.0.0.25;proto=http");
        let v6 = ConnInfo::new(
            "l".to_owned().into(),
            "[2001:db8::1]:443"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            true,
        );
        assert_eq!(v6.client_ip.as_bytes(), b"2001:db8::1");
        assert_eq!(
            v6.forwarded.as_bytes(),
            b"for=\"[2001:db8::1]\";proto=https"
        );
    }
}
