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

/// Counters at zero, read for what has counted nothing; never written.
pub(crate) static ZERO: Stats = Stats {
    by_class: [const { AtomicU64::new(0) }; 5],
    errors: [const { AtomicU64::new(0) }; 3],
    buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
    count: AtomicU64::new(0),
    sum_micros: AtomicU64::new(0),
};

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

    /// Nothing counted yet: no answer, no failed attempt.
    pub(crate) fn is_idle(&self) -> bool {
        let zero = |a: &AtomicU64| a.load(Ordering::Relaxed) == 0;
        self.by_class.iter().all(zero) && self.errors.iter().all(zero)
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency histogram as the Prometheus encoder takes it: each bucket's own count
    /// (the encoder makes them cumulative), the last one `+Inf` for what exceeds them all.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        let counts = self.bucket_counts();
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts)
            .collect()
    }

    /// Each bucket's own count, the last for what exceeds them all (no allocation).
    pub(crate) fn bucket_counts(&self) -> [u64; BUCKETS.len() + 1] {
        let count = self.count.load(Ordering::Relaxed);
        let mut out = [0; BUCKETS.len() + 1];
        for (slot, n) in out.iter_mut().zip(&self.buckets) {
            *slot = n.load(Ordering::Relaxed);
        }
        let in_finite: u64 = out[..BUCKETS.len()].iter().sum();
        out[BUCKETS.len()] = count.saturating_sub(in_finite);
        out
    }
}

/// Why fulcrum answered a request itself (never a member's answer).
#[derive(Clone, Copy)]
pub(crate) enum LocalReply {
    /// 400: a malformed request or body.
    BadRequest = 0,
    /// 405: a method fulcrum does not proxy (CONNECT).
    Refused = 1,
    /// 408: the request head did not arrive in time.
    RequestTimeout = 2,
    /// 413, 414, 431: a request too large.
    TooLarge = 3,
    /// 502: no member could be reached, or one broke off before answering.
    MemberFailed = 4,
    /// 503: no route, no member available, breakers open, listener being removed.
    Unavailable = 5,
    /// 504: the member did not answer in time.
    MemberTimeout = 6,
    Other = 7,
}
pub(crate) const LOCAL_REPLIES: [&str; 8] = [
    "bad_request",
    "refused",
    "request_timeout",
    "too_large",
    "member_failed",
    "unavailable",
    "member_timeout",
    "other",
];

impl LocalReply {
    pub fn of(status: u16) -> LocalReply {
        match status {
            400 => LocalReply::BadRequest,
            405 => LocalReply::Refused,
            408 => LocalReply::RequestTimeout,
            413 | 414 | 431 => LocalReply::TooLarge,
            502 => LocalReply::MemberFailed,
            503 => LocalReply::Unavailable,
            504 => LocalReply::MemberTimeout,
            _ => LocalReply::Other,
        }
    }
}

/// A listener's counters besides its requests.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    pub(crate) connections: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) local: [AtomicU64; LOCAL_REPLIES.len()],
    /// UDP listeners' flows and datagrams (zero for the others).
    pub(crate) udp: UdpCounters,
}

/// Why a UDP listener dropped a datagram instead of forwarding it.
#[derive(Clone, Copy)]
pub(crate) enum UdpDrop {
    /// A new flow beyond the listener's cap.
    FlowCap = 0,
    /// A new flow with no member to take it (or no pool).
    NoMember = 1,
    /// Larger than the path to the member (or back to the client) allows: EMSGSIZE.
    TooLarge = 2,
    /// The member's port was unreachable (ICMP, seen as ECONNREFUSED), or the socket refused
    /// the datagram for another reason.
    SendFailed = 3,
}
pub(crate) const UDP_DROPS: [&str; 4] = ["flow_cap", "no_member", "too_large", "send_failed"];

/// How a QUIC pool's new flow found its member.
#[derive(Clone, Copy)]
pub(crate) enum QuicPath {
    /// The connection ID carried a live member's QUIC-LB server ID.
    ServerId = 0,
    /// An Initial or 0-RTT packet: the consistent hash of its client-chosen DCID.
    DcidHash = 1,
    /// Neither: source-IP persistence, then the source-IP hash.
    Source = 2,
}
pub(crate) const QUIC_PATHS: [&str; 3] = ["server_id", "dcid_hash", "source"];

/// A UDP listener's flows and datagrams, summed over its workers.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// Flows open now (the flow tables of all workers count against one cap with it).
    pub(crate) flows_open: AtomicU64,
    pub(crate) flows: AtomicU64,
    /// Datagrams from clients and from members (relayed to clients).
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) dropped: [AtomicU64; UDP_DROPS.len()],
    /// QUIC pools' new flows, by how they found their member.
    pub(crate) quic_paths: [AtomicU64; QUIC_PATHS.len()],
}

impl UdpCounters {
    pub(crate) fn dropped(&self, why: UdpDrop) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn quic(&self, path: QuicPath) {
        self.quic_paths[path as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl ListenerCounters {
    pub fn bytes(&self, received: u64, sent: u64) {
        self.bytes_in.fetch_add(received, Ordering::Relaxed);
        self.bytes_out.fetch_add(sent, Ordering::Relaxed);
    }

    pub fn local_reply(&self, status: u16) {
        self.local[LocalReply::of(status) as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A pool's counters besides its members' responses.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Requests sent to another member after one failed.
    pub(crate) retries: AtomicU64,
    /// Retries after a request was sent, in flight now (the retry budget's count).
    pub(crate) active_retries: AtomicU64,
    /// Retries the budget refused.
    pub(crate) retries_refused: AtomicU64,
}

/// Hands out one `T` per id, alive as long as a snapshot holds it (so counters outlive
/// configuration changes, and a removed listener's or pool's go with it).
pub struct StatsRegistry<T = Stats>(crate::weak_map::WeakMap<String, T>);

impl<T> Default for StatsRegistry<T> {
    fn default() -> Self {
        StatsRegistry(crate::weak_map::WeakMap::default())
    }
}

impl<T: Default> StatsRegistry<T> {
    pub fn get(&self, id: &str) -> Arc<T> {
        self.0.get_or_insert_with(id, T::default).0
    }
}
